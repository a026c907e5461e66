"""The control plane of runs: the Dispatcher starts each run once, in order, never more than
CLARITY_MAX_CONCURRENT_RUNS across replicas, after the previous run's work is published;
a cancel stops live runs; the run watcher records how runs end and fails the request when
a run ended without a word (AGENT_CRASHED, RUN_LOST) or went past its time limit.

The backend is tests/runner/fake_backend.py; jobs run when a test says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fakes.harness import Harness, running_clarity, types_of
from sqlalchemy import select, update

from bot.app import Clarity
from bot.requests.actions import SYSTEM
from bot.requests.queue import DISPATCH_JOB, PUBLISH_JOB, requeue_dispatch
from bot.runner.factory import RunnerNotAvailableError, make_backend
from bot.runner.local import LocalBackend
from bot.settings import Settings
from storage import artifacts, jobs
from storage.models import Job, MessageType, Run, utcnow
from storage.repositories import FeatureRequestRepository
from tests.runner.fake_backend import FakeBackend


def _use(backend: FakeBackend) -> Callable[[Clarity], None]:
    def prepare(clarity: Clarity) -> None:
        clarity.backend = backend
        clarity.dispatcher.backend = backend
        clarity.watcher.backend = backend

    return prepare


@asynccontextmanager
async def fake_runs(db_url: str, **settings: Any) -> AsyncIterator[tuple[Harness, FakeBackend]]:
    backend = FakeBackend()
    async with running_clarity(db_url, prepare=_use(backend), **settings) as h:
        yield h, backend


async def _file(h: Harness, text: str = "Add a dark mode") -> str:
    body = {"repo": "octo-org/widgets", "description": text}
    status, body = await h.api("POST", "/requests", body)
    assert status == 201
    return str(body["requestId"])


async def _runs(h: Harness, request_id: str) -> list[Run]:
    async with h.services.session_factory() as s:
        return list(
            await s.scalars(select(Run).where(Run.request_id == request_id).order_by(Run.attempt))
        )


async def _due_now(h: Harness, request_id: str | None = None) -> None:
    """Make waiting dispatch jobs due (they wait a couple of seconds otherwise)."""
    stmt = update(Job).where(Job.kind == DISPATCH_JOB, Job.status == "queued")
    if request_id is not None:
        stmt = stmt.where(Job.request_id == request_id)
    async with h.services.session_factory.begin() as s:
        await s.execute(stmt.values(run_at=utcnow() - dt.timedelta(seconds=1)))


def _started(backend: FakeBackend) -> list[tuple[str, int]]:
    return [(s.request_id, s.attempt) for s in backend.starts]


async def test_runs_start_in_order_and_never_more_than_the_cap(db_url: str) -> None:
    async with fake_runs(db_url, clarity_max_concurrent_runs=2) as (h, backend):
        ids = [await _file(h, f"Request {n}") for n in range(4)]
        await h.run_jobs()
        assert _started(backend) == [(ids[0], 1), (ids[1], 1)]
        for rid in ids[2:]:
            (run,) = await _runs(h, rid)
            assert run.state == "queued"
        # The waiting runs wait as fresh jobs: no try is used up, nothing fails.
        waiting = [j for j in await h.jobs(DISPATCH_JOB) if j.status == "queued"]
        assert sorted(j.request_id or "" for j in waiting) == sorted(ids[2:])
        assert all(j.attempts == 0 for j in waiting)
        for rid in ids[2:]:
            assert types_of(await h.messages(rid)) == ["initial_request"]

        # A slot frees; the last request's job comes up first, but the older run goes first.
        backend.exit(f"fake:{ids[0]}:1", 0)
        await h.clarity.watcher.watch()
        async with h.services.session_factory.begin() as s:
            await s.execute(
                update(Job)
                .where(Job.kind == DISPATCH_JOB, Job.status == "queued")
                .values(run_at=utcnow() - dt.timedelta(seconds=1))
            )
            await s.execute(
                update(Job)
                .where(Job.request_id == ids[3], Job.kind == DISPATCH_JOB, Job.status == "queued")
                .values(run_at=utcnow() - dt.timedelta(seconds=5))
            )
        pool = h.pool()
        assert await pool.run_one()  # the last request's: not yet
        assert await pool.run_one()  # the older one's: starts
        assert _started(backend)[-1] == (ids[2], 1)
        assert len(backend.running) == 2
        (run,) = await _runs(h, ids[3])
        assert run.state == "queued"


async def test_replicas_share_the_cap(db_url: str) -> None:
    first, second = FakeBackend(), FakeBackend()
    async with (
        running_clarity(db_url, prepare=_use(first), clarity_max_concurrent_runs=3) as a,
        running_clarity(db_url, prepare=_use(second), clarity_max_concurrent_runs=3) as b,
    ):
        for n in range(8):
            await _file(a, f"Request {n}")
        await asyncio.gather(a.run_jobs(), b.run_jobs(), a.run_jobs(), b.run_jobs())
        assert len(first.starts) + len(second.starts) == 3
        async with a.services.session_factory() as s:
            states = list(await s.scalars(select(Run.state)))
        assert sorted(states) == ["queued"] * 5 + ["running"] * 3


async def test_a_run_starts_once(db_url: str) -> None:
    async with fake_runs(db_url) as (h, backend):
        rid = await _file(h)
        await h.run_jobs()
        (run,) = await _runs(h, rid)
        assert (run.state, run.backend, run.sandbox_id) == ("running", "fake", f"fake:{rid}:1")
        assert run.started_at is not None and run.heartbeat_at is not None
        # The same dispatch delivered again (a job seen twice) changes nothing.
        async with h.services.session_factory.begin() as s:
            await requeue_dispatch(
                s, {"requestId": rid, "kind": "initial", "attempt": 1}, delay_s=0, max_attempts=3
            )
        await h.run_jobs()
        assert _started(backend) == [(rid, 1)]
        assert types_of(await h.messages(rid)) == ["initial_request", "processing_started"]
        # The job document and environment the backend got.
        (spec,) = backend.starts
        assert spec.job["attempt"] == 1 and spec.job["apiToken"].startswith("clj1.")
        assert spec.env["CLARITY_BUDGET_USD"] == "10"
        assert "DATABASE_URL" not in spec.env and "CLARITY_API_TOKEN" not in spec.env


async def test_an_answer_waits_until_the_previous_run_is_published(db_url: str) -> None:
    async with fake_runs(db_url) as (h, backend):
        rid = await _file(h)
        await h.run_jobs()
        token = backend.starts[0].job["apiToken"]
        async with h.services.session_factory.begin() as s:
            await jobs.enqueue(
                s, PUBLISH_JOB, {"requestId": rid, "attempt": 1, "sha256": "0" * 64},
                request_id=rid, dedupe_key=f"publish:{rid}:1",
            )  # fmt: skip
        status, _ = await h.api(
            "POST",
            f"/requests/{rid}/messages",
            {"type": "clarification_ask", "content": "Blue or green?"},
            token=token,
        )
        assert status == 201
        async with h.services.session_factory.begin() as s:
            row = await FeatureRequestRepository(s).get(rid, lock=True)
            answered = await h.clarity.lifecycle.answer(s, row, "Blue", SYSTEM)
        assert answered.done
        await h.run_jobs()
        assert _started(backend) == [(rid, 1)]
        (_, second) = await _runs(h, rid)
        assert (second.kind, second.state) == ("clarification_answer", "queued")

        async with h.services.session_factory.begin() as s:
            await s.execute(update(Job).where(Job.kind == PUBLISH_JOB).values(status="done"))
        await _due_now(h, rid)
        await h.run_jobs()
        assert _started(backend) == [(rid, 1), (rid, 2)]
        assert backend.starts[1].kind == "clarification_answer"


async def test_cancel_stops_the_requests_live_runs(db_url: str) -> None:
    async with fake_runs(db_url) as (h, backend):
        rid = await _file(h)
        await h.run_jobs()
        async with h.services.session_factory.begin() as s:
            cancelled = await h.clarity.lifecycle.cancel(s, rid, SYSTEM)
        assert cancelled.done
        await h.run_jobs()
        assert backend.cancelled == [f"fake:{rid}:1"]
        assert backend.reaped == [f"fake:{rid}:1"]
        assert [(r.kind, r.state) for r in await _runs(h, rid)] == [
            ("initial", "cancelled"),
            ("cancel", "succeeded"),
        ]


async def test_a_run_queued_when_its_request_is_cancelled_never_starts(db_url: str) -> None:
    async with fake_runs(db_url, clarity_max_concurrent_runs=1) as (h, backend):
        first, second = await _file(h, "One"), await _file(h, "Two")
        await h.run_jobs()
        async with h.services.session_factory.begin() as s:
            await h.clarity.lifecycle.cancel(s, second, SYSTEM)
        await _due_now(h)
        await h.run_jobs()
        assert _started(backend) == [(first, 1)]
        assert [(r.kind, r.state) for r in await _runs(h, second)] == [
            ("initial", "cancelled"),
            ("cancel", "succeeded"),
        ]


async def _error(h: Harness, rid: str) -> tuple[str, str]:
    row = await h.request(rid)
    errors = [m for m in await h.messages(rid) if m.type == MessageType.ERROR]
    meta = errors[-1].metadata_ or {} if errors else {}
    return row.status.value, str(meta.get("errorCode"))


async def test_the_watcher_records_how_runs_end(db_url: str) -> None:
    async with fake_runs(db_url) as (h, backend):
        crashed, lost, finished, talking = [await _file(h, f"Request {n}") for n in range(4)]
        await h.run_jobs()
        backend.exit(f"fake:{crashed}:1", 3)
        backend.lose(f"fake:{lost}:1")
        backend.exit(f"fake:{finished}:1", 0)
        async with h.services.session_factory.begin() as s:
            # The finished run handed its work over before it ended.
            async def data() -> AsyncIterator[bytes]:
                yield b"# v2 git bundle\n"

            await artifacts.store(
                s, request_id=finished, kind=artifacts.BUNDLE, attempt=1, label="completed",
                data=data(), limit=1000,
            )  # fmt: skip
        before = utcnow()
        seen = await h.clarity.watcher.watch()
        assert sorted(seen.ended) == sorted([f"{crashed}:1", f"{finished}:1", f"{lost}:1"])
        assert sorted(seen.failed) == sorted([f"{crashed}:1", f"{lost}:1"])
        assert seen.alive == [f"{talking}:1"]
        assert await _error(h, crashed) == ("error", "AGENT_CRASHED")
        assert await _error(h, lost) == ("error", "RUN_LOST")
        assert (await h.request(finished)).status.value == "processing"
        assert (await h.request(talking)).status.value == "processing"
        states = {rid: (await _runs(h, rid))[0] for rid in (crashed, lost, finished, talking)}
        assert states[crashed].state == "failed" and states[crashed].error == "exit status 3"
        assert states[lost].state == "lost"
        assert states[finished].state == "succeeded"
        assert states[talking].state == "running"
        assert states[talking].heartbeat_at is not None and states[talking].heartbeat_at >= before
        assert sorted(backend.reaped) == sorted(
            [f"fake:{crashed}:1", f"fake:{lost}:1", f"fake:{finished}:1"]
        )
        # A second pass finds nothing more to say.
        again = await h.clarity.watcher.watch()
        assert (again.ended, again.failed) == ([], [])


async def test_the_watcher_stops_runs_of_finished_requests_and_overdue_runs(db_url: str) -> None:
    async with fake_runs(db_url) as (h, _backend):
        cancelled, overdue = await _file(h, "One"), await _file(h, "Two")
        await h.run_jobs()
        async with h.services.session_factory.begin() as s:
            # Cancelled on another machine: its cancel job is not this one's to run.
            await h.clarity.lifecycle.cancel(s, cancelled, SYSTEM)
            await s.execute(
                update(Run)
                .where(Run.request_id == overdue)
                .values(started_at=utcnow() - dt.timedelta(hours=3))
            )
        seen = await h.clarity.watcher.watch()
        assert sorted(seen.stopped) == sorted([f"fake:{cancelled}:1", f"fake:{overdue}:1"])
        assert await _error(h, overdue) == ("error", "RUN_TIMEOUT")
        await h.clarity.watcher.watch()
        (run,) = [r for r in await _runs(h, cancelled) if r.kind == "initial"]
        assert run.state == "cancelled"


async def test_runs_of_a_machine_that_is_gone_are_lost(db_url: str) -> None:
    async with fake_runs(db_url) as (h, _backend):
        gone, busy = await _file(h, "One"), await _file(h, "Two")
        await h.run_jobs()
        old = utcnow() - dt.timedelta(minutes=5)
        async with h.services.session_factory.begin() as s:
            for rid, host in ((gone, "gone-host"), (busy, "busy-host")):
                await s.execute(
                    update(Run)
                    .where(Run.request_id == rid)
                    .values(
                        backend="local", sandbox_id=f"local:{host}:77:88",
                        started_at=old, heartbeat_at=old,
                    )
                )  # fmt: skip
            # The busy machine's worker holds a job with a live lease: it is up.
            held = await jobs.enqueue(s, "something_slow", {})
            await s.execute(
                update(Job)
                .where(Job.id == held)
                .values(
                    status="running", locked_by="busy-host:1:abc",
                    locked_until=utcnow() + dt.timedelta(seconds=30),
                )
            )  # fmt: skip
        lost = await h.clarity.watcher.sweep_silent()
        assert lost == [f"{gone}:1"]
        assert await _error(h, gone) == ("error", "RUN_LOST")
        assert (await _runs(h, busy))[0].state == "running"
        assert (await _runs(h, gone))[0].state == "lost"


def test_the_backend_is_chosen_by_clarity_runner(tmp_path: Any) -> None:
    def make(**values: Any) -> Any:
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        return make_backend(settings, http_session=lambda: None, runs_dir=tmp_path)  # type: ignore[arg-type,return-value]

    assert Settings(_env_file=None).runner_backend() == "local"  # type: ignore[call-arg]
    assert isinstance(make(), LocalBackend)
    assert make(runner_url="http://runner.test/jobs").name == "http"
    assert make(runner_url="http://runner.test/jobs", clarity_runner="local").name == "local"
    for name in ("docker", "kubernetes"):
        if importlib.util.find_spec(f"bot.runner.{name}") is None:
            with pytest.raises(RunnerNotAvailableError, match="not available in this build"):
                make(clarity_runner=name, clarity_agent_image="clarity-agent:test")
        else:
            with pytest.raises(RunnerNotAvailableError, match="CLARITY_AGENT_IMAGE"):
                make(clarity_runner=name)


async def test_runs_of_an_outside_runner_end_with_their_reports(db_url: str) -> None:
    async with running_clarity(db_url) as h:
        asking, failing, working = [await _file(h, f"Request {n}") for n in range(3)]
        await h.run_jobs()
        tokens = {c.body["requestId"]: c.body["apiToken"] for c in h.runner.accepted}
        for rid in (asking, failing, working):
            (run,) = await _runs(h, rid)
            assert (run.backend, run.sandbox_id, run.state) == ("http", f"http:{rid}:1", "running")
        await h.api(
            "POST",
            f"/requests/{asking}/messages",
            {"type": "clarification_ask", "content": "Which one?"},
            token=tokens[asking],
        )
        await h.api(
            "PATCH",
            f"/requests/{failing}/status",
            {"status": "error", "errorCode": "AGENT_FAILED", "errorMessage": "It broke."},
            token=tokens[failing],
        )
        seen = await h.clarity.watcher.watch()
        assert sorted(seen.ended) == sorted([f"{asking}:1", f"{failing}:1"])
        assert seen.failed == [] and seen.alive == [f"{working}:1"]
        states = {rid: (await _runs(h, rid))[0].state for rid in (asking, failing, working)}
        assert states == {asking: "succeeded", failing: "failed", working: "running"}
