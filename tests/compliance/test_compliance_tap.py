"""The audio tap's conversion: 48 kHz stereo int16 -> 16 kHz mono int16, streaming."""

from __future__ import annotations

import time

import numpy as np
import pytest

from finrtc.compliance.tap import AudioTap, Downsampler, tap_provider
from finrtc.hooks.contract import AudioChunk, FailurePolicy, Stage
from finrtc.model import MediaKind, Role, TrackInfo

TRACK = TrackInfo("r", "s", "alice", Role.AGENT, "t1", MediaKind.AUDIO)


def tone(frequency: float, seconds: float, rate: int = 48000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = (10000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    return np.stack([mono, mono], axis=1)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def test_downsampler_keeps_speech_band_and_rejects_aliases() -> None:
    downsampler = Downsampler(48000)
    stereo = tone(1000.0, 1.0)
    out = np.concatenate([downsampler.process(stereo[i : i + 960]) for i in range(0, 48000, 960)])
    assert out.dtype == np.int16 and len(out) == 16000
    assert dominant_frequency(out, 16000) == pytest.approx(1000.0, abs=5)
    assert 0.8 * 10000 < np.abs(out[1000:]).max() <= 10001
    # 15 kHz would alias to 1 kHz without the low-pass filter.
    aliased = Downsampler(48000)
    high = np.concatenate(
        [aliased.process(chunk) for chunk in np.split(tone(15000.0, 0.5), 25)]
    )
    assert np.abs(high[200:]).max() < 800


def test_downsampler_is_phase_continuous_with_odd_chunk_sizes() -> None:
    stereo = tone(440.0, 0.5)
    whole = Downsampler(48000).process(stereo)
    pieces = Downsampler(48000)
    split = np.concatenate([pieces.process(part) for part in np.array_split(stereo, 37)])
    assert np.array_equal(whole, split)


def test_downsampler_rates() -> None:
    assert len(Downsampler(16000).process(tone(300.0, 0.1, 16000))) == 1600
    assert len(Downsampler(32000).process(tone(300.0, 0.1, 32000))) == 1600
    with pytest.raises(ValueError, match="multiple of 16000"):
        Downsampler(44100)


def test_conversion_is_cheap() -> None:
    downsampler = Downsampler(48000)
    chunk = tone(300.0, 0.02)
    started = time.perf_counter()
    for _ in range(500):
        downsampler.process(chunk)
    assert (time.perf_counter() - started) / 500 < 0.001


class Target:
    def __init__(self) -> None:
        self.blocks: list[tuple[bytes, float]] = []
        self.failures: list[str] = []
        self.closed = False

    def feed(self, pcm: bytes, media_time: float) -> bool:
        self.blocks.append((pcm, media_time))
        return True

    def tap_failed(self, reason: str, media_time: float) -> None:
        self.failures.append(reason)

    def close(self) -> None:
        self.closed = True


def test_tap_batches_blocks_and_reports_failures() -> None:
    assert AudioTap.stage is Stage.OBSERVE and AudioTap.kinds == frozenset({MediaKind.AUDIO})
    assert AudioTap.failure_policy is FailurePolicy.FAIL_OPEN
    target = Target()
    provider = tap_provider(lambda track: target)
    tap = provider.create(TRACK, lambda event: None)
    stereo = tone(300.0, 0.5)
    for index in range(25):
        chunk = AudioChunk(stereo[index * 960 : (index + 1) * 960], 48000, 3.0 + index * 0.02,
                           0.0, index)
        tap.process_audio(chunk.read_only())
    tap.close()
    assert target.closed
    assert [round(media_time, 2) for _, media_time in target.blocks] == [3.0, 3.1, 3.2, 3.3, 3.4]
    assert sum(len(pcm) for pcm, _ in target.blocks) == 2 * 8000

    broken = Target()
    tap = tap_provider(lambda track: broken).create(TRACK, lambda event: None)
    with pytest.raises(ValueError):
        tap.process_audio(AudioChunk(tone(300.0, 0.02, 44100), 44100, 0.0, 0.0, 0))
    assert broken.failures and "44100" in broken.failures[0]
    tap.process_audio(AudioChunk(tone(300.0, 0.02), 48000, 0.0, 0.0, 1))  # stays quiet after
    assert broken.blocks == []


def test_provider_plugs_into_the_hook_chain() -> None:
    from finrtc.hooks.chain import HookChain, HookFactory

    target = Target()
    provider = tap_provider(lambda track: target)
    assert isinstance(provider, HookFactory)
    assert provider.name == "compliance_audio_tap" and provider.handles(MediaKind.AUDIO)
    chain = HookChain(TRACK, [provider], lambda event: None)
    assert chain.hook_names == ["compliance_audio_tap"]
    stereo = tone(300.0, 0.2)
    for index in range(10):
        chain.run_audio(AudioChunk(stereo[index * 960 : (index + 1) * 960], 48000,
                                   index * 0.02, 0.0, index))
    chain.close()
    assert target.closed and sum(len(pcm) for pcm, _ in target.blocks) == 2 * 3200
    video = TrackInfo("r", "s", "alice", Role.AGENT, "v1", MediaKind.VIDEO)
    assert HookChain(video, [provider], lambda event: None).empty
