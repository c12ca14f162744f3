"""Test and benchmark helpers: a synthetic head from a real face picture, warped to turn
left/right, eyes closed to blink. Needs scikit-image (a dev dependency) for the picture.

The astronaut (scikit-image's packaged portrait) is letterboxed into 640x480. Turning shifts
the middle of the face sideways while its outline stays (a cosine displacement field, like a
head rotating about its vertical axis seen from the front); a blink paints both eyes over
with the skin just below them and draws the closed lid line.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
from numpy.typing import NDArray

from finrtc.identity.models import FaceModels, Landmarks

Picture = NDArray[np.uint8]

WIDTH, HEIGHT = 640, 480


def letterbox(rgb: Picture, width: int = WIDTH, height: int = HEIGHT) -> Picture:
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    resized = np.asarray(
        cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    canvas = np.full((height, width, 3), 40, np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


@cache
def base_head() -> tuple[Picture, Landmarks]:
    """(640x480 RGB astronaut, its 68 landmarks)."""
    import skimage.data

    rgb = letterbox(np.asarray(skimage.data.astronaut(), dtype=np.uint8))  # type: ignore[no-untyped-call]
    models = FaceModels()
    gray = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    box = models.detect(gray)[0]
    points, _ = models.landmarks(gray, box)
    return rgb, points


def turned(amount: float) -> Picture:
    """amount > 0: the face's middle moves to the picture's right (the person's left)."""
    rgb, points = base_head()
    left, right = points[0, 0], points[16, 0]
    top, bottom = points[19, 1] - 30, points[8, 1] + 10
    cx, half = (left + right) / 2, (right - left) / 2 * 1.05
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    inside = (np.abs(xs - cx) < half) & (ys > top) & (ys < bottom)
    shift = amount * half * np.cos(np.pi / 2 * (xs - cx) / half) * inside
    return np.asarray(cv2.remap(rgb, xs - shift.astype(np.float32), ys, cv2.INTER_LINEAR), dtype=np.uint8)


def eyes_closed(rgb: Picture | None = None) -> Picture:
    base, points = base_head()
    picture = (base if rgb is None else rgb).copy()
    for first in (36, 42):
        eye = points[first : first + 6].astype(np.int32)
        x0, y0 = eye.min(axis=0) - 4
        x1, y1 = eye.max(axis=0) + 4
        height = y1 - y0
        skin = picture[y1 + 2 : y1 + 2 + height, x0:x1]
        picture[y0:y1, x0:x1] = cv2.resize(skin, (x1 - x0, y1 - y0))
        middle = (y0 + y1) // 2 + 2
        cv2.line(picture, (int(eye[0, 0]), middle), (int(eye[3, 0]), middle), (60, 40, 40), 2)
    return picture


def portrait(rgb: Picture) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()
