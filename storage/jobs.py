"""A durable job queue in PostgreSQL (table clarity_jobs).

Why our own table rather than pgqueuer: every job must be enqueued in the same transaction
as the change that causes it, through the same SQLAlchemy session, and several job kinds
coalesce (one queued progress update per request) — both are one INSERT here. Retries
honour Retry-After by rescheduling `run_at`; the schema is owned by Alembic and covered by
the least-privilege grants like every other table.

Claiming uses FOR UPDATE SKIP LOCKED, so any number of workers on any number of replicas
take distinct jobs. A claimed job carries a lease (`locked_until`); a job whose worker died
is queued again once its lease runs out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.errors import DB_ERRORS, DeleteError, InsertError, QueryError, UpdateError, translate
from storage.models import JOB_MAX_ATTEMPTS, Job, utcnow

NOTIFY_CHANNEL = "clarity_jobs"


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    request_id: str | None
    attempts: int
    max_attempts: int
    dedupe_key: str | None

    @property
    def last_attempt(self) -> bool:
        return self.attempts >= self.max_attempts


@dataclass(frozen=True)
class NewJob:
    """A job for `enqueue_many`: the arguments of `enqueue`, as a value."""

    kind: str
    payload: dict[str, Any]
    request_id: str | None = None
    dedupe_key: str | None = None
    delay: dt.timedelta | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class CoalescedJob:
    """A job kind queued at most once per request at a time (its key: prefix + request id).

    A change absorbed by an already queued job must still be seen when that job runs: the
    change holds the request's barrier lock shared until it commits, and the job takes it
    exclusively before it reads, so it waits for them without ever delaying a claim.
    """

    kind: str
    key_prefix: str
    delay_s: float = 0.0
    max_attempts: int | None = None

    def dedupe_key(self, request_id: str) -> str:
        """The job's coalescing key for one request."""
        return f"{self.key_prefix}{request_id}"

    def barrier_key(self, request_id: str) -> str:
        """The advisory lock changes hold shared and the job takes exclusively."""
        return f"{self.dedupe_key(request_id)}{BARRIER_SUFFIX}"

    def new_job(self, request_id: str) -> NewJob:
        """This job for one request, as enqueue/enqueue_many take it."""
        return NewJob(
            self.kind,
            {"requestId": request_id},
            request_id=request_id,
            dedupe_key=self.dedupe_key(request_id),
            delay=dt.timedelta(seconds=self.delay_s) if self.delay_s > 0 else None,
            max_attempts=self.max_attempts,
        )


BARRIER_SUFFIX = ":changes"


def queue_jobs_sql(rows: str) -> str:
    """The CTEs `queued` and `notified` that insert the job rows `rows` selects and NOTIFY.

    `rows` is a query (usable as a CTE body) yielding n, kind, payload, request_id,
    dedupe_key, delay_s and max_attempts. Rows are inserted in `n` order; a row whose key a
    queued job already has is absorbed by it (coalescing); the NOTIFY is sent once, and only
    when something was inserted. Every way of queueing jobs goes through this one text:
    `enqueue`, `enqueue_many` (Slack intake) and agent activity (storage.activity).
    """
    return f"""
    job_rows AS ({rows}),
    queued AS (
        INSERT INTO clarity_jobs (kind, payload, request_id, dedupe_key, run_at, max_attempts)
        SELECT r.kind, r.payload, r.request_id, r.dedupe_key,
               now() + make_interval(secs => coalesce(r.delay_s, 0)),
               coalesce(r.max_attempts, {JOB_MAX_ATTEMPTS})
        FROM job_rows r
        ORDER BY r.n
        ON CONFLICT (dedupe_key) WHERE status = 'queued' DO NOTHING
        RETURNING id, dedupe_key, kind
    ), notified AS (
        SELECT pg_notify('{NOTIFY_CHANNEL}', string_agg(DISTINCT kind, ',')) AS sent
        FROM queued HAVING count(*) > 0
    )"""


# One statement text for any batch size: compiled and prepared once, not once per size. The
# rows arrive as one JSON array and are inserted in its order (`n`).
_ENQUEUE_MANY = text(
    "WITH "
    + queue_jobs_sql(
        """SELECT * FROM jsonb_to_recordset(:rows) AS r(
            n int, kind text, payload jsonb, request_id text, dedupe_key text,
            delay_s float8, max_attempts int)"""
    )
    + " SELECT queued.id, queued.dedupe_key FROM queued LEFT JOIN notified ON true"
).bindparams(bindparam("rows", type_=JSONB))


