"""Example mutator hook: pixelates a configured region of every video frame.

Use it to hide a part of a shared screen (an account number panel, a customer list) before the
frame is encoded, so neither subscribers nor the archive ever receive it. The region is given
as fractions of the frame, so it follows resolution changes.

YAML:
    hooks:
      - use: hooks/region_blur.py:RegionBlur
        options: {left: 0.6, top: 0.0, width: 0.4, height: 0.25, block: 16}
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from finrtc.hooks.contract import (
    FailurePolicy,
    Hook,
    MediaKind,
    Stage,
    VideoFrame,
)


class RegionBlurOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    left: float = Field(ge=0.0, lt=1.0)
    top: float = Field(ge=0.0, lt=1.0)
    width: float = Field(gt=0.0, le=1.0)
    height: float = Field(gt=0.0, le=1.0)
    # Side of the pixelation blocks in luma pixels (even, so chroma blocks line up).
    block: int = Field(default=16, ge=2, le=128, multiple_of=2)

    @model_validator(mode="after")
    def _inside_frame(self) -> RegionBlurOptions:
        if self.left + self.width > 1.0 or self.top + self.height > 1.0:
            raise ValueError("the region must lie inside the frame: left + width <= 1, top + height <= 1")
        return self


def pixelate(plane: NDArray[np.uint8], top: int, left: int, rows: int, cols: int, block: int) -> None:
    """Replaces each block of the region by its mean, in place (region trimmed to whole blocks)."""
    rows -= rows % block
    cols -= cols % block
    if rows <= 0 or cols <= 0:
        return
    region = plane[top : top + rows, left : left + cols]
    blocks = region.reshape(rows // block, block, cols // block, block)
    area = block * block
    # Integer sums with rounding: faster than a float mean on these strided 4-D views.
    means = (blocks.sum(axis=(1, 3), dtype=np.uint32) + area // 2) // area
    blocks[...] = means.astype(np.uint8)[:, None, :, None]


class RegionBlur(Hook):
    name = "region_blur"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.MUTATE
    # Redaction protects data: if it fails, the recording may hold what it should not.
    failure_policy = FailurePolicy.FAIL_CLOSED
    budget_ms = 2.0
    options_model = RegionBlurOptions
    options: RegionBlurOptions

    def process_video(self, frame: VideoFrame) -> None:
        options = self.options
        block = options.block
        # Even, block-aligned luma coordinates keep the chroma region exactly half of it.
        top = int(options.top * frame.height) & ~1
        left = int(options.left * frame.width) & ~1
        rows = min(int(options.height * frame.height), frame.height - top) & ~1
        cols = min(int(options.width * frame.width), frame.width - left) & ~1
        pixelate(frame.y, top, left, rows, cols, block)
        pixelate(frame.u, top // 2, left // 2, rows // 2, cols // 2, block // 2)
        pixelate(frame.v, top // 2, left // 2, rows // 2, cols // 2, block // 2)
