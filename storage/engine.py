"""Engine and session creation. Made at start-up and passed down; never a module global."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine


class DatabaseUrlError(ValueError):
    """A database URL that cannot be used."""


def normalize_url(url: str, *, driver: str = "asyncpg") -> URL:
    """Accept postgres:// and postgresql:// (with or without a driver) and set our driver."""
    raw = url.strip()
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://") :]
    try:
        parsed = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError for garbage
        raise DatabaseUrlError("malformed database URL (expected postgresql://…)") from exc
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUrlError(
            f"unsupported database URL scheme {parsed.drivername!r} (expected postgresql://…)"
        )
    if not parsed.database:
        raise DatabaseUrlError("database URL names no database")
    return parsed.set(drivername=f"postgresql+{driver}")


def redact(url: str | URL) -> str:
    """A URL safe to print: the password replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else normalize_url(url)
    except DatabaseUrlError:
        return "<malformed URL>"
    return parsed.render_as_string(hide_password=True)


def asyncpg_dsn(url: str | URL) -> str:
    """A plain postgresql:// DSN for asyncpg.connect()."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    statement_timeout_ms: int | None = 30_000,
    application_name: str = "clarity",
    **kwargs: Any,
) -> AsyncEngine:
    """An asyncpg engine whose sessions run in UTC (our timestamps are naive UTC)."""
    # Normalise URL objects too: the driver must be asyncpg whatever the caller passed.
    parsed = normalize_url(
        url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    )
    server_settings = {"timezone": "UTC", "application_name": application_name}
    if statement_timeout_ms is not None:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    connect_args: dict[str, Any] = {"server_settings": server_settings, "timeout": 10}
    connect_args.update(kwargs.pop("connect_args", {}))
    return _create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        connect_args=connect_args,
        **kwargs,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers `select 1`."""
    async with engine.connect() as conn:
        await conn.execute(text("select 1"))
