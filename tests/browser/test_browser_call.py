"""Headless Debian Chromium on the demo page: an agent and a customer publish and watch each other.

Everything is real: a finrtc server on 127.0.0.1, Chromium's fake camera and microphone, WHIP and
WHEP over HTTP, ICE over loopback, VP8 decoded in the browser. The checks read pixels the page
decoded, not flags the page sets.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from finrtc.hooks.builtin.bitmap_font import GLYPH_HEIGHT
from finrtc.hooks.builtin.visible_watermark import LINE_GAP, MARGIN, auto_scale, layout, watermark_lines
from finrtc.model import Severity
from finrtc.room import STAFF
from finrtc.signaling.context import ROOMS
from tests.conftest import RunningServer, make_loaded, start_server

CHROMIUM = Path("/usr/bin/chromium")
ROOM = "browser-call"
AGENT = "anna.advisor"
CUSTOMER = "carl.customer"
# Screenshots land here when set (CI can keep them as artifacts); otherwise in pytest's tmp dir.
SCREENSHOT_DIR_ENV = "FINRTC_BROWSER_SCREENSHOTS"

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed (`make system-deps` installs it)"
    ),
]

# Runs inside the page: counts frames the compositor presents from the remote <video>.
COUNT_FRAMES_JS = """
async ([selector, wanted, timeoutMs]) => {
  const video = document.querySelector(selector);
  const started = performance.now();
  const startTime = video.currentTime;
  let frames = 0;
  let firstMediaTime = null;
  let lastMediaTime = null;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    const onFrame = (now, meta) => {
      frames += 1;
      if (firstMediaTime === null) firstMediaTime = meta.mediaTime;
      lastMediaTime = meta.mediaTime;
      if (frames >= wanted) { clearTimeout(timer); resolve(); return; }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
  return {
    frames,
    elapsedMs: performance.now() - started,
    mediaAdvance: lastMediaTime === null ? 0 : lastMediaTime - firstMediaTime,
    currentTimeAdvance: video.currentTime - startTime,
    width: video.videoWidth,
    height: video.videoHeight,
  };
}
"""

# Runs inside the page: luma statistics of a rectangle of the decoded picture.
REGION_STATS_JS = """
([selector, x, y, w, h]) => {
  const video = document.querySelector(selector);
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  const pixels = context.getImageData(x, y, w, h).data;
  let dark = 0, bright = 0, sum = 0;
  const count = pixels.length / 4;
  for (let i = 0; i < pixels.length; i += 4) {
    const luma = 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
    sum += luma;
    if (luma < 60) dark += 1;
    if (luma > 170) bright += 1;
  }
  return { mean: sum / count, dark: dark / count, bright: bright / count };
}
"""


def watermark_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Top-left (x, y, w, h) of the watermark's dark box, inset from its edges by the margin.

    The identity line's length depends on the participant, so the width covers only the time
    stamp line, which has a fixed length ("YYYY-MM-DD HH:MM:SS.mmmZ", 24 characters).
    """
    scale = auto_scale(height)
    box_h = 2 * GLYPH_HEIGHT * scale + LINE_GAP + 2 * MARGIN
    stamp_w = 24 * 6 * scale
    return MARGIN, MARGIN, min(stamp_w, width - MARGIN), min(box_h - 2 * MARGIN, height - MARGIN)


@pytest.fixture
async def demo_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    loaded = make_loaded(
        tmp_path,
        server={"demo_page": True, "dev_token_endpoint": True},
        archive={"enabled": False},
        compliance={"enabled": False},
    )
    running = await start_server(loaded)
    yield running
    await running.runner.cleanup()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    configured = os.environ.get(SCREENSHOT_DIR_ENV)
    directory = Path(configured) if configured else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def submit_join_form(page: Any, base: str, name: str, role: str) -> None:
    await page.goto(f"{base}/?room={ROOM}")
    await page.get_by_label("Your name").fill(name)
    await page.locator(f'input[name="role"][value="{role}"]').check()
    await page.get_by_role("button", name="Join call").click()


async def join(page: Any, base: str, name: str, role: str) -> None:
    await submit_join_form(page, base, name, role)
    await page.locator("#call").wait_for(state="visible", timeout=10_000)


def box_width(width: int, height: int, publisher: str, role: str) -> int:
    lines = watermark_lines(ROOM, publisher, role, 0.0, True)
    return layout(width, height, lines, auto_scale(height), "top_left")[3]


async def assert_sees_watermarked_video(page: Any, who: str, publisher: str, role: str) -> dict[str, Any]:
    await page.wait_for_function(
        "() => document.getElementById('remote-video').videoWidth > 0", timeout=30_000
    )
    motion = await page.evaluate(COUNT_FRAMES_JS, ["#remote-video", 15, 10_000])
    # Chromium's fake camera runs at ~20 fps; the server forwards every frame it decodes.
    assert motion["frames"] >= 15, f"{who}: only {motion['frames']} remote frames in 10 s: {motion}"
    assert motion["mediaAdvance"] > 0.2, f"{who}: remote video is not advancing: {motion}"
    assert motion["currentTimeAdvance"] > 0.2, f"{who}: remote video is not advancing: {motion}"

    x, y, w, h = watermark_box(motion["width"], motion["height"])
    remote = await page.evaluate(REGION_STATS_JS, ["#remote-video", x, y, w, h])
    # A dark box with white glyphs: mostly dark pixels, a clear share of bright ones.
    assert remote["dark"] > 0.5, f"{who}: no dark watermark box in the remote picture: {remote}"
    assert remote["bright"] > 0.04, f"{who}: no watermark text in the remote picture: {remote}"
    # The same rectangle of the page's own camera (no server hook) must fail that test, or
    # the check above proves nothing.
    local = await page.evaluate(REGION_STATS_JS, ["#local-video", x, y, w, h])
    stamped = local["dark"] > 0.5 and local["bright"] > 0.04
    assert not stamped, f"{who}: the camera picture already looks stamped: {local}"

    # The box is as wide as the publisher's identity line, so its right edge shows whose stamp
    # this is: the other party's, not the viewer's own picture looped back.
    right = box_width(motion["width"], motion["height"], publisher, role)
    inside = await page.evaluate(REGION_STATS_JS, ["#remote-video", right - 28, y, 20, h])
    outside = await page.evaluate(REGION_STATS_JS, ["#remote-video", right + 8, y, 20, h])
    assert inside["dark"] > 0.4 and outside["dark"] < 0.1, (
        f"{who}: the stamp does not end where {role} {publisher}'s would: {inside} {outside}"
    )
    return {"motion": motion, "remote": remote, "local": local, "edge": [inside, outside]}


async def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_agent_and_customer_see_each_other(demo_server: RunningServer, screenshot_dir: Path) -> None:
    from playwright.async_api import async_playwright

    base = demo_server.base
    async with async_playwright() as playwright:
        # launch() gives the browser a fresh temporary profile and removes it on close.
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # Separate contexts are separate windows, so neither page is a throttled background tab.
            agent_context = await browser.new_context(viewport={"width": 1280, "height": 860})
            customer_context = await browser.new_context(viewport={"width": 1280, "height": 860})
            agent = await agent_context.new_page()
            customer = await customer_context.new_page()
            console: list[str] = []
            for label, page in (("agent", agent), ("customer", customer)):
                page.on("console", lambda message, label=label: console.append(f"{label}: {message.text}"))
                page.on("pageerror", lambda error, label=label: console.append(f"{label} error: {error}"))

            await join(agent, base, AGENT, "agent")
            await join(customer, base, CUSTOMER, "customer")
            for page, who in ((agent, "agent"), (customer, "customer")):
                error = page.locator("#error")
                assert not await error.is_visible(), f"{who}: {await error.inner_text()}; console: {console}"

            agent_view = await assert_sees_watermarked_video(agent, "agent", CUSTOMER, "customer")
            customer_view = await assert_sees_watermarked_video(customer, "customer", AGENT, "agent")

            # The agent's panel shows the customer's arrival from the room's WebSocket stream.
            joined = agent.locator('#event-log li[data-type="participant_joined"]', has_text=CUSTOMER)
            await joined.wait_for(timeout=10_000)
            assert "Customer carl.customer joined" in await joined.inner_text()
            assert await agent.locator("#events-state").inner_text() == "live"
            # Staff-only events (the server marks subscription binding for agents) stay off the
            # customer's page.
            assert await agent.locator('#event-log li[data-type="subscription_bound"]').count() >= 1
            assert await customer.locator('#event-log li[data-type="subscription_bound"]').count() == 0

            # Hook and compliance events reach the page through the same stream: prompts and
            # alerts get their prominent places, unknown event types still show type and data.
            events = demo_server.app[ROOMS].get(ROOM).events
            events.publish(
                "compliance.prompt",
                {"stage_id": "risk", "text": "Explain the product's risk class to the customer.",
                 "urgent": True, "can_submit": False},
                severity=Severity.WARNING, audience=STAFF,
            )
            events.publish("face_lost", {"participant": CUSTOMER, "role": "customer", "absent_s": 3.0},
                           severity=Severity.ALERT, audience=STAFF)
            events.publish("advisor_note_saved", {"note_id": "n-17", "chars": 412})
            events.publish("compliance.started", {"script": "demo", "require_consent": True})
            await agent.locator("#prompt-text", has_text="risk class").wait_for(timeout=10_000)
            assert "urgent" in (await agent.locator("#prompt").get_attribute("class") or "")
            assert await agent.locator("#submit-state").inner_text() == "Not ready to submit"
            assert "not visible" in await agent.locator("#presence-state").inner_text()
            assert "face_lost" in await agent.locator("#alerts li").first.inner_text()
            unknown = agent.locator('#event-log li[data-type="advisor_note_saved"]')
            await unknown.wait_for(timeout=10_000)
            assert "note_id" in await unknown.inner_text() and "n-17" in await unknown.inner_text()
            # The customer gets the event meant for everyone, never the staff-only ones.
            await customer.locator('#event-log li[data-type="advisor_note_saved"]').wait_for(timeout=10_000)
            assert await customer.locator('#event-log li[data-type="compliance.prompt"]').count() == 0
            assert await customer.locator('#event-log li[data-type="face_lost"]').count() == 0
            assert not await customer.locator("#prompt").is_visible()
            # A script that needs consent gives the customer the consent buttons, not the agent.
            await customer.get_by_role("button", name="I give my consent").wait_for(timeout=10_000)
            assert not await agent.get_by_role("button", name="I give my consent").is_visible()

            await agent.screenshot(path=str(screenshot_dir / "agent.png"))
            await customer.screenshot(path=str(screenshot_dir / "customer.png"))

            # A server error reaches the user as the JSON body's message: a second page tries to
            # join as the customer with the agent's identity.
            intruder = await customer_context.new_page()
            await submit_join_form(intruder, base, AGENT, "customer")
            banner = intruder.locator("#error")
            await banner.wait_for(state="visible", timeout=10_000)
            text = await banner.inner_text()
            assert "Could not publish" in text and "already in room" in text and "HTTP 409" in text, text
            assert await intruder.locator("#join").is_visible()
            await intruder.screenshot(path=str(screenshot_dir / "error.png"))
            await intruder.close()

            # The customer drops out and comes back: the agent's page watches again by itself.
            rooms = demo_server.app[ROOMS]
            await customer.get_by_role("button", name="Leave call").click()
            await customer.locator("#join").wait_for(state="visible", timeout=10_000)
            await agent.locator('#event-log li[data-type="participant_left"]', has_text=CUSTOMER).wait_for(
                timeout=10_000
            )
            await agent.locator("#remote-waiting", has_text="customer left").wait_for(timeout=10_000)
            await customer.get_by_role("button", name="Join call").click()
            await customer.locator("#call").wait_for(state="visible", timeout=10_000)
            await agent.locator("#remote-waiting").wait_for(state="hidden", timeout=30_000)
            rejoined = await assert_sees_watermarked_video(agent, "agent after rejoin", CUSTOMER, "customer")

            # Leaving ends both WHIP and WHEP sessions: the room empties and closes.
            await customer.get_by_role("button", name="Leave call").click()
            await agent.get_by_role("button", name="Leave call").click()
            await agent.locator("#join").wait_for(state="visible", timeout=10_000)
            await wait_until(lambda: ROOM not in rooms.rooms, timeout=10)
            assert not [line for line in console if " error: " in line], console
            print(f"screenshots: {screenshot_dir}; agent {agent_view}; customer {customer_view}; "
                  f"agent after rejoin {rejoined}")
        finally:
            await browser.close()
