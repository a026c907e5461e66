"""`clarity demo` as a person uses it: started from the command line, driven in Chromium.

The demo runs as its own process (`python -m bot demo`, a fresh data folder, a free port),
exactly as the README says to start it; the test reads the URL it prints, opens it in
headless Chromium (Debian's /usr/bin/chromium through Playwright) and does what the
README's "Try it in one minute" says: file a request in #clarity-demo, watch the agent,
answer its question with a button, see the result and its diff; then cancel a second
request, retry a third that fails, and leave a fourth working. Every step leaves a screenshot in
test-output/screenshots/demo-*.png. At the end the demo gets SIGTERM: it must exit 0 and
leave no process behind (its PostgreSQL, the agent still at work).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pg import make_server_dir

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
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
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# How long one step may take to show in the browser (a run is a few seconds at this pace).
STEP_MS = 30_000
URL_LINE = re.compile(r"open\s+(http://\S+/_sim/)")
# Settings of the machine running the tests that must not reach the demo.
FOREIGN = re.compile(
    r"^(DATABASE_URL|MASTER_DATABASE_URL|SLACK_|GITHUB_|ANTHROPIC_|RUNNER_URL|CLARITY_)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    """A running `clarity demo`: its process, data folder, printed URL and output so far."""

    process: asyncio.subprocess.Process
    folder: Path
    output: list[str] = field(default_factory=list)
    url: str = ""

    def log(self) -> str:
        return "".join(self.output)


def processes_using(folder: Path) -> list[str]:
    """Processes whose command line names the folder or whose working directory is in it."""
    found = []
    prefix = str(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = ""
            with contextlib.suppress(OSError):
                cwd = os.readlink(entry / "cwd")
            if prefix in cmdline or cwd.startswith(prefix):
                found.append(f"{entry.name}: {cmdline.strip()[:200]} (in {cwd})")
    return found


async def _read_output(demo: Demo, printed: asyncio.Event) -> None:
    assert demo.process.stdout is not None
    async for raw in demo.process.stdout:
        line = raw.decode(errors="replace")
        demo.output.append(line)
        match = URL_LINE.search(line)
        if match and not demo.url:
            demo.url = match.group(1)
            printed.set()


@contextlib.asynccontextmanager
async def clarity_demo() -> AsyncIterator[Demo]:
    """`python -m bot demo` in a fresh data folder; SIGTERM at the end, checked to be clean."""
    folder = make_server_dir()  # reachable by the embedded PostgreSQL's own user as root
    env = {k: v for k, v in os.environ.items() if not FOREIGN.match(k)}
    env.update(
        CLARITY_DATA_DIR=str(folder),
        HOST="127.0.0.1",
        PORT=str(_free_port()),
        CLAUDE_CODE_FAKE_STEP_S="0.05",
        PYTHONUNBUFFERED="1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "demo",
        cwd=folder,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    demo = Demo(process, folder)
    printed = asyncio.Event()
    reader = asyncio.create_task(_read_output(demo, printed))
    try:
        waiting = asyncio.create_task(printed.wait())
        exited = asyncio.create_task(process.wait())
        await asyncio.wait(
            {waiting, exited}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        waiting.cancel()
        exited.cancel()
        assert demo.url, f"clarity demo printed no URL:\n{demo.log()}"
        yield demo
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        print(f"clarity demo stopped in {time.monotonic() - stopping:.1f}s")
        await asyncio.wait_for(reader, STOP_TIMEOUT_S)
        assert code == 0, f"clarity demo exited {code}:\n{demo.log()}"
        assert "Clarity demo stopped" in demo.log()
        assert processes_using(folder) == [], demo.log()
    except BaseException:
        print(f"clarity demo's output:\n{demo.log()}")  # shown by pytest with the failure
        raise
    finally:
        # After a failure: stop it as a person would, and kill only what did not stop.
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()
        for line in processes_using(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


class Steps:
    """Screenshots named by step, and the time each step took (printed at the end)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.started = time.monotonic()
        self.last = self.started
        self.times: list[tuple[str, float]] = []

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=str(SCREENSHOTS / f"demo-{name}.png"))
        now = time.monotonic()
        self.times.append((name, now - self.last))
        self.last = now

    def report(self) -> str:
        steps = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.times)
        return f"{steps}; total {time.monotonic() - self.started:.1f}s"


async def _say(page: Any, text: str) -> None:
    box = page.locator("#composer textarea")
    await box.fill(text)
    await box.press("Enter")


