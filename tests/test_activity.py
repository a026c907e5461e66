"""Agent activity recorded in bulk (storage.activity), on real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.activity import ActivityPost, RecordedMessage, record_activity
from storage.jobs import CoalescedJob
from storage.models import Job, MessageSource, MessageType, RequestMessage
from storage.repositories import FeatureRequestRepository

Factory = async_sessionmaker[AsyncSession]
ACTOR = ("system", "Clarity AI")
PROGRESS = CoalescedJob("slack.progress", "slack-progress:", delay_s=1.0, max_attempts=20)


async def _request(factory: Factory, request_id: str, *, channel: str | None) -> None:
    async with factory.begin() as session:
        await FeatureRequestRepository(session).create(
            request_id=request_id,
            origin="slack",
            repo="acme/web",
            description="add dark mode",
            slack_channel_id=channel,
        )


async def _record(engine: AsyncEngine, posts: list[ActivityPost]) -> list[RecordedMessage | None]:
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return list(await record_activity(autocommit, posts, actor=ACTOR, job=PROGRESS))


async def test_posts_map_to_their_rows_and_each_slack_request_gets_one_job(
    engine: AsyncEngine, session_factory: Factory
) -> None:
    await _request(session_factory, "r-a", channel="C1")
    await _request(session_factory, "r-b", channel="C2")
    await _request(session_factory, "r-web", channel=None)
    posts = [
        ActivityPost("r-b", "agent_thinking", "b1"),
        ActivityPost("r-a", "agent_tool_call", "a1", {"toolName": "Read", "turnNumber": 1}),
        ActivityPost("r-missing", "agent_thinking", "lost"),
        ActivityPost("r-web", "agent_summary", "w1"),
        ActivityPost("r-a", "agent_terminal", "a2 ünïcode", {"command": "ls", "exitCode": 0}),
        ActivityPost("r-b", "agent_thinking", "b2"),
    ]
    recorded = await _record(engine, posts)

    assert recorded[2] is None
    async with session_factory() as session:
        rows = {m.id: m for m in await session.scalars(select(RequestMessage))}
        queued = list(await session.scalars(select(Job).order_by(Job.request_id)))
    assert len(rows) == 5
    for post, written in zip(posts, recorded, strict=True):
        if written is None:
            continue
        row = rows[written.id]
        assert (row.request_id, row.type, row.content, row.metadata_) == (
            post.request_id,
            MessageType(post.type),
            post.content,
            post.metadata,
        )
        assert (row.source, row.actor_id, row.actor_name) == (MessageSource.SYSTEM, *ACTOR)
        assert row.created_at == written.created_at
    # Posts of one request keep their order.
    ids = [w.id for w in recorded if w is not None]
    assert ids == sorted(ids)
    # One coalesced job per request with a Slack channel, none for the others.
    assert [(j.kind, j.request_id, j.dedupe_key, j.payload, j.max_attempts) for j in queued] == [
        ("slack.progress", "r-a", "slack-progress:r-a", {"requestId": "r-a"}, 20),
        ("slack.progress", "r-b", "slack-progress:r-b", {"requestId": "r-b"}, 20),
    ]
    assert all(j.run_at > j.created_at for j in queued)

    # While those jobs are queued, more activity is absorbed by them.
    await _record(engine, [ActivityPost("r-a", "agent_thinking", "a3")])
    async with session_factory() as session:
        assert await session.scalar(select(text("count(*)")).select_from(Job)) == 2


async def test_a_non_agent_type_is_refused_and_nothing_is_written(
    engine: AsyncEngine, session_factory: Factory
) -> None:
    await _request(session_factory, "r-a", channel="C1")
    with pytest.raises(ValueError, match="clarification_ask"):
        await _record(
            engine,
            [
                ActivityPost("r-a", "agent_thinking", "fine"),
                ActivityPost("r-a", "clarification_ask", "not activity"),
            ],
        )
    async with session_factory() as session:
        assert list(await session.scalars(select(RequestMessage))) == []


async def test_recording_waits_for_a_job_reading_behind_the_barrier(
    engine: AsyncEngine, session_factory: Factory
) -> None:
    """A progress job holds the barrier exclusively while it reads: activity waits for it."""
    await _request(session_factory, "r-a", channel="C1")
    async with engine.connect() as job_conn:
        await job_conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": PROGRESS.barrier_key("r-a")},
        )
        writing = asyncio.create_task(_record(engine, [ActivityPost("r-a", "agent_thinking", "x")]))
        async with engine.connect() as probe:
            for _ in range(500):
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
        assert waiting == 1 and not writing.done()
        await job_conn.commit()
    [written] = await writing
    assert written is not None
