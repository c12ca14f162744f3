"""Clients we did not write: GStreamer's webrtcbin (libnice ICE, GStreamer's DTLS with an RSA
certificate) publishing over WHIP into a real server, a viewer receiving the watermarked video.

libnice gathers no candidate on an interface flagged loopback, and the suite runs in a namespace
that has only `lo`: the publisher runs with an LD_PRELOAD shim (tests/support/
libnice_loopback_shim.c, compiled here with gcc) that clears IFF_LOOPBACK in getifaddrs. A shim
rather than a dummy interface: it needs no privileges and changes nothing outside the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from finrtc.forensics.video import frame_luma
from finrtc.forensics.watermark import extract
from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import make_loaded, start_server
from tests.media.test_media_fanout import token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-gst-1.0; the venv has no PyGObject
KEY = "interop-watermark-key"


def _start_gstreamer_client(shim: Path, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SYSTEM_PYTHON, str(SUPPORT / script), *args],
        env={**os.environ, "LD_PRELOAD": str(shim)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("encoder", ["vp8enc", "x264enc", "openh264enc"])
async def test_a_webrtcbin_publisher_reaches_a_viewer_with_the_watermark(
    tmp_path: Path, http, loopback_shim: Path, encoder: str
) -> None:
    loaded = make_loaded(
        tmp_path,
        hooks=[{"use": "forensic_watermark", "options": {"key": KEY}}],
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    server = await start_server(loaded)
    publisher = _start_gstreamer_client(
        loopback_shim, "gst_whip_publisher.py", f"{server.base}/whip/gst", token("gst", "gst-agent"),
        "25", encoder,
    )
    viewer = None
    try:
        rooms = server.app[ROOMS]
        await wait_for(lambda: "gst" in rooms.rooms and bool(rooms.rooms["gst"].participants), 20)
        viewer = await client.play(
            http, server.base, "gst", token("gst", "c", Role.CUSTOMER), kinds=("video",)
        )
        await wait_for(lambda: viewer.received.get("video") is not None, 20)
        record = viewer.received["video"]
        lumas = []
        seen = 0
        deadline = time.monotonic() + 30
        while len(lumas) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            while seen < record.count:
                seen += 1
                if record.frames:
                    lumas.append(frame_luma(record.frames[-1]))
        assert len(lumas) >= 30, f"the viewer decoded {len(lumas)} frames from the GStreamer publisher"
        room = rooms.get("gst")
        published = [e.data["codec"].lower() for e in room.events.history() if e.type == "track_published"]
        assert published == ["video/vp8" if encoder == "vp8enc" else "video/h264"], published
        assigned = [e for e in room.events.history() if e.type == "watermark_assigned"]
        assert assigned
        result = extract(lumas[-60:], key=KEY.encode())
        assert result is not None, "no watermark recovered from the forwarded GStreamer video"
        assert result.id == assigned[-1].data["id"] or result.id_hex == assigned[-1].data["id"]
    except AssertionError as error:
        failure: AssertionError | None = error
    else:
        failure = None
    finally:
        if viewer is not None:
            await client.close(viewer)
        publisher.terminate()
        output, _ = publisher.communicate(timeout=20)
        await server.runner.cleanup()
    # The client's own log says why when the server never saw it publish.
    assert failure is None, f"{failure}\n--- {encoder} publisher output ---\n{output}"
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {"event": "connection", "state": "connected"} in events, output
    answered = next(e for e in events if e["event"] == "answered")
    if encoder == "x264enc":
        # What x264enc (and OBS) offer: High profile, which aiortc alone had no codec for.
        assert any("profile-level-id=64" in line for line in answered["offer_fmtp"]), answered


async def test_a_webrtcbin_whep_viewer_plays_a_room(tmp_path: Path, http, loopback_shim: Path) -> None:
    loaded = make_loaded(tmp_path, archive={"enabled": False}, compliance={"enabled": False})
    server = await start_server(loaded)
    source = PatternVideoTrack()
    publisher = await client.publish(http, server.base, "gst-view", token("gst-view", "agent"), [source])
    viewer = _start_gstreamer_client(
        loopback_shim, "gst_whep_viewer.py", f"{server.base}/whep/gst-view",
        token("gst-view", "c", Role.CUSTOMER), "8",
    )
    try:
        output, _ = await asyncio.to_thread(viewer.communicate, timeout=40)
    finally:
        if viewer.poll() is None:
            viewer.kill()
        await client.close(publisher)
        await server.runner.cleanup()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert {"event": "connection", "state": "connected"} in events, output
    ended = events[-1]
    assert ended["event"] == "ended", output
    # 8 s at 30 fps; at least half decoded by GStreamer's own VP8 decoder, at the published size.
    assert ended["decoded_frames"] >= 60, output
    assert (ended["width"], ended["height"]) == (640, 480), output