async def enqueue(
    session: AsyncSession | AsyncConnection,
    kind: str,
    payload: dict[str, Any],
    *,
    request_id: str | None = None,
    dedupe_key: str | None = None,
    delay: dt.timedelta | None = None,
    max_attempts: int | None = None,
) -> int | None:
    """Queue one job in the caller's transaction; None when a queued job has the same key."""
    new = NewJob(kind, payload, request_id, dedupe_key, delay, max_attempts)
    return (await enqueue_many(session, [new]))[0]


async def enqueue_many(
    session: AsyncSession | AsyncConnection, new_jobs: Sequence[NewJob]
) -> list[int | None]:
    """Queue many jobs with one INSERT and one NOTIFY; None where a queued job had the key."""
    # A key repeated within the batch is absorbed by its first occurrence, as by a queued twin.
    first: set[str] = set()
    rows: list[dict[str, Any]] = []
    sent: list[int] = []
    for position, job in enumerate(new_jobs):
        if job.dedupe_key is not None:
            if job.dedupe_key in first:
                continue
            first.add(job.dedupe_key)
        sent.append(position)
        rows.append(
            {
                "n": len(rows),
                "kind": job.kind,
                "payload": job.payload,
                "request_id": job.request_id,
                "dedupe_key": job.dedupe_key,
                "delay_s": job.delay.total_seconds() if job.delay else None,
                "max_attempts": job.max_attempts,
            }
        )
    ids: list[int | None] = [None] * len(new_jobs)
    if not rows:
        return ids
    try:
        inserted = (await session.execute(_ENQUEUE_MANY, {"rows": rows})).all()
    except DB_ERRORS as exc:
        raise translate(exc, InsertError, f"enqueueing {len(rows)} jobs") from exc
    # Keyed rows are matched by key. Rows take identity values one by one in `n` order, so the
    # unkeyed rows' ids, ascending, are theirs in order.
    by_key = {key: job_id for job_id, key in inserted if key is not None}
    unkeyed = iter(sorted(job_id for job_id, key in inserted if key is None))
    for position in sent:
        key = new_jobs[position].dedupe_key
        ids[position] = by_key.get(key) if key is not None else next(unkeyed)
    return ids


async def claim(
    session: AsyncSession,
    worker_id: str,
    *,
    lease: dt.timedelta,
    kinds: list[str] | None = None,
) -> ClaimedJob | None:
    """Take the oldest due job nobody holds, leasing it to this worker."""
    pick = (
        select(Job.id)
        .where(Job.status == "queued", Job.run_at <= func.timezone("UTC", func.now()))
        .order_by(Job.run_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if kinds is not None:
        pick = pick.where(Job.kind.in_(kinds))
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.id == pick.scalar_subquery())
        .values(
            status="running",
            attempts=Job.attempts + 1,
            locked_by=worker_id,
            locked_until=now + lease,
            updated_at=now,
        )
        .returning(
            Job.id,
            Job.kind,
            Job.payload,
            Job.request_id,
            Job.attempts,
            Job.max_attempts,
            Job.dedupe_key,
        )
    )
    try:
        row = (await session.execute(stmt)).first()
    except DB_ERRORS as exc:
        raise translate(exc, UpdateError, "claiming a job") from exc
    return None if row is None else ClaimedJob(*row)


async def complete(session: AsyncSession, job_id: int, worker_id: str) -> bool:
    """Mark a held job done; False if this worker no longer held it."""
    return await _finish(session, job_id, worker_id, status="done", error=None)


async def fail(session: AsyncSession, job_id: int, worker_id: str, error: str) -> bool:
    """Mark a held job failed for good."""
    return await _finish(session, job_id, worker_id, status="failed", error=error)


