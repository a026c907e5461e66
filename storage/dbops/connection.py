"""Connecting for database operations, and turning driver failures into one true line."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from storage.engine import DatabaseUrlError, asyncpg_dsn, normalize_url, redact

# Every text rendering the copy checksum depends on, pinned so two servers agree.
STABLE_OUTPUT_SETTINGS = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}


class DbOpsError(Exception):
    """A database operation failed or refused; the message is one line for the operator."""


def quote_ident(name: str) -> str:
    """An SQL identifier, always double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """An SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def parse_url(url: str, label: str) -> URL:
    """Normalize a database URL or fail naming which setting held it."""
    try:
        return normalize_url(url)
    except DatabaseUrlError as exc:
        raise DbOpsError(f"{label}: {exc}") from None


def same_database(a: URL, b: URL) -> bool:
    """Whether two URLs name the same database on the same server."""
    return (a.host or "localhost", a.port or 5432, a.database) == (
        b.host or "localhost",
        b.port or 5432,
        b.database,
    )


def _driver_errors(exc: BaseException) -> list[BaseException]:
    """Driver-level exceptions in `exc`'s chain (SQLAlchemy's `orig`, causes, contexts)."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, asyncpg.PostgresError | OSError | TimeoutError | DatabaseUrlError):
            found.append(current)
        for nxt in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nxt, BaseException):
                pending.append(nxt)
    return found


def _root_cause(exc: BaseException) -> BaseException:
    """The failure worth reporting: a driver error, and not the "transaction is aborted"
    error that cleanup code raises after the real one."""
    errors = _driver_errors(exc)
    real = [e for e in errors if not isinstance(e, asyncpg.InFailedSQLTransactionError)]
    return (real or errors or [exc])[0]


def shown(url: URL) -> str:
    """A URL to print: plain postgresql:// scheme, password replaced by ***."""
    return redact(url.set(drivername="postgresql"))


def explain(exc: BaseException, url: URL | None = None, label: str | None = None) -> str:
    """One line for a failure, naming the server and user but never the password."""
    cause = _root_cause(exc)
    where = shown(url) if url is not None else ""
    prefix = f"{label}: " if label else ""
    user = (url.username if url is not None else None) or "?"
    server = f"{url.host or 'localhost'}:{url.port or 5432}" if url is not None else "the server"
    if isinstance(cause, DatabaseUrlError):
        return f"{prefix}{cause}"
    if isinstance(cause, asyncpg.InvalidPasswordError):
        return f"{prefix}password authentication failed for user {user!r} at {server}"
    if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError):
        return f"{prefix}{server} refused user {user!r}: {cause.args[0] if cause.args else cause}"
    if isinstance(cause, asyncpg.InvalidCatalogNameError):
        db = url.database if url is not None else "?"
        return f"{prefix}database {db!r} does not exist on {server}"
    if isinstance(cause, asyncpg.InsufficientPrivilegeError):
        return f"{prefix}permission denied for user {user!r}: {_message(cause)}"
    if isinstance(cause, asyncpg.CannotConnectNowError):
        return f"{prefix}{server} is not accepting connections yet: {_message(cause)}"
    if isinstance(cause, asyncpg.TooManyConnectionsError):
        return f"{prefix}{server} has too many connections: {_message(cause)}"
    if isinstance(cause, asyncpg.PostgresError):
        return f"{prefix}{_message(cause)}" + (f" (on {where})" if url is not None else "")
    if isinstance(cause, socket.gaierror):
        return f"{prefix}cannot resolve host {url.host if url is not None else '?'!r}"
    if isinstance(cause, TimeoutError):
        return f"{prefix}timed out connecting to {server}"
    if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
        return f"{prefix}cannot connect to PostgreSQL at {server}: connection refused"
    if isinstance(cause, OSError):
        reason = cause.strerror or str(cause) or type(cause).__name__
        return f"{prefix}cannot connect to PostgreSQL at {server}: {reason}"
    return f"{prefix}{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


def _message(exc: asyncpg.PostgresError) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__


@asynccontextmanager
async def connect(
    url: URL, label: str, *, read_only: bool = False, stable_output: bool = False
) -> AsyncIterator[Any]:
    """An asyncpg connection whose connect failures become a DbOpsError naming `label`."""
    settings = {"application_name": "clarity-db"}
    if read_only:
        # Belt and braces: even a bug in our code cannot write through this session.
        settings["default_transaction_read_only"] = "on"
    if stable_output:
        settings.update(STABLE_OUTPUT_SETTINGS)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10, server_settings=settings)
    except (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        raise DbOpsError(explain(exc, url, label)) from None
    try:
        yield conn
    finally:
        await conn.close()
