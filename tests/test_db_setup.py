"""`clarity db setup`: a dedicated database whose application user reads and writes rows only.

Real roles on the real server: the user setup creates logs in with the password setup
printed (a SCRAM verifier we computed), and PostgreSQL itself refuses what it must not do.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from storage.migrate import upgrade_to_head
from tests.dbops_fixtures import cli_env, execute, fetchval, run_cli, unique
from tests.pg import PgServer, admin_execute, quote_ident, run_async

FORBIDDEN = (
    "CREATE DATABASE clarity_intruder",
    "CREATE ROLE clarity_intruder",
    "CREATE TABLE intruder (x int)",
    "CREATE SCHEMA intruder",
    "DROP TABLE feature_requests",
    "ALTER TABLE feature_requests ADD COLUMN intruder int",
)


@pytest.fixture
def names(pg_server: PgServer) -> Iterator[tuple[str, str, str]]:
    """Fresh database, role and user names; all three are dropped after the test."""
    database, role, user = unique("clarity"), unique("rw"), unique("app")
    yield database, role, user
    admin_execute(
        pg_server,
        f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)",
        f"DROP ROLE IF EXISTS {quote_ident(user)}",
        f"DROP ROLE IF EXISTS {quote_ident(role)}",
    )


async def _use_as_app_user(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        request_id = await conn.fetchval(
            "INSERT INTO feature_requests (request_id, origin, repo, description)"
            " VALUES ('req-1', 'slack', 'o/r', 'dark mode') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO request_messages (request_id, type, source, content)"
            " VALUES ('req-1', 'initial_request', 'slack', 'dark mode')"
        )
        await conn.execute(
            "UPDATE feature_requests SET title = 'Dark mode' WHERE id = $1", request_id
        )
        assert await conn.fetchval("SELECT title FROM feature_requests") == "Dark mode"
        assert await conn.fetchval("SELECT nextval('feature_requests_id_seq')") > request_id
        await conn.execute("DELETE FROM request_messages")
        await conn.execute("DELETE FROM feature_requests")
        assert await conn.fetchval("SELECT count(*) FROM feature_requests") == 0
        # Clarity's job queue and workers need these, and they need no grant.
        await conn.execute("LISTEN clarity_jobs")
        assert await conn.fetchval("SELECT pg_try_advisory_lock(42)")

        for statement in FORBIDDEN:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


def test_setup_gives_the_app_user_rows_and_sequences_only(
    pg_server: PgServer, admin_url: str, names: tuple[str, str, str]
) -> None:
    database, role, user = names
    env = cli_env(MASTER_DATABASE_URL=admin_url)
    args = ("db", "setup", "--database", database, "--role", role, "--user", user)

    dry = run_cli(*args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f'CREATE DATABASE "{database}";' in dry.stdout
    assert "PASSWORD '***'" in dry.stdout
    exists = "SELECT count(*) FROM pg_database WHERE datname = $1"
    assert run_async(lambda: fetchval(admin_url, exists, database)) == 0

    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    url_lines = [line for line in first.stdout.splitlines() if line.startswith("DATABASE_URL=")]
    assert len(url_lines) == 1
    app_url = url_lines[0].removeprefix("DATABASE_URL=")
    password = make_url(app_url).password
    assert password and len(password) >= 40
    assert first.stdout.count(password) == 1 and password not in first.stderr
    assert make_url(app_url).username == user and make_url(app_url).database == database

    # Migrations run as the master user after setup; default privileges cover their tables.
    upgrade_to_head(pg_server.url(database))

    second = run_cli(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout
    assert password not in second.stdout and "password unchanged" in second.stdout

    run_async(lambda: _use_as_app_user(app_url))


def test_setup_tightens_a_seed_001_install(
    pg_server: PgServer, admin_url: str, names: tuple[str, str, str]
) -> None:
    database, role, user = names
    # What seed 001's psql steps leave behind: a LOGIN role with the all-data roles and
    # CREATE on schema public.
    admin_execute(
        pg_server,
        f"CREATE DATABASE {quote_ident(database)}",
        f"CREATE ROLE {quote_ident(role)} WITH LOGIN",
        f"GRANT pg_read_all_data, pg_write_all_data TO {quote_ident(role)}",
        f"CREATE USER {quote_ident(user)} WITH PASSWORD 'seed-001-password'",
        f"GRANT {quote_ident(role)} TO {quote_ident(user)}",
    )
    db_url = pg_server.url(database)
    grant = f"GRANT USAGE, CREATE ON SCHEMA public TO {quote_ident(role)}"
    run_async(lambda: execute(db_url, grant))
    env = cli_env(MASTER_DATABASE_URL=admin_url)
    args = ("db", "setup", "--database", database, "--role", role, "--user", user)

    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert f"revoke pg_write_all_data from {role}" in result.stdout
    assert f"stop {role} creating objects in schema public" in result.stdout
    assert "DATABASE_URL=" in result.stdout and "seed-001-password" not in result.stdout
    assert "nothing to change" in run_cli(*args, env=env).stdout

    can_login = "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1"
    assert run_async(lambda: fetchval(admin_url, can_login, role)) is False
