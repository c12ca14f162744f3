"""Example observer hook: counts frames (or audio chunks) and reports every N of them.

YAML:
    hooks:
      - use: hooks/frame_counter.py:FrameCounter      # or hooks.frame_counter:FrameCounter
        options: {every: 300}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from finrtc.hooks.contract import (
    AudioChunk,
    FailurePolicy,
    Hook,
    HookContext,
    MediaKind,
    Stage,
    VideoFrame,
)


class FrameCounterOptions(BaseModel):
    # Strict and closed, like finrtc's own config: a typo in YAML is a start-up error.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    every: int = Field(default=300, ge=1, le=1_000_000)


class FrameCounter(Hook):
    name = "frame_counter"
    kinds = frozenset({MediaKind.VIDEO, MediaKind.AUDIO})
    stage = Stage.OBSERVE
    # Counting is an enhancement: if it breaks, media and recording go on.
    failure_policy = FailurePolicy.FAIL_OPEN
    budget_ms = 0.2
    options_model = FrameCounterOptions
    options: FrameCounterOptions

    def __init__(self, options: BaseModel, context: HookContext) -> None:
        super().__init__(options, context)
        self._every = self.options.every
        self.count = 0

    def process_video(self, frame: VideoFrame) -> None:
        self._count(frame.media_time, {"width": frame.width, "height": frame.height})

    def process_audio(self, chunk: AudioChunk) -> None:
        self._count(chunk.media_time, {"sample_rate": chunk.sample_rate, "channels": chunk.channels})

    def _count(self, media_time: float, details: dict[str, int]) -> None:
        self.count += 1
        if self.count % self._every == 0:
            # Events are cheap and non-blocking: the chain's emitter queues them.
            self.context.emit("frames_counted", media_time, {"count": self.count, **details})