def _root(page: Any, text: str) -> Any:
    """The request's root message in the channel."""
    return page.locator("#messages .msg", has_text=text).filter(has_text="Request")


async def _open_thread(page: Any, root: Any) -> None:
    await root.hover()
    await root.locator(".open-thread").first.click()
    await page.wait_for_selector("#thread:not([hidden])")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
async def test_a_person_tries_clarity_demo_in_a_browser() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with clarity_demo() as demo, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(STEP_MS)
            page = await context.new_page()
            steps = Steps(page)
            await page.goto(demo.url)
            await page.wait_for_selector("body[data-live='1']")
            assert await page.locator(".channel-header h1").inner_text() == "#clarity-demo"
            await steps.shot("1-open")

            # 1. File a request: the root message, then the agent's progress in its thread.
            await _say(page, "/clarity add a friendly greeting")
            first = _root(page, "add a friendly greeting")
            await first.wait_for()
            await _open_thread(page, first)
            thread = page.locator("#thread-messages")
            await thread.locator(".msg", has_text=re.compile(r"\d+ steps? ·")).wait_for()
            await steps.shot("2-progress")

            # 2. The agent asks, with a button per option; a click answers.
            question = thread.locator(".msg", has_text="Which greeting should the project use?")
            option = question.locator(".bk-button", has_text="Howdy, partner!")
            await option.wait_for()
            await steps.shot("3-question")
            await option.click()
            await thread.locator(".msg", has_text="Answered by").wait_for()

            # 3. The result: the thread links to the request's changes.
            result = thread.locator(".msg", has_text="Pull request opened")
            await result.wait_for()
            await first.filter(has_text="Pull request open").wait_for()
            link = result.locator("a.bk-link").first
            href = await link.get_attribute("href")
            assert href is not None and href.endswith("#changes"), href
            request_id = href.rsplit("/", 1)[1].removesuffix("#changes")
            await steps.shot("4-result")

            # The request's page wants a sign-in from Slack: `/clarity dashboard` sends the link.
            async with context.expect_page() as opened:
                await link.click()
            changes = await opened.value
            await changes.wait_for_load_state()
            assert "Sign in" in await changes.locator("h1").inner_text()
            await _say(page, "/clarity dashboard")
            sign_in = page.locator("#messages .msg.ephemeral a.bk-link", has_text="dashboard")
            async with context.expect_page() as opened:
                await sign_in.last.click()
            login = await opened.value
            await login.locator("button", has_text="Sign in").click()
            await login.wait_for_url(re.compile(rf"/requests/{request_id}"))
            await login.goto(href)
            diff = login.locator("#changes")
            await diff.get_by_text("Howdy, partner!").first.wait_for()
            await login.screenshot(path=str(SCREENSHOTS / "demo-5-changes.png"), full_page=True)
            await login.close()
            await changes.close()
            await page.locator("#thread-close").click()

            # 4. A second request, cancelled from its root message (with the confirmation).
            await _say(page, "/clarity make the greeting louder")
            second = _root(page, "make the greeting louder")
            await second.locator(".bk-button", has_text="Cancel").click()
            await page.locator(".confirm [data-confirm-ok]").click()
            await second.filter(has_text="Cancelled").wait_for()
            assert await second.locator(".bk-button", has_text="Cancel").count() == 0
            await steps.shot("6-cancelled")

            # 5. A third request fails (the scripted agent crashes on this marker); Retry
            # runs it again.
            await _say(page, "/clarity [fake:crash] say goodbye too")
            third = _root(page, "say goodbye too")
            await third.filter(has_text="Failed").wait_for()
            await _open_thread(page, third)
            retry = thread.locator(".msg", has_text="The run failed").locator(
                ".bk-button", has_text="Retry"
            )
            await retry.wait_for()
            await steps.shot("7-failed")
            await retry.click()
            await thread.locator(".msg", has_text="Retried by").wait_for()
            await thread.locator(".msg", has_text="(run 2)").wait_for()
            await steps.shot("8-retried")

            # 6. An agent still at work when the demo stops is stopped with it (below).
            await page.locator("#thread-close").click()
            await _say(page, "/clarity [fake:slow] take all the time you need")
            fourth = _root(page, "take all the time you need")
            await _open_thread(page, fourth)
            await thread.locator(".msg", has_text="still working").wait_for()
            await steps.shot("9-working")
            print(f"demo steps: {steps.report()}")
        finally:
            await browser.close()
