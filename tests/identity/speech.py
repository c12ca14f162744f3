"""Real speech for voiceprint tests: Debian's flite voices, each built from a different speaker's
recordings (kal, awb, rms: male; slt: female), saying sentences the tests pick."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from functools import cache

import numpy as np
import pytest

VOICES = ("kal", "awb", "rms", "slt")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the bank opens a new account for the customer today.",
    "Please confirm that you understand the risks of this investment product and agree to the terms.",
    "My name is on the application form and I was born in the city where I still live with my family.",
    "I would like to transfer some money from my savings account to my daughter who studies abroad.",
)


@cache
def flite_wav(voice: str, text: str) -> bytes:
    """A WAV file of `voice` saying `text` (16 kHz mono, kal 8 kHz)."""
    if shutil.which("flite") is None:
        pytest.fail("flite is missing: `make system-deps` installs it")
    done = subprocess.run(["flite", "-voice", voice, "-t", text, "-o", "/dev/stdout"],
                          capture_output=True, check=True, timeout=60)
    return done.stdout


def pcm(data: bytes) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono WAV."""
    with wave.open(io.BytesIO(data)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), np.int16)
    return samples, rate


def speech(voice: str, *sentences: int) -> tuple[np.ndarray, int]:
    """`voice` saying the given sentences, one after the other."""
    parts = [pcm(flite_wav(voice, SENTENCES[i])) for i in sentences]
    return np.concatenate([p for p, _ in parts]), parts[0][1]
