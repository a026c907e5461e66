"""The real Clarity server on 127.0.0.1 over a real database, and a headless Chromium.

The dashboard is served by the whole app (`bot.app.build_app` + `bot.server.build_web_app`,
as tests/slack/harness.py does) with Slack pointed at a FakeSlack, so Retry and Cancel go
through `LifecycleActions` → `RequestLifecycle` and an agent's messages through the
side-API. `served.actions` is a LifecycleActions that records each call and then makes it.
Chromium is Debian's /usr/bin/chromium driven by Playwright (no browser download).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_app, build_services
from bot.server import build_web_app
from bot.settings import load_settings
from bot.slack import job_handlers as slack_job_handlers
from bot.web import DASHBOARD_KEY, Dashboard, issue_login_link
from bot.web.actions import LifecycleActions
from bot.workers import Backoff, WorkerPool
from storage.models import (
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.request_events import announce
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import BOT_TOKEN, ENCRYPTION_KEY, SIGNING_SECRET, Clarity
from tests.slack.signing import SlackSender

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
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
ADMIN = "UADMIN01"
API_TOKEN = "clarity-web-tests-api-token-0123456789"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class RecordingActions(LifecycleActions):
    """The real LifecycleActions, recording each call before making it."""

    def __init__(self, real: LifecycleActions) -> None:
        super().__init__(real.lifecycle, real.session_factory)
        self.calls: list[tuple[str, str, str]] = []

    async def retry(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        self.calls.append(("retry", request_id, actor_id))
        return await super().retry(request_id, actor_id, actor_name)

    async def cancel(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        self.calls.append(("cancel", request_id, actor_id))
        return await super().cancel(request_id, actor_id, actor_name)


@dataclass
class Served:
    """The running server: its base URL, its dashboard, the Slack harness, the database."""

    url: str
    dash: Dashboard
    actions: RecordingActions
    session_factory: async_sessionmaker[AsyncSession]
    clarity: Clarity  # the Slack side: sender, fake Slack, run_jobs, settle
    http: aiohttp.ClientSession

    @property
    def slack(self) -> FakeSlack:
        return self.clarity.slack

    async def following(self, request_id: str | None, timeout_s: float = 5.0) -> None:
        """Wait until a page's event stream follows `request_id` (None: a list page), so a
        change made next reaches that page."""
        async with asyncio.timeout(timeout_s):
            while not self.dash.hub.following(request_id):  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.02)

    async def login_link(self, user_id: str = "U0REQ1", name: str = "Ada Lovelace") -> str:
        """A sign-in link as `/clarity dashboard` makes one (tests/slack checks that path)."""
        async with self.session_factory.begin() as session:
            return await issue_login_link(
                session,
                slack_user_id=user_id,
                user_name=name,
                team_id="T0TEAM",
                public_url=self.url,
            )

    async def add_request(self, request_id: str, **fields: Any) -> FeatureRequest:
        """A request as fixture data (written as filing would, announced to the pages)."""
        values: dict[str, Any] = {
            "request_id": request_id,
            "origin": RequestOrigin.SLACK,
            "repo": "acme/app",
            "title": f"Request {request_id}",
            "description": f"Please build {request_id}",
            "slack_user_id": "U0REQ1",
            "slack_user_name": "Ada Lovelace",
            "slack_channel_id": "C0CHAN",
            "slack_thread_ts": "1733400000.000100",
        }
        values.update(fields)
        async with self.session_factory.begin() as session:
            row = await FeatureRequestRepository(session).create(**values)
            await RequestMessagesRepository(session).add_message(
                request_id,
                MessageType.INITIAL_REQUEST,
                MessageSource.SLACK,
                values["description"],
                actor_id=values.get("slack_user_id"),
                actor_name=values.get("slack_user_name"),
            )
            await announce(session, request_id)
        return row

    async def add_message(
        self,
        request_id: str,
        type: MessageType,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An agent's message, posted through the side-API as an agent posts it."""
        body: dict[str, Any] = {"type": type.value, "content": content}
        if metadata is not None:
            body["metadata"] = metadata
        return await self.api("POST", f"/requests/{request_id}/messages", body, expect=201)

    async def report_status(self, request_id: str, status: RequestStatus, **fields: Any) -> None:
        """The agent's status report (PATCH …/status; camelCase fields), through the side-API."""
        body = {"status": status.value, **fields}
        await self.api("PATCH", f"/requests/{request_id}/status", body, expect=200)

    async def api(self, method: str, path: str, body: Any, *, expect: int) -> Any:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with self.http.request(
            method, f"{self.url}/api{path}", json=body, headers=headers
        ) as response:
            data = await response.json()
            assert response.status == expect, data
            return data

    async def record_message(
        self,
        request_id: str,
        type: MessageType,
        content: str,
        metadata: dict[str, Any] | None = None,
    ) -> RequestMessage:
        """A system message as fixture data (one no front door lets a test post)."""
        async with self.session_factory.begin() as session:
            message = await RequestMessagesRepository(session).add_system(
                request_id, type, content, metadata
            )
            await announce(session, request_id)
        return message

    async def set_status(self, request_id: str, status: RequestStatus, **fields: Any) -> None:
        """Fixture data: a request put in a status (as the runner's failure would)."""
        async with self.session_factory.begin() as session:
            await FeatureRequestRepository(session).update_status(request_id, status, **fields)
            await announce(session, request_id)

    async def client(self, user_id: str | None = "U0REQ1", name: str = "Ada Lovelace") -> Client:
        """An HTTP client, signed in as `user_id` (None: not signed in)."""
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        client = Client(http, self.url)
        if user_id is not None:
            link = await self.login_link(user_id, name)
            token = link.split("token=", 1)[1]
            async with http.post(
                f"{self.url}/login", data={"token": token}, allow_redirects=False
            ) as response:
                assert response.status == 303, await response.text()
            client.csrf = await client.csrf_from("/requests")
        return client


