"""`clarity db migrate`: confirmation, nothing-to-do, and replicas migrating at once."""

from __future__ import annotations

import asyncio

import asyncpg

from storage.migrate import MIGRATION_LOCK_KEY, head_revision, pending_revisions
from tests.dbops_fixtures import (
    REPO_ROOT,
    cli_command,
    cli_env,
    empty_db,
    error_line,
    fetchval,
    run_cli,
)
from tests.pg import run_async

__all__ = ["empty_db"]  # fixture used by name

WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def test_migrate_needs_yes_without_a_terminal(empty_db: str) -> None:
    result = run_cli("db", "migrate", env=cli_env(MASTER_DATABASE_URL=empty_db))

    assert result.returncode == 1
    assert "0001  Initial schema" in result.stdout
    assert error_line(result) == "clarity: error: stdin is not a terminal: pass --yes to migrate"
    assert run_async(lambda: fetchval(empty_db, "SELECT to_regclass('alembic_version')")) is None


def test_migrate_at_head_has_nothing_to_do(db_url: str) -> None:
    result = run_cli("db", "migrate", env=cli_env(DATABASE_URL=db_url))

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"already at head ({head_revision()}); nothing to do\n"


async def test_two_migrations_at_once_one_migrates_the_other_finds_nothing(empty_db: str) -> None:
    env = cli_env(MASTER_DATABASE_URL=empty_db)
    holder = await asyncpg.connect(empty_db)
    try:
        # Hold the migration lock so both runs are certainly queued behind it together.
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        runs = [
            await asyncio.create_subprocess_exec(
                *cli_command("db", "migrate", "--yes"),
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        for _ in range(600):
            if await holder.fetchval(WAITING) == 2:
                break
            await asyncio.sleep(0.05)
        assert await holder.fetchval(WAITING) == 2, "both runs should be waiting for the lock"
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        outputs = [await asyncio.wait_for(run.communicate(), 120) for run in runs]
    finally:
        await holder.close()

    assert [run.returncode for run in runs] == [0, 0], [err.decode() for _, err in outputs]
    stdouts = [out.decode() for out, _ in outputs]
    every = pending_revisions(None)
    assert all(f"{len(every)} pending revision(s)" in out for out in stdouts)
    applied = f"migrated to head ({head_revision()}): applied {', '.join(every)}"
    assert sum(applied in out for out in stdouts) == 1
    assert sum("nothing to do: another process migrated" in out for out in stdouts) == 1
    assert run_async(lambda: fetchval(empty_db, "SELECT version_num FROM alembic_version")) == (
        head_revision()
    )
