"""The simulator's page: off unless set up, served and live when on, and usable in a browser.

The browser test mounts the simulator with `setup()` on the same aiohttp app as a minimal
Bolt app at /slack/events — the way `clarity demo` runs it — and drives Debian's chromium.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator import DEMO_CHANNEL, YOU, Simulator, is_enabled, setup
from tests.simulator.bolt import BOT_TOKEN, SECRET

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Running:
    url: str
    sim: Simulator | None


@contextlib.asynccontextmanager
async def serving(
    *, simulator_setting: str | None, bolt: AsyncApp | None = None
) -> AsyncIterator[Running]:
    """An aiohttp app like Clarity's: /slack/events (Bolt), and the simulator if enabled."""
    app = web.Application()

    async def events(request: web.Request) -> web.StreamResponse:
        if bolt is None:
            return web.Response(status=404)
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "healthy"})

    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    sim = None
    if is_enabled(simulator_setting):
        sim = setup(app, signing_secret=SECRET, bot_token=BOT_TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    if bolt is not None:
        bolt.client.base_url = f"{url}/_sim/api/"
    try:
        yield Running(url, sim)
    finally:
        await server.close()


@pytest.mark.parametrize("setting", [None, "", "0", "false", "no"])
async def test_the_simulator_is_off_unless_asked_for(setting: str | None) -> None:
    assert not is_enabled(setting)
    async with serving(simulator_setting=setting) as running, aiohttp.ClientSession() as http:
        for path in ("/_sim/", "/_sim/api/auth.test", "/_sim/static/sim.js", "/_sim/events"):
            async with http.get(running.url + path) as response:
                assert response.status == 404, path
        async with http.get(running.url + "/healthz") as response:
            assert response.status == 200


async def test_on_it_is_loud_and_serves_the_page(caplog: pytest.LogCaptureFixture) -> None:
    assert is_enabled("1") and is_enabled("true")
    with caplog.at_level(logging.WARNING):
        async with serving(simulator_setting="1") as running, aiohttp.ClientSession() as http:
            assert running.sim is not None
            async with http.get(running.url + "/_sim/") as response:
                assert response.status == 200
                page = await response.text()
            async with http.post(
                running.url + "/_sim/api/auth.test",
                headers={"Authorization": "Bearer xoxb-wrong"},
            ) as response:
                assert (await response.json())["error"] == "invalid_auth"
    [warning] = [r for r in caplog.records if "SIMULATOR" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "/_sim" in warning.getMessage()
    assert "<h1>#clarity-demo</h1>" in page and "</span> general</a>" in page
    assert 'src="/_sim/static/sim.js"' in page


async def test_page_renders_escaped_and_streams_changes() -> None:
    async with serving(simulator_setting="1") as running, aiohttp.ClientSession() as http:
        sim = running.sim
        assert sim is not None
        web_api = AsyncWebClient(token=BOT_TOKEN, base_url=f"{running.url}/_sim/api/")
        await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="<script>alert(1)</script>")
        async with http.get(running.url + f"/_sim/?channel={DEMO_CHANNEL}") as response:
            page = await response.text()
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        async with http.get(running.url + "/_sim/events?user=" + YOU) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert (await stream.content.readuntil(b"\n\n")).startswith(b"retry: 1000")
            await web_api.chat_postMessage(channel=DEMO_CHANNEL, text="*live*")
            event = (await stream.content.readuntil(b"\n\n")).decode()
        assert event.startswith("event: message\n") and "<b>live</b>" in event
        # The person's actions are JSON posts only (a form on another site cannot send one).
        async with http.post(
            running.url + "/_sim/ui/say", data={"channel": DEMO_CHANNEL, "text": "x"}
        ) as response:
            assert response.status == 415


def _demo_bolt() -> AsyncApp:
    """A minimal app: `/clarity <text>` posts a message with buttons; a bare `/clarity` opens
    a form; a reply in a thread is answered in the thread."""
    bolt = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN),
        signing_secret=SECRET,
        process_before_response=True,
    )
    form = {
        "type": "modal",
        "callback_id": "file",
        "title": {"type": "plain_text", "text": "New request"},
        "submit": {"type": "plain_text", "text": "File request"},
        "blocks": [
            {
                "type": "input",
                "block_id": "repo",
                "label": {"type": "plain_text", "text": "Repository"},
                "element": {"type": "plain_text_input", "action_id": "repo"},
            }
        ],
    }

    @bolt.command("/clarity")
    async def command(ack: Any, command: dict[str, Any], client: AsyncWebClient) -> None:
        if not command["text"]:
            await ack()
            await client.views_open(trigger_id=command["trigger_id"], view=form)
            return
        await ack(text="Working on it…")
        await client.chat_postMessage(
            channel=command["channel_id"],
            text="Approve?",
            blocks=[
                {"type": "header", "text": {"type": "plain_text", "text": "Deploy request"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{command['text']}*"}},
                {
                    "type": "actions",
                    "block_id": "decide",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "approve",
                            "style": "primary",
                            "text": {"type": "plain_text", "text": "Approve"},
                            "value": "yes",
                            "confirm": {
                                "title": {"type": "plain_text", "text": "Sure?"},
                                "text": {"type": "mrkdwn", "text": "This _deploys_."},
                                "confirm": {"type": "plain_text", "text": "Deploy"},
                                "deny": {"type": "plain_text", "text": "Wait"},
                            },
                        },
                        {
                            "type": "button",
                            "action_id": "reject",
                            "style": "danger",
                            "text": {"type": "plain_text", "text": "Reject"},
                            "value": "no",
                        },
                    ],
                },
            ],
        )

    @bolt.action("approve")
    async def approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        await respond(
            replace_original=True,
            text=f":white_check_mark: Approved by <@{body['user']['id']}>",
        )

    @bolt.view("file")
    async def file(ack: Any, body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        repo = view["state"]["values"]["repo"]["repo"]["value"]
        if "/" not in repo:
            await ack(response_action="errors", errors={"repo": "Use owner/repo, e.g. acme/web."})
            return
        await ack()
        await client.chat_postMessage(channel=DEMO_CHANNEL, text=f"Filed `{repo}`")

    @bolt.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(
            user_id=event["user"],
            view={
                "type": "home",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Your requests"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "_None yet._"}},
                ],
            },
        )

    @bolt.event("message")
    async def reply(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("thread_ts"):
            await client.chat_postMessage(
                channel=event["channel"], thread_ts=event["thread_ts"], text="Got your reply"
            )

    return bolt


async def test_a_person_uses_the_page_in_chromium() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    bolt = _demo_bolt()
    async with (
        serving(simulator_setting="1", bolt=bolt) as running,
        playwright_api.async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            await page.goto(f"{running.url}/_sim/?channel={DEMO_CHANNEL}")
            await page.wait_for_selector("body[data-live='1']")
            box = page.locator("#composer textarea")

            # A command: the ack privately, then the app's message with buttons.
            await box.fill("/clarity ship <b>it</b> today")
            await box.press("Enter")
            await page.wait_for_selector(".msg.ephemeral:has-text('Working on it')")
            await page.wait_for_selector(".bk-header:has-text('Deploy request')")
            assert await page.locator(".msg-content b").last.inner_text() == "ship <b>it</b> today"
            await page.screenshot(path=str(SCREENSHOTS / "simulator-buttons.png"))

            # A button with a confirmation dialog, answered through the response_url.
            await page.locator(".bk-button", has_text="Approve").click()
            await page.wait_for_selector(".confirm .modal-head:has-text('Sure?')")
            await page.locator("[data-confirm-ok]").click()
            await page.wait_for_selector(".msg:has-text('Approved by @you')")
            assert await page.locator(".bk-button", has_text="Approve").count() == 0
            assert "✅" in await page.locator(".msg", has_text="Approved by").inner_text()

            # A reply in the thread: an event to the app, its answer in the thread.
            message = page.locator("#messages .msg", has_text="Approved by")
            await message.hover()
            await message.locator(".open-thread").click()
            await page.wait_for_selector("#thread:not([hidden])")
            await page.locator("#thread-composer textarea").fill("looks good")
            await page.locator("#thread-composer textarea").press("Enter")
            await page.wait_for_selector("#thread-messages .msg:has-text('Got your reply')")
            await page.wait_for_selector("#messages .replies:has-text('2 replies')")
            await page.screenshot(path=str(SCREENSHOTS / "simulator-thread.png"))
            await page.locator("#thread-close").click()

            # A reaction, added and shown with its count.
            await message.hover()
            await message.locator(".quick-react[data-name='+1']").click()
            await page.wait_for_selector("#messages .reaction.mine:has-text('1')")

            # A bare command opens the form; the app's errors show in it.
            await box.fill("/clarity")
            await box.press("Enter")
            await page.wait_for_selector(".modal h2:has-text('New request')")
            await page.locator(".modal .bk-field-input").fill("nope")
            await page.locator("[data-submit]").click()
            await page.wait_for_selector(".modal .bk-error:has-text('Use owner/repo')")
            await page.screenshot(path=str(SCREENSHOTS / "simulator-modal.png"))
            await page.locator(".modal .bk-field-input").fill("acme/web")
            await page.locator("[data-submit]").click()
            await page.wait_for_selector(".msg:has-text('Filed')")
            assert await page.locator(".modal").count() == 0

            # App Home: opening it tells the app, which publishes the tab.
            await page.locator("#nav-home").click()
            await page.wait_for_selector("#home .bk-header:has-text('Your requests')")
            assert await page.locator("#home i").inner_text() == "None yet."

            await page.goto(f"{running.url}/_sim/?channel={DEMO_CHANNEL}")
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(SCREENSHOTS / "simulator-phone.png"))
        finally:
            await browser.close()
    assert running.sim is not None
    assert [r["text"] for r in running.sim.responses] == [
        f":white_check_mark: Approved by <@{YOU}>"
    ]
