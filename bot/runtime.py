"""Start-up: settings → database (embedded when DATABASE_URL is unset) → services → run."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.cli import CliError
from bot.metrics import Metrics
from bot.services import Services, build_cipher
from bot.settings import Settings, load_settings
from storage.crypto import InvalidKeyError
from storage.engine import DatabaseUrlError, create_engine, create_session_factory, redact
from storage.migrate import current_revision, head_revision, pending_revisions, upgrade_to_head

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "clarity"


@dataclass(frozen=True)
class Database:
    url: str
    embedded: bool
    # The embedded server this process started, stopped again when it exits.
    owned_server: Any = None

    def release(self) -> None:
        """Stop the embedded server if this process started it."""
        if self.owned_server is not None:
            self.owned_server.stop()


def _embedded_database(settings: Settings) -> Database:
    from storage.embedded import EmbeddedPostgres, default_data_dir

    data_dir = settings.clarity_data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(data_dir / "pgdata")
    was_running = pg.is_running()
    server = pg.start()
    pg.ensure_database(EMBEDDED_DATABASE)
    url = server.url(EMBEDDED_DATABASE)
    pending = pending_revisions(asyncio.run(current_revision(url)))
    if pending:
        log.info("migrating the embedded database: %s", ", ".join(pending))
        upgrade_to_head(url)
    log.info(
        "embedded PostgreSQL at %s:%d (data in %s), database %r migrated to %s",
        server.host,
        server.port,
        server.data_dir,
        EMBEDDED_DATABASE,
        head_revision(),
    )
    return Database(url=url, embedded=True, owned_server=None if was_running else pg)


def _embedded_encryption_key(settings: Settings) -> Settings:
    """A local dev database gets a persisted key so `clarity config set` just works."""
    from storage.embedded import default_data_dir

    key_file = (settings.clarity_data_dir or default_data_dir()) / "encryption.key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        log.info("generated an ENCRYPTION_KEY for the embedded database in %s", key_file)
    return settings.model_copy(update={"encryption_key": key_file.read_text().strip()})


def resolve_database(settings: Settings) -> tuple[Settings, Database]:
    """The database to use: DATABASE_URL (must be migrated), else the embedded one."""
    url = settings.secret("database_url")
    if not url:
        db = _embedded_database(settings)
        if not settings.secret("encryption_key"):
            settings = _embedded_encryption_key(settings)
        return settings, db
    try:
        current = asyncio.run(current_revision(url))
    except DatabaseUrlError as exc:
        raise CliError(f"DATABASE_URL: {exc}") from exc
    except Exception as exc:
        raise CliError(f"cannot connect to {redact(url)}: {_reason(exc)}") from exc
    head = head_revision()
    if current != head:
        raise CliError(
            f"database {redact(url)} is at revision {current or 'none'}, this code needs "
            f"{head}: run `clarity db migrate` first"
        )
    return settings, Database(url=url, embedded=False)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_services(settings: Settings, database_url: str) -> Services:
    """Engine, sessions, cipher and metrics for one process."""
    try:
        cipher = build_cipher(settings)
    except InvalidKeyError as exc:
        raise CliError(str(exc)) from exc
    engine = create_engine(database_url)
    services = Services(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        metrics=Metrics(),
        cipher=cipher,
    )
    from bot.features import install_features

    install_features(services)
    return services


def run_server(*, host: str | None, port: int | None, run_workers: bool = True) -> int:
    """`clarity serve`: blocks until SIGTERM/SIGINT, then drains and exits 0."""
    from bot.server import build_app

    settings = load_settings()
    settings, db = resolve_database(settings)
    services = build_services(settings, db.url)
    app = build_app(services, run_workers=run_workers and settings.clarity_run_workers)
    listen_host = host or settings.host
    listen_port = port if port is not None else settings.port
    # Start-up objects (modules, models, compiled SQL) live for the whole process: keep them
    # out of the collector's generations, and collect young objects less often. Request
    # handling allocates many short-lived objects, and gen-0 collections were a visible
    # share of tail latency in scripts/bench_api.py.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    log.info("Clarity listening on http://%s:%d", listen_host, listen_port)
    try:
        # SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
        # shutdown_timeout), then on_cleanup drains the workers and closes connections.
        web.run_app(
            app,
            host=listen_host,
            port=listen_port,
            shutdown_timeout=30,
            print=None,
            access_log=None,
        )
    finally:
        db.release()
    log.info("Clarity stopped")
    return 0


def run_worker_process(*, concurrency: int | None, once: bool) -> int:
    """`clarity worker`: job workers only, until SIGTERM/SIGINT."""
    from bot.workers import WorkerPool, job_registry

    settings = load_settings()
    if not settings.secret("database_url"):
        raise CliError("DATABASE_URL is not set: `clarity worker` needs the shared database")
    settings, db = resolve_database(settings)

    async def main() -> int:
        services = build_services(settings, db.url)
        pool = WorkerPool(
            services,
            job_registry(services),
            concurrency=concurrency or settings.clarity_workers,
        )
        try:
            if once:
                ran = await pool.run_until_idle()
                log.info("ran %d job(s)", ran)
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            pool.start()
            await stop.wait()
            log.info("stopping: finishing running jobs")
            await pool.stop()
            return 0
        finally:
            await services.close()

    return asyncio.run(main())
