"""H.264 in and out with real aiortc peers: negotiated per peer, decoded once, the same hook chain
(the visible watermark), at most one shared encoder per output codec per track, and an archive
that stays VP8 WebM whatever the publisher sends."""

from __future__ import annotations

import json
from pathlib import Path

import av

from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.conftest import archive_loaded, make_loaded, start_server
from tests.media.test_media_fanout import gauge, token, wait_for, watermark_match
from tests.media.test_recorded_call import finrtc
from tests.support import webrtc_client as client
from tests.support.media import PatternVideoTrack, ToneAudioTrack


def _pli_requests() -> float:
    return sum(
        gauge("finrtc_keyframe_requests_total", source="pli", outcome=outcome)
        for outcome in ("forced", "rate_limited")
    )


def _pipeline(server, room: str, publisher: str):
    publication = server.app[ROOMS].get(room).participants[publisher].publication
    return next(p for p in publication.pipelines if p.kind.value == "video")


def _viewer(http, server, room: str, identity: str, codec: str | None):
    return client.play(
        http,
        server.base,
        room,
        token(room, identity, Role.OBSERVER),
        query="?participant=alice",
        kinds=("video",),
        video_codec=codec,
    )


async def _watermarked_frames(viewer, room: str) -> None:
    await wait_for(
        lambda: viewer.received.get("video") is not None and viewer.received["video"].count >= 15,
        timeout=30,
    )
    frame = viewer.received["video"].frames[-1]
    assert (frame.width, frame.height) == (640, 480)
    assert watermark_match(frame, room, "alice", "agent") > 100


async def test_an_h264_publisher_reaches_a_vp8_only_viewer_watermarked(server, http) -> None:
    room = "h264-in"
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack(), ToneAudioTrack()],
        video_codec="video/H264",
    )
    viewer = await _viewer(http, server, room, "v-vp8", "video/VP8")
    try:
        assert client.negotiated_video_codec(publisher) == "H264"
        assert client.negotiated_video_codec(viewer) == "VP8"
        await _watermarked_frames(viewer, room)
        pipeline = _pipeline(server, room, "alice")
        assert pipeline.encoder_codecs == ["vp8"]
        events = [e for e in server.app[ROOMS].get(room).events.history() if e.type == "track_published"]
        assert any(e.data["codec"].lower() == "video/h264" for e in events)
    finally:
        await client.close(viewer)
        await client.close(publisher)


async def test_a_high_profile_h264_publisher_is_accepted(server, http) -> None:
    # x264enc's and OBS's default; aiortc alone knows only (Constrained) Baseline.
    room = "h264-high"
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack()],
        video_codec="video/H264", profile_level_id="64001f",
    )
    viewer = await _viewer(http, server, room, "v", None)
    try:
        answer = publisher.pc.remoteDescription.sdp
        assert "profile-level-id=64001f" in answer and "VP8" not in answer
        await _watermarked_frames(viewer, room)
    finally:
        await client.close(viewer)
        await client.close(publisher)


async def test_h264_only_viewers_share_one_h264_encoder(server, http) -> None:
    room = "h264-out"
    h264_before = gauge("finrtc_encoders", kind="video", codec="h264")
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack()], video_codec="video/H264"
    )
    first = await _viewer(http, server, room, "v1", "video/H264")
    second = await _viewer(http, server, room, "v2", "video/H264")
    vp8 = None
    try:
        for viewer in (first, second):
            assert client.negotiated_video_codec(viewer) == "H264"
            await _watermarked_frames(viewer, room)
        pipeline = _pipeline(server, room, "alice")
        # No archive in this server and no VP8 viewer: the VP8 encoder was never created.
        assert pipeline.encoder_codecs == ["h264"]
        assert gauge("finrtc_encoders", kind="video", codec="h264") - h264_before == 1
        assert pipeline.subscriber_count == 2

        # A VP8 viewer joining adds the VP8 encoder, still one per codec.
        vp8 = await _viewer(http, server, room, "v3", "video/VP8")
        await _watermarked_frames(vp8, room)
        assert pipeline.encoder_codecs == ["h264", "vp8"]

        # The last H.264 viewer leaving releases the H.264 encoder; VP8 keeps going.
        for viewer in (first, second):
            assert await client.delete(http, server.base, viewer) == 200
            await client.close(viewer)
        await wait_for(lambda: pipeline.encoder_codecs == ["vp8"], timeout=10)
        assert gauge("finrtc_encoders", kind="video", codec="h264") == h264_before
        count = vp8.received["video"].count
        await wait_for(lambda: vp8.received["video"].count > count + 10, timeout=10)
    finally:
        for viewer in (first, second, vp8):
            if viewer is not None:
                await client.close(viewer)
        await client.close(publisher)


