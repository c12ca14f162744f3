"""Script-compliance speech accuracy: detection rate, false alarms, real-time factor.

Synthesizes a corpus with Debian flite (several voices): target sentences that contain a stage's
phrase of the demo insurance script, and near-miss distractors (negated confirmations, similar
sounding words, unrelated speech). Each voice's corpus is one continuous stream (1 s pauses),
recognized clean (16 kHz) and after the WebRTC path (48 kHz stereo, libopus encode/decode, the
audio tap's downsampler), with the same recognizer and acceptance rules the server uses.

    .venv/bin/python benchmarks/speech_accuracy.py [--voices slt,rms,awb,kal16] [--out FILE]

Writes JSON under benchmarks/results/ and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from finrtc.compliance.recognizer import (
    SAMPLE_RATE,
    PocketsphinxRecognizer,
    RecognitionResult,
    Transcribe,
    builtin_model,
)
from finrtc.compliance.script import Script, load_script
from finrtc.compliance.tap import Downsampler
from finrtc.compliance.testing import chunks, opus_round_trip, synthesize, to_48k_stereo
from finrtc.compliance.tracker import Speaker, StageTracker
from finrtc.model import Role

TARGETS = [
    ("Hello, my name is Alice Brown.", "identity"),
    ("I am a licensed insurance agent.", "identity"),
    ("This policy is issued by Northwind Life.", "product"),
    ("The insurance company is Contoso Mutual.", "product"),
    ("Please note that returns are not guaranteed.", "risk_notice"),
    ("The value of your policy can go down as well as up.", "risk_notice"),
    ("The policy does not cover pre existing conditions.", "exclusions"),
    ("The following exclusions apply to this contract.", "exclusions"),
    ("Yes, I have understood and I agree.", "customer_confirmation"),
    ("I understand and agree.", "customer_confirmation"),
]
DISTRACTORS = [
    "I have not understood and I do not agree.",
    "I don't understand and I don't agree.",
    "No, I do not agree with this.",
    "I disagree with that.",
    "I have understood the question.",
    "My game is to win.",
    "The police do not care about that.",
    "This pottery is issued by the museum.",
    "Could you repeat the last part please?",
    "The weather is nice today.",
]
PAUSE_S = 1.0


@dataclass
class Utterance:
    text: str
    stage: str | None
    start: float
    end: float


def build_stream(voice: str, folder: Path) -> tuple[NDArray[np.int16], list[Utterance]]:
    pieces = [np.zeros(int(SAMPLE_RATE * PAUSE_S), dtype=np.int16)]
    utterances = []
    cursor = PAUSE_S
    items: list[tuple[str, str | None]] = [*TARGETS, *((text, None) for text in DISTRACTORS)]
    # Interleave targets and distractors so context cannot help either.
    order = [item for pair in zip(items[: len(TARGETS)], items[len(TARGETS) :], strict=True) for item in pair]
    for text, stage in order:
        pcm = synthesize(text, folder, voice)
        utterances.append(Utterance(text, stage, cursor, cursor + len(pcm) / SAMPLE_RATE))
        pieces += [pcm, np.zeros(int(SAMPLE_RATE * PAUSE_S), dtype=np.int16)]
        cursor += len(pcm) / SAMPLE_RATE + PAUSE_S
    return np.concatenate(pieces), utterances


def webrtc_path(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    """16 kHz mono -> 48 kHz stereo -> libopus 32 kb/s -> decode -> the tap's downsampler."""
    decoded = opus_round_trip(to_48k_stereo(pcm))
    downsampler = Downsampler(48000)
    return np.concatenate([downsampler.process(chunk.samples) for chunk in chunks(decoded)])


def recognize(pcm: NDArray[np.int16], transcribe: Transcribe) -> tuple[list[RecognitionResult], float]:
    script = load_script("builtin:demo_insurance_en")
    phrases = script.phrases_for(Role.AGENT) + script.phrases_for(Role.CUSTOMER)
    recognizer = PocketsphinxRecognizer("bench", builtin_model(), phrases, transcribe=transcribe)
    results: list[RecognitionResult] = []
    block = SAMPLE_RATE // 10
    for offset in range(0, len(pcm), block):
        results += recognizer.feed(pcm[offset : offset + block], offset / SAMPLE_RATE)
    results += recognizer.flush()
    return results, recognizer.cpu_seconds / recognizer.audio_seconds


def accepted_stages(
    result: RecognitionResult, use_keywords: bool, use_text: bool, script: Script | None = None
) -> set[str]:
    """Stages the server would count for this result (roles ignored: any speaker)."""
    script = script or load_script("builtin:demo_insurance_en")
    stripped = RecognitionResult(
        result.stream_id,
        result.text if use_text else None,
        result.keywords if use_keywords else (),
        result.start,
        result.end,
        result.confidence,
        result.engine,
        result.model_digest,
    )
    found: set[str] = set()
    for role in (Role.AGENT, Role.CUSTOMER):
        tracker = StageTracker(script)
        for candidate in tracker.candidates(Speaker("x", role, "t"), stripped):
            if candidate.negation_cue is None:
                found.add(candidate.stage.spec.id)
    return found


