"""The embedded PostgreSQL manager and the test harness built on it, against real servers."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.embedded import (
    SERVICE_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    EmbeddedServer,
    default_data_dir,
)
from tests.pg import PgServer, fresh_database, make_server_dir

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
embedded_harness = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")), reason="harness uses TEST_DATABASE_URL"
)


async def fetchval(url: str, query: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


# -- the harness ------------------------------------------------------------------


async def test_harness_database_answers(db_url: str) -> None:
    assert await fetchval(db_url, "select 1") == 1
    assert await fetchval(db_url, "show timezone") == "UTC"
    assert str(await fetchval(db_url, "select current_database()")).startswith("test_")


async def test_harness_database_is_migrated(db_url: str, pg_template: str) -> None:
    from storage.migrate import head_revision

    version = await fetchval(db_url, "select version_num from alembic_version")
    assert version == head_revision()


async def test_each_database_is_isolated(pg_server: PgServer, pg_template: str) -> None:
    with (
        fresh_database(pg_server, template=pg_template) as first,
        fresh_database(pg_server, template=pg_template) as second,
    ):
        assert first != second
        await execute(first, "create table only_here (id int)")
        assert await fetchval(first, "select to_regclass('only_here')::text") == "only_here"
        assert await fetchval(second, "select to_regclass('only_here')") is None
    name = urlsplit(first).path.lstrip("/")
    exists = await fetchval(
        pg_server.admin_url, f"select count(*) from pg_database where datname = '{name}'"
    )
    assert exists == 0  # dropped on exit


async def test_engine_and_sessions_reach_the_test_database(
    db_url: str, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    async with session_factory() as session:
        name = (await session.execute(text("select current_database()"))).scalar_one()
    assert name == urlsplit(db_url).path.lstrip("/")


async def test_admin_url_can_create_databases(admin_url: str) -> None:
    assert await fetchval(admin_url, "select current_database()") == "postgres"
    can_create = await fetchval(
        admin_url, "select rolcreatedb or rolsuper from pg_roles where rolname = current_user"
    )
    assert can_create is True


@as_root
@embedded_harness
async def test_server_started_as_root_runs_as_service_user(admin_url: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        backend = await connection.fetchval("select pg_backend_pid()")
        uid = _uid_of(backend)  # while the backend lives, i.e. the connection is open
    finally:
        await connection.close()
    assert uid == pwd.getpwnam(SERVICE_USER).pw_uid


def _uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


# -- EmbeddedPostgres ---------------------------------------------------------------


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A folder for a server of the test's own, reachable by PostgreSQL's system user."""
    folder = make_server_dir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_restart_keeps_data_and_password(server_dir: Path) -> None:
    data_dir = server_dir / "pgdata"
    postgres = EmbeddedPostgres(data_dir, fast=True)
    try:
        first = postgres.start()
        assert first.host == "127.0.0.1"
        password_file = server_dir / "pgdata.password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert password_file.read_text().strip() == first.password
        assert not (data_dir / "pgdata.password").exists()

        await execute(first.url(), "create table kept (note text); insert into kept values ('hi')")
        postgres.ensure_database("app db")
        postgres.ensure_database("app db")  # idempotent
        assert await fetchval(first.url("app db"), "select current_database()") == "app db"

        # Idempotent start, and another manager on the same folder finds the running server.
        assert postgres.start() == first
        assert EmbeddedPostgres(data_dir).start().port == first.port

        postgres.stop()
        postgres.stop()  # idempotent
        assert not (data_dir / "postmaster.pid").exists()

        again = EmbeddedPostgres(data_dir, fast=True).start()
        assert again.password == first.password
        assert await fetchval(again.url(), "select note from kept") == "hi"
        assert (data_dir / "postgresql.log").stat().st_size > 0
    finally:
        postgres.stop()


async def test_fixed_port_and_wrong_password(server_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    postgres = EmbeddedPostgres(server_dir / "pgdata", port=port, fast=True)
    try:
        server = postgres.start()
        assert server.port == port
        wrong = EmbeddedServer(server.data_dir, server.host, server.port, server.user, "nope")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await fetchval(wrong.url(), "select 1")
        assert await fetchval(server.url(), "select 1") == 1
    finally:
        postgres.stop()


def test_start_survives_a_stale_postmaster_pid(server_dir: Path) -> None:
    data_dir = server_dir / "pgdata"
    postgres = EmbeddedPostgres(data_dir, fast=True)
    try:
        postgres.start()
        pid_file = data_dir / "postmaster.pid"
        lines = pid_file.read_text().splitlines(keepends=True)
        postgres.stop()

        # A crash leaves the file behind; its PID is gone, or reused by another process.
        for stale_pid in (_pid_of_finished_process(), os.getpid()):
            pid_file.write_text("".join([f"{stale_pid}\n", *lines[1:]]))
            if os.geteuid() == 0:
                shutil.chown(pid_file, user=data_dir.owner(), group=data_dir.group())
            server = postgres.start()
            assert server.port != 0
            postgres.stop()
    finally:
        postgres.stop()


def _pid_of_finished_process() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_start_failure_reports_the_server_log(server_dir: Path) -> None:
    postgres = EmbeddedPostgres(server_dir / "pgdata", fast=True)
    try:
        taken = postgres.start()
    finally:
        postgres.stop()
    with pytest.raises(EmbeddedPostgresError) as error, _occupied(taken.port):
        EmbeddedPostgres(server_dir / "pgdata", port=taken.port, fast=True).start()
    assert "Address already in use" in str(error.value)


class _occupied:
    """Hold a TCP port on 127.0.0.1 so that the server cannot bind it."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


@as_root
def test_unreachable_data_dir_is_a_clear_error() -> None:
    private = Path(tempfile.mkdtemp(prefix="clarity-private-"))  # 0700, root's
    try:
        with pytest.raises(EmbeddedPostgresError, match="chmod o\\+x") as error:
            EmbeddedPostgres(private / "pgdata", fast=True).start()
        assert str(private) in str(error.value)
        assert not (private / "pgdata").exists()
        assert not (private / "pgdata.password").exists()
    finally:
        shutil.rmtree(private)


def test_url_quotes_the_password() -> None:
    server = EmbeddedServer(Path("/x"), "127.0.0.1", 5432, "postgres", "p@ss:w/rd %?#")
    url = server.url("my db")
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert (parts.hostname, parts.port) == ("127.0.0.1", 5432)
    assert parts.password is not None
    assert unquote(parts.password) == "p@ss:w/rd %?#"
    assert unquote(parts.path) == "/my db"
    assert "p@ss" not in repr(server)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLARITY_DATA_DIR", str(tmp_path / "here"))
    assert default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("CLARITY_DATA_DIR")
    if os.geteuid() == 0:
        assert default_data_dir() == Path("/var/lib/clarity/data")
    else:
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert default_data_dir() == tmp_path / "xdg" / "clarity"