async def _finish(
    session: AsyncSession, job_id: int, worker_id: str, *, status: str, error: str | None
) -> bool:
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(
            status=status,
            finished_at=now,
            updated_at=now,
            locked_by=None,
            locked_until=None,
            last_error=error[:4000] if error else None,
        )
    )
    try:
        result = await session.execute(stmt)
    except DB_ERRORS as exc:
        raise translate(exc, UpdateError, "finishing a job") from exc
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def retry_later(
    session: AsyncSession, job_id: int, worker_id: str, delay: dt.timedelta, error: str
) -> bool:
    """Put a held job back in the queue to run again after `delay`.

    If another job with the same coalescing key was queued meanwhile, that one carries
    the work forward and this one is closed.
    """
    now = utcnow()
    holder = await session.scalar(
        select(Job.dedupe_key).where(
            Job.id == job_id, Job.locked_by == worker_id, Job.status == "running"
        )
    )
    if holder is not None:
        queued_twin = await session.scalar(
            select(Job.id).where(Job.dedupe_key == holder, Job.status == "queued")
        )
        if queued_twin is not None:
            return await _finish(session, job_id, worker_id, status="done", error="superseded")
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(
            status="queued",
            run_at=now + delay,
            updated_at=now,
            locked_by=None,
            locked_until=None,
            last_error=error[:4000],
        )
    )
    try:
        result = await session.execute(stmt)
    except DB_ERRORS as exc:
        raise translate(exc, UpdateError, "rescheduling a job") from exc
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def extend_lease(
    session: AsyncSession, job_id: int, worker_id: str, lease: dt.timedelta
) -> bool:
    """Keep holding a long-running job."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
        .values(locked_until=utcnow() + lease)
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def recover_expired(session: AsyncSession) -> int:
    """Queue again the running jobs whose lease ran out (their worker died)."""
    try:
        result = await session.execute(
            text(
                """
                UPDATE clarity_jobs AS j
                SET status = CASE
                        WHEN j.dedupe_key IS NOT NULL AND EXISTS (
                            SELECT 1 FROM clarity_jobs q
                            WHERE q.status = 'queued' AND q.dedupe_key = j.dedupe_key)
                        THEN 'done' ELSE 'queued' END,
                    finished_at = CASE
                        WHEN j.dedupe_key IS NOT NULL AND EXISTS (
                            SELECT 1 FROM clarity_jobs q
                            WHERE q.status = 'queued' AND q.dedupe_key = j.dedupe_key)
                        THEN timezone('UTC', now()) END,
                    locked_by = NULL,
                    locked_until = NULL,
                    last_error = 'lease expired: worker stopped while running it',
                    updated_at = timezone('UTC', now())
                WHERE j.status = 'running' AND j.locked_until < timezone('UTC', now())
                """
            )
        )
    except DB_ERRORS as exc:
        raise translate(exc, UpdateError, "recovering expired jobs") from exc
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def queued_count(session: AsyncSession, kind: str | None = None) -> int:
    """Jobs waiting (due or not)."""
    stmt = select(func.count()).select_from(Job).where(Job.status.in_(["queued", "running"]))
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    try:
        return int(await session.scalar(stmt) or 0)
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "counting jobs") from exc


async def next_due_in(session: AsyncSession) -> dt.timedelta | None:
    """Time until the next queued job is due (zero if one is due now), or None if none."""
    run_at = await session.scalar(select(func.min(Job.run_at)).where(Job.status == "queued"))
    if run_at is None:
        return None
    return max(run_at - utcnow(), dt.timedelta(0))


async def has_pending(session: AsyncSession, kind: str, request_id: str) -> bool:
    """Whether a job of `kind` for the request is queued or running."""
    try:
        found = await session.scalar(
            select(Job.id)
            .where(
                Job.kind == kind,
                Job.request_id == request_id,
                Job.status.in_(["queued", "running"]),
            )
            .limit(1)
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "looking for pending jobs") from exc
    return found is not None


async def last_error(session: AsyncSession, job_id: int) -> str | None:
    """What the job's latest failed try said."""
    try:
        return await session.scalar(select(Job.last_error).where(Job.id == job_id))
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "reading a job") from exc


async def prune_finished(session: AsyncSession, older_than: dt.timedelta) -> int:
    """Delete done and failed jobs that finished more than `older_than` ago."""
    stmt = delete(Job).where(
        Job.status.in_(["done", "failed"]), Job.finished_at < utcnow() - older_than
    )
    try:
        result = await session.execute(stmt)
    except DB_ERRORS as exc:
        raise translate(exc, DeleteError, "pruning finished jobs") from exc
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