def score(
    utterances: list[Utterance],
    results: list[RecognitionResult],
    keywords: bool,
    text: bool,
    script: Script | None = None,
) -> dict[str, Any]:
    detected = 0
    false_alarms: list[dict[str, Any]] = []
    misses: list[str] = []

    def overlap(result: RecognitionResult, utterance: Utterance) -> float:
        return min(result.end, utterance.end) - max(result.start, utterance.start)

    # Each result belongs to the utterance it overlaps most (the endpointer sometimes joins
    # two sentences across a pause; keyword hits carry their own time).
    owner: dict[int, list[RecognitionResult]] = {}
    for result in results:
        index = max(range(len(utterances)), key=lambda i: overlap(result, utterances[i]))
        owner.setdefault(index, []).append(result)
    for index, utterance in enumerate(utterances):
        window = owner.get(index, [])
        stages: set[str] = set()
        for result in window:
            stages |= accepted_stages(result, keywords, text, script)
        if utterance.stage is not None:
            if utterance.stage in stages:
                detected += 1
            else:
                misses.append(utterance.text)
        elif stages:
            heard = " | ".join(r.text or "" for r in window)
            false_alarms.append({"text": utterance.text, "stages": sorted(stages), "heard": heard})
    targets = sum(1 for u in utterances if u.stage is not None)
    return {
        "targets": targets,
        "detected": detected,
        "detection_rate": round(detected / targets, 3),
        "distractors": len(utterances) - targets,
        "false_alarms": len(false_alarms),
        "false_alarm_details": false_alarms,
        "missed": misses,
    }


def run_facts(benchmark: str) -> dict[str, Any]:
    """The fields every speech accuracy result file starts with."""
    return {
        "benchmark": benchmark,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", default="slt,rms,awb,kal16")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "speech_accuracy.json",
    )
    args = parser.parse_args()
    if shutil.which("flite") is None:
        print("Debian flite is required (apt-get install flite)", file=sys.stderr)
        return 2
    voices = [voice for voice in args.voices.split(",") if voice]
    modes = {
        "keywords_only": (True, False),
        "transcript_only": (False, True),
        "keywords_and_transcript": (True, True),
        # transcribe: on_demand with no stage owed (the worst case for it): only utterances
        # with a spotted phrase are decoded.
        "on_demand_idle": (True, True),
    }
    totals: dict[str, dict[str, dict[str, int]]] = {}
    per_stream: list[dict[str, Any]] = []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for voice in voices:
            clean, utterances = build_stream(voice, folder)
            for condition, pcm in (("clean_16k", clean), ("opus_48k", webrtc_path(clean))):
                full, rtf_full = recognize(pcm, transcribe="always")
                spotted, rtf_kws = recognize(pcm, transcribe="off")
                on_demand, rtf_on_demand = recognize(pcm, transcribe="on_demand")
                sources = {"keywords_only": spotted, "on_demand_idle": on_demand}
                entry: dict[str, Any] = {
                    "voice": voice,
                    "condition": condition,
                    "audio_seconds": round(len(pcm) / SAMPLE_RATE, 2),
                    "rtf_keywords_only": round(rtf_kws, 4),
                    "rtf_keywords_and_transcript": round(rtf_full, 4),
                    "rtf_on_demand_idle": round(rtf_on_demand, 4),
                    "modes": {},
                }
                for mode, (use_keywords, use_text) in modes.items():
                    source = sources.get(mode, full)
                    result = score(utterances, source, use_keywords, use_text)
                    entry["modes"][mode] = result
                    bucket = totals.setdefault(condition, {}).setdefault(
                        mode, {"targets": 0, "detected": 0, "distractors": 0, "false_alarms": 0}
                    )
                    for key in bucket:
                        bucket[key] += result[key]
                per_stream.append(entry)
                print(
                    f"{voice:6s} {condition:9s} rtf kws {rtf_kws:.3f} full {rtf_full:.3f} "
                    f"on demand {rtf_on_demand:.3f}  "
                    + "  ".join(
                        f"{mode}: {entry['modes'][mode]['detected']}/"
                        f"{entry['modes'][mode]['targets']} fa "
                        f"{entry['modes'][mode]['false_alarms']}"
                        for mode in modes
                    ),
                    flush=True,
                )
    summary = {
        **run_facts("speech_accuracy"),
        "engine": "pocketsphinx",
        "model_digest": builtin_model().digest,
        "voices": voices,
        "corpus": {"targets": TARGETS, "distractors": DISTRACTORS},
        "totals": totals,
        "streams": per_stream,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_summary(args.out, summary)
    for condition, modes_total in totals.items():
        for mode, bucket in modes_total.items():
            print(
                f"TOTAL {condition:9s} {mode:24s} detected {bucket['detected']}/"
                f"{bucket['targets']}  false alarms {bucket['false_alarms']}/"
                f"{bucket['distractors']}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
