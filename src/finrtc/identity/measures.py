"""Geometry of a face from its 68 landmarks: eye opening, mouth opening, head yaw and pitch.

Index layout is the iBUG 300-W one dlib's predictor uses: jaw 0-16, nose 27-35, eyes 36-47,
inner lips 60-67. Every measure is a ratio of distances, so it does not depend on face size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finrtc.identity.models import Landmarks


@dataclass(frozen=True, slots=True)
class FaceMeasures:
    # Eye aspect ratio (Soukupová & Čech 2016), mean of both eyes: ~0.25-0.35 open, <0.15 closed.
    eye_openness: float
    # Inner-lip height over width: ~0-0.1 closed, >0.35 wide open.
    mouth_openness: float
    # Nose tip offset from the jaw's midline, in half jaw widths: 0 frontal, >0 the nose moved to
    # the picture's right (the person turned to their left, camera not mirrored).
    yaw: float
    # Nose tip height between the eye line (0) and the chin (1); nodding moves it.
    pitch: float

    def to_json(self) -> dict[str, float]:
        return {
            "eye_openness": round(self.eye_openness, 3),
            "mouth_openness": round(self.mouth_openness, 3),
            "yaw": round(self.yaw, 3),
            "pitch": round(self.pitch, 3),
        }


def _span(points: Landmarks, a: int, b: int) -> float:
    return float(np.linalg.norm(points[a] - points[b]))


def _eye_aspect_ratio(points: Landmarks, first: int) -> float:
    p = [first + i for i in range(6)]
    width = _span(points, p[0], p[3])
    if width <= 0:
        return 0.0
    return (_span(points, p[1], p[5]) + _span(points, p[2], p[4])) / (2.0 * width)


def measure(points: Landmarks) -> FaceMeasures:
    eyes = (_eye_aspect_ratio(points, 36) + _eye_aspect_ratio(points, 42)) / 2.0
    mouth_width = _span(points, 60, 64)
    mouth = (
        (_span(points, 61, 67) + _span(points, 62, 66) + _span(points, 63, 65)) / (3.0 * mouth_width)
        if mouth_width > 0
        else 0.0
    )
    left_jaw, right_jaw, nose = points[0], points[16], points[30]
    half_width = max(1.0, float(right_jaw[0] - left_jaw[0]) / 2.0)
    yaw = (float(nose[0]) - float(left_jaw[0] + right_jaw[0]) / 2.0) / half_width
    eye_line = float(points[36:48, 1].mean())
    chin = float(points[8, 1])
    pitch = (float(nose[1]) - eye_line) / max(1.0, chin - eye_line)
    return FaceMeasures(eyes, mouth, yaw, pitch)
