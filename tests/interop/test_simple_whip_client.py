"""Meetecho's simple-whip-client (Debian package `simple-whip-client`, binary `whip-client`), a
WHIP publisher we did not write and cannot change, publishing VP8 and H.264 into a real server;
an aiortc WHEP viewer decodes the forwarded video and the forensic watermark is recovered from it.

On Debian bookworm the binary aborts at start ("libsoup2 symbols detected"): it links libsoup-2.4,
and GStreamer's nice plugin loads libnice -> libgupnp-igd -> libgupnp -> libsoup-3.0. The client
runs with a stand-in libgupnp-igd (tests/support/gupnp_igd_stub.c, compiled here, found first
through LD_LIBRARY_PATH) so libsoup-3 is never loaded; libnice then runs without UPnP port mapping,
which loopback has no use for. The getifaddrs shim of the webrtcbin test is preloaded too, since
libnice gathers nothing on an interface flagged loopback. See docs/interop.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
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

WHIP_CLIENT = shutil.which("whip-client")
KEY = "swc-watermark-key"
SOURCE = (
    "videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate=30/1 "
    "! videoconvert ! queue"
)
# The rest of the branch up to the caps whip-client links to its webrtcbin, as in the webrtcbin
# test: config-interval=-1 repeats SPS/PPS with every IDR. packetization-mode=1 in the caps makes
# webrtcbin offer it (the server accepts no other mode); a profile-level-id there must match what
# the encoder really writes or the branch never negotiates and whip-client never makes an offer.
VIDEO = {
    "vp8enc": f"{SOURCE} ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 ssrc=2 ! queue "
    "! application/x-rtp,media=video,encoding-name=VP8,payload=96",
    # High profile (64001e), what OBS-like x264 publishers send.
    "x264enc": f"{SOURCE} ! x264enc tune=zerolatency speed-preset=veryfast key-int-max=30 bitrate=800 "
    "! video/x-h264,profile=high ! rtph264pay pt=102 ssrc=2 config-interval=-1 aggregate-mode=zero-latency "
    "! queue ! application/x-rtp,media=video,encoding-name=H264,payload=102,packetization-mode=(string)1",
    "openh264enc": f"{SOURCE} ! openh264enc complexity=low bitrate=800000 gop-size=30 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay pt=102 ssrc=2 config-interval=-1 "
    "aggregate-mode=zero-latency ! queue ! application/x-rtp,media=video,encoding-name=H264,payload=102,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
}

pytestmark = pytest.mark.skipif(
    WHIP_CLIENT is None,
    reason="whip-client is not installed: `make system-deps` installs the Debian package simple-whip-client",
)


def _start_whip_client(
    stub_dir: Path, shim: Path, url: str, bearer: str, video: str, *flags: str
) -> subprocess.Popen[str]:
    assert WHIP_CLIENT is not None
    library_path = os.pathsep.join(filter(None, [str(stub_dir), os.environ.get("LD_LIBRARY_PATH")]))
    return subprocess.Popen(
        [WHIP_CLIENT, "-o", *flags, "-u", url, "-t", bearer, "-V", video],
        env={**os.environ, "LD_LIBRARY_PATH": library_path, "LD_PRELOAD": str(shim)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# Trickle ICE over HTTP PATCH is whip-client's default; -n puts every candidate in the offer.
@pytest.mark.parametrize(
    ("encoder", "flags"),
    [("vp8enc", ()), ("x264enc", ()), ("openh264enc", ()), ("vp8enc", ("-n",))],
    ids=["vp8enc", "x264enc", "openh264enc", "vp8enc-no-trickle"],
)
async def test_simple_whip_client_reaches_a_viewer_with_the_watermark(
    tmp_path: Path, http, loopback_shim: Path, gupnp_igd_stub_dir: Path, encoder: str,
    flags: tuple[str, ...],
) -> None:
    loaded = make_loaded(
        tmp_path,
        hooks=[{"use": "forensic_watermark", "options": {"key": KEY}}],
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    server = await start_server(loaded)
    started = time.monotonic()
    publisher = _start_whip_client(
        gupnp_igd_stub_dir, loopback_shim, f"{server.base}/whip/swc", token("swc", "swc-agent"),
        VIDEO[encoder], *flags,
    )
    viewer = None
    try:
        rooms = server.app[ROOMS]
        await wait_for(lambda: "swc" in rooms.rooms and bool(rooms.rooms["swc"].participants), 20)
        viewer = await client.play(
            http, server.base, "swc", token("swc", "c", Role.CUSTOMER), kinds=("video",)
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
        elapsed = time.monotonic() - started
        # What the stand-in is for, checked in the running client rather than assumed.
        mapped = await asyncio.to_thread(Path(f"/proc/{publisher.pid}/maps").read_text)
        stub = str(gupnp_igd_stub_dir / "libgupnp-igd-1.0.so.4")
        assert stub in mapped, "the stand-in libgupnp-igd is not loaded"
        assert "libsoup-2.4.so" in mapped and "libsoup-3.0.so" not in mapped, "libsoup-3 was loaded"
        assert len(lumas) >= 30, f"the viewer decoded {len(lumas)} frames from whip-client"
        room = rooms.get("swc")
        published = [e.data["codec"].lower() for e in room.events.history() if e.type == "track_published"]
        assert published == ["video/vp8" if encoder == "vp8enc" else "video/h264"], published
        assigned = [e for e in room.events.history() if e.type == "watermark_assigned"]
        assert assigned
        result = extract(lumas[-60:], key=KEY.encode())
        assert result is not None, "no watermark recovered from the forwarded whip-client video"
        assert result.id == assigned[-1].data["id"] or result.id_hex == assigned[-1].data["id"]
        print(f"whip-client {encoder} {flags}: {len(lumas)} frames decoded by the viewer in {elapsed:.1f} s")
    except AssertionError as error:
        failure: AssertionError | None = error
    else:
        failure = None
    finally:
        if viewer is not None:
            await client.close(viewer)
        # SIGINT is whip-client's own way out: it sends DELETE to the session and stops the pipeline.
        publisher.send_signal(signal.SIGINT)
        try:
            output, _ = await asyncio.to_thread(publisher.communicate, timeout=20)
        except subprocess.TimeoutExpired:
            publisher.kill()
            output, _ = publisher.communicate()
        await server.runner.cleanup()
    assert failure is None, f"{failure}\n--- whip-client {encoder} output ---\n{output}"
    assert "libsoup2 symbols detected" not in output, output
    assert "PeerConnection connected" in output, output


AUDIO = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample ! queue "
    "! opusenc ! rtpopuspay pt=111 ssrc=1 ! queue "
    "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111"
)


async def test_simple_whip_client_publishes_audio_and_video(
    tmp_path: Path, http, loopback_shim: Path, gupnp_igd_stub_dir: Path
) -> None:
    """whip-client's webrtcbin has bundle-policy none: two m-lines, two ICE transports to the server."""
    loaded = make_loaded(tmp_path, archive={"enabled": False}, compliance={"enabled": False})
    server = await start_server(loaded)
    publisher = _start_whip_client(
        gupnp_igd_stub_dir, loopback_shim, f"{server.base}/whip/swc-av", token("swc-av", "swc-agent"),
        VIDEO["vp8enc"], "-A", AUDIO,
    )
    viewer = None
    try:
        rooms = server.app[ROOMS]
        await wait_for(lambda: "swc-av" in rooms.rooms and bool(rooms.rooms["swc-av"].participants), 20)
        viewer = await client.play(http, server.base, "swc-av", token("swc-av", "c", Role.CUSTOMER))
        await wait_for(
            lambda: all(viewer.received.get(kind) is not None for kind in ("audio", "video")), 20
        )
        audio, video = viewer.received["audio"], viewer.received["video"]
        await wait_for(lambda: audio.count >= 100 and video.count >= 60, 30)
        room = rooms.get("swc-av")
        published = sorted(
            e.data["codec"].lower() for e in room.events.history() if e.type == "track_published"
        )
        assert published == ["audio/opus", "video/vp8"], published
        # The sine reached the viewer, not silence: Opus at volume 0.3 keeps a clear peak.
        samples = audio.frames[-1].to_ndarray()
        assert int(abs(samples).max()) > 3000, int(abs(samples).max())
        counts = (audio.count, video.count)
    except AssertionError as error:
        failure: AssertionError | None = error
    else:
        failure = None
    finally:
        if viewer is not None:
            await client.close(viewer)
        publisher.send_signal(signal.SIGINT)
        try:
            output, _ = await asyncio.to_thread(publisher.communicate, timeout=20)
        except subprocess.TimeoutExpired:
            publisher.kill()
            output, _ = publisher.communicate()
        await server.runner.cleanup()
    assert failure is None, f"{failure}\n--- whip-client audio+video output ---\n{output}"
    print(f"whip-client audio+video: {counts[0]} audio and {counts[1]} video frames at the viewer")
