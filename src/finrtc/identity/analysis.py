"""What one sampled frame says about the face in it: box, landmarks, measures, embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from finrtc.identity.measures import FaceMeasures, measure
from finrtc.identity.models import FaceBox, FaceModels

# The tracked face is searched in a window this many face widths around its last box, scaled so
# the face is ~TRACK_FACE_PX wide: HOG's 80 px window then sees it at no upsampling cost.
TRACK_MARGIN = 0.7
TRACK_FACE_PX = 110.0


@dataclass(frozen=True, slots=True)
class Observation:
    box: FaceBox | None
    measures: FaceMeasures | None
    embedding: NDArray[np.float64] | None
    faces: int
    cpu_s: float
    landmark_cpu_s: float
    embedding_cpu_s: float


def _resize(picture: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    import cv2

    return np.asarray(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


class FaceAnalyzer:
    """Per-track analysis state (the last face box, for tracking); runs on the analysis thread."""

    def __init__(self, models: FaceModels) -> None:
        self._models = models
        self._last: FaceBox | None = None

    def _find(self, luma: NDArray[np.uint8]) -> tuple[FaceBox | None, int]:
        height, width = luma.shape
        last = self._last
        if last is not None and last.width > 0:
            margin = int(last.width * TRACK_MARGIN)
            left, top = max(0, last.left - margin), max(0, last.top - margin)
            right, bottom = min(width, last.right + margin), min(height, last.bottom + margin)
            scale = min(1.0, TRACK_FACE_PX / last.width)
            window = luma[top:bottom, left:right]
            if window.size and scale < 1.0:
                size = (max(1, int(window.shape[1] * scale)), max(1, int(window.shape[0] * scale)))
                window = _resize(window, *size)
            found = self._models.detect(window) if window.size else []
            if found:
                box = found[0]
                return (
                    FaceBox(
                        left + int(box.left / scale),
                        top + int(box.top / scale),
                        left + int(box.right / scale),
                        top + int(box.bottom / scale),
                    ),
                    len(found),
                )
        found = self._models.detect(luma if width <= 640 else _resize(luma, 640, int(height * 640 / width)))
        if found and width > 640:
            factor = width / 640
            found = [
                FaceBox(
                    int(b.left * factor), int(b.top * factor), int(b.right * factor), int(b.bottom * factor)
                )
                for b in found
            ]
        return (found[0] if found else None), len(found)

    def analyze(
        self,
        luma: NDArray[np.uint8],
        rgb: NDArray[np.uint8] | None,
    ) -> Observation:
        """Landmarks of the largest face in `luma`; its embedding too when `rgb` is given."""
        started = time.thread_time()
        box, faces = self._find(luma)
        self._last = box
        if box is None:
            return Observation(None, None, None, 0, time.thread_time() - started, 0.0, 0.0)
        marked = time.thread_time()
        points, shape = self._models.landmarks(luma, box)
        landmark_cost = time.thread_time() - marked
        measures = measure(points)
        embedding = None
        embed_cost = 0.0
        if rgb is not None:
            marked = time.thread_time()
            embedding = self._models.embed(rgb, shape)
            embed_cost = time.thread_time() - marked
        return Observation(
            box, measures, embedding, faces, time.thread_time() - started, landmark_cost, embed_cost
        )


def rgb_from_yuv420(y: NDArray[np.uint8], u: NDArray[np.uint8], v: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2

    height, width = y.shape
    stacked = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(height * 3 // 2, width)
    return np.asarray(cv2.cvtColor(stacked, cv2.COLOR_YUV2RGB_I420), dtype=np.uint8)
