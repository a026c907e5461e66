"""Live updates on the page: none is lost to a fetch that crossed it, and a thread read at
its end stays at its end.

Opening a thread fetches its messages while the event stream keeps delivering changes; a
message posted (or edited) after the server rendered the fetch, but delivered before the
fetch's answer arrived, used to vanish when the answer replaced the panel. The tests hold
the fetch's answer back until the live update is on the page, then let it through.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator import DEMO_CHANNEL
from tests.simulator.bolt import BOT_TOKEN
from tests.simulator.test_sim_page import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM, serving


async def _held(page: Any, pattern: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Answer requests matching `pattern` with what the server said at once, but only
    when `release` is set; `asked` is set once the server has answered."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def handle(route: Any) -> None:
        response = await route.fetch()
        asked.set()
        await release.wait()
        await route.fulfill(response=response)

    await page.route(pattern, handle)
    return asked, release


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="Debian's chromium is not installed")
async def test_a_thread_keeps_what_arrived_while_it_loaded() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with (
        serving(simulator_setting="1") as running,
        playwright_api.async_playwright() as pw,
    ):
        web_api = AsyncWebClient(token=BOT_TOKEN, base_url=f"{running.url}/_sim/api/")
        root = await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="the root")
        progress = await web_api.chat_postMessage(
            channel=DEMO_CHANNEL, thread_ts=root["ts"], text="working: step 1"
        )
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            await page.goto(f"{running.url}/_sim/?channel={DEMO_CHANNEL}")
            await page.wait_for_selector("body[data-live='1']")
            asked, release = await _held(page, "**/_sim/ui/thread?*")
            message = page.locator("#messages .msg", has_text="the root")
            await message.hover()
            await message.locator(".open-thread").first.click()
            await asked.wait()

            # After the server rendered the thread: a new reply, and an edit of an old one.
            await web_api.chat_postMessage(
                channel=DEMO_CHANNEL, thread_ts=root["ts"], text="a question"
            )
            await web_api.chat_update(
                channel=DEMO_CHANNEL, ts=progress["ts"], text="working: step 2"
            )
            panel = page.locator("#thread-messages")
            # (The panel shows once its fetch is answered; the live updates are in it already.)
            await panel.locator(".msg", has_text="a question").wait_for(state="attached")
            await panel.locator(".msg", has_text="working: step 2").wait_for(state="attached")
            release.set()
            await page.wait_for_selector("#thread:not([hidden])")
            await panel.locator(".msg", has_text="the root").wait_for()

            texts = await panel.locator(".msg .msg-content").all_inner_texts()
            assert texts == ["the root", "working: step 2", "a question"]
        finally:
            await browser.close()


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="Debian's chromium is not installed")
async def test_the_channel_catches_up_without_losing_newer_messages() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with (
        serving(simulator_setting="1") as running,
        playwright_api.async_playwright() as pw,
    ):
        web_api = AsyncWebClient(token=BOT_TOKEN, base_url=f"{running.url}/_sim/api/")
        gone = await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="deleted meanwhile")
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            asked, release = await _held(page, "**/_sim/ui/pane?*")
            await page.goto(f"{running.url}/_sim/?channel={DEMO_CHANNEL}")
            # The page was drawn with the message; it is deleted (as a response_url's
            # delete_original does) before the catch-up is rendered, and a new one arrives
            # live before the catch-up is shown.
            assert running.sim is not None
            workspace = running.sim.workspace
            deleted = workspace.find_message(DEMO_CHANNEL, gone["ts"])
            assert deleted is not None
            workspace.delete(deleted)
            await asked.wait()
            await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="posted live")
            await page.locator("#messages .msg", has_text="posted live").wait_for()
            release.set()
            await page.wait_for_selector("body[data-live='1']")
            texts = await page.locator("#messages .msg .msg-content").all_inner_texts()
            assert texts == ["posted live"]
        finally:
            await browser.close()


@pytest.mark.skipif(not HAVE_CHROMIUM, reason="Debian's chromium is not installed")
async def test_a_thread_read_at_its_end_stays_there_as_a_message_grows() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with (
        serving(simulator_setting="1") as running,
        playwright_api.async_playwright() as pw,
    ):
        web_api = AsyncWebClient(token=BOT_TOKEN, base_url=f"{running.url}/_sim/api/")
        root = await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="the root")
        for n in range(12):
            await web_api.chat_postMessage(
                channel=DEMO_CHANNEL, thread_ts=root["ts"], text=f"reply {n}"
            )
        progress = await web_api.chat_postMessage(
            channel=DEMO_CHANNEL, thread_ts=root["ts"], text="working: step 1"
        )
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 600})
            page.set_default_timeout(10_000)
            await page.goto(f"{running.url}/_sim/?channel={DEMO_CHANNEL}")
            await page.wait_for_selector("body[data-live='1']")
            message = page.locator("#messages .msg", has_text="the root")
            await message.hover()
            await message.locator(".open-thread").first.click()
            panel = page.locator("#thread-messages")
            await panel.locator(".msg", has_text="working: step 1").wait_for()
            at_end = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 2"
            assert await panel.evaluate("el => el.scrollHeight > el.clientHeight")
            assert await panel.evaluate(at_end)

            steps = "\n".join(f"step {n}" for n in range(2, 30))
            await web_api.chat_update(channel=DEMO_CHANNEL, ts=progress["ts"], text=steps)
            await panel.locator(".msg", has_text="step 29").wait_for()
            assert await panel.evaluate(at_end)
        finally:
            await browser.close()
