"""Running Alembic from code: upgrade, current revision, head, drift check."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.engine import create_engine
from storage.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Taken by `clarity db migrate` so replicas starting together never migrate at once.
MIGRATION_LOCK_KEY = 0x636C_6172_6974_79  # "clarity"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing at our migrations, without an ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision in migrations/versions."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def pending_revisions(current: str | None) -> list[str]:
    """Revisions between `current` and head, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    revs = list(script.iterate_revisions("head", current))
    return [r.revision for r in reversed(revs)]


def _run_on_connection(connection: Connection, fn: str, *args: Any) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    getattr(command, fn)(cfg, *args)


async def run_alembic(url: str, fn: str, *args: Any, lock: bool = False) -> None:
    """Run an Alembic command (upgrade, downgrade, stamp) on one connection.

    With ``lock``, the command runs under a session advisory lock: a second process
    waits for the first and then finds nothing left to do.
    """
    engine = create_engine(url, pool_size=1, max_overflow=0, statement_timeout_ms=None)
    try:
        async with engine.connect() as conn:
            if lock:
                await conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            try:
                await conn.run_sync(_run_on_connection, fn, *args)
                await conn.commit()
            finally:
                if lock:
                    await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                    await conn.commit()
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The revision the database is stamped with (None: never migrated)."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
    finally:
        await engine.dispose()


async def model_drift(url: str) -> list[Any]:
    """Alembic's autogenerate diff between the live database and the models."""

    def _compare(c: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            c, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(ctx, Base.metadata))

    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_compare)
    finally:
        await engine.dispose()


def _run_sync(coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine from sync code, even when the caller's thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn(*args, **kwargs))
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro_fn(*args, **kwargs))
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def upgrade_to_head(url: str, *, lock: bool = True) -> None:
    """Migrate the database at `url` to head (sync; safe inside a running event loop)."""
    _run_sync(run_alembic, url, "upgrade", "head", lock=lock)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the database at `url` to `revision` (sync)."""
    _run_sync(run_alembic, url, "downgrade", revision)
