"""Synthesized speech for compliance tests: Debian flite voices, which pocketsphinx recognizes."""

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


def synthesize(text: str, folder: Path, voice: str = "slt") -> NDArray[np.int16]:
    """16 kHz mono int16 speech for `text` (the slt/rms/awb voices are 16 kHz)."""
    if FLITE is None:
        raise RuntimeError("Debian flite is required: apt-get install flite")
    index = len(list(folder.glob("*.wav")))
    path = folder / f"utt{index}.wav"
    subprocess.run([FLITE, "-voice", voice, "-t", text, "-o", str(path)], check=True, timeout=30)
    with wave.open(str(path)) as handle:
        assert handle.getframerate() == 16000 and handle.getnchannels() == 1
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16).copy()


def silence(seconds: float) -> NDArray[np.int16]:
    return np.zeros(int(16000 * seconds), dtype=np.int16)


def to_48k_stereo(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    """Resample with libswresample, as a real 48 kHz stereo Opus track would carry it."""
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    frame.time_base = Fraction(1, 16000)
    frame.pts = 0
    parts = [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(frame)]
    parts += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16)


def opus_round_trip(stereo: NDArray[np.int16]) -> NDArray[np.int16]:
    """Encode 48 kHz stereo with libopus and decode it again (the WebRTC path's codec)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "stereo"
    encoder.format = av.AudioFormat("s16")
    encoder.bit_rate = 32000
    encoder.open()
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate = 48000
    decoder.layout = "stereo"
    decoder.open()
    out: list[NDArray[np.int16]] = []
    step = 960
    for start in range(0, len(stereo) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[start : start + step]).reshape(1, -1),
            format="s16", layout="stereo",
        )
        frame.sample_rate = 48000
        frame.pts = start
        frame.time_base = Fraction(1, 48000)
        for packet in encoder.encode(frame):
            for decoded in decoder.decode(packet):
                out.append(_interleaved(decoded))
    for packet in encoder.encode(None):
        for decoded in decoder.decode(packet):
            out.append(_interleaved(decoded))
    return np.concatenate(out)


def _interleaved(frame: av.AudioFrame) -> NDArray[np.int16]:
    array = frame.to_ndarray()
    array = array.T if frame.format.is_planar else array.reshape(-1, 2)
    if array.dtype != np.int16:
        array = np.clip(array * 32768.0, -32768, 32767)
    return np.ascontiguousarray(array.astype(np.int16))


def chunks(stereo: NDArray[np.int16], start_time: float = 0.0) -> list[AudioChunk]:
    """20 ms AudioChunks as the track pipeline hands them to hooks."""
    step = 960
    result = []
    for index, offset in enumerate(range(0, len(stereo) - step + 1, step)):
        result.append(
            AudioChunk(
                samples=stereo[offset : offset + step],
                sample_rate=48000,
                media_time=start_time + offset / 48000,
                wall_clock=0.0,
                index=index,
            )
        )
    return result
