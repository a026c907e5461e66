"""Request change announcements over PostgreSQL NOTIFY, so every replica can follow them.

The lifecycle announces each change in the change's own transaction (delivered at commit,
never for a rollback); the web dashboard's event streams LISTEN on the channel.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.errors import DB_ERRORS, QueryError, translate

REQUEST_EVENTS_CHANNEL = "clarity_request_events"


async def announce(executor: AsyncSession | AsyncConnection, request_id: str) -> None:
    """NOTIFY listeners that `request_id` changed (sent when the transaction commits)."""
    try:
        await executor.execute(
            text("SELECT pg_notify(:c, :r)"), {"c": REQUEST_EVENTS_CHANNEL, "r": request_id}
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "announcing a request change") from exc