@dataclass
class Client:
    http: aiohttp.ClientSession
    url: str
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        async with self.http.get(self.url + path, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response.headers

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, Any]:
        async with self.http.post(self.url + path, data=data, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers

    async def csrf_from(self, path: str) -> str:
        status, text, _ = await self.get(path)
        assert status == 200, text
        found = CSRF_FIELD.search(text)
        assert found is not None
        return found.group(1)

    async def close(self) -> None:
        await self.http.close()


@contextlib.asynccontextmanager
async def serve(db_url: str, slack: FakeSlack, **settings: Any) -> AsyncIterator[Served]:
    """The whole app on 127.0.0.1 (a port chosen before start, so CLARITY_PUBLIC_URL can
    name it), Slack pointed at `slack`; stopped on exit. `settings` override Settings."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    values: dict[str, Any] = {
        "_env_file": None,
        "database_url": db_url,
        "encryption_key": ENCRYPTION_KEY,
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": None,
        "slack_api_url": slack.api_url,
        "clarity_run_workers": False,
        "clarity_public_url": url,
        "clarity_admin_user_ids": ADMIN,
        "clarity_api_token": API_TOKEN,
    }
    values.update(settings)
    loaded = load_settings(**values)
    graph = build_app(loaded, services=build_services(loaded, db_url), progress_interval_s=0.0)
    app = build_web_app(graph, run_workers=False)
    dash = app[DASHBOARD_KEY]
    assert isinstance(dash.actions, LifecycleActions)
    actions = dash.actions = RecordingActions(dash.actions)
    pool = WorkerPool(
        graph.services,
        slack_job_handlers(graph.slack, graph.slack_notifier),
        concurrency=1,
        backoff=Backoff(base_s=0),
        worker_id="test-worker",
    )
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        assert dash.listener is not None
        await dash.listener.listening.wait()
        async with aiohttp.ClientSession() as http:
            clarity = Clarity(
                url=url,
                graph=graph,
                services=graph.services,
                feature=graph.slack,
                slack=slack,
                sender=SlackSender(http, f"{url}/slack/events", SIGNING_SECRET, slack),
                pool=pool,
            )
            yield Served(url, dash, actions, graph.services.session_factory, clarity, http)
    finally:
        await runner.cleanup()
        sock.close()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """The Slack simulator's Web API on 127.0.0.1, recording every call."""
    async with FakeSlack() as slack:
        slack.add_user("U0REQ1", "Ada Lovelace")
        yield slack


@pytest.fixture
async def served(db_url: str, fake_slack: FakeSlack) -> AsyncIterator[Served]:
    """The server on a fresh database, stopped after the test."""
    async with serve(db_url, fake_slack) as value:
        yield value


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the session (closed at its end)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"{name}.png")


def ago(**kwargs: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(**kwargs)
