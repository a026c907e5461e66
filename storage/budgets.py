"""A request's spending limit, as its messages record it (`budgetUsd` in their metadata).

The initial request carries the limit the person asked for (`/clarity … --budget N`, the
form's field); a raise (the "Continue with $X more" button) records the new limit on its
`retry` message. The latest one is the request's budget.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, QueryError, translate
from storage.models import RequestMessage

KEY = "budgetUsd"


async def latest_budget(session: AsyncSession, request_id: str) -> float | None:
    """The request's latest recorded budget in US dollars, None when it never set one."""
    try:
        value = await session.scalar(
            select(RequestMessage.metadata_[KEY].astext)
            .where(
                RequestMessage.request_id == request_id,
                RequestMessage.metadata_.has_key(KEY),
            )
            .order_by(RequestMessage.id.desc())
            .limit(1)
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "reading a request's budget") from exc
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
