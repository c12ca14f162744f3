"""Face presence: is someone in front of the camera, and only one person?

Runs OpenCV's Haar `alt2` frontal-face cascade (shipped inside opencv-python-headless 4.x, no
download) on a downscaled copy of the luma plane - which already is a grayscale picture - a few
times per second of media time. The hook is called on every frame but only samples when the
media clock reaches the next sampling time; if detection costs more than `max_cpu_share` of
the sampling interval, it samples less often and counts that in
`finrtc_face_detection_throttled_total`, so media is never held up.

Events (media time of the sampled frame): `face_present` (first face seen), `face_lost` (no face
for `lost_after_s`), `face_returned`, `multiple_faces` (two or more faces for
`multiple_after_s`), `multiple_faces_ended`.

Failure policy: fail open. Presence is evidence *about* the call, not the recording itself: a
detector crash leaves the media complete and sealed, and the chain's `hook_failed` event (also
sealed) records the gap in presence evidence. Failing closed would mark recordings compromised
because a statistical model misbehaved.

OpenCV is imported lazily: finrtc runs without it unless this hook is configured, and a missing
OpenCV is reported at start-up as an option error naming the hook.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, model_validator

from finrtc import metrics
from finrtc.hooks.contract import FailurePolicy, Hook, HookContext, Stage, VideoFrame
from finrtc.model import MediaKind, Severity
from finrtc.threads import background_thread_initializer

CASCADE_FILES = {
    "haar_alt2": "haarcascade_frontalface_alt2.xml",
    "haar_default": "haarcascade_frontalface_default.xml",
}
INSTALL_HINT = "install OpenCV 4.x with `pip install 'finrtc[faces]'` (opencv-python-headless<5)"

DETECTION_SECONDS = Histogram(
    "finrtc_face_detection_seconds",
    "CPU time of one face detection on a downscaled frame (single-threaded OpenCV).",
    buckets=metrics.FRAME_BUCKETS,
    registry=metrics.REGISTRY,
)
DETECTION_THROTTLED = Counter(
    "finrtc_face_detection_throttled_total",
    "Face detection samples taken later than the configured rate because detection was slow.",
    registry=metrics.REGISTRY,
)
FACE_EVENTS = Counter(
    "finrtc_face_events_total",
    "Face presence events emitted, by type.",
    ["type"],
    registry=metrics.REGISTRY,
)


def load_cascade(detector: str) -> Any:
    """A new CascadeClassifier (one per track: OpenCV classifiers are not shared across threads)."""
    try:
        import cv2
    except ImportError as error:
        raise ValueError(f"face_presence needs OpenCV ({error}); {INSTALL_HINT}") from None
    data = getattr(cv2, "data", None)
    directory = getattr(data, "haarcascades", None)
    if directory is None:
        raise ValueError(f"this OpenCV ({cv2.__version__}) ships no Haar cascades; {INSTALL_HINT}")
    classifier = cv2.CascadeClassifier(directory + CASCADE_FILES[detector])
    if classifier.empty():
        raise ValueError(f"OpenCV could not load {CASCADE_FILES[detector]} from {directory}; {INSTALL_HINT}")
    return classifier


class FacePresenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Detections per second of media time (the hook is called on every frame). 2 fps notices a
    # departure within `lost_after_s` and costs ~0.03 cores per 480p track (Haar at 320x240).
    sample_fps: float = Field(default=2.0, gt=0.0, le=15.0)
    # No face for this long -> `face_lost`.
    lost_after_s: float = Field(default=3.0, gt=0.0, le=3600.0)
    # Two or more faces for this long -> `multiple_faces` (filters one-off false detections).
    multiple_after_s: float = Field(default=1.0, ge=0.0, le=600.0)
    # Width of the downscaled copy the detector sees; height follows the aspect ratio.
    detect_width: int = Field(default=320, ge=96, le=1920)
    # Smallest face to report, as a fraction of the downscaled frame's height.
    min_face_fraction: float = Field(default=0.15, gt=0.0, le=1.0)
    # Detection may use at most this share of the sampling interval, else sampling slows down.
    max_cpu_share: float = Field(default=0.2, gt=0.0, le=1.0)
    detector: Literal["haar_alt2", "haar_default"] = "haar_alt2"
    # Detect on a background thread (OpenCV releases the GIL) so the media worker only pays for
    # a copy of the picture; results apply to the next frame. False detects inline (tests that
    # step media time by hand, tools without a live clock).
    background: bool = True

    @model_validator(mode="after")
    def _detector_available(self) -> FacePresenceOptions:
        # Fails at config load, not on the first frame, when OpenCV or its cascades are missing.
        load_cascade(self.detector)
        return self


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def detector_pool() -> ThreadPoolExecutor:
    """One detection thread for the process: detections of all tracks queue behind each other,
    and each hook keeps at most one in flight, so the queue is bounded by the number of tracks."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="finrtc-faces",
                # Detection may lag (it is sampled and fails open); frames may not.
                initializer=background_thread_initializer,
            )
        return _POOL


