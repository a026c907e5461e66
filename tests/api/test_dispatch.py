"""Dispatch to the runner: the contract, retries, exhaustion, restarts, and the watchdog."""

from __future__ import annotations

import asyncio
import datetime as dt

from fakes.harness import Harness, running_clarity, types_of
from sqlalchemy import update

from bot.requests.queue import DispatchKind, enqueue_dispatch
from storage import jobs
from storage.models import Job, RequestStatus, utcnow
from storage.repositories import FeatureRequestRepository

CONTRACT_FIELDS = {
    "requestId",
    "attempt",
    "kind",
    "repo",
    "title",
    "description",
    "branch",
    "prNumber",
    "issueNumber",
    "conversation",
    "apiUrl",
    "apiToken",
}


async def create(h: Harness) -> str:
    status, body = await h.api(
        "POST", "/requests", {"repo": "octo/widgets", "description": "Add a dark mode"}
    )
    assert status == 201
    return str(body["requestId"])


async def test_dispatch_posts_the_contract_and_starts_processing(harness: Harness) -> None:
    rid = await create(harness)
    assert await harness.run_jobs() >= 1
    (call,) = harness.runner.calls
    assert set(call.body) == CONTRACT_FIELDS
    assert call.body["kind"] == "initial" and call.body["attempt"] == 1
    assert call.body["apiUrl"] == "http://clarity.test/api"
    assert [e["type"] for e in call.body["conversation"]] == ["initial_request"]
    assert call.idempotency_key == f"{rid}:1"
    row = await harness.request(rid)
    assert row.status.value == "processing"
    assert types_of(await harness.messages(rid)) == ["initial_request", "processing_started"]
    # The token works for exactly this request.
    status, _ = await harness.api("GET", f"/requests/{rid}", token=call.body["apiToken"])
    assert status == 200


async def test_runner_failures_are_retried_with_the_same_key(harness: Harness) -> None:
    rid = await create(harness)
    harness.runner.fail_next(2, status=502)
    await harness.run_jobs()
    assert [c.status for c in harness.runner.calls] == [502, 502, 202]
    assert {c.idempotency_key for c in harness.runner.calls} == {f"{rid}:1"}
    assert (await harness.request(rid)).status.value == "processing"


async def test_runner_down_until_tries_run_out_fails_the_request(harness: Harness) -> None:
    rid = await create(harness)
    harness.runner.always_fail(500)
    await harness.run_jobs()
    assert len(harness.runner.calls) == harness.services.settings.clarity_job_max_attempts
    row = await harness.request(rid)
    assert row.status.value == "error"
    error = (await harness.messages(rid))[-1]
    assert error.type.value == "error"
    assert error.metadata_ is not None and error.metadata_["errorCode"] == "RUNNER_UNAVAILABLE"
    assert "500" in error.content


async def test_retry_after_is_honoured(harness: Harness) -> None:
    await create(harness)
    harness.runner.fail_next(1, status=503, retry_after="120")
    await harness.run_jobs()
    assert len(harness.runner.calls) == 1
    (job,) = await harness.jobs("dispatch")
    assert job.status == "queued"
    assert job.run_at - utcnow() > dt.timedelta(seconds=100)


async def test_restart_before_dispatch_delivers_exactly_once(db_url: str) -> None:
    # The server accepts a request and is torn down before any worker ran.
    async with running_clarity(db_url) as first:
        rid = await create(first)
        assert first.runner.calls == []
    # A new process on the same database; three workers race for the queued job.
    async with running_clarity(db_url) as second:
        await asyncio.gather(second.run_jobs(), second.run_jobs(), second.run_jobs())
        await second.run_jobs()
        assert [c.body["requestId"] for c in second.runner.calls] == [rid]


async def test_job_of_a_dead_worker_is_picked_up_again(harness: Harness) -> None:
    rid = await create(harness)
    async with harness.services.session_factory.begin() as session:
        claimed = await jobs.claim(session, "dead-worker", lease=dt.timedelta(seconds=30))
        assert claimed is not None and claimed.kind == "dispatch"
    assert await harness.run_jobs() == 0  # still leased
    async with harness.services.session_factory.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == claimed.id)
            .values(locked_until=utcnow() - dt.timedelta(minutes=1))
        )
    assert await harness.pool().recover() == 1
    await harness.run_jobs()
    assert [c.body["requestId"] for c in harness.runner.calls] == [rid]


async def test_final_requests_are_not_dispatched_but_cancel_is(harness: Harness) -> None:
    rid = await create(harness)
    async with harness.services.session_factory.begin() as session:
        await FeatureRequestRepository(session).update_status(rid, RequestStatus.CANCELLED)
        await enqueue_dispatch(session, rid, DispatchKind.CANCEL, max_attempts=3)
    await harness.run_jobs()
    assert [c.body["kind"] for c in harness.runner.calls] == ["cancel"]
    assert harness.runner.calls[0].idempotency_key == f"{rid}:2"


async def test_watchdog_fails_silent_runs_once(harness: Harness) -> None:
    silent = await create(harness)
    talking = await create(harness)
    await harness.run_jobs()
    for table, column in (("feature_requests", "updated_at"), ("request_messages", "created_at")):
        await harness.execute(
            f"UPDATE {table} SET {column} = {column} - interval '2 hours' WHERE request_id = :r",
            r=silent,
        )
    # Two replicas sweeping at the same moment fail it once.
    results = await asyncio.gather(
        harness.clarity.dispatcher.sweep_silent_runs(),
        harness.clarity.dispatcher.sweep_silent_runs(),
    )
    assert sorted(r for rs in results for r in rs) == [silent]
    assert (await harness.request(silent)).status.value == "error"
    assert (await harness.request(talking)).status.value == "processing"
    error = (await harness.messages(silent))[-1]
    assert error.metadata_ is not None and error.metadata_["errorCode"] == "RUNNER_TIMEOUT"
    assert "No word from the runner for 30 minutes" in error.content
    # A sweep stays queued while requests are processing.
    assert [j.status for j in await harness.jobs("runner_watchdog")] == ["queued"]


async def test_watchdog_leaves_requests_with_a_pending_dispatch(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()
    async with harness.services.session_factory.begin() as session:
        await enqueue_dispatch(session, rid, DispatchKind.RETRY, max_attempts=3)
    for table, column in (("feature_requests", "updated_at"), ("request_messages", "created_at")):
        await harness.execute(
            f"UPDATE {table} SET {column} = {column} - interval '2 hours' WHERE request_id = :r",
            r=rid,
        )
    assert await harness.clarity.dispatcher.sweep_silent_runs() == []


async def test_startup_queues_the_watchdog_when_requests_are_processing(db_url: str) -> None:
    async with running_clarity(db_url) as first:
        await create(first)
        await first.run_jobs()
        await first.execute("DELETE FROM clarity_jobs WHERE kind = 'runner_watchdog'")
    async with running_clarity(db_url) as second:
        assert [j.status for j in await second.jobs("runner_watchdog")] == ["queued"]
