"""The demo page in Chinese: `?lang=zh`, or the call's compliance script language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser import test_browser_call as call_page
from tests.browser.test_browser_call import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import RunningServer

pytestmark = call_page.pytestmark
# The demo server and screenshot folder of the call test.
demo_server = call_page.demo_server
screenshot_dir = call_page.screenshot_dir


async def texts(page: Any, selector: str) -> list[str]:
    return [text.strip() for text in await page.locator(selector).all_inner_texts()]


async def test_demo_page_in_chinese(demo_server: RunningServer, screenshot_dir: Path) -> None:
    from playwright.async_api import async_playwright

    base = demo_server.base
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 860})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{base}/?lang=zh&room=zh-room")
            await page.locator("html[lang='zh-CN']").wait_for(state="attached", timeout=5_000)
            assert await texts(page, "#join-title") == ["加入通话"]
            assert await page.title() == "finrtc · 双录理财通话"
            # Validation messages demo.js builds are translated too.
            await page.get_by_role("button", name="加入通话").click()
            assert await texts(page, "#name-error") == ["请输入姓名。"]
            # Labels still name their inputs: the form works in Chinese.
            await page.get_by_label("您的姓名").fill("wang.li")
            await page.locator('input[name="role"][value="agent"]').check()
            await page.screenshot(path=str(screenshot_dir / "demo-zh-join.png"))
            await page.get_by_role("button", name="加入通话").click()
            await page.locator("#call").wait_for(state="visible", timeout=10_000)
            # Texts demo.js writes during the call, translated as they appear.
            assert await texts(page, "#mic-button") == ["麦克风静音"]
            await page.wait_for_function(
                "() => document.getElementById('remote-waiting-text').textContent === '正在等待客户加入…'",
                timeout=5_000,
            )
            await page.wait_for_function(
                "() => document.getElementById('events-state').textContent === '实时'", timeout=10_000
            )
            await page.locator("#mic-button").click()
            assert await texts(page, "#mic-button") == ["取消静音"]
            # What the user typed stays as typed.
            assert (await texts(page, "#fact-you"))[0].startswith("wang.li")
            await page.screenshot(path=str(screenshot_dir / "demo-zh-call.png"))
            assert errors == []

            # Without ?lang the page is English until the call's script turns out to be Chinese.
            english = await context.new_page()
            await english.goto(f"{base}/")
            assert await texts(english, "#join-title") == ["Join a call"]
            await english.evaluate("() => window.finrtcI18n.useScriptLanguage('en')")
            assert await texts(english, "#join-title") == ["Join a call"]
            await english.evaluate("() => window.finrtcI18n.useScriptLanguage('zh')")
            assert await texts(english, "#join-title") == ["加入通话"]
            # ?lang=en wins over the script's language.
            pinned = await context.new_page()
            await pinned.goto(f"{base}/?lang=en")
            await pinned.evaluate("() => window.finrtcI18n.useScriptLanguage('zh')")
            assert await texts(pinned, "#join-title") == ["Join a call"]
        finally:
            await browser.close()
