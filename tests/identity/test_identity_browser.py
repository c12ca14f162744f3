"""The demo page in headless Chromium: the agent starts a liveness check, the customer's page
shows the prompt and the outcome, the agent's page the result. Chromium's fake camera plays a
still picture of the astronaut, so the check must fail at the deadline (a photo never blinks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from finrtc.identity.testing import letterbox
from tests.browser.test_browser_call import CHROMIUM, CHROMIUM_ARGS, join
from tests.conftest import RunningServer, make_loaded, start_server

pytest.importorskip("dlib")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


def still_y4m(path: Path) -> Path:
    """A Y4M clip of one 640x480 picture (Chromium's fake camera loops it)."""
    import cv2

    rgb = letterbox(skimage.data.astronaut())
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    frame = b"FRAME\n" + np.ascontiguousarray(i420).tobytes()
    path.write_bytes(b"YUV4MPEG2 W640 H480 F20:1 Ip A1:1 C420jpeg\n" + frame * 4)
    return path


@pytest.fixture
async def identity_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    loaded = make_loaded(
        tmp_path,
        server={"demo_page": True, "dev_token_endpoint": True},
        archive={"enabled": False},
        compliance={"enabled": False},
        identity={"enabled": True, "action_timeout_s": 3.0},
    )
    running = await start_server(loaded)
    yield running
    await running.runner.cleanup()


async def test_customer_sees_prompt_and_agent_sees_result(
    identity_server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    clip = still_y4m(tmp_path / "astronaut.y4m")
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            agent = await (await browser.new_context()).new_page()
            customer = await (await browser.new_context()).new_page()
            await join(agent, identity_server.base, "anna.advisor", "agent")
            await join(customer, identity_server.base, "carl.customer", "customer")
            published = agent.locator('#event-log li[data-type="track_published"]', has_text="carl.customer")
            await published.first.wait_for(timeout=15_000)
            await agent.get_by_role("button", name="Start liveness check").click()
            badge = agent.locator("#identity-state")
            await badge.wait_for(state="visible", timeout=5_000)

            prompt = customer.locator("#liveness-text")
            await customer.locator("#liveness").wait_for(state="visible", timeout=15_000)
            assert (await prompt.inner_text()).startswith("Please ")
            assert "Step 1 of" in await customer.locator("#liveness-progress").inner_text()
            # Staff do not get the customer's prompt box.
            assert await agent.locator("#liveness").is_hidden()

            await customer.wait_for_function(
                "() => document.getElementById('liveness-text').textContent.startsWith('Identity check')",
                timeout=20_000,
            )
            assert await prompt.inner_text() == "Identity check failed."
            await agent.wait_for_function(
                "() => document.getElementById('identity-state').textContent.includes('failed')",
                timeout=10_000,
            )
            assert await badge.inner_text() == "Liveness: failed (timeout)"
        finally:
            await browser.close()