async def test_a_vp8_publisher_reaches_an_h264_only_viewer(server, http) -> None:
    room = "vp8-to-h264"
    publisher = await client.publish(
        http, server.base, room, token(room, "alice"), [PatternVideoTrack()], video_codec="video/VP8"
    )
    viewer = await _viewer(http, server, room, "v", "video/H264")
    try:
        assert client.negotiated_video_codec(publisher) == "VP8"
        answer = viewer.pc.remoteDescription.sdp
        assert client.negotiated_video_codec(viewer) == "H264"
        # The server sends Constrained Baseline whatever else the viewer offers.
        assert "profile-level-id=42e01f" in answer or "profile-level-id=42001f" in answer
        await _watermarked_frames(viewer, room)
        # A PLI from the H.264 viewer reaches the H.264 encoder, the track's only one here:
        # request_keyframe counts nothing for a codec that has no encoder.
        pipeline = _pipeline(server, room, "alice")
        assert pipeline.encoder_codecs == ["h264"]
        before = _pli_requests()
        receiver = viewer.pc.getReceivers()[0]
        ssrc = next(iter(receiver._RTCRtpReceiver__active_ssrc))
        await receiver._send_rtcp_pli(ssrc)
        await wait_for(lambda: _pli_requests() > before, timeout=5)
    finally:
        await client.close(viewer)
        await client.close(publisher)


async def test_viewers_offering_both_get_the_configured_preference(tmp_path: Path, http) -> None:
    loaded = make_loaded(
        tmp_path,
        archive={"enabled": False},
        compliance={"enabled": False},
        media={"video": {"viewer_codecs": ["h264", "vp8"]}},
    )
    running = await start_server(loaded)
    room = "prefer-h264"
    try:
        publisher = await client.publish(
            http, running.base, room, token(room, "alice"), [PatternVideoTrack()]
        )
        both = await _viewer(http, running, room, "v", None)
        try:
            assert client.negotiated_video_codec(both) == "H264"
            await _watermarked_frames(both, room)
        finally:
            await client.close(both)
            await client.close(publisher)
    finally:
        await running.runner.cleanup()


async def test_a_viewer_offering_no_codec_we_send_is_refused(server, http) -> None:
    room = "h264-refused"
    publisher = await client.publish(http, server.base, room, token(room, "alice"), [PatternVideoTrack()])
    try:
        # Only High profile: the server's H.264 encoder sends Constrained Baseline.
        pc_viewer = client.RTCPeerConnection(client.RTCConfiguration(iceServers=[]))
        transceiver = pc_viewer.addTransceiver("video", direction="recvonly")
        client.prefer_video_codec(transceiver, "video/H264", "64001f")
        try:
            await client._post_offer(
                http, f"{server.base}/whep/{room}", token(room, "v", Role.OBSERVER), pc_viewer
            )
            raise AssertionError("the offer was accepted")
        except RuntimeError as error:
            assert str(error).startswith("400") and "Constrained Baseline" in str(error)
        finally:
            await pc_viewer.close()
    finally:
        await client.close(publisher)


async def test_an_h264_publisher_is_archived_as_playable_vp8_webm(tmp_path: Path, http) -> None:
    keys, loaded = archive_loaded(tmp_path)
    running = await start_server(loaded)
    room = "h264-archived"
    try:
        agent = await client.publish(
            http, running.base, room, token(room, "alice"), [PatternVideoTrack(320, 240), ToneAudioTrack()],
            video_codec="video/H264",
        )
        viewer = await _viewer(http, running, room, "v", "video/H264")
        await wait_for(
            lambda: viewer.received.get("video") is not None and viewer.received["video"].count > 40, 30
        )
        session_id = running.app[ROOMS].get(room).session.session_id
        assert _pipeline(running, room, "alice").encoder_codecs == ["h264", "vp8"]
        await client.close(viewer)
        assert await client.delete(http, running.base, agent) == 200
        await client.close(agent)
        await wait_for(lambda: room not in running.app[ROOMS].rooms, 15)
    finally:
        await running.runner.cleanup()
    session_dir = tmp_path / "archive" / room / session_id
    common = ["--signer-key", str(keys.signer_pub), "--archive-key", str(keys.archive_key), "--quiet"]
    verified = finrtc("verify", str(session_dir), *common, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)
    out = tmp_path / "call.webm"
    exported = finrtc("export", str(session_dir), "--out", str(out), "--reason", "H.264 check", *common)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name in ("vp8", "libvpx")
        assert sum(1 for _ in container.decode(video=0)) > 40
