"""Alembic environment: async engine, lock and statement timeouts, UTC sessions.

Timeouts matter in production: an ALTER waiting behind a long transaction holds an
ACCESS EXCLUSIVE lock request that blocks every later query on the table. We would rather
fail fast (lock_timeout) and retry than stall the application.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from storage.engine import create_engine, normalize_url
from storage.models import Base

config = context.config
target_metadata = Base.metadata

LOCK_TIMEOUT = os.environ.get("CLARITY_MIGRATION_LOCK_TIMEOUT", "10s")
STATEMENT_TIMEOUT = os.environ.get("CLARITY_MIGRATION_STATEMENT_TIMEOUT", "5min")


def _url() -> str:
    url = (
        config.get_main_option("sqlalchemy.url")
        or os.environ.get("MASTER_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError("no database URL: set MASTER_DATABASE_URL or DATABASE_URL")
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=False,
    )


def do_run_migrations(connection: Connection) -> None:
    connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    connection.exec_driver_sql(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(_url(), pool_size=1, max_overflow=0, statement_timeout_ms=None)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=normalize_url(_url()).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (conn := config.attributes.get("connection")) is not None:
    # Called by storage.migrate with a connection it already holds (and has locked).
    do_run_migrations(conn)
else:
    asyncio.run(run_async_migrations())
