"""Every `clarity db` failure is one line naming the problem, and never shows a password."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.dbops_fixtures import (
    cli_env,
    empty_db,
    error_line,
    execute,
    fetchval,
    run_cli,
    unique,
)
from tests.pg import PgServer, admin_execute, quote_ident, run_async

__all__ = ["empty_db"]  # fixture used by name

SECRET = "s3cret-Pa55word"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def weak_user(pg_server: PgServer) -> Iterator[str]:
    """A login role with a password and no privileges beyond connecting."""
    name = unique("weak")
    admin_execute(pg_server, f"CREATE ROLE {quote_ident(name)} LOGIN PASSWORD '{SECRET}'")
    yield name
    admin_execute(pg_server, f"DROP ROLE IF EXISTS {quote_ident(name)}")


def _check(url: str) -> str:
    result = run_cli("db", "check", "--database-url", url)
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    return error_line(result)


def test_malformed_url() -> None:
    assert _check(f"mysql://root:{SECRET}@localhost/clarity") == (
        "clarity: error: --database-url: unsupported database URL scheme 'mysql'"
        " (expected postgresql://…)"
    )


def test_server_not_listening() -> None:
    port = _free_port()
    assert _check(f"postgresql://clarity:{SECRET}@127.0.0.1:{port}/clarity") == (
        f"clarity: error: --database-url: cannot connect to PostgreSQL at 127.0.0.1:{port}:"
        " connection refused"
    )


def test_unknown_database(pg_server: PgServer, weak_user: str) -> None:
    url = f"postgresql://{weak_user}:{SECRET}@{pg_server.host}:{pg_server.port}/no_such_db"
    assert _check(url) == (
        f"clarity: error: --database-url: database 'no_such_db' does not exist on"
        f" {pg_server.host}:{pg_server.port}"
    )


def test_wrong_password(pg_server: PgServer, admin_url: str, weak_user: str) -> None:
    rules = "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'"
    if run_async(lambda: fetchval(admin_url, rules)):
        pytest.skip("this server trusts connections: no password is ever wrong")
    url = f"postgresql://{weak_user}:wrong-{SECRET}@{pg_server.host}:{pg_server.port}/postgres"
    assert _check(url) == (
        f"clarity: error: --database-url: password authentication failed for user"
        f" '{weak_user}' at {pg_server.host}:{pg_server.port}"
    )


def test_missing_privilege(pg_server: PgServer, empty_db: str, weak_user: str) -> None:
    database = empty_db.rsplit("/", 1)[1]
    url = f"postgresql://{weak_user}:{SECRET}@{pg_server.host}:{pg_server.port}/{database}"
    # PostgreSQL 15+ does this by default; older servers let PUBLIC create in public.
    run_async(lambda: execute(empty_db, "REVOKE CREATE ON SCHEMA public FROM PUBLIC"))

    result = run_cli("db", "migrate", "--yes", "--database-url", url)

    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert error_line(result) == (
        f"clarity: error: --database-url: permission denied for user '{weak_user}':"
        " permission denied for schema public"
    )


def test_no_database_configured() -> None:
    result = run_cli("db", "migrate", "--yes", env=cli_env())

    assert result.returncode == 1
    assert error_line(result) == (
        "clarity: error: no database URL: set MASTER_DATABASE_URL or DATABASE_URL"
        " (or pass --database-url)"
    )