class FaceDetector:
    """Haar cascade face detection on a luma plane; returns face boxes in downscaled pixels."""

    def __init__(self, options: FacePresenceOptions) -> None:
        import cv2

        # OpenCV would otherwise spread each detection over every core, competing with the media
        # workers in bursts and making the detection's CPU cost unmeasurable from its own thread.
        # One thread keeps the cost on the thread that pays for it (see `detect_timed`).
        cv2.setNumThreads(1)
        self._cv2 = cv2
        self._classifier = load_cascade(options.detector)
        self._width = options.detect_width
        self._min_fraction = options.min_face_fraction
        # The first detection pays OpenCV's lazy initialisation; pay it here, not on a sample
        # whose cost would then throttle the sampling rate.
        self.detect(np.zeros((48, 64), dtype=np.uint8))

    def detect_timed(self, luma: NDArray[np.uint8]) -> tuple[int, float]:
        """Number of faces, and the CPU seconds the detection took on this thread.

        CPU time, not wall time: on a loaded machine a detection waiting for a core is not a
        detection that is too expensive, and must not slow sampling down.
        """
        started = time.thread_time()
        faces = len(self.detect(luma))
        return faces, time.thread_time() - started

    def detect(self, luma: NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        cv2 = self._cv2
        height, width = luma.shape
        target_w = min(self._width, width)
        target_h = max(1, round(height * target_w / width))
        small = cv2.resize(luma, (target_w, target_h), interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        min_side = max(16, int(target_h * self._min_fraction))
        boxes = self._classifier.detectMultiScale(
            small, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side)
        )
        return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]


class FacePresence(Hook):
    name = "face_presence"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.OBSERVE
    failure_policy = FailurePolicy.FAIL_OPEN
    # A sampled call copies the luma plane for the detection thread (~0.1 ms at 640x480); with
    # `background: false` it runs the detector itself (~15-25 ms at 320x240).
    budget_ms = 40.0
    options_model = FacePresenceOptions
    options: FacePresenceOptions

    def __init__(self, options: BaseModel, context: HookContext) -> None:
        super().__init__(options, context)
        self._detector = FaceDetector(self.options)
        self._interval = 1.0 / self.options.sample_fps
        self._next_sample: float | None = None
        self._cost_s = 0.0
        self._last_interval = self._interval
        self._since: float | None = None
        self._last_face: float | None = None
        self._announced = False
        self._lost = False
        self._multiple_since: float | None = None
        self._multiple = False
        self.samples = 0
        self.last_faces = 0
        self._in_flight: Future[tuple[int, float]] | None = None
        self._in_flight_time = 0.0

    def process_video(self, frame: VideoFrame) -> None:
        now = frame.media_time
        if self._since is None:
            self._since = now
        self._apply_finished()
        if self._next_sample is not None and now < self._next_sample:
            return
        if not self.options.background:
            faces, cost = self._detector.detect_timed(frame.y)
            self._record(now, faces, cost)
            return
        if self._in_flight is not None:
            # The previous detection is still running: skip this sample rather than queue.
            DETECTION_THROTTLED.inc()
            return
        # The frame's planes belong to the encoder once we return: detect on a copy.
        luma = np.array(frame.y, copy=True)
        self._in_flight = detector_pool().submit(self._detector.detect_timed, luma)
        self._in_flight_time = now

    def _apply_finished(self) -> None:
        future = self._in_flight
        if future is None or not future.done():
            return
        self._in_flight = None
        # A detector error surfaces here, on the worker, so the chain applies the failure policy.
        faces, cost = future.result()
        self._record(self._in_flight_time, faces, cost)

    def close(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None

    def _record(self, now: float, faces: int, cost: float) -> None:
        DETECTION_SECONDS.observe(cost)
        # A smoothed cost keeps one slow call (cache miss, CPU contention) from halving the rate.
        self._cost_s = cost if self.samples == 0 else 0.8 * self._cost_s + 0.2 * cost
        interval = self._interval
        affordable = self._cost_s / self.options.max_cpu_share
        if affordable > interval:
            # Back off at most twofold per sample, so one outlier cannot silence the detector
            # for many seconds; sustained slowness still reaches the affordable rate.
            interval = min(affordable, 2.0 * self._last_interval)
            DETECTION_THROTTLED.inc()
        self._last_interval = interval
        self._next_sample = now + interval
        self.samples += 1
        self.last_faces = faces
        self._update(now, faces)

    def _update(self, now: float, faces: int) -> None:
        assert self._since is not None
        if faces:
            if not self._announced:
                self._announced = True
                self._emit("face_present", now, {"faces": faces})
            if self._lost:
                self._lost = False
                absent = now - (self._last_face if self._last_face is not None else self._since)
                self._emit("face_returned", now, {"faces": faces, "absent_s": round(absent, 3)})
            self._last_face = now
        elif not self._lost:
            reference = self._last_face if self._last_face is not None else self._since
            if now - reference >= self.options.lost_after_s:
                self._lost = True
                self._emit(
                    "face_lost",
                    now,
                    {
                        "absent_s": round(now - reference, 3),
                        "last_seen_media_time": self._last_face,
                    },
                    Severity.WARNING,
                )
        if faces >= 2:
            if self._multiple_since is None:
                self._multiple_since = now
            if not self._multiple and now - self._multiple_since >= self.options.multiple_after_s:
                self._multiple = True
                self._emit(
                    "multiple_faces",
                    now,
                    {"faces": faces, "since_media_time": round(self._multiple_since, 3)},
                    Severity.WARNING,
                )
        else:
            if self._multiple:
                assert self._multiple_since is not None
                self._emit("multiple_faces_ended", now, {"duration_s": round(now - self._multiple_since, 3)})
            self._multiple = False
            self._multiple_since = None

    def _emit(
        self, event_type: str, media_time: float, data: dict[str, Any], severity: Severity = Severity.INFO
    ) -> None:
        FACE_EVENTS.labels(type=event_type).inc()
        self.context.emit(event_type, media_time, data, severity)
