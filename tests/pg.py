"""A real PostgreSQL for the test suite: one server per session, a fresh database per test.

The server is `TEST_DATABASE_URL` (a superuser, or a role that may CREATE DATABASE) when
set, else a throwaway embedded server in a temporary folder (on tmpfs when there is room).
The schema is migrated once into `clarity_template`; each test gets `CREATE DATABASE ...
TEMPLATE clarity_template`, a file copy that takes milliseconds, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import asyncpg

from storage.embedded import EmbeddedPostgres

TEMPLATE_DB = "clarity_template"

T = TypeVar("T")

_database_numbers = itertools.count(1)


@dataclass(frozen=True)
class PgServer:
    """Where the session's server listens, and its superuser's credentials."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    maintenance_db: str = "postgres"

    def url(self, database: str) -> str:
        """A `postgresql://` URL for `database` on this server, as the superuser."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database, safe='')}"

    @property
    def admin_url(self) -> str:
        """The superuser's URL for the maintenance database (`postgres`)."""
        return self.url(self.maintenance_db)


def server_from_url(url: str) -> PgServer:
    """Read a `postgres://` or `postgresql://` URL (with optional `+driver`) into a PgServer."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {parts.scheme}://…")
    return PgServer(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        maintenance_db=unquote(parts.path.lstrip("/")) or "postgres",
    )


def make_server_dir() -> Path:
    """A fresh folder for a throwaway server, that PostgreSQL's system user can pass through.

    mkdtemp makes it 0700, but as root the server runs as another user, which needs o+x.
    """
    path = Path(tempfile.mkdtemp(prefix="clarity-pg-", dir=_scratch_parent()))
    path.chmod(0o711)
    return path


def _scratch_parent() -> str:
    # On disk, every CREATE DATABASE writes ~1000 files: 200-400 ms per test on a VM's
    # ext4, 15 ms on tmpfs. Docker's default /dev/shm (64 MB) is too small, hence the check.
    shm = "/dev/shm"  # noqa: S108 - only a parent for mkdtemp
    with contextlib.suppress(OSError):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize >= 1 << 30 and os.access(shm, os.W_OK | os.X_OK):
            return shm
    return "/tmp"  # noqa: S108 - likewise; not TMPDIR, which may be out of the server's reach


@contextlib.contextmanager
def embedded_server(*, fast: bool = True) -> Iterator[tuple[EmbeddedPostgres, PgServer]]:
    """Start a throwaway embedded server; stop it and delete its files on exit."""
    folder = make_server_dir()
    postgres = EmbeddedPostgres(folder / "pgdata", fast=fast)
    try:
        started = postgres.start()
        yield postgres, PgServer(started.host, started.port, started.user, started.password)
    finally:
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def session_server() -> Iterator[PgServer]:
    """The session's server: `TEST_DATABASE_URL` if set, else a throwaway embedded one."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield server_from_url(url)
        return
    with embedded_server() as (_, server):
        yield server


def run_in_thread(function: Callable[..., T], *args: Any) -> T:
    """Call `function` in a new thread and return its result.

    Lets sync code that uses asyncio.run (Alembic's async env, our helpers) work from
    anywhere, including inside the session's running event loop.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"pg-{getattr(function, '__name__', 'call')}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result


def run_async(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a new thread; usable from any context."""
    return run_in_thread(lambda: asyncio.run(make_coroutine()))


async def _execute(url: str, statements: tuple[str, ...]) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def admin_execute(server: PgServer, *statements: str) -> None:
    """Run statements one by one, outside any transaction, as the superuser."""
    run_async(lambda: _execute(server.admin_url, statements))


def quote_ident(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def build_template(server: PgServer, *, name: str = TEMPLATE_DB) -> str:
    """(Re)create the template database at the migrations' head; return its name."""

    async def recreate() -> None:
        connection = await asyncpg.connect(server.admin_url)
        try:
            if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                # Left by an earlier run against TEST_DATABASE_URL: its schema may be stale.
                await connection.execute(
                    f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false ALLOW_CONNECTIONS true"
                )
                await connection.execute(f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
            await connection.execute(f"CREATE DATABASE {quote_ident(name)}")
        finally:
            await connection.close()

    async def seal() -> None:
        connection = await asyncpg.connect(server.admin_url)
        try:
            # A session left open on the template would make every CREATE ... TEMPLATE fail.
            await connection.execute(
                f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
        finally:
            await connection.close()

    run_async(recreate)
    _migrate(server.url(name))
    run_async(seal)
    return name


def _migrate(url: str) -> None:
    from storage.migrate import upgrade_to_head

    run_in_thread(upgrade_to_head, url)


def create_database(server: PgServer, *, template: str = TEMPLATE_DB) -> str:
    """Create a fresh database from `template`; return its name."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    admin_execute(
        server,
        f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)} STRATEGY FILE_COPY",
    )
    return name


def drop_database(server: PgServer, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    admin_execute(server, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@contextlib.contextmanager
def fresh_database(server: PgServer, *, template: str = TEMPLATE_DB) -> Iterator[str]:
    """A new database copied from `template`, as a superuser URL; dropped on exit."""
    name = create_database(server, template=template)
    try:
        yield server.url(name)
    finally:
        drop_database(server, name)
