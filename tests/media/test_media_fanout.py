"""Real aiortc peers over loopback: one publisher, four subscribers, one encoder per track."""

from __future__ import annotations

import asyncio
import time

from finrtc import metrics
from finrtc.auth import mint_token
from finrtc.hooks.builtin.bitmap_font import render_text
from finrtc.hooks.builtin.visible_watermark import LINE_GAP, MARGIN, auto_scale
from finrtc.model import Role
from tests.conftest import TEST_SECRET
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack


def token(room: str, identity: str, role: Role = Role.AGENT, **kw: object) -> str:
    return mint_token(TEST_SECRET, room=room, identity=identity, role=role, **kw)  # type: ignore[arg-type]


def gauge(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def watermark_match(frame, room: str, identity: str, role: str) -> float:
    """Fraction of the identity line's glyph pixels that are bright (and background dark)."""
    y = frame.to_ndarray(format="gray")
    scale = auto_scale(frame.height)
    mask = render_text(f"{room} | {role} {identity}", scale)
    top = MARGIN + mask.shape[0] + LINE_GAP
    region = y[top : top + mask.shape[0], MARGIN : MARGIN + mask.shape[1]].astype(int)
    on = region[mask].mean()
    off = region[~mask].mean()
    return float(on - off)


async def test_one_publisher_four_subscribers(server, http) -> None:
    room = "fanout"
    encoders_before = gauge("finrtc_encoders", kind="video", codec="vp8")
    h264_before = gauge("finrtc_encoders", kind="video", codec="h264")
    video, audio = PatternVideoTrack(), ToneAudioTrack()
    publisher = await client.publish(http, server.base, room, token(room, "alice"), [video, audio])
    viewers = []
    for index in range(4):
        viewers.append(
            await client.play(
                http,
                server.base,
                room,
                token(room, f"viewer{index}", Role.OBSERVER),
                query="?participant=alice",
            )
        )
    try:
        await wait_for(
            lambda: all(
                v.received.get("video")
                and v.received["video"].count >= 20
                and v.received.get("audio")
                and v.received["audio"].count >= 20
                for v in viewers
            ),
            timeout=30,
        )
        # One shared encoder per published track, whatever the number of subscribers.
        assert gauge("finrtc_encoders", kind="video", codec="vp8") - encoders_before == 1
        assert gauge("finrtc_encoders", kind="video", codec="h264") == h264_before  # VP8 viewers only
        assert gauge("finrtc_encoders", kind="audio", codec="opus") >= 1
        rooms = server.app[__import__("finrtc.signaling.context", fromlist=["ROOMS"]).ROOMS]
        pipelines = rooms.get(room).participants["alice"].publication.pipelines
        assert sorted(p.kind.value for p in pipelines) == ["audio", "video"]
        assert all(p.subscriber_count == 4 for p in pipelines)
        for viewer in viewers:
            frame = viewer.received["video"].frames[-1]
            assert (frame.width, frame.height) == (640, 480)
            # The watermark's identity line is drawn in the pixels every viewer decodes.
            assert watermark_match(frame, room, "alice", "agent") > 100
        # And it really is the watermark: the same check on the raw source fails.
        assert watermark_match(video.make_frame(3), room, "alice", "agent") < 50
    finally:
        for viewer in viewers:
            await client.close(viewer)
        await client.delete(http, server.base, publisher)
        await client.close(publisher)
