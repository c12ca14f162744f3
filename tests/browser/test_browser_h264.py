"""Headless Debian Chromium publishing and watching H.264 only (setCodecPreferences): its own
H.264 encoder (OpenH264) into finrtc's decoder, finrtc's shared H.264 encoder into Chromium's
decoder, with the watermark drawn in between. The checks read the codec from Chromium's own
RTCStats and pixels from the decoded picture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from finrtc.model import Role
from finrtc.signaling.context import ROOMS
from tests.browser.test_browser_call import CHROMIUM, CHROMIUM_ARGS, REGION_STATS_JS, watermark_box
from tests.conftest import RunningServer, make_loaded, start_server
from tests.media.test_media_fanout import token

ROOM = "browser-h264"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed (`make system-deps` installs it)"
    ),
]

# Runs inside the page: a WHIP publisher and a WHEP viewer, each offering H.264 only.
H264_CALL_JS = """
async ([base, room, publishToken, viewToken]) => {
  const h264 = (capabilities) => capabilities.codecs.filter(
    (c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  const gathered = (pc) => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") { resolve(); return; }
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
  const negotiate = async (pc, url, bearer) => {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + bearer },
      body: pc.localDescription.sdp,
    });
    const answer = await response.text();
    if (response.status !== 201) throw new Error(response.status + " " + answer);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    return answer;
  };
  const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  const publisher = new RTCPeerConnection({ iceServers: [] });
  publisher.addTransceiver(camera.getVideoTracks()[0], { direction: "sendonly" })
    .setCodecPreferences(h264(RTCRtpSender.getCapabilities("video")));
  const publishAnswer = await negotiate(publisher, `${base}/whip/${room}`, publishToken);

  const viewer = new RTCPeerConnection({ iceServers: [] });
  viewer.addTransceiver("video", { direction: "recvonly" })
    .setCodecPreferences(h264(RTCRtpReceiver.getCapabilities("video")));
  const video = document.createElement("video");
  video.id = "h264-remote";
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.appendChild(video);
  viewer.ontrack = (event) => {
    video.srcObject = new MediaStream([event.track]);
    video.play().catch(() => {});
  };
  const viewAnswer = await negotiate(viewer, `${base}/whep/${room}?participant=alice`, viewToken);
  window.h264Call = { publisher, viewer, camera };
  const local = document.createElement("video");
  local.id = "h264-local";
  local.muted = true;
  local.srcObject = camera;
  document.body.appendChild(local);
  await local.play();

  let frames = 0;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 15000);
    const onFrame = () => {
      frames += 1;
      if (frames >= 30) { clearTimeout(timer); resolve(); return; }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
  const codecOf = async (pc, type) => {
    const stats = await pc.getStats();
    let found = null;
    stats.forEach((s) => {
      if (s.type === type && s.kind === "video" && s.codecId) found = stats.get(s.codecId);
    });
    return found ? found.mimeType + " " + (found.sdpFmtpLine || "") : null;
  };
  return {
    publishAnswer, viewAnswer, frames, width: video.videoWidth, height: video.videoHeight,
    sent: await codecOf(publisher, "outbound-rtp"), received: await codecOf(viewer, "inbound-rtp"),
  };
}
"""

CLOSE_JS = """
() => {
  const call = window.h264Call;
  if (!call) return;
  call.viewer.close();
  call.publisher.close();
  call.camera.getTracks().forEach((t) => t.stop());
}
"""


@pytest.fixture
async def h264_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    loaded = make_loaded(
        tmp_path,
        server={"demo_page": True},
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    running = await start_server(loaded)
    yield running
    await running.runner.cleanup()


async def test_chromium_publishes_and_watches_h264(h264_server: RunningServer) -> None:
    from playwright.async_api import async_playwright

    base = h264_server.base
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            console: list[str] = []
            page.on("pageerror", lambda error: console.append(str(error)))
            # The demo page gives the script the server's origin (WHIP/WHEP without CORS).
            await page.goto(f"{base}/")
            call: dict[str, Any] = await page.evaluate(
                H264_CALL_JS,
                [base, ROOM, token(ROOM, "alice"), token(ROOM, "carl", Role.CUSTOMER)],
            )
            assert call["sent"] and call["sent"].startswith("video/H264"), (call, console)
            assert call["received"] and call["received"].startswith("video/H264"), call
            assert "packetization-mode=1" in call["received"]
            assert "VP8" not in call["publishAnswer"] and "VP8" not in call["viewAnswer"]
            assert call["frames"] >= 30, call
            assert (call["width"], call["height"]) == (640, 480), call

            pipeline = next(
                p
                for p in h264_server.app[ROOMS].get(ROOM).participants["alice"].publication.pipelines
                if p.kind.value == "video"
            )
            assert pipeline.encoder_codecs == ["h264"]

            # finrtc's watermark is in the picture Chromium decoded from finrtc's H.264.
            x, y, w, h = watermark_box(call["width"], call["height"])
            remote = await page.evaluate(REGION_STATS_JS, ["#h264-remote", x, y, w, h])
            local = await page.evaluate(REGION_STATS_JS, ["#h264-local", x, y, w, h])
            assert remote["dark"] > 0.5 and remote["bright"] > 0.04, remote
            # The camera's own picture, same rectangle, is not stamped: the check can fail.
            assert not (local["dark"] > 0.5 and local["bright"] > 0.04), local
            await page.evaluate(CLOSE_JS)
        finally:
            await browser.close()
