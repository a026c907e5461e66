"""PostgreSQL advisory locks by name: the few places replicas must take turns.

Keys are `hashtext(name)`, so any two processes that name the same thing contend for the
same lock. Transaction-scoped only: a lock is released when its transaction ends, so a
process that dies never leaves one behind.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.errors import DB_ERRORS, QueryError, translate

Executor = AsyncSession | AsyncConnection


async def hold(executor: Executor, name: str) -> None:
    """Wait for the lock `name` and hold it until the transaction ends."""
    try:
        await executor.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": name})
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, f"taking lock {name}") from exc


async def hold_shared(executor: Executor, name: str) -> None:
    """Hold the lock `name` shared (many holders at once) until the transaction ends."""
    try:
        await executor.execute(
            text("SELECT pg_advisory_xact_lock_shared(hashtext(:k))"), {"k": name}
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, f"taking lock {name} shared") from exc


async def try_hold(executor: Executor, name: str) -> bool:
    """Take the lock `name` if nobody holds it (held until the transaction ends)."""
    try:
        got = await executor.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": name}
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, f"trying lock {name}") from exc
    return bool(got)
