"""The hourly `maintenance` job deletes sign-in tokens and web sessions that ended a day ago."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text

from bot.maintenance import MAINTENANCE_JOB
from bot.workers import Backoff, WorkerPool
from storage.models import Job, LoginToken, WebSession
from storage.repositories.web_sessions import token_hash
from tests.web.conftest import Served


async def _expire(served: Served, table: str, token: str, ago: dt.timedelta) -> None:
    async with served.session_factory.begin() as session:
        await session.execute(
            text(
                f"UPDATE {table} SET expires_at = now() - make_interval(secs => :s)"
                " WHERE token_hash = :h"
            ),
            {"s": ago.total_seconds(), "h": token_hash(token)},
        )


async def test_the_maintenance_job_deletes_long_expired_tokens_and_sessions(
    served: Served,
) -> None:
    links = [await served.login_link() for _ in range(3)]
    old_link, recent_link, live_link = (link.split("token=", 1)[1] for link in links)
    clients = [await served.client() for _ in range(3)]
    try:
        old_session, recent_session, live_session = (
            next(c.value for c in client.http.cookie_jar if c.key == "clarity_session")
            for client in clients
        )
        for table, old, recent in [
            ("clarity_login_tokens", old_link, recent_link),
            ("clarity_web_sessions", old_session, recent_session),
        ]:
            await _expire(served, table, old, dt.timedelta(days=1, minutes=1))
            await _expire(served, table, recent, dt.timedelta(hours=1))

        # Signing in prunes nothing: that is the hourly job's work.
        await (await served.client()).close()
        async with served.session_factory() as session:
            tokens = set((await session.scalars(select(LoginToken.token_hash))).all())
            assert token_hash(old_link) in tokens

        graph = served.clarity.graph
        await graph.maintenance.schedule(delay=dt.timedelta(0))
        pool = WorkerPool(
            graph.services,
            graph.maintenance.job_handlers(),
            concurrency=1,
            backoff=Backoff(base_s=0),
            worker_id="test-maintenance",
        )
        assert await pool.run_until_idle() == 1

        async with served.session_factory() as session:
            tokens = set((await session.scalars(select(LoginToken.token_hash))).all())
            sessions = set((await session.scalars(select(WebSession.token_hash))).all())
            queued = (
                await session.scalars(
                    select(Job).where(Job.kind == MAINTENANCE_JOB, Job.status == "queued")
                )
            ).all()
        # Expired a day ago: gone. Expired an hour ago (kept for support questions) and live:
        # still there.
        assert token_hash(old_link) not in tokens
        assert {token_hash(recent_link), token_hash(live_link)} <= tokens
        assert token_hash(old_session) not in sessions
        assert {token_hash(recent_session), token_hash(live_session)} <= sessions
        # The next run is queued, an hour on.
        [following] = queued
        assert following.run_at > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)

        # A live session still opens pages; an expired one does not.
        status, _, _ = await clients[2].get("/requests")
        assert status == 200
        status, _, _ = await clients[1].get("/requests")
        assert status == 303
    finally:
        for client in clients:
            await client.close()
