"""Forensic watermark and face presence through the real server, as a viewer receives them."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import skimage.data

from finrtc.forensics.video import frame_luma
from finrtc.forensics.watermark import extract, luma_psnr
from finrtc.hooks.builtin import face_presence
from finrtc.hooks.contract import Hook, Stage, VideoFrame
from finrtc.hooks.testing import PlanesVideoTrack, video_from_image, yuv_from_rgb
from finrtc.model import MediaKind, Role
from finrtc.signaling.context import ROOMS
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client

KEY = "e2e-watermark-key"
_clean: dict[int, np.ndarray] = {}
_psnr: list[float] = []
_lock = threading.Lock()


class StashCleanLuma(Hook):
    """Runs before the watermark (YAML order) and keeps the unmarked picture."""

    name = "stash_clean_luma"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.MUTATE
    budget_ms = 5.0

    def process_video(self, frame: VideoFrame) -> None:
        with _lock:
            _clean[frame.index] = frame.y.copy()


class MeasureMarkPsnr(Hook):
    """Sees the final forwarded picture and measures what the watermark did to it."""

    name = "measure_mark_psnr"
    kinds = frozenset({MediaKind.VIDEO})
    stage = Stage.OBSERVE
    budget_ms = 5.0

    def process_video(self, frame: VideoFrame) -> None:
        with _lock:
            clean = _clean.pop(frame.index, None)
            if clean is not None:
                _psnr.append(luma_psnr(clean, np.asarray(frame.y)))


def one_face() -> list:
    return video_from_image(skimage.data.astronaut(), 640, 480, 90)


def two_faces() -> list:
    crop = skimage.data.astronaut()[0:320, 60:300]
    halves = [yuv_from_rgb(crop, 320, 480) for _ in range(2)]
    return [tuple(np.ascontiguousarray(np.hstack([a, b])) for a, b in zip(*halves, strict=True))]


def empty_scene() -> list:
    return [yuv_from_rgb(skimage.data.coffee(), 640, 480)]


async def test_viewer_frames_carry_the_exact_id_and_faces_are_tracked(tmp_path: Path, http) -> None:
    loaded = make_loaded(
        tmp_path,
        hooks=[
            {"use": f"{__name__}:StashCleanLuma"},
            {"use": "forensic_watermark", "options": {"key": KEY}},
            {"use": "face_presence", "options": {"sample_fps": 5.0, "lost_after_s": 1.5}},
            {"use": f"{__name__}:MeasureMarkPsnr"},
        ],
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    server = await start_server(loaded)
    source = PlanesVideoTrack(one_face())
    publisher = await client.publish(http, server.base, "forensic", token("forensic", "agent5"), [source])
    viewer = await client.play(
        http,
        server.base,
        "forensic",
        token("forensic", "c", Role.CUSTOMER),
        "?participant=agent5",
        kinds=("video",),
    )
    viewer_frames: list[np.ndarray] = []
    try:
        await wait_for(lambda: viewer.received.get("video") is not None, 20)
        record = viewer.received["video"]
        deadline = time.monotonic() + 30
        seen = 0
        while len(viewer_frames) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            while seen < record.count:
                seen += 1
                if record.frames:
                    viewer_frames.append(frame_luma(record.frames[-1]))
        room = server.app[ROOMS].get("forensic")
        history = lambda: [e for e in room.events.history() if e.data.get("hook")]  # noqa: E731
        assigned = [e for e in history() if e.type == "watermark_assigned"]
        assert assigned, [e.type for e in history()]
        result = extract(viewer_frames[-60:], key=KEY.encode())
        assert result is not None, "no watermark recovered from 2 s of forwarded video"
        assert result.id == assigned[-1].data["id"] or result.id_hex == assigned[-1].data["id"]
        # Invisible at normal viewing: the mark costs less than the 38 dB target on every frame.
        assert len(_psnr) > 30 and min(_psnr) >= 38.0, min(_psnr)

        try:
            await wait_for(lambda: any(e.type == "face_present" for e in history()), 10)
        except AssertionError:
            counts = [
                s.value
                for s in face_presence.DETECTION_SECONDS.collect()[0].samples
                if s.name.endswith("_count")
            ]
            raise AssertionError(
                f"no face_present in {[e.type for e in history()]}; detections {counts}"
            ) from None
        switched = time.monotonic()
        source.show(empty_scene())
        await wait_for(lambda: any(e.type == "face_lost" for e in history()), 10)
        assert time.monotonic() - switched < 1.5 + 3.0
        source.show(two_faces())
        await wait_for(lambda: any(e.type == "multiple_faces" for e in history()), 10)
        # Customers do not see staff alerts; agents and observers do.
        assert all(e.audience is not None and Role.CUSTOMER not in e.audience for e in history())
    finally:
        await client.close(viewer)
        await client.close(publisher)
        await server.runner.cleanup()
