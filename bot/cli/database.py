"""Which database a command uses: DATABASE_URL (must be migrated), else the embedded one.

Every command resolves it the same way (`serve`, `worker`, `config …`): the same data
folder, the same generated encryption key, the same one-line error for a database that
cannot be reached, and an embedded server started by the command is stopped again when the
command ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.cli.errors import CliError
from bot.settings import Settings
from storage.dbops.connection import explain
from storage.embedded import EmbeddedPostgres, default_data_dir
from storage.engine import DatabaseUrlError, normalize_url, redact
from storage.migrate import current_revision, head_revision, pending_revisions, upgrade_to_head

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clarity"


@dataclass(frozen=True)
class Database:
    """The database a command works on; `owned` is an embedded server this process started."""

    url: str
    embedded: bool
    owned: EmbeddedPostgres | None = None

    def release(self) -> None:
        """Stop the embedded server if this process started it."""
        if self.owned is not None:
            self.owned.stop()


def data_dir(settings: Settings) -> Path:
    """CLARITY_DATA_DIR as an absolute path, else the default data folder."""
    if settings.clarity_data_dir is not None:
        return settings.clarity_data_dir.expanduser().absolute()
    return default_data_dir()


def _embedded(settings: Settings) -> Database:
    folder = data_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(folder / "pgdata")
    was_running = pg.is_running()
    server = pg.start()
    try:
        pg.ensure_database(EMBEDDED_DATABASE)
        url = server.url(EMBEDDED_DATABASE)
        pending = pending_revisions(asyncio.run(current_revision(url)))
        if pending:
            log.info("migrating the embedded database: %s", ", ".join(pending))
            upgrade_to_head(url)
    except BaseException:
        if not was_running:
            pg.stop()
        raise
    log.info(
        "embedded PostgreSQL at %s:%d (data in %s), database %r at %s",
        server.host,
        server.port,
        server.data_dir,
        EMBEDDED_DATABASE,
        head_revision(),
    )
    return Database(url=url, embedded=True, owned=None if was_running else pg)


def _embedded_encryption_key(settings: Settings) -> Settings:
    """A local database gets a persisted key, the same for every command."""
    key_file = data_dir(settings) / "encryption.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        log.info("generated an ENCRYPTION_KEY for the embedded database in %s", key_file)
    return settings.model_copy(update={"encryption_key": key_file.read_text().strip()})


def resolve_database(settings: Settings) -> tuple[Settings, Database]:
    """The database to use; settings gain the embedded database's key when needed."""
    url = settings.secret("database_url")
    if not url:
        db = _embedded(settings)
        if not settings.secret("encryption_key"):
            settings = _embedded_encryption_key(settings)
        return settings, db
    try:
        parsed = normalize_url(url)
        current = asyncio.run(current_revision(url))
    except DatabaseUrlError as exc:
        raise CliError(f"DATABASE_URL: {exc}") from exc
    except Exception as exc:
        raise CliError(f"DATABASE_URL: {explain(exc, parsed)}") from exc
    head = head_revision()
    if current != head:
        raise CliError(
            f"database {redact(url)} is at revision {current or 'none'}, this code needs "
            f"{head}: run `clarity db migrate` first"
        )
    return settings, Database(url=url, embedded=False)


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[tuple[Settings, Database]]:
    """resolve_database for a command that ends: the embedded server is stopped afterwards."""
    settings, db = resolve_database(settings)
    try:
        yield settings, db
    finally:
        db.release()
