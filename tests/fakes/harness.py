"""A Clarity server on a test database, with its fakes: the runner and GitHub.

Used by tests/api, tests/github and tests/e2e. The app is the real one (build_app) served
over HTTP; jobs run when the test says so (`run_jobs`), with zero backoff, so every test
is deterministic.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fakes.fake_github import FakeGitHub, make_app_key
from fakes.fake_runner import FakeRunner
from sqlalchemy import func, select, text

from bot.app import Clarity, build_app, build_services
from bot.server import build_web_app
from bot.services import Services
from bot.settings import Settings
from bot.workers import Backoff, WorkerPool
from storage.models import FeatureRequest, Job, RequestMessage

API_TOKEN = "clarity-test-api-token-5f2d9c"
ENCRYPTION_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
WEBHOOK_SECRET = "github-webhook-secret-81e4"
APP_ID = "123456"
MY_JOB_KINDS = frozenset(
    {"dispatch", "runner_watchdog", "github_comment", "github_tracking_issue", "maintenance"}
)


@functools.cache
def app_key() -> tuple[str, str]:
    """One RSA key pair per test session (generating one takes a while)."""
    return make_app_key()


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """X-Hub-Signature-256 for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for a test server: nothing read from the developer's .env."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "encryption_key": ENCRYPTION_KEY,
        "clarity_api_token": API_TOKEN,
        "github_webhook_secret": WEBHOOK_SECRET,
        "clarity_public_url": "http://clarity.test",
        "clarity_run_workers": False,
        "clarity_job_max_attempts": 3,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_clarity(settings: Settings) -> Clarity:
    """The object graph as `clarity serve` builds it, on the test database."""
    services = build_services(
        settings, str(settings.secret("database_url")), pool_size=5, max_overflow=20
    )
    return build_app(settings, services=services)


@dataclass
class Harness:
    clarity: Clarity
    services: Services
    client: TestClient[web.Request, web.Application]
    runner: FakeRunner
    github: FakeGitHub
    kinds: frozenset[str] | None

    # -- HTTP ----------------------------------------------------------------------------

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = API_TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Call the side-API; (status, parsed JSON)."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        async with self.client.request(method, "/api" + path, data=data, headers=h) as resp:
            text_body = await resp.text()
            return resp.status, (json.loads(text_body) if text_body else None)

    async def webhook(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        signature: str | None = None,
    ) -> tuple[int, Any]:
        """Deliver a signed GitHub webhook over HTTP."""
        body = json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature if signature is not None else sign(body),
            "Content-Type": "application/json",
        }
        async with self.client.post("/github/webhook", data=body, headers=headers) as resp:
            return resp.status, await resp.json()

    # -- jobs ----------------------------------------------------------------------------

    def pool(self) -> WorkerPool:
        handlers = self.clarity.jobs
        if self.kinds is not None:
            handlers = {k: v for k, v in handlers.items() if k in self.kinds}
        return WorkerPool(self.services, handlers, backoff=Backoff(base_s=0))

    async def run_jobs(self) -> int:
        """Run every due job (of the kinds this harness runs) until none is left."""
        return await self.pool().run_until_idle()

    # -- database ------------------------------------------------------------------------

    async def requests(self) -> list[FeatureRequest]:
        async with self.services.session_factory() as s:
            return list((await s.scalars(select(FeatureRequest).order_by(FeatureRequest.id))).all())

    async def request(self, request_id: str) -> FeatureRequest:
        async with self.services.session_factory() as s:
            row = await s.scalar(
                select(FeatureRequest).where(FeatureRequest.request_id == request_id)
            )
        assert row is not None
        return row

    async def messages(self, request_id: str | None = None) -> list[RequestMessage]:
        stmt = select(RequestMessage).order_by(RequestMessage.id)
        if request_id is not None:
            stmt = stmt.where(RequestMessage.request_id == request_id)
        async with self.services.session_factory() as s:
            return list((await s.scalars(stmt)).all())

    async def jobs(self, kind: str | None = None) -> list[Job]:
        stmt = select(Job).order_by(Job.id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        async with self.services.session_factory() as s:
            return list((await s.scalars(stmt)).all())

    async def counts(self) -> dict[str, int]:
        """Rows in every table that an input could write to."""
        out: dict[str, int] = {}
        async with self.services.session_factory() as s:
            for table in (
                "feature_requests",
                "request_messages",
                "clarity_jobs",
                "clarity_inbound_deliveries",
                "app_config",
            ):
                out[table] = int(await s.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
        return out

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.services.session_factory.begin() as s:
            await s.execute(text(sql), params)

    async def count(self, model: Any) -> int:
        async with self.services.session_factory() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def types_of(messages: Iterable[RequestMessage]) -> list[str]:
    return [m.type.value for m in messages]


@asynccontextmanager
async def running_clarity(
    db_url: str,
    *,
    kinds: frozenset[str] | None = MY_JOB_KINDS,
    github_configured: bool = True,
    prepare: Callable[[Clarity], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A served Clarity app with a fake runner and a fake GitHub, torn down afterwards."""
    private_pem, public_pem = app_key()
    runner = await FakeRunner().start()
    fake_github = await FakeGitHub(app_id=APP_ID, public_key=public_pem).start()
    settings_values: dict[str, Any] = {"runner_url": runner.url, "github_api_url": fake_github.url}
    if github_configured:
        settings_values |= {
            "github_app_id": APP_ID,
            "github_private_key": private_pem,
            "github_installation_id": str(fake_github.installation_id),
        }
    settings_values.update(overrides)
    clarity = make_clarity(make_settings(db_url, **settings_values))
    if prepare is not None:
        prepare(clarity)
    app = build_web_app(clarity, run_workers=False)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Harness(clarity, clarity.services, client, runner, fake_github, kinds)
    finally:
        await client.close()
        await runner.close()
        await fake_github.close()
