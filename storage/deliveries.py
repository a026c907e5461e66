"""Inbound-delivery dedupe: the first claim of (source, id) wins, in the caller's transaction.

Claiming inside the same transaction as the delivery's effect means a failed effect rolls
the claim back too, so a redelivery can still succeed; a committed one is never repeated.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, DeleteError, InsertError, QueryError, translate
from storage.models import InboundDelivery, utcnow


async def claim_delivery(session: AsyncSession, source: str, delivery_id: str) -> bool:
    """True the first time (source, delivery_id) is seen; False for a repeat.

    A concurrent claim of the same id waits for the first transaction and then sees it.
    """
    stmt = (
        insert(InboundDelivery)
        .values(source=source, delivery_id=delivery_id)
        .on_conflict_do_nothing()
        .returning(InboundDelivery.delivery_id)
    )
    try:
        return (await session.scalar(stmt)) is not None
    except DB_ERRORS as exc:
        raise translate(exc, InsertError, "recording inbound delivery") from exc


async def delivery_seen(session: AsyncSession, source: str, delivery_id: str) -> bool:
    """Whether (source, delivery_id) was claimed already, without claiming it."""
    # For effects that claim only when they happen: a caller that holds the lock the effect
    # takes (e.g. the request's row) may check first and claim later without a race.
    stmt = select(
        exists().where(InboundDelivery.source == source, InboundDelivery.delivery_id == delivery_id)
    )
    try:
        return bool(await session.scalar(stmt))
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "reading inbound deliveries") from exc


async def prune_deliveries(session: AsyncSession, older_than: dt.timedelta) -> int:
    """Forget deliveries older than a retention window (Slack and GitHub retry for hours)."""
    stmt = delete(InboundDelivery).where(InboundDelivery.received_at < utcnow() - older_than)
    try:
        result = await session.execute(stmt)
    except DB_ERRORS as exc:
        raise translate(exc, DeleteError, "pruning deliveries") from exc
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
