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
import enum
import logging
from typing import Any

import aiohttp
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import events
from bot.services import Services
from bot.workers import JobHandler, PermanentJobError, RetryLater
from storage import jobs
from storage.jobs import ClaimedJob
from storage.lifecycle import FINAL, can_transition
from storage.models import (
    FeatureRequest,
    Job,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestStatus,
    TaskStatus,
    utcnow,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository

log = logging.getLogger(__name__)

DISPATCH_JOB = "dispatch"
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


class DispatchKind(enum.StrEnum):
    """Why the runner is sent the request (DESIGN.md `kind`)."""

    INITIAL = "initial"
    CLARIFICATION_ANSWER = "clarification_answer"
    FOLLOW_UP = "follow_up"
    RETRY = "retry"
    CANCEL = "cancel"


class RunnerUnavailableError(Exception):
    """The runner did not accept the job this time (retried with backoff)."""


async def enqueue_dispatch(
    session: AsyncSession, request_id: str, kind: DispatchKind, *, max_attempts: int = 6
) -> int:
    """Queue one delivery to the runner; returns its attempt number.

    The attempt number counts this request's dispatches, so `requestId:attempt` (the
    Idempotency-Key) is stable across retries of one dispatch and new for the next one.
    Callers hold the request's row lock (they just changed it), which serialises this count.
    """
    previous = await session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.kind == DISPATCH_JOB, Job.request_id == request_id)
    )
    attempt = int(previous or 0) + 1
    await jobs.enqueue(
        session,
        DISPATCH_JOB,
        {"requestId": request_id, "kind": kind.value, "attempt": attempt},
        request_id=request_id,
        dedupe_key=f"dispatch:{request_id}:{attempt}",
        max_attempts=max_attempts,
    )
    return attempt


# --- delivering -------------------------------------------------------------------------


def api_url(services: Services) -> str:
    """The side-API base URL agents are told to call."""
    s = services.settings
    if s.clarity_public_url:
        return s.clarity_public_url.rstrip("/") + "/api"
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host  # noqa: S104
    return f"http://{host}:{s.port}/api"


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


async def build_payload(
    services: Services,
    session: AsyncSession,
    row: FeatureRequest,
    *,
    kind: str,
    attempt: int,
) -> dict[str, Any]:
    """The body of the runner POST, exactly the fields of the DESIGN.md contract."""
    from bot.api.tokens import TokenAuthority, TokenError

    try:
        token = TokenAuthority(services.settings).issue(
            row.request_id, services.settings.clarity_job_token_ttl_s
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
        "apiUrl": api_url(services),
        "apiToken": token,
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


async def _prepare(services: Services, job: ClaimedJob) -> dict[str, Any] | None:
    """Put the request in processing and build the payload; None when there is nothing to do.

    The status changes before the POST, so an agent that reports back at once never finds
    its request still pending.
    """
    request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        row = await requests.find_by_request_id(request_id, lock=True)
        if row is None:
            raise PermanentJobError(f"request {request_id} does not exist")
        if kind != DispatchKind.CANCEL.value:
            if row.status in FINAL:
                log.info("not dispatching %s: request is %s", request_id, row.status.value)
                return None
            if row.status != RequestStatus.PROCESSING and can_transition(
                row.status, RequestStatus.PROCESSING
            ):
                row = await requests.update_status(
                    request_id, RequestStatus.PROCESSING, task_status=TaskStatus.PROCESSING
                )
                await events.request_changed(services, session, row, status_changed=True)
            await ensure_watchdog(services, session)
        return await build_payload(
            services, session, row, kind=kind, attempt=int(job.payload["attempt"])
        )


async def post_to_runner(services: Services, payload: dict[str, Any]) -> None:
    """POST one job to RUNNER_URL; returns when accepted (2xx), raises otherwise."""
    url = services.settings.runner_url
    if not url:
        raise PermanentJobError("RUNNER_URL is not set")
    key = f"{payload['requestId']}:{payload['attempt']}"
    try:
        async with services.http_session().post(
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


async def _accepted(services: Services, job: ClaimedJob) -> None:
    request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
    if kind == DispatchKind.CANCEL.value:
        return
    async with services.session_factory.begin() as session:
        row = await FeatureRequestRepository(session).get(request_id)
        message = await RequestMessagesRepository(session).add_system(
            request_id,
            MessageType.PROCESSING_STARTED,
            f"The runner accepted the job (attempt {job.payload['attempt']}, {kind})",
            {"dispatchAttempt": job.payload["attempt"], "dispatchKind": kind},
        )
        await events.request_changed(services, session, row, message=message)


async def _tracking_issue_first(services: Services, request_id: str) -> None:
    """Open a pending tracking issue before the first dispatch, so the runner gets its number
    (and the PR can close it); if GitHub fails, dispatch goes ahead and the issue job retries."""
    from bot.github.notify import TRACKING_ISSUE_JOB, open_tracking_issue

    async with services.session_factory() as session:
        pending = await session.scalar(
            select(Job.id).where(
                Job.kind == TRACKING_ISSUE_JOB,
                Job.request_id == request_id,
                Job.status.in_(["queued", "running"]),
            )
        )
    if pending is None:
        return
    try:
        async with asyncio.timeout(TRACKING_ISSUE_WAIT_S):
            await open_tracking_issue(services, request_id)
    except Exception:
        log.warning("tracking issue for %s not opened before dispatch", request_id, exc_info=True)


async def run_dispatch(services: Services, job: ClaimedJob) -> None:
    """The `dispatch` job: deliver the request to the runner with its Idempotency-Key."""
    if job.payload["kind"] == DispatchKind.INITIAL.value:
        await _tracking_issue_first(services, str(job.payload["requestId"]))
    payload = await _prepare(services, job)
    if payload is None:
        return
    await post_to_runner(services, payload)
    services.metrics.jobs.labels(DISPATCH_JOB, "accepted").inc()
    await _accepted(services, job)


async def dispatch_exhausted(services: Services, job: ClaimedJob) -> None:
    """After the last failed try: the request goes to error, and its thread gets Retry."""
    request_id, kind = str(job.payload["requestId"]), str(job.payload["kind"])
    if kind == DispatchKind.CANCEL.value:
        log.warning("the runner was never told to stop %s", request_id)
        return
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        row = await requests.find_by_request_id(request_id, lock=True)
        if row is None or row.status in FINAL or row.status == RequestStatus.ERROR:
            return
        newer = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.kind == DISPATCH_JOB,
                Job.request_id == request_id,
                Job.id > job.id,
            )
        )
        if newer:
            return  # a later dispatch (a Retry, an answer) carries the request on
        last_error = await session.scalar(select(Job.last_error).where(Job.id == job.id))
        row = await requests.update_status(
            request_id, RequestStatus.ERROR, task_status=TaskStatus.ERROR
        )
        message = await RequestMessagesRepository(session).add_error(
            request_id,
            "RUNNER_UNAVAILABLE",
            f"The runner could not take the job after {job.attempts} tries"
            + (f" (last: {last_error})" if last_error else "")
            + ". Press Retry to try again.",
        )
        await events.request_changed(services, session, row, message=message, status_changed=True)


