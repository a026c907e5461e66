"""The one aiohttp server: /healthz, /metrics, and every feature's routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text

from bot.services import Services
from bot.workers import WorkerPool, job_registry
from storage.models import FeatureRequest

log = logging.getLogger(__name__)

SERVICES_KEY = web.AppKey("services", Services)
WORKERS_KEY = web.AppKey("workers", WorkerPool)

FeatureSetup = Callable[[web.Application, Services], None]


def feature_setups() -> list[FeatureSetup]:
    """Each feature's `setup(app, services)`, in the order routes are added."""
    from bot.api import setup as api_setup
    from bot.github import setup as github_setup
    from bot.slack import setup as slack_setup

    return [slack_setup, api_setup, github_setup]


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers `select 1`, else 503."""
    services = request.app[SERVICES_KEY]
    try:
        async with asyncio.timeout(3), services.engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception as exc:
        log.warning("health check failed: %s", exc)
        return web.json_response(
            {"status": "unhealthy", "error": "database unavailable"}, status=503
        )
    return web.json_response({"status": "healthy"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; request counts by status are read at scrape time."""
    services = request.app[SERVICES_KEY]
    try:
        async with asyncio.timeout(3), services.session_factory() as session:
            rows = (
                await session.execute(
                    select(FeatureRequest.status, func.count()).group_by(FeatureRequest.status)
                )
            ).all()
        services.metrics.requests_by_status.clear()
        for status, count in rows:
            services.metrics.requests_by_status.labels(status.value).set(count)
    except Exception:
        log.warning("metrics: could not read request counts", exc_info=True)
        services.metrics.errors.labels("metrics").inc()
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def observe(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Latency per route template and status."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[SERVICES_KEY].metrics.http_latency.labels(route, str(status)).observe(
            time.perf_counter() - started
        )


def build_app(
    services: Services,
    *,
    run_workers: bool | None = None,
    features: list[FeatureSetup] | None = None,
) -> web.Application:
    """The aiohttp application with every route; workers start with it unless told not to."""
    app = web.Application(middlewares=[observe], client_max_size=1024**2)
    app[SERVICES_KEY] = services
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    for setup in feature_setups() if features is None else features:
        setup(app, services)

    pool = WorkerPool(
        services,
        job_registry(services),
        concurrency=services.settings.clarity_workers,
    )
    app[WORKERS_KEY] = pool
    start = services.settings.clarity_run_workers if run_workers is None else run_workers

    async def on_startup(_: web.Application) -> None:
        if start:
            pool.start()

    async def on_cleanup(_: web.Application) -> None:
        await pool.stop()
        await services.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
