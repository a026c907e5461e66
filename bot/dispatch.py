"""Dispatch to the runner: enqueue side (used by Slack, GitHub and the side-API).

The job is recorded in the caller's transaction, so no accepted request exists without
its dispatch. The payload the runner receives is built when the job runs (latest
conversation, fresh scoped token); see DESIGN.md "Dispatch to the runner".
"""

from __future__ import annotations

import enum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage import jobs
from storage.models import Job

DISPATCH_JOB = "dispatch"


class DispatchKind(enum.StrEnum):
    INITIAL = "initial"
    CLARIFICATION_ANSWER = "clarification_answer"
    FOLLOW_UP = "follow_up"
    RETRY = "retry"
    CANCEL = "cancel"


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
