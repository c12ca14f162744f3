"""Synthesized speech for testing scripts and recognizers, as a WebRTC call would carry it.

Debian flite voices (slt, rms, awb, kal16 speak at 16 kHz) say a script's phrases; the helpers
resample to 48 kHz stereo, run the Opus round trip of the WebRTC path, and cut 20 ms chunks as
the track pipeline hands them to hooks. Used by finrtc's tests and benchmarks, and by anyone
checking that a new script's phrasings are recognized before it goes live.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from finrtc.hooks.contract import AudioChunk

FLITE = shutil.which("flite")
SPEECH_RATE = 16000
CALL_RATE = 48000
CHUNK_SAMPLES = 960  # 20 ms at 48 kHz


def synthesize(text: str, folder: Path, voice: str = "slt") -> NDArray[np.int16]:
    """16 kHz mono int16 speech for `text`, written through a WAV file in `folder`."""
    if FLITE is None:
        raise RuntimeError("Debian flite is required to synthesize speech: apt-get install flite")
    path = folder / f"utt{len(list(folder.glob('*.wav')))}.wav"
    subprocess.run([FLITE, "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=60)
    with wave.open(str(path)) as handle:
        rate, channels = handle.getframerate(), handle.getnchannels()
        if rate != SPEECH_RATE or channels != 1:
            raise RuntimeError(f"flite voice {voice} gives {rate} Hz x {channels}; use a 16 kHz voice")
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16).copy()


def synthesize_espeak(
    text: str, folder: Path, voice: str = "cmn", speed: int = 150
) -> NDArray[np.int16]:
    """16 kHz mono int16 speech from Debian espeak-ng, for languages flite cannot speak
    (`cmn` Mandarin, `ko` Korean); espeak-ng speaks at 22.05 kHz, sox resamples."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if espeak is None or sox is None:
        raise RuntimeError("espeak-ng and sox are required: apt-get install espeak-ng sox")
    path = folder / f"espeak{len(list(folder.glob('espeak*.wav')))}.wav"
    subprocess.run(
        [espeak, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, timeout=60
    )
    raw = subprocess.run(
        [sox, str(path), "-t", "raw", "-r", str(SPEECH_RATE), "-c", "1", "-b", "16",
         "-e", "signed-integer", "-"],
        check=True, timeout=60, capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.int16).copy()


def silence(seconds: float) -> NDArray[np.int16]:
    return np.zeros(int(SPEECH_RATE * seconds), dtype=np.int16)


def to_48k_stereo(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    """16 kHz mono -> 48 kHz stereo with libswresample, as a real Opus track would carry it."""
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=CALL_RATE)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SPEECH_RATE
    frame.time_base = Fraction(1, SPEECH_RATE)
    frame.pts = 0
    outputs = [*resampler.resample(frame), *resampler.resample(None)]
    return np.concatenate([out.to_ndarray().reshape(-1, 2) for out in outputs]).astype(np.int16)


def opus_round_trip(stereo: NDArray[np.int16]) -> NDArray[np.int16]:
    """Encode 48 kHz stereo with libopus at 32 kb/s and decode it again (the WebRTC codec)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = CALL_RATE
    encoder.layout = "stereo"
    encoder.format = av.AudioFormat("s16")
    encoder.bit_rate = 32000
    encoder.open()
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = CALL_RATE
    decoder.layout = "stereo"
    decoder.open()
    out: list[NDArray[np.int16]] = []
    for start in range(0, len(stereo) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[start : start + CHUNK_SAMPLES]).reshape(1, -1),
            format="s16",
            layout="stereo",
        )
        frame.sample_rate = CALL_RATE
        frame.pts = start
        frame.time_base = Fraction(1, CALL_RATE)
        for packet in encoder.encode(frame):
            out += [_interleaved(decoded) for decoded in decoder.decode(packet)]
    for packet in encoder.encode(None):
        out += [_interleaved(decoded) for decoded in decoder.decode(packet)]
    return np.concatenate(out)


def _interleaved(frame: av.AudioFrame) -> NDArray[np.int16]:
    array = frame.to_ndarray()
    array = array.T if frame.format.is_planar else array.reshape(-1, 2)
    if array.dtype != np.int16:
        array = np.clip(array * 32768.0, -32768, 32767)
    return np.ascontiguousarray(array.astype(np.int16))


def chunks(stereo: NDArray[np.int16], start_time: float = 0.0) -> list[AudioChunk]:
    """20 ms AudioChunks as the track pipeline hands them to hooks."""
    return [
        AudioChunk(
            samples=stereo[offset : offset + CHUNK_SAMPLES],
            sample_rate=CALL_RATE,
            media_time=start_time + offset / CALL_RATE,
            wall_clock=0.0,
            index=index,
        )
        for index, offset in enumerate(range(0, len(stereo) - CHUNK_SAMPLES + 1, CHUNK_SAMPLES))
    ]
