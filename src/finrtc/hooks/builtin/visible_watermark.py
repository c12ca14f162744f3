"""Visible watermark: UTC time (ms), room and participant stamped onto every forwarded frame.

Drawn straight into the Y plane (and neutral chroma under the box) so no colour conversion is
needed: about 10-30 µs per 640x480 frame instead of ~2 ms for a BGR round trip.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from finrtc.hooks.builtin.bitmap_font import render_text, text_size
from finrtc.hooks.contract import FailurePolicy, Hook, HookContext, Stage, VideoFrame
from finrtc.model import MediaKind

MARGIN = 4
LINE_GAP = 3


class VisibleWatermarkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Glyph scale in pixels per font pixel; 0 chooses by frame height (1 below 360 p).
    scale: int = Field(default=0, ge=0, le=8)
    position: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = "top_left"
    show_role: bool = True


def watermark_lines(
    room: str, participant: str, role: str, wall_clock: float, show_role: bool
) -> tuple[str, str]:
    seconds = int(wall_clock)
    millis = int((wall_clock - seconds) * 1000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    who = f"{role} {participant}" if show_role else participant
    return stamp, f"{room} | {who}"


def layout(
    width: int, height: int, lines: tuple[str, ...], scale: int, position: str
) -> tuple[int, int, int, int]:
    """Box (top, left, box_height, box_width) for `lines`, clipped to the frame."""
    line_sizes = [text_size(line, scale) for line in lines]
    box_w = min(width, max(w for w, _ in line_sizes) + 2 * MARGIN)
    box_h = min(height, sum(h for _, h in line_sizes) + LINE_GAP * (len(lines) - 1) + 2 * MARGIN)
    top = 0 if position.startswith("top") else height - box_h
    left = 0 if position.endswith("left") else width - box_w
    # Chroma planes are subsampled by two: keep the box on even coordinates.
    return top & ~1, left & ~1, box_h, box_w


def auto_scale(height: int) -> int:
    return 1 if height < 360 else 2 if height < 900 else 3


class VisibleWatermark(Hook):
    name = "visible_watermark"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.MUTATE
    # Forwarding video without the stamp would show unlabelled footage: treat as compliance.
    failure_policy = FailurePolicy.FAIL_CLOSED
    budget_ms = 0.5
    options_model = VisibleWatermarkOptions
    options: VisibleWatermarkOptions

    def __init__(self, options: BaseModel, context: HookContext) -> None:
        super().__init__(options, context)
        track = context.track
        self._identity_line = watermark_lines(
            track.room, track.participant, track.role.value, 0.0, self.options.show_role
        )[1]

    def process_video(self, frame: VideoFrame) -> None:
        options = self.options
        scale = options.scale or auto_scale(frame.height)
        stamp, _ = watermark_lines("", "", "", frame.wall_clock, False)
        lines = (stamp, self._identity_line)
        top, left, box_h, box_w = layout(frame.width, frame.height, lines, scale, options.position)
        y = frame.y
        # A dark box with white text reads on any background.
        y[top : top + box_h, left : left + box_w] = 16
        frame.u[top // 2 : (top + box_h + 1) // 2, left // 2 : (left + box_w + 1) // 2] = 128
        frame.v[top // 2 : (top + box_h + 1) // 2, left // 2 : (left + box_w + 1) // 2] = 128
        row = top + MARGIN
        for line in lines:
            mask = render_text(line, scale)
            mask_h = min(mask.shape[0], top + box_h - row)
            mask_w = min(mask.shape[1], left + box_w - MARGIN - (left + MARGIN))
            if mask_h <= 0 or mask_w <= 0:
                break
            region = y[row : row + mask_h, left + MARGIN : left + MARGIN + mask_w]
            np.putmask(region, mask[:mask_h, :mask_w], 235)
            row += mask.shape[0] + LINE_GAP
