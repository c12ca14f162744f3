"""The hook contract: what a hook declares, what it receives, and how it reports.

A hook is small, synchronous and CPU-bound. The chain calls it from a worker thread, never from
the event loop, once per decoded video frame / audio chunk (pre-encode stages) or per encoded
packet (post-encode stage). Anything that does I/O belongs in an async sink behind a bounded queue
(see `finrtc.sinks`); a hook only hands data to such a sink without waiting.

Versioning: a hook declares the `api_version` it was written for; the loader refuses a hook whose
major version differs from `HOOK_API_VERSION`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from finrtc.errors import HookError

# The server's core vocabulary lives in finrtc.model; it is re-exported here so that a plug-in
# written against this contract imports everything it needs from one module.
from finrtc.model import EncodedPacket, MediaKind, Role, Severity, TrackInfo

HOOK_API_VERSION = 1

__all__ = [
    "HOOK_API_VERSION",
    "AudioChunk",
    "EncodedPacket",
    "EventEmitter",
    "FailurePolicy",
    "Hook",
    "HookContext",
    "HookEvent",
    "MediaKind",
    "NoOptions",
    "Role",
    "Severity",
    "Stage",
    "TrackInfo",
    "VideoFrame",
]


class Stage(enum.StrEnum):
    # May change pixels / samples in place. Runs first, in YAML order.
    MUTATE = "mutate"
    # Sees a read-only view of the final (post-mutation) frame. Runs after every mutator.
    OBSERVE = "observe"
    # Sees each encoded packet exactly as subscribers and the archive get it.
    POST_ENCODE = "post_encode"


class FailurePolicy(enum.StrEnum):
    # Compliance hooks: a failure compromises the recording (alert, recording marked compromised).
    FAIL_CLOSED = "fail_closed"
    # Enhancement hooks: a failure is counted and logged; media goes on unchanged.
    FAIL_OPEN = "fail_open"


@dataclass(slots=True)
class VideoFrame:
    """A decoded yuv420p picture as numpy views on the frame's own planes (no copies).

    Mutators may write into `y`, `u`, `v`; observers receive read-only views.
    """

    y: NDArray[np.uint8]
    u: NDArray[np.uint8]
    v: NDArray[np.uint8]
    width: int
    height: int
    # Seconds since the track started (from the RTP clock), and the server's UTC wall-clock.
    media_time: float
    wall_clock: float
    index: int

    def read_only(self) -> VideoFrame:
        views = []
        for plane in (self.y, self.u, self.v):
            view = plane.view()
            view.flags.writeable = False
            views.append(view)
        return VideoFrame(
            views[0],
            views[1],
            views[2],
            self.width,
            self.height,
            self.media_time,
            self.wall_clock,
            self.index,
        )


@dataclass(slots=True)
class AudioChunk:
    """Decoded PCM: int16 samples shaped (samples, channels), usually 20 ms at 48 kHz."""

    samples: NDArray[np.int16]
    sample_rate: int
    media_time: float
    wall_clock: float
    index: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    def read_only(self) -> AudioChunk:
        view = self.samples.view()
        view.flags.writeable = False
        return AudioChunk(view, self.sample_rate, self.media_time, self.wall_clock, self.index)


@dataclass(frozen=True, slots=True)
class HookEvent:
    """A typed event a hook emits; it reaches the room's event stream and the archive's chain."""

    type: str
    hook: str
    track: TrackInfo
    media_time: float
    severity: Severity = Severity.INFO
    data: Mapping[str, Any] = field(default_factory=dict)
    wall_clock: float = field(default_factory=time.time)


EventEmitter = Callable[[HookEvent], None]


class HookContext:
    """What a hook instance may use: its track, its options, and an event emitter."""

    def __init__(self, track: TrackInfo, hook_name: str, emit: EventEmitter) -> None:
        self.track = track
        self.hook_name = hook_name
        self._emit = emit

    def emit(
        self,
        event_type: str,
        media_time: float,
        data: Mapping[str, Any] | None = None,
        severity: Severity = Severity.INFO,
    ) -> None:
        self._emit(
            HookEvent(
                type=event_type,
                hook=self.hook_name,
                track=self.track,
                media_time=media_time,
                severity=severity,
                data=dict(data or {}),
            )
        )


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Hook:
    """Base class of every hook. Subclasses set the class attributes and override one process_*.

    One instance is created per published track that matches `kinds`, so a hook may keep
    per-track state in `self`. The constructor receives the options (already validated against
    `options_model`) and the context; a subclass narrows the type with an annotation:
    `options: MyOptions`.
    """

    name: ClassVar[str]
    kinds: ClassVar[frozenset[MediaKind]]
    stage: ClassVar[Stage]
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy.FAIL_OPEN
    # Per-call budget; overruns are counted (finrtc_hook_budget_overruns_total) and logged.
    budget_ms: ClassVar[float] = 2.0
    api_version: ClassVar[int] = HOOK_API_VERSION
    options_model: ClassVar[type[BaseModel]] = NoOptions

    options: BaseModel

    def __init__(self, options: BaseModel, context: HookContext) -> None:
        if not isinstance(options, self.options_model):
            raise HookError(
                f"hook {self.name!r} expects {self.options_model.__name__} options, "
                f"got {type(options).__name__}"
            )
        self.options = options
        self.context = context

    def process_video(self, frame: VideoFrame) -> None:
        raise NotImplementedError(f"{self.name} does not handle video")

    def process_audio(self, chunk: AudioChunk) -> None:
        raise NotImplementedError(f"{self.name} does not handle audio")

    def process_packet(self, packet: EncodedPacket) -> None:
        raise NotImplementedError(f"{self.name} does not handle encoded packets")

    def close(self) -> None:
        """Called once when the track ends (from the worker thread). Release resources here."""
