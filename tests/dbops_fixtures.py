"""Helpers and fixtures for the `clarity db …` tests: empty and drizzle-kit databases, the CLI.

Imported by the test modules that need them (tests/conftest.py belongs to the harness).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.pg import PgServer, admin_execute, quote_ident, run_async

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DRIZZLE_SCHEMA = FIXTURES / "drizzle_schema.sql"
DRIZZLE_MIGRATIONS_TABLE = FIXTURES / "drizzle_migrations_table.sql"
# Settings a developer's shell may hold that must not leak into a CLI under test.
_SCRUBBED_ENV = ("DATABASE_URL", "MASTER_DATABASE_URL", "ENCRYPTION_KEY")


def unique(prefix: str) -> str:
    """A database or role name no other test (or earlier run) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def execute(url: str, *statements: str) -> None:
    """Run statements one by one on `url`, outside a transaction."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query on `url`."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def fetchval(url: str, query: str, *args: Any) -> Any:
    """The first value of one query on `url`."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def create_empty_database(server: PgServer) -> str:
    """A new database with nothing in it (from template0); returns its name."""
    name = unique("dbops")
    admin_execute(server, f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")
    return name


def drop_database(server: PgServer, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    admin_execute(server, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.fixture
def empty_db(pg_server: PgServer) -> Iterator[str]:
    """Superuser URL of a fresh empty database, dropped after the test."""
    name = create_empty_database(pg_server)
    try:
        yield pg_server.url(name)
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def second_empty_db(pg_server: PgServer) -> Iterator[str]:
    """Another fresh empty database, for tests that need two."""
    name = create_empty_database(pg_server)
    try:
        yield pg_server.url(name)
    finally:
        drop_database(pg_server, name)


def load_drizzle(url: str) -> None:
    """Build the TypeScript worker's database: drizzle's own table, then drizzle-kit's DDL.

    The files run as they are: `--> statement-breakpoint` is an SQL comment, and asyncpg
    sends a script without arguments as one simple query.
    """
    scripts = (DRIZZLE_MIGRATIONS_TABLE.read_text(), DRIZZLE_SCHEMA.read_text())
    run_async(lambda: execute(url, *scripts))


@pytest.fixture
def drizzle_db(empty_db: str) -> str:
    """A database exactly as the TypeScript worker left it, without rows."""
    load_drizzle(empty_db)
    return empty_db


def cli_env(**values: str) -> dict[str, str]:
    """The environment for a CLI subprocess: ours, minus database settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(values)
    return env


def cli_command(*args: str) -> list[str]:
    """argv for `clarity …` run as `python -m bot …`."""
    return [sys.executable, "-m", "bot", *args]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `clarity …` from the repository root and capture its output."""
    return subprocess.run(
        cli_command(*args),
        cwd=REPO_ROOT,
        env=dict(env) if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's `clarity: error: …` line; fails the test unless there is exactly one."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("clarity: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]
