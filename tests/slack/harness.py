"""The real Clarity server on 127.0.0.1, wired to a FakeSlack, for end-to-end Slack tests.

    async with FakeSlack() as slack, running_clarity(db_url, slack) as clarity:
        sent = await clarity.sender.command("acme/web add dark mode")
        await clarity.settle()          # listener work after the ack, accepted filings and clicks
        await clarity.run_jobs()        # Slack jobs (root post, thread, progress), one by one
        slack.calls("chat.postMessage")

`running_clarity(..., handlers=...)` chooses which job kinds `run_jobs` runs (default: the
Slack ones; pass `bot.workers.job_registry(services)`-style handlers for the whole loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from bot.app import Clarity as Graph
from bot.app import build_app, build_services
from bot.server import build_web_app
from bot.services import Services
from bot.settings import load_settings
from bot.slack import job_handlers as slack_job_handlers
from bot.slack.feature import SlackFeature
from bot.slack.filing import FILE_JOB
from bot.slack.interactions import INTERACTION_JOB
from bot.workers import Backoff, JobHandler, WorkerPool
from storage.models import FeatureRequest, Job, RequestMessage, SlackPost
from tests.slack.fake_slack import FakeSlack
from tests.slack.signing import SlackSender

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
ENCRYPTION_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


@dataclass
class Clarity:
    """A running server and the handles a test needs."""

    url: str
    graph: Graph
    services: Services
    feature: SlackFeature
    slack: FakeSlack
    sender: SlackSender
    pool: WorkerPool

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until the work listeners do after their ack has finished, and run what they
        accepted (`slack.file` and `slack.interaction` jobs) — but post nothing to Slack yet."""
        assert await self.feature.inflight.wait_idle(timeout_s), "listener work did not finish"
        await self.run_jobs(FILE_JOB, INTERACTION_JOB)

    async def run_jobs(self, *kinds: str) -> int:
        """Run every due job (of `kinds`, default: the chosen handlers), one at a time."""
        if not kinds:
            return await self.pool.run_until_idle()
        only = WorkerPool(
            self.services,
            {k: h for k, h in self.pool.handlers.items() if k in kinds},
            concurrency=1,
            backoff=Backoff(base_s=0),
            worker_id="test-worker",
        )
        return await only.run_until_idle()

    async def file(
        self, text: str = "acme/web add a dark mode toggle", **fields: Any
    ) -> FeatureRequest:
        """File a request with /clarity and run the jobs that post its root message."""
        sent = await self.sender.command(text, **fields)
        assert sent.status == 200, sent.text
        await self.settle()
        await self.run_jobs()
        return (await self.requests())[-1]

    async def request(self, request_id: str) -> FeatureRequest:
        async with self.services.session_factory() as session:
            row = await session.scalar(
                select(FeatureRequest).where(FeatureRequest.request_id == request_id)
            )
        assert row is not None
        return row

    async def requests(self) -> list[FeatureRequest]:
        async with self.services.session_factory() as session:
            return list(
                (await session.scalars(select(FeatureRequest).order_by(FeatureRequest.id))).all()
            )

    async def messages(self, request_id: str | None = None) -> list[RequestMessage]:
        stmt = select(RequestMessage).order_by(RequestMessage.id)
        if request_id is not None:
            stmt = stmt.where(RequestMessage.request_id == request_id)
        async with self.services.session_factory() as session:
            return list((await session.scalars(stmt)).all())

    async def jobs(self, kind: str | None = None) -> list[Job]:
        stmt = select(Job).order_by(Job.id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        async with self.services.session_factory() as session:
            return list((await session.scalars(stmt)).all())

    async def posts(self, request_id: str) -> list[SlackPost]:
        async with self.services.session_factory() as session:
            return list(
                (
                    await session.scalars(
                        select(SlackPost)
                        .where(SlackPost.request_id == request_id)
                        .order_by(SlackPost.id)
                    )
                ).all()
            )


@contextlib.asynccontextmanager
async def running_clarity(
    db_url: str,
    slack: FakeSlack,
    *,
    handlers: Callable[[Graph], dict[str, JobHandler]] | None = None,
    progress_interval_s: float = 0.0,
    **settings: Any,
) -> AsyncIterator[Clarity]:
    """`bot.server.build_app` served on 127.0.0.1 (random port), Slack pointed at `slack`."""
    values: dict[str, Any] = {
        "_env_file": None,
        "database_url": db_url,
        "encryption_key": ENCRYPTION_KEY,
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": None,
        "slack_api_url": slack.api_url,
        "clarity_run_workers": False,
    }
    values.update(settings)
    settings = load_settings(**values)
    graph = build_app(
        settings, services=build_services(settings, db_url), progress_interval_s=progress_interval_s
    )
    services, feature = graph.services, graph.slack
    server = TestServer(build_web_app(graph, run_workers=False), host="127.0.0.1")
    await server.start_server()

    def slack_only(graph: Graph) -> dict[str, JobHandler]:
        return slack_job_handlers(graph.slack, graph.slack_notifier)

    pool = WorkerPool(
        services,
        (handlers or slack_only)(graph),
        concurrency=1,
        backoff=Backoff(base_s=0),
        worker_id="test-worker",
    )
    try:
        async with aiohttp.ClientSession() as http:
            sender = SlackSender(http, str(server.make_url("/slack/events")), SIGNING_SECRET, slack)
            yield Clarity(
                url=str(server.make_url("")).rstrip("/"),
                graph=graph,
                services=services,
                feature=feature,
                slack=slack,
                sender=sender,
                pool=pool,
            )
    finally:
        await server.close()
