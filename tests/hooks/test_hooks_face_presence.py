"""Face presence on real pictures (scikit-image's packaged astronaut), with real OpenCV."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import skimage.data

from finrtc.hooks.builtin import face_presence
from finrtc.hooks.builtin.face_presence import FacePresence, FacePresenceOptions
from finrtc.hooks.contract import HookContext, HookEvent, VideoFrame
from finrtc.hooks.testing import YuvPlanes, check_hook, yuv_from_rgb
from finrtc.model import MediaKind, Role, Severity, TrackInfo

TRACK = TrackInfo("room-1", "session-1", "carol", Role.CUSTOMER, "track-v", MediaKind.VIDEO)
FPS = 30


def one_face() -> YuvPlanes:
    return yuv_from_rgb(skimage.data.astronaut(), 640, 480)


def two_faces() -> YuvPlanes:
    # Two head-and-shoulder crops of the astronaut side by side.
    crop = skimage.data.astronaut()[0:320, 60:300]
    halves = [yuv_from_rgb(crop, 320, 480) for _ in range(2)]
    y, u, v = (np.ascontiguousarray(np.hstack([a, b])) for a, b in zip(*halves, strict=True))
    return y, u, v


def empty_scene() -> YuvPlanes:
    return yuv_from_rgb(skimage.data.coffee(), 640, 480)


class Driver:
    """Feeds a hook frame by frame at 30 fps of media time, as the track worker would."""

    def __init__(self, **options: object) -> None:
        self.events: list[HookEvent] = []
        # Media time is stepped by hand here, faster than real time: detect inline.
        options.setdefault("background", False)
        self.hook = FacePresence(
            FacePresenceOptions.model_validate(options),
            HookContext(TRACK, "face_presence", self.events.append),
        )
        self.index = 0

    def play(self, planes: YuvPlanes, seconds: float) -> None:
        y, u, v = planes
        for _ in range(round(seconds * FPS)):
            media_time = self.index / FPS
            frame = VideoFrame(y, u, v, y.shape[1], y.shape[0], media_time, 1.7e9 + media_time, self.index)
            self.hook.process_video(frame.read_only())
            self.index += 1

    def types(self) -> list[str]:
        return [event.type for event in self.events]


def test_detector_finds_one_face_and_two_faces() -> None:
    detector = face_presence.FaceDetector(FacePresenceOptions())
    assert len(detector.detect(one_face()[0])) == 1
    assert len(detector.detect(two_faces()[0])) == 2
    assert detector.detect(empty_scene()[0]) == []


def test_face_present_then_lost_within_configured_time_then_returned() -> None:
    driver = Driver(sample_fps=4.0, lost_after_s=2.0)
    driver.play(one_face(), 3.0)
    assert driver.types() == ["face_present"]
    driver.play(empty_scene(), 3.0)
    assert driver.types() == ["face_present", "face_lost"]
    lost = driver.events[1]
    assert lost.severity is Severity.WARNING
    # Lost 2 s after the last sighting, and at most 2 s + two sample periods after the face left.
    last_seen = lost.data["last_seen_media_time"]
    assert 2.5 <= last_seen < 3.0
    assert last_seen + 2.0 <= lost.media_time <= 3.0 + 2.0 + 2 / 4.0
    driver.play(one_face(), 1.0)
    assert driver.types()[-1] == "face_returned"
    assert driver.events[-1].data["absent_s"] >= 2.0


def test_empty_scene_from_the_start_is_lost() -> None:
    driver = Driver(sample_fps=3.0, lost_after_s=1.5)
    driver.play(empty_scene(), 2.5)
    assert driver.types() == ["face_lost"]
    assert driver.events[0].data["last_seen_media_time"] is None


def test_two_faces_raise_multiple_faces_after_the_hold_time() -> None:
    driver = Driver(sample_fps=4.0, multiple_after_s=1.0)
    driver.play(one_face(), 1.0)
    driver.play(two_faces(), 2.0)
    assert driver.types() == ["face_present", "multiple_faces"]
    event = driver.events[1]
    assert event.data["faces"] == 2
    assert 2.0 <= event.media_time <= 2.0 + 0.5
    driver.play(one_face(), 1.0)
    assert driver.types()[-1] == "multiple_faces_ended"


def test_samples_by_media_time_not_by_call() -> None:
    driver = Driver(sample_fps=2.0)
    driver.play(one_face(), 5.0)
    # 150 calls, about 10 detections (one every 0.5 s of media time).
    assert 9 <= driver.hook.samples <= 11


def test_slow_detection_samples_less_and_is_counted() -> None:
    before = face_presence.DETECTION_THROTTLED._value.get()
    # Detection (~10-40 ms) cannot fit in 0.1 % of a 0.1 s interval: sampling backs off, at
    # most twofold per sample (0, 0.1, 0.3, 0.7, 1.5, 3.1 s ...) instead of 60 samples in 6 s.
    driver = Driver(sample_fps=10.0, max_cpu_share=0.001)
    driver.play(one_face(), 6.0)
    assert 5 <= driver.hook.samples <= 7
    assert face_presence.DETECTION_THROTTLED._value.get() > before


def test_one_slow_detection_does_not_silence_the_detector() -> None:
    driver = Driver(sample_fps=5.0)
    driver.play(empty_scene(), 0.5)
    # As if one detection had stalled for 3 s of CPU: the next sample comes at most 2 intervals later.
    driver.hook._record(0.5, 0, 3.0)
    driver.play(one_face(), 1.0)
    assert "face_present" in driver.types()


def test_options_are_strict() -> None:
    with pytest.raises(ValueError, match="sample_fps"):
        FacePresenceOptions.model_validate({"sample_fps": 0})
    with pytest.raises(ValueError, match="extra"):
        FacePresenceOptions.model_validate({"fps": 3})


def test_finrtc_imports_without_opencv_until_the_hook_is_used() -> None:
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "import finrtc.hooks.builtin.face_presence as fp, finrtc.hooks.loader as loader\n"
        "from finrtc.config import HookSpec\n"
        "from finrtc.errors import ConfigError\n"
        "loader.load_hooks([HookSpec(use='forensic_watermark')])\n"
        "try:\n"
        "    loader.load_hooks([HookSpec(use='face_presence')])\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "hooks[0] (face_presence)" in done.stdout
    assert "finrtc[faces]" in done.stdout


def test_face_presence_passes_the_contract_helper() -> None:
    report = check_hook(
        FacePresence, {"sample_fps": 3.0}, picture=skimage.data.astronaut(), budget_tolerance=2.0
    )
    assert "face_present" in report.event_types()
