"""Shared fixtures.

PostgreSQL is always real (tests/pg.py): one server per session, a migrated template, and a
fresh database copied from it for every test that asks for `db_url`, `engine` or
`session_factory`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.engine import create_engine
from tests.pg import PgServer, build_template, fresh_database, session_server

# -- PostgreSQL -----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's server (TEST_DATABASE_URL, else a throwaway embedded one)."""
    with session_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> str:
    """The name of the database migrated to head that every test database is copied from."""
    return build_template(pg_server)


@pytest.fixture
def admin_url(pg_server: PgServer) -> str:
    """Superuser URL to the server's `postgres` database, for creating roles and databases."""
    return pg_server.admin_url


@pytest.fixture
def db_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """A `postgresql://` URL (superuser) to a fresh migrated database, dropped after the test."""
    with fresh_database(pg_server, template=pg_template) as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """Our application engine on the test's database."""
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's database, as the application makes them."""
    return async_sessionmaker(engine, expire_on_commit=False)