# --- watchdog -------------------------------------------------------------------------


def watchdog_period_s(services: Services) -> float:
    """How often the sweep runs while requests are processing."""
    return float(min(60, max(services.settings.clarity_runner_timeout_s // 4, 1)))


async def ensure_watchdog(services: Services, session: AsyncSession) -> None:
    """Make sure one sweep is queued (at most one ever is, whichever replica asks)."""
    await jobs.enqueue(
        session,
        WATCHDOG_JOB,
        {},
        dedupe_key=WATCHDOG_JOB,
        delay=dt.timedelta(seconds=watchdog_period_s(services)),
        max_attempts=3,
    )


async def sweep_silent_runs(services: Services, *, now: dt.datetime | None = None) -> list[str]:
    """Fail the processing requests the runner has said nothing about for too long."""
    timeout = dt.timedelta(seconds=services.settings.clarity_runner_timeout_s)
    cutoff = (now or utcnow()) - timeout
    last_word = (
        select(func.max(RequestMessage.created_at))
        .where(
            RequestMessage.request_id == FeatureRequest.request_id,
            RequestMessage.source == MessageSource.SYSTEM,
        )
        .correlate(FeatureRequest)
        .scalar_subquery()
    )
    dispatch_pending = exists().where(
        Job.kind == DISPATCH_JOB,
        Job.request_id == FeatureRequest.request_id,
        Job.status.in_(["queued", "running"]),
    )
    silent = (
        select(FeatureRequest)
        .where(
            FeatureRequest.status == RequestStatus.PROCESSING,
            func.greatest(
                FeatureRequest.updated_at, func.coalesce(last_word, FeatureRequest.updated_at)
            )
            < cutoff,
            ~dispatch_pending,
        )
        .order_by(FeatureRequest.id)
        .limit(100)
        # Several replicas may sweep at once; each request is failed by exactly one.
        .with_for_update(skip_locked=True, of=FeatureRequest)
    )
    minutes = max(round(timeout.total_seconds() / 60), 1)
    failed: list[str] = []
    async with services.session_factory.begin() as session:
        for row in (await session.scalars(silent)).all():
            row = await FeatureRequestRepository(session).update_status(
                row.request_id, RequestStatus.ERROR, task_status=TaskStatus.ERROR
            )
            message = await RequestMessagesRepository(session).add_error(
                row.request_id,
                "RUNNER_TIMEOUT",
                f"No word from the runner for {minutes} minute{'s' if minutes != 1 else ''}: "
                "the run is treated as failed. Press Retry to try again.",
            )
            await events.request_changed(
                services, session, row, message=message, status_changed=True
            )
            failed.append(row.request_id)
        still_processing = await session.scalar(
            select(func.count())
            .select_from(FeatureRequest)
            .where(FeatureRequest.status == RequestStatus.PROCESSING)
        )
        if still_processing:
            await ensure_watchdog(services, session)
    if failed:
        log.warning("runner watchdog failed %d silent request(s): %s", len(failed), failed)
    return failed


async def run_watchdog(services: Services, job: ClaimedJob) -> None:
    """The `runner_watchdog` job."""
    await sweep_silent_runs(services)


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """The dispatch and watchdog job kinds."""
    return {
        DISPATCH_JOB: JobHandler(
            run=run_dispatch,
            on_exhausted=dispatch_exhausted,
            timeout_s=RUNNER_TIMEOUT_S + TRACKING_ISSUE_WAIT_S + 10,
        ),
        WATCHDOG_JOB: JobHandler(run=run_watchdog, timeout_s=60),
    }
