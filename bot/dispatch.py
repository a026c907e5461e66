"""Dispatch to the runner: the enqueue side (used by Slack, GitHub and the side-API) and the
delivering side (the `dispatch` job), plus the watchdog for runs the runner went silent on.

The job is recorded in the caller's transaction, so no accepted request exists without
its dispatch. The payload the runner receives is built when the job runs (latest
conversation, fresh scoped token); see DESIGN.md "Dispatch to the runner".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from bot.api.tokens import TokenAuthority, TokenError
from bot.requests.actions import RequestLifecycle
from bot.requests.queue import DISPATCH_JOB, DispatchKind
from bot.services import Services
from bot.workers import JobHandler, PermanentJobError, RetryLater
from storage import jobs
from storage.jobs import ClaimedJob
from storage.models import FeatureRequest, MessageType, RequestMessage, utcnow
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.runs import RunsRepository

log = logging.getLogger(__name__)

WATCHDOG_JOB = "runner_watchdog"
RUNNER_TIMEOUT_S = 30.0
TRACKING_ISSUE_WAIT_S = 20.0

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

__all__ = ["CONVERSATION_TYPES", "DISPATCH_JOB", "DispatchKind", "Dispatcher"]


class RunnerUnavailableError(Exception):
    """The runner did not accept the job this time (retried with backoff)."""


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


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - utcnow()).total_seconds(), 0.0)


NO_RUNNER = (
    "No runner is configured, so no agent can work on this request: the Clarity admin must "
    'set RUNNER_URL (see README, "Dispatch to the runner"). Retrying will not help until then.'
)

TrackingIssueFirst = Callable[[str], Awaitable[None]]


class Dispatcher:
    """The `dispatch` job (deliver a run to the runner) and the silent-run watchdog."""

    def __init__(
        self,
        services: Services,
        lifecycle: RequestLifecycle,
        *,
        tracking_issue_first: TrackingIssueFirst | None = None,
    ) -> None:
        self.services = services
        self.lifecycle = lifecycle
        self.tokens = TokenAuthority(services.settings)
        # Opens a Slack request's tracking issue before its first dispatch (GitHub, when
        # configured), so the runner gets its number and the PR can close it.
        self.tracking_issue_first = tracking_issue_first

    @property
    def configured(self) -> bool:
        """Whether jobs have somewhere to go."""
        return bool(self.services.settings.runner_url)

    async def build_payload(
        self, session: AsyncSession, row: FeatureRequest, *, kind: str, attempt: int
    ) -> dict[str, Any]:
        """The body of the runner POST, exactly the fields of the DESIGN.md contract."""
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

    async def _prepare(self, job: ClaimedJob) -> dict[str, Any] | None:
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        async with self.services.session_factory.begin() as session:
            row = await self.lifecycle.run_starting(session, request_id, kind)
            if row is None:
                return None
            if kind != DispatchKind.CANCEL.value:
                await self.ensure_watchdog(session)
            return await self.build_payload(
                session, row, kind=kind, attempt=int(job.payload["attempt"])
            )

    async def post_to_runner(self, payload: dict[str, Any]) -> None:
        """POST one job to RUNNER_URL; returns when accepted (2xx), raises otherwise."""
        url = self.services.settings.runner_url
        if not url:
            raise PermanentJobError("RUNNER_URL is not set")
        key = f"{payload['requestId']}:{payload['attempt']}"
        try:
            async with self.services.http_session().post(
                url,
                json=payload,
                headers={"Idempotency-Key": key},
                timeout=aiohttp.ClientTimeout(total=RUNNER_TIMEOUT_S),
            ) as response:
                if 200 <= response.status < 300:
                    return
                delay = retry_after_seconds(response.headers.get("Retry-After"))
                reason = f"runner answered {response.status} for {key}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RunnerUnavailableError(
                f"runner unreachable for {key}: {type(exc).__name__}: {exc}"
            ) from exc
        if delay is not None:
            raise RetryLater(reason, delay)
        raise RunnerUnavailableError(reason)

    async def run_dispatch(self, job: ClaimedJob) -> None:
        """The `dispatch` job: deliver the request to the runner with its Idempotency-Key."""
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        attempt = int(job.payload["attempt"])
        if not self.configured:
            if kind != DispatchKind.CANCEL.value:
                async with self.services.session_factory.begin() as session:
                    await self.lifecycle.run_failed(session, request_id, "NO_RUNNER", NO_RUNNER)
            return
        if kind == DispatchKind.INITIAL.value and self.tracking_issue_first is not None:
            try:
                async with asyncio.timeout(TRACKING_ISSUE_WAIT_S):
                    await self.tracking_issue_first(request_id)
            except Exception:
                log.warning(
                    "tracking issue for %s not opened before dispatch", request_id, exc_info=True
                )
        payload = await self._prepare(job)
        if payload is None:
            return
        await self.post_to_runner(payload)
        self.services.metrics.jobs.labels(DISPATCH_JOB, "accepted").inc()
        if kind == DispatchKind.CANCEL.value:
            return
        async with self.services.session_factory.begin() as session:
            await self.lifecycle.run_accepted(session, request_id, attempt, kind)

    async def dispatch_exhausted(self, job: ClaimedJob) -> None:
        """After the last failed try: the request goes to error, and its thread gets Retry."""
        request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
        if kind == DispatchKind.CANCEL.value:
            log.warning("the runner was never told to stop %s", request_id)
            return
        async with self.services.session_factory.begin() as session:
            # A later dispatch (a Retry, an answer) carries the request on.
            if await RunsRepository(session).newer_than(request_id, int(job.payload["attempt"])):
                return
            last_error = await jobs.last_error(session, job.id)
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
        """At start-up: a database with processing requests but no sweep gets one."""
        async with self.services.session_factory.begin() as session:
            if await FeatureRequestRepository(session).any_processing():
                await self.ensure_watchdog(session)

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
        """The dispatch and watchdog job kinds."""
        return {
            DISPATCH_JOB: JobHandler(
                run=self.run_dispatch,
                on_exhausted=self.dispatch_exhausted,
                timeout_s=RUNNER_TIMEOUT_S + TRACKING_ISSUE_WAIT_S + 10,
            ),
            WATCHDOG_JOB: JobHandler(run=self.run_watchdog, timeout_s=60),
        }
