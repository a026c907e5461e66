"""Queueing work for the runner: a `clarity_runs` row and its `dispatch` job, together.

Only the lifecycle calls this (bot.requests.actions); the delivering side is bot.dispatch.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage import jobs
from storage.models import Run
from storage.repositories.runs import RunsRepository

DISPATCH_JOB = "dispatch"
PUBLISH_JOB = "publish"


class DispatchKind(enum.StrEnum):
    """Why the runner is sent the request (DESIGN.md `kind`)."""

    INITIAL = "initial"
    CLARIFICATION_ANSWER = "clarification_answer"
    FOLLOW_UP = "follow_up"
    RETRY = "retry"
    CANCEL = "cancel"


async def enqueue_dispatch(
    session: AsyncSession, request_id: str, kind: DispatchKind, *, max_attempts: int
) -> Run:
    """Record the next run of the request and queue its delivery, in the caller's transaction.

    The run's attempt number makes `requestId:attempt` (the Idempotency-Key) stable across
    retries of one dispatch and new for the next one. Callers hold the request's row lock.
    """
    run = await RunsRepository(session).add(request_id, kind.value)
    await jobs.enqueue(
        session,
        DISPATCH_JOB,
        {"requestId": request_id, "kind": kind.value, "attempt": run.attempt},
        request_id=request_id,
        dedupe_key=f"dispatch:{request_id}:{run.attempt}",
        max_attempts=max_attempts,
    )
    return run


async def requeue_dispatch(
    session: AsyncSession,
    payload: dict[str, Any],
    *,
    delay_s: float,
    max_attempts: int,
) -> None:
    """Deliver an existing run again later, as a fresh job: the run waits (for a free slot,
    for the previous run's work to be published), which is not a failed try."""
    request_id, attempt = str(payload["requestId"]), int(payload["attempt"])
    await jobs.enqueue(
        session,
        DISPATCH_JOB,
        payload,
        request_id=request_id,
        dedupe_key=f"dispatch:{request_id}:{attempt}",
        delay=dt.timedelta(seconds=delay_s),
        max_attempts=max_attempts,
    )


async def enqueue_publish(
    session: AsyncSession, request_id: str, attempt: int, sha256: str, *, max_attempts: int
) -> None:
    """Queue the publishing of a run's bundle; the same bundle is published once."""
    await jobs.enqueue(
        session,
        PUBLISH_JOB,
        {"requestId": request_id, "attempt": attempt, "sha256": sha256},
        request_id=request_id,
        dedupe_key=f"publish:{request_id}:{attempt}:{sha256}",
        max_attempts=max_attempts,
    )
