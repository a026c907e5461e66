"""`clarity serve` and `clarity worker`: wire the app, run it until SIGTERM/SIGINT, drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.app import build_app, build_services
from bot.cli.database import resolve_database
from bot.cli.errors import CliError, settings_or_fail
from bot.runner.factory import RunnerNotAvailableError
from bot.server import build_web_app
from bot.settings import with_simulator
from bot.workers import WorkerPool
from storage.crypto import InvalidKeyError

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 30.0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_listening: Callable[[], None] | None = None,
    on_stopping: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Bind, say so (and call `on_listening`), serve until signalled, then drain (requests,
    then workers). `on_stopping` runs once signalled, while the server still serves."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    log.info("Clarity listening on http://%s:%d", host, port)
    if on_listening is not None:
        on_listening()
    try:
        await _until_signalled()
        if on_stopping is not None:
            await on_stopping()
    finally:
        log.info("stopping: finishing requests and running jobs")
        await runner.cleanup()


def run_server(*, host: str | None, port: int | None, run_workers: bool = True) -> int:
    """`clarity serve`: blocks until SIGTERM/SIGINT, then drains and exits 0."""
    settings, db = resolve_database(settings_or_fail())
    flags = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=flags)
    if settings.clarity_simulator:
        settings = with_simulator(settings)
    try:
        listen_host, listen_port = settings.host, settings.port

        async def main() -> None:
            try:
                clarity = build_app(settings, db.url)
            except (InvalidKeyError, RunnerNotAvailableError) as exc:
                raise CliError(str(exc)) from exc
            app = build_web_app(clarity, run_workers=run_workers and settings.clarity_run_workers)
            # Start-up objects (modules, models, compiled SQL) live for the whole process:
            # keep them out of the collector's generations, and collect young objects less
            # often. Request handling allocates many short-lived objects, and gen-0
            # collections were a visible share of tail latency in scripts/bench_api.py.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            await serve_app(app, listen_host, listen_port)

        asyncio.run(main())
    finally:
        db.release()
    log.info("Clarity stopped")
    return 0


def run_worker_process(*, concurrency: int | None, once: bool) -> int:
    """`clarity worker`: job workers only, until SIGTERM/SIGINT."""
    settings = settings_or_fail()
    if not settings.secret("database_url"):
        raise CliError("DATABASE_URL is not set: `clarity worker` needs the shared database")
    settings, db = resolve_database(settings)

    async def main() -> int:
        try:
            clarity = build_app(settings, services=build_services(settings, db.url))
        except (InvalidKeyError, RunnerNotAvailableError) as exc:
            raise CliError(str(exc)) from exc
        pool = WorkerPool(
            clarity.services, clarity.jobs, concurrency=concurrency or settings.clarity_workers
        )
        try:
            if once:
                ran = await pool.run_until_idle()
                log.info("ran %d job(s)", ran)
                return 0
            await clarity.dispatcher.seed_watchdog()
            await clarity.maintenance.schedule()
            pool.start()
            await _until_signalled()
            log.info("stopping: finishing running jobs")
            await pool.stop()
            return 0
        finally:
            await clarity.close()

    return asyncio.run(main())
