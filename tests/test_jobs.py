"""The durable job queue and its workers, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.maintenance import Maintenance
from bot.services import Services
from bot.settings import Settings
from bot.workers import Backoff, JobHandler, PermanentJobError, RetryLater, WorkerPool
from storage import jobs
from storage.deliveries import claim_delivery, delivery_seen
from storage.engine import create_engine, create_session_factory
from storage.jobs import ClaimedJob
from storage.models import Job

Factory = async_sessionmaker[AsyncSession]


@pytest.fixture
def services(engine: AsyncEngine, session_factory: Factory) -> Services:
    return Services(settings=Settings(), engine=engine, session_factory=session_factory)


async def _jobs(factory: Factory) -> list[Job]:
    async with factory() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def test_enqueue_is_part_of_the_callers_transaction(session_factory: Factory) -> None:
    with pytest.raises(RuntimeError):
        async with session_factory.begin() as session:
            await jobs.enqueue(session, "k", {"a": 1})
            raise RuntimeError("the change failed")
    assert await _jobs(session_factory) == []
    async with session_factory.begin() as session:
        job_id = await jobs.enqueue(session, "k", {"a": 1}, request_id="r1")
    [job] = await _jobs(session_factory)
    assert (job.id, job.status, job.payload, job.request_id) == (job_id, "queued", {"a": 1}, "r1")


async def test_dedupe_key_coalesces_only_queued_jobs(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        first = await jobs.enqueue(session, "k", {}, dedupe_key="progress:r1")
        second = await jobs.enqueue(session, "k", {}, dedupe_key="progress:r1")
    assert first is not None and second is None
    async with session_factory.begin() as session:
        claimed = await jobs.claim(session, "w1", lease=dt.timedelta(minutes=1))
    assert claimed is not None and claimed.id == first
    # While the first runs, a new change may queue the next one.
    async with session_factory.begin() as session:
        assert await jobs.enqueue(session, "k", {}, dedupe_key="progress:r1") is not None


async def test_claims_are_exclusive_across_workers(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        for i in range(20):
            await jobs.enqueue(session, "k", {"i": i})

    async def drain(worker: str) -> list[int]:
        got: list[int] = []
        while True:
            async with session_factory.begin() as session:
                job = await jobs.claim(session, worker, lease=dt.timedelta(minutes=1))
            if job is None:
                return got
            got.append(job.payload["i"])

    results = await asyncio.gather(*(drain(f"w{n}") for n in range(4)))
    flat = sorted(i for r in results for i in r)
    assert flat == list(range(20))


async def test_not_due_jobs_wait(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        await jobs.enqueue(session, "k", {}, delay=dt.timedelta(hours=1))
        assert await jobs.claim(session, "w", lease=dt.timedelta(minutes=1)) is None
        due = await jobs.next_due_in(session)
        assert due is not None and due > dt.timedelta(minutes=59)


async def test_worker_retries_with_backoff_then_exhausts(services: Services) -> None:
    calls: list[int] = []
    exhausted: list[ClaimedJob] = []

    async def flaky(job: ClaimedJob) -> None:
        calls.append(job.attempts)
        raise ConnectionError("runner down")

    async def give_up(job: ClaimedJob) -> None:
        exhausted.append(job)

    pool = WorkerPool(
        services,
        {"k": JobHandler(run=flaky, on_exhausted=give_up)},
        backoff=Backoff(base_s=0),
    )
    async with services.session_factory.begin() as session:
        await jobs.enqueue(session, "k", {}, max_attempts=3)
    assert await pool.run_until_idle() == 3
    assert calls == [1, 2, 3]
    assert [j.attempts for j in exhausted] == [3]
    [job] = await _jobs(services.session_factory)
    assert job.status == "failed" and "runner down" in (job.last_error or "")


async def test_retry_later_reschedules(services: Services) -> None:
    async def limited(job: ClaimedJob) -> None:
        raise RetryLater("429", delay=120)

    pool = WorkerPool(services, {"k": JobHandler(run=limited)}, backoff=Backoff(base_s=0))
    async with services.session_factory.begin() as session:
        await jobs.enqueue(session, "k", {})
    assert await pool.run_until_idle() == 1  # then not due for two minutes
    [job] = await _jobs(services.session_factory)
    assert job.status == "queued" and job.attempts == 1
    assert job.run_at - job.updated_at >= dt.timedelta(seconds=119)


async def test_permanent_error_fails_at_once(services: Services) -> None:
    async def broken(job: ClaimedJob) -> None:
        raise PermanentJobError("bad payload")

    pool = WorkerPool(services, {"k": JobHandler(run=broken)}, backoff=Backoff(base_s=0))
    async with services.session_factory.begin() as session:
        await jobs.enqueue(session, "k", {}, max_attempts=5)
    assert await pool.run_until_idle() == 1
    [job] = await _jobs(services.session_factory)
    assert (job.status, job.attempts) == ("failed", 1)


async def test_job_of_a_dead_worker_is_picked_up_again(services: Services) -> None:
    ran: list[int] = []

    async def ok(job: ClaimedJob) -> None:
        ran.append(job.id)

    async with services.session_factory.begin() as session:
        job_id = await jobs.enqueue(session, "k", {})
        claimed = await jobs.claim(session, "dead-worker", lease=dt.timedelta(minutes=5))
    assert claimed is not None
    pool = WorkerPool(services, {"k": JobHandler(run=ok)}, backoff=Backoff(base_s=0))
    assert await pool.run_until_idle() == 0  # still leased to the dead worker
    async with services.session_factory.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(locked_until=dt.datetime(2000, 1, 1))
        )
    assert await pool.recover() == 1
    assert await pool.run_until_idle() == 1
    assert ran == [job_id]
    [job] = await _jobs(services.session_factory)
    assert (job.status, job.attempts) == ("done", 2)


async def test_background_workers_wake_on_notify(services: Services) -> None:
    done = asyncio.Event()

    async def ok(job: ClaimedJob) -> None:
        done.set()

    pool = WorkerPool(
        services, {"k": JobHandler(run=ok)}, poll_interval_s=30, backoff=Backoff(base_s=0)
    )
    pool.start()
    try:
        async with asyncio.timeout(10):
            await pool.listening.wait()
        async with services.session_factory.begin() as session:
            await jobs.enqueue(session, "k", {})
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await pool.stop()


async def test_claim_delivery_once(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        assert await claim_delivery(session, "slack_event", "Ev1") is True
        assert await claim_delivery(session, "slack_event", "Ev1") is False
        assert await claim_delivery(session, "github", "Ev1") is True
    # A claim whose transaction rolled back does not count.
    with pytest.raises(RuntimeError):
        async with session_factory.begin() as session:
            assert await claim_delivery(session, "slack_event", "Ev2") is True
            raise RuntimeError
    async with session_factory.begin() as session:
        assert await claim_delivery(session, "slack_event", "Ev2") is True
        n = (
            await session.execute(text("select count(*) from clarity_inbound_deliveries"))
        ).scalar()
        assert n == 3


async def test_enqueue_many_is_one_insert_with_the_same_dedupe(
    engine: AsyncEngine, session_factory: Factory
) -> None:
    async with session_factory.begin() as session:
        await jobs.enqueue(session, "k", {"n": 0}, dedupe_key="already")
    statements: list[str] = []
    notified: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    async def enqueue_many(batch: list[jobs.NewJob]) -> list[int | None]:
        statements.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            async with session_factory.begin() as session:
                ids = await jobs.enqueue_many(session, batch)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
        # NOTIFY is delivered at commit; a query on the listening connection reads it.
        await listening.execute(text("SELECT 1"))
        return ids

    async with engine.connect() as listening:
        driver = (await listening.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.add_listener(jobs.NOTIFY_CHANNEL, lambda *a: notified.append(a[-1]))
        ids = await enqueue_many(
            [
                jobs.NewJob("k", {"n": 1}),
                jobs.NewJob("k", {"n": 2}, dedupe_key="a", request_id="r1", max_attempts=3),
                jobs.NewJob("k", {"n": 3}, dedupe_key="already"),
                jobs.NewJob("other", {"n": 4}, delay=dt.timedelta(hours=1)),
                jobs.NewJob("k", {"n": 5}, dedupe_key="a"),
                jobs.NewJob("k", {"n": 6}),
            ]
        )
        [statement] = statements
        assert statement.count("INSERT INTO") == 1 and statement.count("pg_notify") == 1
        assert notified == ["k,other"]

        # Nothing to queue: no statement; everything absorbed by queued twins: no NOTIFY.
        assert await enqueue_many([]) == []
        assert statements == []
        assert await enqueue_many([jobs.NewJob("k", {}, dedupe_key="a")]) == [None]
        assert notified == ["k,other"]

    rows = {job.id: job for job in await _jobs(session_factory)}
    assert [None if i is None else rows[i].payload["n"] for i in ids] == [1, 2, None, 4, None, 6]
    by_n = {job.payload["n"]: job for job in rows.values()}
    assert (by_n[2].request_id, by_n[2].max_attempts, by_n[1].max_attempts) == ("r1", 3, 8)
    assert by_n[4].run_at - by_n[1].run_at > dt.timedelta(minutes=59)
    assert by_n[1].run_at - by_n[0].run_at < dt.timedelta(minutes=1)


async def test_delivery_seen_does_not_claim(session_factory: Factory) -> None:
    async with session_factory.begin() as session:
        assert await delivery_seen(session, "slack_action", "click1") is False
        assert await delivery_seen(session, "slack_action", "click1") is False
        assert await claim_delivery(session, "slack_action", "click1") is True
        assert await delivery_seen(session, "slack_action", "click1") is True
        assert await delivery_seen(session, "slack_view", "click1") is False


async def test_a_long_job_keeps_its_short_lease_while_its_worker_lives(services: Services) -> None:
    # The lease is short (a dead worker's job comes back fast) and renewed while the job runs.
    release = asyncio.Event()
    started = asyncio.Event()
    leases: list[dt.datetime] = []

    async def locked_until(job_id: int) -> dt.datetime:
        async with services.session_factory() as session:
            value = await session.scalar(select(Job.locked_until).where(Job.id == job_id))
        assert value is not None
        return value

    async def long(job: ClaimedJob) -> None:
        started.set()
        await release.wait()

    pool = WorkerPool(
        services,
        {"k": JobHandler(run=long, timeout_s=600)},
        backoff=Backoff(base_s=0),
        lease_s=5,
        heartbeat_s=0.05,
    )
    async with services.session_factory.begin() as session:
        job_id = await jobs.enqueue(session, "k", {})
    assert job_id is not None
    running = asyncio.create_task(pool.run_one())
    async with asyncio.timeout(10):
        await started.wait()
        leases.append(await locked_until(job_id))
        # The heartbeat moves the lease forward; nobody else may take the job meanwhile.
        while (await locked_until(job_id)) <= leases[0]:  # noqa: ASYNC110 - polls the row
            await asyncio.sleep(0.05)
    assert leases[0] - jobs.utcnow() <= dt.timedelta(seconds=5)
    assert await pool.recover() == 0
    release.set()
    assert await running
    [job] = await _jobs(services.session_factory)
    assert (job.status, job.attempts) == ("done", 1)


def test_default_lease_brings_a_dead_workers_job_back_within_about_15_s(
    services: Services,
) -> None:
    pool = WorkerPool(services, {})
    assert pool.lease.total_seconds() + pool.janitor_s <= 15
    assert pool.heartbeat_s * 3 <= pool.lease.total_seconds()


async def test_workers_say_once_that_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = create_engine(f"postgresql://u:p@127.0.0.1:{port}/db")
    down = Services(
        settings=Settings(_env_file=None),  # type: ignore[call-arg]
        engine=engine,
        session_factory=create_session_factory(engine),
    )

    async def never(job: ClaimedJob) -> None:
        raise AssertionError("no job can be claimed")

    pool = WorkerPool(down, {"k": JobHandler(run=never)}, concurrency=1, poll_interval_s=0.05)
    caplog.set_level("DEBUG", logger="bot.workers")
    pool.start()
    try:
        # Wait for several failed claims.
        async with asyncio.timeout(20):
            while down.metrics.errors.labels("worker")._value.get() < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await pool.stop(timeout_s=5)
        await engine.dispose()
    records = [r for r in caplog.records if r.name == "bot.workers" and r.levelno >= 30]
    assert [r.getMessage().split(" (")[0] for r in records] == [
        "job workers: the database is unreachable"
    ]
    assert all(r.exc_info is None for r in records)


async def test_finished_jobs_and_old_deliveries_are_pruned(services: Services) -> None:
    async with services.session_factory.begin() as session:
        old = await jobs.enqueue(session, "k", {})
        recent = await jobs.enqueue(session, "k", {})
        waiting = await jobs.enqueue(session, "k", {})
        await claim_delivery(session, "slack_event", "Ev-old")
        await claim_delivery(session, "slack_event", "Ev-new")
        await session.execute(
            update(Job)
            .where(Job.id.in_([old, recent]))
            .values(status="done", finished_at=jobs.utcnow())
        )
        await session.execute(
            update(Job)
            .where(Job.id.in_([old, waiting]))
            .values(finished_at=jobs.utcnow() - dt.timedelta(days=30))
        )
        await session.execute(
            text(
                "UPDATE clarity_inbound_deliveries SET received_at = now() - interval '30 days'"
                " WHERE delivery_id = 'Ev-old'"
            )
        )
    assert await Maintenance(services).prune() == (1, 1)
    assert [j.id for j in await _jobs(services.session_factory)] == [recent, waiting]
    async with services.session_factory() as session:
        assert await delivery_seen(session, "slack_event", "Ev-new")
        assert not await delivery_seen(session, "slack_event", "Ev-old")
