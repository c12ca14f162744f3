"""How the media path behaves when participants come, go, stall, ask for keyframes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.media.test_media_fanout import gauge, token, wait_for
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack

ROOT = Path(__file__).resolve().parents[2]


async def fps(session: client.Session, seconds: float) -> float:
    start = session.received["video"].count
    await asyncio.sleep(seconds)
    return (session.received["video"].count - start) / seconds


async def test_frozen_subscriber_does_not_slow_the_others(server, http) -> None:
    room = "frozen"
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack(fps=30), ToneAudioTrack()]
    )
    healthy = await client.play(
        http, server.base, room, token(room, "bob", Role.CUSTOMER), "?participant=alice"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.frozen_viewer",
        server.base,
        room,
        token(room, "carol", Role.OBSERVER),
        "?participant=alice",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"ready"
        await wait_for(
            lambda: healthy.received.get("video") is not None and healthy.received["video"].count > 10
        )
        pipelines = server.app[ROOMS].get(room).participants["alice"].publication.pipelines
        video = next(p for p in pipelines if p.kind.value == "video")
        os.kill(process.pid, signal.SIGSTOP)
        await asyncio.sleep(0.5)
        produced_before, received_before = video.packets_out, healthy.received["video"].count
        await asyncio.sleep(4.0)
        produced = video.packets_out - produced_before
        received = healthy.received["video"].count - received_before
        # A frozen client never blocks the server (UDP): the healthy viewer gets what the shared
        # encoder produced while the other one was frozen (compared in one window, so machine load
        # cannot fake a pass or a failure).
        assert produced > 40
        assert received >= 0.9 * produced
        assert video.subscriber_count == 2
        carol = server.app[ROOMS].get(room).participants["carol"]
        for subscription in carol.subscriptions.values():
            for track in subscription.tracks:
                assert track.queued <= server.loaded.config.media.subscriber_queue_packets
    finally:
        process.kill()
        await process.wait()
        await client.close(healthy)
        await client.close(publisher)


async def test_publisher_leaving_ends_viewer_tracks_and_viewer_leaving_disturbs_nobody(server, http) -> None:
    room = "leaving"
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack(), ToneAudioTrack()]
    )
    first = await client.play(http, server.base, room, token(room, "v1", Role.OBSERVER), "?participant=alice")
    second = await client.play(
        http, server.base, room, token(room, "v2", Role.OBSERVER), "?participant=alice"
    )
    try:
        await wait_for(
            lambda: all(s.received.get("video") and s.received["video"].count > 10 for s in (first, second))
        )
        assert await client.delete(http, server.base, first) == 200
        await client.close(first)
        rate = await fps(second, 2.0)
        assert rate > 20
        state = server.app[ROOMS].get(room)
        assert "v1" not in state.participants
        assert await client.delete(http, server.base, publisher) == 200
        # The server ends its forwarded tracks with RTCP BYE: the viewer's tracks end cleanly.
        await wait_for(lambda: second.received["video"].ended and second.received["audio"].ended, timeout=10)
        types = [event.type for event in state.events.history()]
        assert "track_unpublished" in types and "participant_left" in types
    finally:
        await client.close(second)
        await client.close(publisher)


async def test_viewer_may_connect_before_the_publisher(server, http) -> None:
    room = "early"
    rooms = server.app[ROOMS]
    rooms.create(room)
    viewer = await client.play(http, server.base, room, token(room, "cust", Role.CUSTOMER), "?role=agent")
    try:
        await asyncio.sleep(0.5)
        assert viewer.received.get("video") is None or viewer.received["video"].count == 0
        publisher = await client.publish(
            http, server.base, room, token(room, "agent1"), [PatternVideoTrack(), ToneAudioTrack()]
        )
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 10
        )
        await client.close(publisher)
    finally:
        await client.close(viewer)


async def test_subscriber_pli_forces_a_keyframe_on_the_shared_encoder(server, http) -> None:
    room = "pli"
    publisher = await client.publish(http, server.base, room, token(room, "alice"), [PatternVideoTrack()])
    viewer = await client.play(
        http, server.base, room, token(room, "v", Role.OBSERVER), "?participant=alice", kinds=("video",)
    )
    try:
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 5
        )
        before = gauge("finrtc_keyframe_requests_total", source="pli", outcome="forced") + gauge(
            "finrtc_keyframe_requests_total", source="pli", outcome="rate_limited"
        )
        receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
        ssrc = next(iter(receiver._RTCRtpReceiver__active_ssrc))
        await asyncio.sleep(0.6)
        await receiver._send_rtcp_pli(ssrc)
        await wait_for(
            lambda: (
                gauge("finrtc_keyframe_requests_total", source="pli", outcome="forced")
                + gauge("finrtc_keyframe_requests_total", source="pli", outcome="rate_limited")
                > before
            )
        )
    finally:
        await client.close(viewer)
        await client.close(publisher)
