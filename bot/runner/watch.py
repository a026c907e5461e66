"""The run watcher: follows every live run's sandbox until it ends, and says so when a run
ended without its agent reporting how.

A self-requeuing job (like the runner watchdog; at most one queued per kind), every
PERIOD_S while runs are live:

- a sandbox still running gets a heartbeat (`clarity_runs.heartbeat_at`); one whose request
  is finished (cancelled, completed) is stopped, and one past its time limit is stopped
  and failed (`RUN_TIMEOUT`);
- a sandbox that ended records the run's end (succeeded, failed, cancelled, lost) and is
  reaped; if its request is still `processing` for this run with no outcome reported (no
  bundle, no question, no error, no later run), the request goes to `error` with Retry:
  `AGENT_CRASHED` when the agent's process exited, `RUN_LOST` when the sandbox was killed
  or is gone.

Sandboxes of the `local` backend belong to one machine, so they are watched by a job kind
of that machine's own (`run_watcher@<hostname>`), which only its workers claim. The
cluster-wide `run_watcher` watches every other backend's sandboxes, and fails the runs of a
machine that stopped watching its own (no heartbeat for SILENT_AFTER_S and none of its
workers holding a job): the machine is gone, and its runs with it. Either way a run whose
process is gone is noticed within a minute.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from bot.requests.actions import RequestLifecycle
from bot.runner.base import RunnerBackend, SandboxState, SandboxStatus
from bot.runner.factory import delivers_cancel, owns, scope
from bot.runner.local import SandboxRef
from bot.services import Services
from bot.workers import JobHandler
from storage import artifacts, jobs
from storage.jobs import ClaimedJob
from storage.lifecycle import FINAL
from storage.models import FeatureRequest, RequestStatus, Run, utcnow
from storage.repositories import FeatureRequestRepository
from storage.repositories.runs import RunsRepository

log = logging.getLogger(__name__)

WATCH_JOB = "run_watcher"
PERIOD_S = 10.0
# A machine whose watcher has not been by for this long, and whose workers hold no job, is
# taken for gone (with its runs). Period + this stays under a minute.
SILENT_AFTER_S = 45.0
# How long past its time limit a run may take to hand over before it is stopped.
TIMEOUT_GRACE_S = 120.0

CRASHED = "AGENT_CRASHED"
LOST = "RUN_LOST"
RUN_TIMEOUT = "RUN_TIMEOUT"


@dataclass
class Pass:
    """What one watch did (for logs and tests)."""

    alive: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


def run_name(run: Run) -> str:
    return f"{run.request_id}:{run.attempt}"


def _state_of(request: FeatureRequest | None) -> str:
    """How a run whose sandbox cannot be seen ended, by what became of its request."""
    if request is None or request.status == RequestStatus.CANCELLED:
        return "cancelled"
    return "failed" if request.status == RequestStatus.ERROR else "succeeded"


def host_of(sandbox_id: str) -> str | None:
    """The machine a machine-bound sandbox (local) runs on; None for any other."""
    ref = SandboxRef.parse(sandbox_id)
    return ref.host if ref is not None else None


class RunWatcher:
    """Follows the runs of one backend (bot.app makes one, with the dispatcher)."""

    def __init__(
        self,
        services: Services,
        lifecycle: RequestLifecycle,
        backend: RunnerBackend,
        *,
        period_s: float = PERIOD_S,
        silent_after_s: float = SILENT_AFTER_S,
        run_timeout_s: int | None = None,
        grace_s: float = 12.0,
    ) -> None:
        self.services = services
        self.lifecycle = lifecycle
        self.backend = backend
        self.period_s = period_s
        self.silent_after_s = silent_after_s
        self.run_timeout_s = run_timeout_s or services.settings.clarity_run_timeout_s
        self.grace_s = grace_s
        self.scope = scope(backend)
        # This machine's watcher when the backend's sandboxes are the machine's own.
        self.kind = WATCH_JOB if self.scope is None else f"{WATCH_JOB}@{self.scope}"

    @property
    def outside(self) -> bool:
        """An outside runner (http): its sandboxes are not this process's to see."""
        return delivers_cancel(self.backend)

    # --- the jobs ------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """The job kinds this process runs: the cluster's watcher, and this machine's."""
        return [WATCH_JOB] if self.kind == WATCH_JOB else [WATCH_JOB, self.kind]

    async def ensure(self, session: AsyncSession, *, delay_s: float | None = None) -> None:
        """Make sure the watchers are queued (at most one of each, whoever asks)."""
        delay = dt.timedelta(seconds=self.period_s if delay_s is None else delay_s)
        for kind in self.kinds():
            await jobs.enqueue(session, kind, {}, dedupe_key=kind, delay=delay, max_attempts=3)

    async def seed(self) -> None:
        """At start-up: runs left live by an earlier process are followed again."""
        async with self.services.session_factory.begin() as session:
            if await RunsRepository(session).any_active():
                await self.ensure(session, delay_s=0)

    async def _again(self, kind: str) -> None:
        async with self.services.session_factory.begin() as session:
            runs = RunsRepository(session)
            live = await runs.live(backend=self.backend.name)
            mine = [r for r in live if r.sandbox_id is None or owns(self.backend, r.sandbox_id)]
            if (mine if kind == self.kind else live) or await runs.any_active():
                await jobs.enqueue(
                    session,
                    kind,
                    {},
                    dedupe_key=kind,
                    delay=dt.timedelta(seconds=self.period_s),
                    max_attempts=3,
                )

    async def run_machine(self, job: ClaimedJob) -> None:
        """This machine's watcher (`run_watcher@<host>`)."""
        try:
            await self.watch()
        finally:
            await self._again(self.kind)

    async def run_cluster(self, job: ClaimedJob) -> None:
        """The cluster's watcher (`run_watcher`)."""
        try:
            if self.kind == WATCH_JOB:
                await self.watch()
            await self.sweep_silent()
        finally:
            await self._again(WATCH_JOB)

    def job_handlers(self) -> dict[str, JobHandler]:
        """The watcher job kinds this process runs."""
        timeout = 60.0 + self.grace_s * 2
        handlers = {WATCH_JOB: JobHandler(run=self.run_cluster, timeout_s=timeout)}
        if self.kind != WATCH_JOB:
            handlers[self.kind] = JobHandler(run=self.run_machine, timeout_s=timeout)
        return handlers

    # --- one pass --------------------------------------------------------------------------

    async def watch(self) -> Pass:
        """Observe every live run this process may judge, and act on what it sees."""
        done = Pass()
        to_stop: list[str] = []
        to_reap: list[str] = []
        now = utcnow()
        async with self.services.session_factory.begin() as session:
            runs = RunsRepository(session)
            for run in await runs.watched(self.backend.name):
                sandbox = run.sandbox_id
                if sandbox is None or not owns(self.backend, sandbox):
                    continue
                try:
                    status = await self.backend.observe(sandbox)
                except Exception:
                    log.warning("could not observe sandbox %s", sandbox, exc_info=True)
                    continue
                request = await FeatureRequestRepository(session).find_by_request_id(run.request_id)
                if (
                    not status.finished
                    and self.outside
                    and (request is None or await self._reported(session, run, request))
                ):
                    # An outside runner's sandbox cannot be seen: the run is over once its
                    # outcome is known.
                    await runs.finish(run.id, _state_of(request))
                    done.ended.append(run_name(run))
                    continue
                if not status.finished:
                    done.alive.append(run_name(run))
                    await runs.heartbeat([run.id])
                    if request is None or request.status in FINAL:
                        to_stop.append(sandbox)
                    elif self._overdue(run, now):
                        await self._timed_out(session, run)
                        done.failed.append(run_name(run))
                        to_stop.append(sandbox)
                        to_reap.append(sandbox)
                    continue
                failed = await self._ended(session, run, request, status)
                done.ended.append(run_name(run))
                if failed:
                    done.failed.append(run_name(run))
                to_reap.append(sandbox)
        if to_stop:
            await asyncio.gather(*(self._stop(s) for s in to_stop))
            done.stopped += to_stop
        for sandbox in to_reap:
            try:
                await self.backend.reap(sandbox)
            except Exception:
                log.warning("could not reap sandbox %s", sandbox, exc_info=True)
        if done.failed:
            log.warning("run watcher: runs failed: %s", done.failed)
        return done

    def _overdue(self, run: Run, now: dt.datetime) -> bool:
        started = run.started_at or run.created_at
        limit = dt.timedelta(seconds=self.run_timeout_s + TIMEOUT_GRACE_S)
        return started is not None and now - started > limit

    async def _stop(self, sandbox: str) -> None:
        try:
            await self.backend.cancel(sandbox, grace_s=self.grace_s)
        except Exception:
            log.warning("could not stop sandbox %s", sandbox, exc_info=True)

    async def _reported(self, session: AsyncSession, run: Run, request: FeatureRequest) -> bool:
        """Whether the run's outcome is known: the request moved on, a later run carries it,
        or the run handed its work over."""
        if request.status != RequestStatus.PROCESSING:
            return True
        if await RunsRepository(session).newer_than(run.request_id, run.attempt):
            return True
        found = await artifacts.find(session, run.request_id, artifacts.BUNDLE, run.attempt)
        return found is not None

    async def _ended(
        self,
        session: AsyncSession,
        run: Run,
        request: FeatureRequest | None,
        status: SandboxStatus,
    ) -> bool:
        """Record the end of a run whose sandbox ended; True when that failed the request."""
        runs = RunsRepository(session)
        exited = status.state == SandboxState.EXITED
        if request is not None and request.status == RequestStatus.CANCELLED:
            state = "cancelled"
        elif exited and status.exit_code == 0:
            state = "succeeded"
        elif exited:
            state = "failed"
        else:
            state = "lost"
        why = f"exit status {status.exit_code}" if exited else (status.reason or status.state.value)
        await runs.finish(run.id, state, error=None if state == "succeeded" else why)
        if request is None or await self._reported(session, run, request):
            return False
        if exited:
            code = CRASHED
            text = (
                f"The agent stopped without saying how the run ended ({why}). "
                "Press Retry to try again."
            )
        else:
            code = LOST
            text = f"The run's sandbox is gone ({why}). Press Retry to try again."
        changed = await self.lifecycle.run_failed(session, run.request_id, code, text)
        return changed is not None

    async def _timed_out(self, session: AsyncSession, run: Run) -> None:
        minutes = max(round(self.run_timeout_s / 60), 1)
        await RunsRepository(session).finish(run.id, "failed", error="past its time limit")
        await self.lifecycle.run_failed(
            session,
            run.request_id,
            RUN_TIMEOUT,
            f"The run went past its time limit ({minutes} min) and was stopped. "
            "Press Retry to try again.",
        )

    async def sweep_silent(self) -> list[str]:
        """Fail the runs of machines that stopped watching their own (they are gone)."""
        before = utcnow() - dt.timedelta(seconds=self.silent_after_s)
        lost: list[str] = []
        async with self.services.session_factory.begin() as session:
            runs = RunsRepository(session)
            alive: dict[str, bool] = {}
            for run in await runs.silent(before):
                host = host_of(run.sandbox_id or "")
                if host is None or host == self.scope:
                    continue  # watched directly, by this process or the cluster's watcher
                if host not in alive:
                    alive[host] = await runs.workers_alive_on(host)
                if alive[host]:
                    continue  # the machine is up, its watcher only late
                request = await FeatureRequestRepository(session).find_by_request_id(run.request_id)
                gone = SandboxStatus(SandboxState.GONE, reason=f"its machine {host} is gone")
                if await self._ended(session, run, request, gone):
                    lost.append(run_name(run))
        if lost:
            log.warning("run watcher: runs lost with their machine: %s", lost)
        return lost
