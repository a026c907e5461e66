"""FeatureRequestRepository: requests, their lookups, lifecycle-checked status changes, stats."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import (
    DB_ERRORS,
    IllegalTransitionError,
    InsertError,
    NotFoundError,
    QueryError,
    StorageError,
    UpdateError,
    translate,
)
from storage.lifecycle import can_transition
from storage.models import (
    FeatureRequest,
    Job,
    MessageSource,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
    utcnow,
)

_IMMUTABLE = frozenset({"id", "request_id", "created_at"})
_COLUMNS = frozenset(c.key for c in FeatureRequest.__table__.columns)


@dataclass(frozen=True)
class Page:
    items: list[FeatureRequest]
    next_cursor: str | None


@dataclass(frozen=True)
class StatusStats:
    status: RequestStatus
    count: int
    avg_duration_ms: float | None
    total_cost_cents: int


class InvalidCursorError(StorageError):
    """A pagination cursor that this code did not make."""


# A cursor is `<created_at in microseconds since the epoch>.<id>` of the last row of a page:
# any string of that shape is a valid position, so the API can declare its exact pattern.
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9]{1,10}$"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT32_MAX = 2**31 - 1


def _encode_cursor(created_at: dt.datetime, row_id: int) -> str:
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{row_id}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    micros_text, dot, id_text = cursor.partition(".")
    if not (dot and micros_text.isdigit() and id_text.isdigit()):
        raise InvalidCursorError("invalid pagination cursor")
    # Positions beyond any row are clamped: they simply start at the newest rows' end.
    micros = min(int(micros_text), 253_402_300_799_999_999)
    return _EPOCH + dt.timedelta(microseconds=micros), min(int(id_text), _INT32_MAX)


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _COLUMNS
    if unknown:
        raise TypeError(f"unknown feature_requests fields: {sorted(unknown)}")
    frozen = set(fields) & _IMMUTABLE
    if frozen:
        raise TypeError(f"fields cannot be changed: {sorted(frozen)}")


class FeatureRequestRepository:
    """Create, find and update feature requests."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, **fields: Any) -> FeatureRequest:
        """Insert a request; a duplicate request_id or issue_id raises UniqueConflictError.

        The insert runs in a savepoint, so a conflict leaves the caller's transaction usable.
        """
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise TypeError(f"unknown feature_requests fields: {sorted(unknown)}")
        row = FeatureRequest(**fields)
        try:
            async with self.session.begin_nested():
                self.session.add(row)
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "creating feature request") from exc
        await self.session.refresh(row)
        return row

    async def _one(self, *where: Any, lock: bool = False) -> FeatureRequest | None:
        stmt = select(FeatureRequest).where(*where)
        if lock:
            stmt = stmt.with_for_update()
        try:
            return (await self.session.scalars(stmt.limit(1))).first()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "finding feature request") from exc

    async def find_by_request_id(
        self, request_id: str, *, lock: bool = False
    ) -> FeatureRequest | None:
        return await self._one(FeatureRequest.request_id == request_id, lock=lock)

    async def get(self, request_id: str, *, lock: bool = False) -> FeatureRequest:
        """The request, or NotFoundError."""
        row = await self.find_by_request_id(request_id, lock=lock)
        if row is None:
            raise NotFoundError(f"request {request_id} not found", request_id=request_id)
        return row

    async def find_by_slack_thread(
        self, channel_id: str, thread_ts: str, *, lock: bool = False
    ) -> FeatureRequest | None:
        return await self._one(
            FeatureRequest.slack_channel_id == channel_id,
            FeatureRequest.slack_thread_ts == thread_ts,
            lock=lock,
        )

    async def find_by_issue_id(self, issue_id: int, *, lock: bool = False) -> FeatureRequest | None:
        return await self._one(FeatureRequest.issue_id == issue_id, lock=lock)

    async def find_by_issue(
        self, repo: str, issue_number: int, *, lock: bool = False
    ) -> FeatureRequest | None:
        """By repository full name and issue number."""
        return await self._one(
            FeatureRequest.issue_number == issue_number,
            or_(FeatureRequest.repository_name == repo, FeatureRequest.repo == repo),
            lock=lock,
        )

    async def find_by_pr(
        self, repo: str, pr_number: int, *, lock: bool = False
    ) -> FeatureRequest | None:
        """By repository and PR number; names compare case-insensitively, as on GitHub."""
        found = await self._one(
            FeatureRequest.repo == repo, FeatureRequest.pr_number == pr_number, lock=lock
        )
        if found is not None:
            return found
        return await self._one(
            func.lower(FeatureRequest.repo) == repo.lower(),
            FeatureRequest.pr_number == pr_number,
            lock=lock,
        )

    async def update_status(
        self, request_id: str, status: RequestStatus, **fields: Any
    ) -> FeatureRequest:
        """Change status and fields if the lifecycle allows it; else raise, writing nothing."""
        _check_fields(fields)
        row = await self.get(request_id, lock=True)
        if not can_transition(row.status, status):
            raise IllegalTransitionError(request_id, row.status.value, status.value)
        row.status = status
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        if status in (RequestStatus.COMPLETED, RequestStatus.CANCELLED) and not row.processed_at:
            row.processed_at = row.updated_at
        await self._flush("updating request status")
        return row

    async def update_fields(self, request_id: str, **fields: Any) -> FeatureRequest:
        """Change fields other than status."""
        _check_fields(fields)
        if "status" in fields:
            raise TypeError("use update_status to change status")
        row = await self.get(request_id, lock=True)
        for key, value in fields.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        await self._flush("updating request")
        return row

    async def record_retry(self, request_id: str) -> FeatureRequest:
        """Count a retry of a failed request and put it back to processing."""
        row = await self.get(request_id, lock=True)
        if row.status != RequestStatus.ERROR:
            raise IllegalTransitionError(request_id, row.status.value, "processing (retry)")
        now = utcnow()
        row.retry_count = (row.retry_count or 0) + 1
        row.last_retry_at = now
        row.status = RequestStatus.PROCESSING
        row.updated_at = now
        await self._flush("recording retry")
        return row

    async def _flush(self, what: str) -> None:
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, what) from exc

    async def recent(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        slack_user_id: str | None = None,
        status: RequestStatus | None = None,
        repo: str | None = None,
        origin: RequestOrigin | None = None,
    ) -> Page:
        """Newest first, keyset-paginated by (created_at, id)."""
        limit = max(1, min(limit, 200))
        stmt = select(FeatureRequest)
        if slack_user_id is not None:
            stmt = stmt.where(FeatureRequest.slack_user_id == slack_user_id)
        if status is not None:
            stmt = stmt.where(FeatureRequest.status == status)
        if repo is not None:
            stmt = stmt.where(func.lower(FeatureRequest.repo) == repo.lower())
        if origin is not None:
            stmt = stmt.where(FeatureRequest.origin == origin)
        if cursor:
            created, row_id = _decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    FeatureRequest.created_at < created,
                    and_(FeatureRequest.created_at == created, FeatureRequest.id < row_id),
                )
            )
        stmt = stmt.order_by(FeatureRequest.created_at.desc(), FeatureRequest.id.desc())
        try:
            rows = list((await self.session.scalars(stmt.limit(limit + 1))).all())
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "listing requests") from exc
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id)
        return Page(items=rows, next_cursor=next_cursor)

    async def stats_since(self, since: dt.datetime) -> list[StatusStats]:
        """Count, average duration and total cost (cents) per status since a time."""
        stmt = (
            select(
                FeatureRequest.status,
                func.count(),
                func.avg(FeatureRequest.duration_ms),
                func.coalesce(func.sum(FeatureRequest.cost_usd), 0),
            )
            .where(FeatureRequest.created_at >= since)
            .group_by(FeatureRequest.status)
            .order_by(FeatureRequest.status)
        )
        try:
            rows = (await self.session.execute(stmt)).all()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "computing request stats") from exc
        return [
            StatusStats(
                status=status,
                count=int(count),
                avg_duration_ms=float(avg) if avg is not None else None,
                total_cost_cents=int(total),
            )
            for status, count, avg, total in rows
        ]

    async def median_duration_since(self, since: dt.datetime) -> float | None:
        """Median duration (ms) of requests with a duration since a time."""
        stmt = select(func.percentile_cont(0.5).within_group(FeatureRequest.duration_ms)).where(
            FeatureRequest.created_at >= since, FeatureRequest.duration_ms.is_not(None)
        )
        try:
            value = await self.session.scalar(stmt)
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "computing median duration") from exc
        return float(value) if value is not None else None

    async def count_by_status(self) -> dict[RequestStatus, int]:
        """How many requests are in each status now."""
        stmt = select(FeatureRequest.status, func.count()).group_by(FeatureRequest.status)
        try:
            rows = (await self.session.execute(stmt)).all()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "counting requests") from exc
        return {status: int(count) for status, count in rows}

    async def any_processing(self) -> bool:
        """Whether some request is being worked on."""
        try:
            found = await self.session.scalar(
                select(FeatureRequest.id)
                .where(FeatureRequest.status == RequestStatus.PROCESSING)
                .limit(1)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "looking for processing requests") from exc
        return found is not None

    async def silent_processing(
        self, cutoff: dt.datetime, *, dispatch_kind: str, limit: int = 100
    ) -> list[FeatureRequest]:
        """Processing requests nobody has said anything about since `cutoff`, locked.

        Requests whose dispatch is still queued or running are not silent. Several replicas
        may ask at once: SKIP LOCKED hands each request to exactly one.
        """
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
            Job.kind == dispatch_kind,
            Job.request_id == FeatureRequest.request_id,
            Job.status.in_(["queued", "running"]),
        )
        stmt = (
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
            .limit(limit)
            .with_for_update(skip_locked=True, of=FeatureRequest)
        )
        try:
            return list((await self.session.scalars(stmt)).all())
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "finding silent requests") from exc
