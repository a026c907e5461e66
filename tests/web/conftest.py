"""A dashboard served on 127.0.0.1 over a real database, and a headless Chromium to drive it.

The app holds only the dashboard (bot.web.setup) with the test stand-in for retry/cancel;
Chromium is Debian's /usr/bin/chromium driven by Playwright (no browser download).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.web import Dashboard, issue_login_link
from bot.web import setup as setup_dashboard
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
from tests.web.stand_in_actions import DatabaseActionsStandIn

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
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Served:
    """The running dashboard: its base URL, its state, and the test's database."""

    url: str
    dash: Dashboard
    actions: DatabaseActionsStandIn
    session_factory: async_sessionmaker[AsyncSession]

    async def login_link(self, user_id: str = "U0REQ1", name: str = "Ada Lovelace") -> str:
        async with self.session_factory.begin() as session:
            return await issue_login_link(
                session,
                slack_user_id=user_id,
                user_name=name,
                team_id="T0TEAM",
                public_url=self.url,
            )

    async def add_request(self, request_id: str, **fields: Any) -> FeatureRequest:
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
    ) -> RequestMessage:
        """Write a message as the side-API would, and announce it."""
        async with self.session_factory.begin() as session:
            message = await RequestMessagesRepository(session).add_system(
                request_id, type, content, metadata
            )
            await announce(session, request_id)
        return message

    async def set_status(self, request_id: str, status: RequestStatus, **fields: Any) -> None:
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


async def serve(
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    **options: Any,
) -> AsyncIterator[Served]:
    actions = DatabaseActionsStandIn(session_factory)
    app = web.Application()
    dash = setup_dashboard(
        app,
        session_factory=session_factory,
        engine=engine,
        actions=actions,
        admin_user_ids={ADMIN},
        **options,
    )
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert dash.listener is not None
        await dash.listener.listening.wait()
        yield Served(f"http://127.0.0.1:{port}", dash, actions, session_factory)
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Served]:
    """The dashboard on a fresh database, stopped after the test."""
    async for value in serve(engine, session_factory, public_url=None):
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
