"""The audio tap: an observer hook that feeds a track's speech to the recognizer.

It is not configured in YAML: a room whose policy names a script creates one per audio track
through `ComplianceMonitor.tap_provider` (same shape as `finrtc.hooks.chain.HookFactory`).

Failure policy: FAIL_OPEN at the chain level, because a broken speech feed does not make the
*recording* untrustworthy — but it makes the script check unverifiable, so the tap itself tells
the session, which raises an ALERT event and marks the report as not verifiable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from finrtc.compliance.metrics import TAP_FAILURES
from finrtc.compliance.recognizer import SAMPLE_RATE
from finrtc.compliance.workers import BLOCK_SECONDS
from finrtc.hooks.chain import HookFactory
from finrtc.hooks.contract import AudioChunk, EventEmitter, FailurePolicy, Hook, HookContext, NoOptions, Stage
from finrtc.model import MediaKind, TrackInfo

TAP_NAME = "compliance_audio_tap"
TAP_POSITION = 1_000_000

# A 31-tap windowed-sinc low-pass at 7 kHz for 48 kHz input: enough to keep aliasing out of the
# 0-8 kHz band the recognizer looks at, at ~40 µs per 20 ms chunk.
_TAPS = 31


def _lowpass(cutoff_hz: float, rate: int) -> NDArray[np.float32]:
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    kernel = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(_TAPS)
    normalized: NDArray[np.float32] = (kernel / kernel.sum()).astype(np.float32)
    return normalized


class Downsampler:
    """Stereo (or mono) int16 at an integer multiple of 16 kHz -> 16 kHz mono int16, streaming."""

    def __init__(self, input_rate: int) -> None:
        if input_rate % SAMPLE_RATE:
            raise ValueError(f"input rate {input_rate} is not a multiple of {SAMPLE_RATE} Hz")
        self.input_rate = input_rate
        self.factor = input_rate // SAMPLE_RATE
        self._kernel = _lowpass(7000.0, input_rate) if self.factor > 1 else None
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)
        # Input samples consumed modulo the decimation factor (keeps phase across chunks).
        self._phase = 0

    def process(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        floats = samples.astype(np.float32)
        mono = floats.mean(axis=1) if floats.ndim == 2 else floats
        if self._kernel is None:
            passthrough: NDArray[np.int16] = np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
            return passthrough
        padded = np.concatenate([self._history, mono])
        filtered = np.convolve(padded, self._kernel, mode="valid")
        self._history = padded[-(_TAPS - 1):]
        start = (-self._phase) % self.factor
        out = filtered[start :: self.factor]
        self._phase = (self._phase + len(mono)) % self.factor
        result: NDArray[np.int16] = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return result


class TapTarget(Protocol):
    """What the tap feeds: implemented by ComplianceMonitor's per-track stream."""

    def feed(self, pcm: bytes, media_time: float) -> bool: ...

    def tap_failed(self, reason: str, media_time: float) -> None: ...

    def close(self) -> None: ...


def _no_target(track: TrackInfo) -> TapTarget | None:
    del track
    return None


class AudioTap(Hook):
    name: ClassVar[str] = TAP_NAME
    kinds: ClassVar[frozenset[MediaKind]] = frozenset({MediaKind.AUDIO})
    stage: ClassVar[Stage] = Stage.OBSERVE
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy.FAIL_OPEN
    budget_ms: ClassVar[float] = 1.0

    def __init__(
        self, options: BaseModel, context: HookContext, target: TapTarget | None = None
    ) -> None:
        super().__init__(options, context)
        self._target = target
        self._downsampler: Downsampler | None = None
        self._blocks: list[NDArray[np.int16]] = []
        self._block_samples = 0
        self._block_start = 0.0
        self._block_size = int(SAMPLE_RATE * BLOCK_SECONDS)
        self._failed = False

    def process_audio(self, chunk: AudioChunk) -> None:
        if self._target is None or self._failed:
            return
        try:
            if self._downsampler is None or self._downsampler.input_rate != chunk.sample_rate:
                self._downsampler = Downsampler(chunk.sample_rate)
            pcm = self._downsampler.process(chunk.samples)
        except Exception as error:
            TAP_FAILURES.inc()
            self._failed = True
            self._target.tap_failed(f"{type(error).__name__}: {error}", chunk.media_time)
            raise
        if not self._blocks:
            self._block_start = chunk.media_time
        self._blocks.append(pcm)
        self._block_samples += len(pcm)
        # Batch ~100 ms per message: per-message IPC cost dominates at 20 ms chunks.
        if self._block_samples >= self._block_size:
            self._send()

    def _send(self) -> None:
        if self._target is None or not self._blocks:
            return
        block = np.concatenate(self._blocks)
        self._blocks = []
        self._block_samples = 0
        self._target.feed(block.tobytes(), self._block_start)

    def close(self) -> None:
        if self._target is None:
            return
        self._send()
        self._target.close()
        self._target = None


@dataclass(frozen=True)
class TapProvider(HookFactory):
    """Hook factory for the chain: one AudioTap per audio track of a compliance room.

    A HookFactory subclass, so it goes into the same factory list the chain takes; it sorts
    after YAML hooks (observers see the final, post-mutation audio anyway).
    """

    open_target: Callable[[TrackInfo], TapTarget | None] = _no_target

    def create(self, track: TrackInfo, emit: EventEmitter) -> Hook:
        return AudioTap(NoOptions(), HookContext(track, TAP_NAME, emit), self.open_target(track))


def tap_provider(open_target: Callable[[TrackInfo], TapTarget | None]) -> TapProvider:
    return TapProvider(AudioTap, NoOptions(), TAP_POSITION, open_target)
