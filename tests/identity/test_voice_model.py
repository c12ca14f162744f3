"""The numpy voice encoder on real speech (flite's voices), and its checkpoint loader."""

from __future__ import annotations

import hashlib
import itertools
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from finrtc.errors import ConfigError
from finrtc.identity import voice
from finrtc.identity.settings import IdentityConfig
from tests.identity.speech import VOICES, speech

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def encoder() -> voice.VoiceEncoder:
    return voice.shared_encoder()


def embed(encoder: voice.VoiceEncoder, name: str, *sentences: int) -> np.ndarray:
    samples, rate = speech(name, *sentences)
    return encoder.embed_utterance(voice.voiced(voice.to_mono_16k(samples, rate)))


def test_model_is_pinned_and_found_without_importing_resemblyzer(encoder: voice.VoiceEncoder) -> None:
    import sys

    path = voice.model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == voice.MODEL_SHA256 == encoder.digest
    # Its modules import torch; only the data file is used.
    assert "resemblyzer" not in sys.modules and "torch" not in sys.modules


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "pretrained.pt"
    data = bytearray(voice.model_path().read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="SHA-256"):
        voice.VoiceEncoder(copy)


def test_checkpoint_unpickler_refuses_other_globals() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    stream = b"".join(pickle.dumps(part, protocol=2) for part in (
        voice.LEGACY_MAGIC, 1001, {"little_endian": True}, {"model_state": Evil()}, []
    ))
    with pytest.raises(ConfigError, match="not allowed"):
        voice.load_legacy_checkpoint(stream)
    honest = b"".join(pickle.dumps(part, protocol=2) for part in (
        voice.LEGACY_MAGIC, 1001, {"little_endian": True}, {"step": 1, "model_state": OrderedDict()}, []
    ))
    assert voice.load_legacy_checkpoint(honest) == {"step": 1, "model_state": OrderedDict()}
    with pytest.raises(ConfigError, match="magic"):
        voice.load_legacy_checkpoint(pickle.dumps(42))


def test_mel_filterbank_is_slaney() -> None:
    bank = voice.mel_filterbank()
    assert bank.shape == (40, 201)
    bins = np.linspace(0, 8000, 201)
    peaks = bins[bank.argmax(axis=1)]
    # Linear spacing below 1 kHz (66.7 Hz per mel), logarithmic above.
    assert np.all(np.diff(peaks) > 0) and peaks[0] < 100 and peaks[-1] > 7000
    assert abs((peaks[3] - peaks[2]) - (peaks[2] - peaks[1])) <= 40
    # Unit-area normalisation: each triangle's integral over Hz is ~1.
    areas = bank.sum(axis=1) * (bins[1] - bins[0])
    assert np.allclose(areas[5:], 1.0, rtol=0.1)


def test_a_tone_lands_in_its_band() -> None:
    t = np.arange(16000) / 16000
    mel = voice.mel_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    assert mel.shape == (101, 40)
    centre = voice._mel_to_hz(np.linspace(0, voice._hz_to_mel(np.array(8000.0)), 42))[1:-1]
    assert abs(centre[mel[50].argmax()] - 1000) < 120


def test_same_voice_matches_different_voices_do_not(encoder: voice.VoiceEncoder) -> None:
    """Every voice saying three sentences: scores of all pairs at the default threshold."""
    threshold = IdentityConfig().voice_threshold
    prints = {(name, s): embed(encoder, name, s) for name in VOICES for s in range(3)}
    same, different = [], []
    for (a, pa), (b, pb) in itertools.combinations(prints.items(), 2):
        (same if a[0] == b[0] else different).append(voice.similarity(pa, pb))
    false_rejects = sum(score < threshold for score in same)
    false_accepts = sum(score >= threshold for score in different)
    print(f"same: {min(same):.3f}..{max(same):.3f}  different: {min(different):.3f}..{max(different):.3f}"
          f"  FRR {false_rejects}/{len(same)}  FAR {false_accepts}/{len(different)} at {threshold}")
    assert false_rejects == 0 and false_accepts == 0
    assert min(same) - max(different) > 0.1


def test_partials_cover_the_utterance() -> None:
    assert voice.partial_slices(16000) == [slice(0, 160)]
    slices = voice.partial_slices(16000 * 5)
    assert slices[0] == slice(0, 160) and slices[1].start == 77
    assert slices[-1].stop * voice.HOP >= 16000 * 5 * 0.9


def test_voice_activity_keeps_speech_drops_silence() -> None:
    samples, rate = speech("slt", 0)
    audio = voice.to_mono_16k(samples, rate)
    silence = np.zeros(16000 * 3, np.float32) + np.random.default_rng(1).normal(0, 1e-4, 16000 * 3).astype(
        np.float32)
    collector = voice.VoicedAudio(60.0)
    for chunk in np.array_split(np.concatenate([silence, audio, silence]), 200):
        collector.feed(chunk)
    assert abs(collector.voiced_s - audio.size / 16000) < 1.0, collector.voiced_s
    assert collector.heard_s > 8.0
