"""Dispatch to the runner: the `dispatch` job drives each run through the runner backend,
plus the watchdog for runs the runner went silent on.

The job is recorded in the caller's transaction (bot.requests.queue), so no accepted
request exists without its dispatch. When it runs it builds the job document (latest
conversation, fresh scoped token; DESIGN.md "Dispatch to the runner") and the sandbox's
environment (bot.runner.environment), and starts the run through the backend
(CLARITY_RUNNER): its `clarity_runs` row goes queued → starting → running with the backend
and sandbox id. A run starts once: the row is locked and its state checked before the
backend is asked, and the backend's `start` is itself a no-op for an attempt it started.

Runs start in order and never more than CLARITY_MAX_CONCURRENT_RUNS at once across replicas
(sandbox backends; an outside `http` runner schedules its own); a run that cannot start
yet, or an answer or follow-up whose previous run's work is still being published, waits
as a fresh job (waiting is not a failed try). A `cancel` stops the request's live runs
through the backend (an outside runner is sent the cancel job). bot.runner.watch follows
the runs once started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.api.credentials import Credentials
from bot.api.tokens import TokenAuthority, TokenError
from bot.requests.actions import RequestLifecycle
from bot.requests.budget import remaining, request_budget
from bot.requests.queue import DISPATCH_JOB, PUBLISH_JOB, DispatchKind, requeue_dispatch
from bot.runner.base import RunnerBackend, RunSpec
from bot.runner.environment import SandboxEnvironment
from bot.runner.factory import configured, delivers_cancel, owns
from bot.runner.http import (
    RUNNER_TIMEOUT_S,
    HttpBackend,
    RunnerUnavailableError,
    retry_after_seconds,
)
from bot.runner.local import PROVIDED_PROGRAMS, LocalBackend, LocalBackendError
from bot.runner.watch import RunWatcher
from bot.services import NotConfiguredError, Services
from bot.workers import JobHandler, PermanentJobError
from storage import jobs, locks
from storage.jobs import ClaimedJob
from storage.models import FeatureRequest, MessageType, RequestMessage, Run, utcnow
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.runs import RunsRepository

log = logging.getLogger(__name__)

WATCHDOG_JOB = "runner_watchdog"
TRACKING_ISSUE_WAIT_S = 20.0
# A run waiting for a slot, or for its previous run's work to be published, looks again
# this often; it waits for a publish at most PUBLISH_WAIT_S (then the run starts anyway, from
# what the remote has).
WAIT_S = 2.0
PUBLISH_WAIT_S = 600.0
SLOTS_LOCK = "clarity:run-slots"
# How long a cancel lets the agent hand over before its sandbox is killed.
CANCEL_GRACE_S = 12.0

# What the runner sees of a request's history: what people and the agent said and what
# happened to the run, without the agent's own activity log.
CONVERSATION_TYPES = frozenset(
    {
        MessageType.INITIAL_REQUEST,
        MessageType.CLARIFICATION_ASK,
        MessageType.CLARIFICATION_ANSWER,
        MessageType.FOLLOW_UP_REQUEST,
        MessageType.PR_CREATED,
        MessageType.PR_UPDATED,
        MessageType.ERROR,
        MessageType.RETRY,
        MessageType.CANCELLED,
    }
)

__all__ = [
    "CONVERSATION_TYPES",
    "DISPATCH_JOB",
    "DispatchKind",
    "Dispatcher",
    "RunnerUnavailableError",
    "retry_after_seconds",
]


# --- delivering -------------------------------------------------------------------------


def api_url(services: Services) -> str:
    """The side-API base URL agents are told to call: `<CLARITY_PUBLIC_URL>/api`."""
    return services.settings.public_base() + "/api"


def _title(row: FeatureRequest) -> str:
    if row.title:
        return row.title
    if row.issue_title:
        return row.issue_title
    first = row.description.strip().splitlines()[0] if row.description.strip() else ""
    return first[:80]


def _entry(message: RequestMessage) -> dict[str, Any]:
    return {
        "type": message.type.value,
        "source": message.source.value,
        "content": message.content,
        "actorId": message.actor_id,
        "actorName": message.actor_name,
        "metadata": message.metadata_,
        "createdAt": message.created_at.isoformat(),
    }


NO_RUNNER = (
    "No agent can work on this request: {problem}. The Clarity admin must set this up "
    '(see README, "Runs"); retrying will not help until then.'
)

TrackingIssueFirst = Callable[[str], Awaitable[None]]


class NotYetError(Exception):
    """The run cannot start yet (no free slot, its previous run's work not yet published)."""

    def __init__(self, why: str, delay_s: float = WAIT_S) -> None:
        super().__init__(why)
        self.delay_s = delay_s


@dataclass(frozen=True)
class Starting:
    """A run about to be handed to the backend."""

    run_id: int | None
    spec: RunSpec


class Dispatcher:
    """The `dispatch` job (deliver a run through the runner backend) and the watchdog."""

    def __init__(
        self,
        services: Services,
        lifecycle: RequestLifecycle,
        *,
        backend: RunnerBackend | None = None,
        watcher: RunWatcher | None = None,
        environment: SandboxEnvironment | None = None,
        credentials: Credentials | None = None,
        tracking_issue_first: TrackingIssueFirst | None = None,
        max_concurrent_runs: int | None = None,
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        self.services = services
        self.lifecycle = lifecycle
        settings = services.settings
        self.tokens = TokenAuthority(settings)
        self.backend: RunnerBackend = backend or HttpBackend(
            url=settings.runner_url, session=services.http_session
        )
        self.watcher = watcher or RunWatcher(services, lifecycle, self.backend)
        self.environment = environment or SandboxEnvironment(
            git_url=settings.github_git_url,
            agent_cli=settings.clarity_agent_cli,
            timeout_s=settings.clarity_run_timeout_s,
            anthropic_base_url=settings.anthropic_base_url,
        )
        self.credentials = credentials
        # Opens a Slack request's tracking issue before its first dispatch (GitHub, when
        # configured), so the runner gets its number and the PR can close it.
        self.tracking_issue_first = tracking_issue_first
        self.max_concurrent_runs = max_concurrent_runs or settings.clarity_max_concurrent_runs
        self.cancel_grace_s = cancel_grace_s

    @property
    def configured(self) -> bool:
        """Whether jobs have somewhere to go."""
        return self.problem is None

    @property
    def problem(self) -> str | None:
        """Why no run can happen here, in a sentence a person can act on; None when one can."""
        settings = self.services.settings
        if not configured(self.backend):
            return "no runner is configured (CLARITY_RUNNER=http needs RUNNER_URL)"
        if isinstance(self.backend, LocalBackend):
            words = shlex.split(settings.clarity_agent_cli or "")
            provided = words and words[0] in PROVIDED_PROGRAMS
            if not words or not (provided or shutil.which(words[0])):
                return (
                    f"the agent's CLI `{words[0] if words else ''}` (CLARITY_AGENT_CLI) is not "
                    "installed on this machine: install Claude Code "
                    "(npm install -g @anthropic-ai/claude-code)"
                )
        return None

    @property
    def capped(self) -> bool:
        """Whether runs take a slot (sandbox backends; an outside runner has its own rules)."""
        return not delivers_cancel(self.backend)

    async def build_payload(
        self, session: AsyncSession, row: FeatureRequest, *, kind: str, attempt: int
    ) -> dict[str, Any]:
        """The job document, exactly the fields of the DESIGN.md contract."""
        try:
            token = self.tokens.issue(
                row.request_id, self.services.settings.clarity_job_token_ttl_s
            )
        except TokenError as exc:
            raise PermanentJobError(f"cannot issue a job token: {exc}") from exc
        thread = await RequestMessagesRepository(session).get_thread(
            row.request_id, types=CONVERSATION_TYPES
        )
        return {
            "requestId": row.request_id,
            "attempt": attempt,
            "kind": kind,
            "repo": row.repo,
            "title": _title(row),
            "description": row.description,
            "branch": row.pr_branch_name,
            "prNumber": row.pr_number,
            "issueNumber": row.issue_number,
            "conversation": [_entry(m) for m in thread],
            "apiUrl": api_url(self.services),
            "apiToken": token,
        }

    async def _claude_key(self) -> str | None:
        if self.credentials is None:
            return self.services.settings.secret("anthropic_api_key")
        try:
            return await self.credentials.claude_api_key()
        except NotConfiguredError:
            return None

    async def _environment(self, session: AsyncSession, row: FeatureRequest) -> dict[str, str]:
        """The sandbox's environment, with what is left of the request's budget."""
        settings = self.services.settings
        budget = await request_budget(session, row.request_id, settings.clarity_budget_usd)
        return self.environment.build(
            budget_usd=remaining(budget, row.cost_usd),
            anthropic_api_key=await self._claude_key(),
        )

    async def _wait_for_turn(
        self, session: AsyncSession, run: Run, kind: str, payload: dict[str, Any]
    ) -> None:
        """NotYetError until the run may start: its previous run's work published, a slot
        free and no run queued before it waiting for one."""
        request_id = run.request_id
        if kind != DispatchKind.INITIAL.value and await jobs.has_pending(
            session, PUBLISH_JOB, request_id
        ):
            since = float(payload.get("waitingSince") or time.time())
            if time.time() - since < PUBLISH_WAIT_S:
                raise NotYetError("the previous run's work is being published")
            log.warning("run %s:%d starts before its previous run was published", request_id,
                        run.attempt)  # fmt: skip
        if not self.capped:
            return
        # Replicas take turns here, so two cannot both take the last slot.
        await locks.hold(session, SLOTS_LOCK)
        runs = RunsRepository(session)
        active = await runs.active_count()
        ahead = await runs.waiting_before(run)
        if active + ahead >= self.max_concurrent_runs:
            raise NotYetError(
                f"{active} run(s) running and {ahead} queued before it "
                f"(at most {self.max_concurrent_runs} at once)"
            )

    async def _prepare(self, job: ClaimedJob) -> Starting | None:
        """Claim the run's start (queued → starting); None when there is nothing to do."""
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        attempt = int(job.payload["attempt"])
        async with self.services.session_factory.begin() as session:
            # The request's row lock first, then the run's (the order every writer keeps).
            row = await self.lifecycle.run_starting(session, request_id, kind)
            runs = RunsRepository(session)
            run = await runs.get(request_id, attempt, lock=True)
            if row is None:
                if run is not None:
                    await runs.finish(run.id, "cancelled", error="the request was finished")
                return None
            if run is not None and run.state not in ("queued", "starting"):
                log.info("run %s:%d is %s: not started again", request_id, attempt, run.state)
                return None
            if run is not None and run.state == "queued":
                # Raises NotYetError: the transaction (and the request's change) rolls back.
                await self._wait_for_turn(session, run, kind, job.payload)
            await self.ensure_watchdog(session)
            payload = await self.build_payload(session, row, kind=kind, attempt=attempt)
            # An outside runner gets the job document only; its sandbox is its own.
            env = await self._environment(session, row) if self.capped else {}
            if run is not None:
                await runs.update(
                    run.id, state="starting", backend=self.backend.name, started_at=utcnow()
                )
        spec = RunSpec(
            request_id=request_id,
            attempt=attempt,
            kind=kind,
            job=payload,
            env=env,
            timeout_s=self.services.settings.clarity_run_timeout_s,
        )
        return Starting(run.id if run is not None else None, spec)

    async def _wait(self, job: ClaimedJob, why: NotYetError) -> None:
        """Deliver the run later, as a fresh job (this one ends)."""
        payload = dict(job.payload)
        payload.setdefault("waitingSince", time.time())
        async with self.services.session_factory.begin() as session:
            await requeue_dispatch(
                session, payload, delay_s=why.delay_s, max_attempts=job.max_attempts
            )
        log.info("run %s:%s waits: %s", job.payload["requestId"], job.payload["attempt"], why)

    async def run_dispatch(self, job: ClaimedJob) -> None:
        """The `dispatch` job: start the run (or stop the request's runs, for a cancel)."""
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        attempt = int(job.payload["attempt"])
        if not self.configured:
            if kind != DispatchKind.CANCEL.value:
                async with self.services.session_factory.begin() as session:
                    await self._finish_run(session, request_id, attempt, "failed", "no runner")
                    await self.lifecycle.run_failed(
                        session, request_id, "NO_RUNNER", NO_RUNNER.format(problem=self.problem)
                    )
            return
        if kind == DispatchKind.CANCEL.value:
            await self.run_cancel(job)
            return
        if kind == DispatchKind.INITIAL.value and self.tracking_issue_first is not None:
            try:
                async with asyncio.timeout(TRACKING_ISSUE_WAIT_S):
                    await self.tracking_issue_first(request_id)
            except Exception:
                log.warning(
                    "tracking issue for %s not opened before dispatch", request_id, exc_info=True
                )
        try:
            starting = await self._prepare(job)
        except NotYetError as why:
            await self._wait(job, why)
            return
        if starting is None:
            return
        try:
            sandbox_id = await self.backend.start(starting.spec)
        except LocalBackendError as exc:
            raise PermanentJobError(str(exc)) from exc
        self.services.metrics.jobs.labels(DISPATCH_JOB, "accepted").inc()
        async with self.services.session_factory.begin() as session:
            if starting.run_id is not None:
                await RunsRepository(session).update(
                    starting.run_id,
                    state="running",
                    sandbox_id=sandbox_id,
                    heartbeat_at=utcnow(),
                )
            await self.lifecycle.run_accepted(session, request_id, attempt, kind)
            await self.watcher.ensure(session)

    async def run_cancel(self, job: ClaimedJob) -> None:
        """A `cancel`: the request's live runs are stopped and recorded cancelled."""
        request_id, attempt = str(job.payload["requestId"]), int(job.payload["attempt"])
        async with self.services.session_factory.begin() as session:
            row = await self.lifecycle.run_starting(session, request_id, DispatchKind.CANCEL.value)
            if row is None:
                return
            runs = RunsRepository(session)
            active: list[Run] = []
            for run in await runs.live_of(request_id):
                if run.state == "queued":
                    await runs.finish(run.id, "cancelled", error="cancelled before it started")
                elif run.sandbox_id is not None and owns(self.backend, run.sandbox_id):
                    active.append(run)
            payload = (
                await self.build_payload(
                    session, row, kind=DispatchKind.CANCEL.value, attempt=attempt
                )
                if delivers_cancel(self.backend)
                else None
            )
        if payload is not None:
            # An outside runner is told with a job of its own.
            await self.backend.start(
                RunSpec(request_id, attempt, DispatchKind.CANCEL.value, job=payload)
            )
            self.services.metrics.jobs.labels(DISPATCH_JOB, "accepted").inc()
        await asyncio.gather(*(self._stop(run) for run in active))
        async with self.services.session_factory.begin() as session:
            await self._finish_run(session, request_id, attempt, "succeeded", None)
        # Sandboxes of another machine are stopped by that machine's run watcher.

    async def _stop(self, run: Run) -> None:
        assert run.sandbox_id is not None
        await self.backend.cancel(run.sandbox_id, grace_s=self.cancel_grace_s)
        async with self.services.session_factory.begin() as session:
            await RunsRepository(session).finish(run.id, "cancelled", error="cancelled")
        try:
            await self.backend.reap(run.sandbox_id)
        except Exception:
            log.warning("could not reap sandbox %s", run.sandbox_id, exc_info=True)

    async def _finish_run(
        self, session: AsyncSession, request_id: str, attempt: int, state: str, error: str | None
    ) -> None:
        runs = RunsRepository(session)
        run = await runs.get(request_id, attempt)
        if run is not None:
            await runs.finish(run.id, state, error=error)

    async def dispatch_exhausted(self, job: ClaimedJob) -> None:
        """After the last failed try: the request goes to error, and its thread gets Retry."""
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        attempt = int(job.payload["attempt"])
        if kind == DispatchKind.CANCEL.value:
            log.warning("the runner was never told to stop %s", request_id)
            return
        async with self.services.session_factory.begin() as session:
            last_error = await jobs.last_error(session, job.id)
            await self._finish_run(session, request_id, attempt, "failed", last_error)
            # A later dispatch (a Retry, an answer) carries the request on.
            if await RunsRepository(session).newer_than(request_id, attempt):
                return
            await self.lifecycle.run_failed(
                session,
                request_id,
                "RUNNER_UNAVAILABLE",
                f"The runner could not take the job after {job.attempts} tries"
                + (f" (last: {last_error})" if last_error else "")
                + ". Press Retry to try again.",
            )

    # --- watchdog ---------------------------------------------------------------------

    def watchdog_period_s(self) -> float:
        """How often the sweep runs while requests are processing."""
        return float(min(60, max(self.services.settings.clarity_runner_timeout_s // 4, 1)))

    async def ensure_watchdog(self, session: AsyncSession) -> None:
        """Make sure one sweep is queued (at most one ever is, whichever replica asks)."""
        await jobs.enqueue(
            session,
            WATCHDOG_JOB,
            {},
            dedupe_key=WATCHDOG_JOB,
            delay=dt.timedelta(seconds=self.watchdog_period_s()),
            max_attempts=3,
        )

    async def seed_watchdog(self) -> None:
        """At start-up: a database with processing requests but no sweep gets one, and runs
        left live by an earlier process are followed again."""
        async with self.services.session_factory.begin() as session:
            if await FeatureRequestRepository(session).any_processing():
                await self.ensure_watchdog(session)
        await self.watcher.seed()

    async def sweep_silent_runs(self, *, now: dt.datetime | None = None) -> list[str]:
        """Fail the processing requests the runner has said nothing about for too long."""
        timeout = dt.timedelta(seconds=self.services.settings.clarity_runner_timeout_s)
        cutoff = (now or utcnow()) - timeout
        minutes = max(round(timeout.total_seconds() / 60), 1)
        failed: list[str] = []
        async with self.services.session_factory.begin() as session:
            requests = FeatureRequestRepository(session)
            for row in await requests.silent_processing(cutoff, dispatch_kind=DISPATCH_JOB):
                changed = await self.lifecycle.run_failed(
                    session,
                    row.request_id,
                    "RUNNER_TIMEOUT",
                    f"No word from the runner for {minutes} minute{'s' if minutes != 1 else ''}: "
                    "the run is treated as failed. Press Retry to try again.",
                )
                if changed is not None:
                    failed.append(row.request_id)
            if await requests.any_processing():
                await self.ensure_watchdog(session)
        if failed:
            log.warning("runner watchdog failed %d silent request(s): %s", len(failed), failed)
        return failed

    async def run_watchdog(self, job: ClaimedJob) -> None:
        """The `runner_watchdog` job."""
        await self.sweep_silent_runs()

    def job_handlers(self) -> dict[str, JobHandler]:
        """The dispatch, watchdog and run watcher job kinds."""
        return {
            DISPATCH_JOB: JobHandler(
                run=self.run_dispatch,
                on_exhausted=self.dispatch_exhausted,
                timeout_s=RUNNER_TIMEOUT_S + TRACKING_ISSUE_WAIT_S + self.cancel_grace_s + 10,
            ),
            WATCHDOG_JOB: JobHandler(run=self.run_watchdog, timeout_s=60),
            **self.watcher.job_handlers(),
        }
