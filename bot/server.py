"""The one aiohttp server: /healthz, /metrics, and every feature's routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import github, simulator, slack
from bot import web as dashboard
from bot.api.app import PREFIX as API_PREFIX
from bot.api.app import build_api
from bot.app import Clarity
from bot.services import Services
from bot.web.actions import LifecycleActions
from bot.workers import WorkerPool
from storage.engine import ping
from storage.repositories import FeatureRequestRepository

log = logging.getLogger(__name__)

SERVICES_KEY = web.AppKey("services", Services)
CLARITY_KEY = web.AppKey("clarity", Clarity)
WORKERS_KEY = web.AppKey("workers", WorkerPool)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers `select 1`, else 503."""
    services = request.app[SERVICES_KEY]
    try:
        async with asyncio.timeout(3):
            await ping(services.engine)
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
            counts = await FeatureRequestRepository(session).count_by_status()
        services.metrics.requests_by_status.clear()
        for status, count in counts.items():
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


def build_web_app(clarity: Clarity, *, run_workers: bool | None = None) -> web.Application:
    """The aiohttp application with every route; workers start with it unless told not to."""
    services = clarity.services
    app = web.Application(middlewares=[observe], client_max_size=1024**2)
    app[SERVICES_KEY] = services
    app[CLARITY_KEY] = clarity
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    slack.setup(app, clarity.slack)
    app.add_subapp(API_PREFIX, build_api(clarity.api))
    github.setup(app, services, clarity.lifecycle)
    settings = services.settings
    dashboard.setup(
        app,
        session_factory=services.session_factory,
        engine=services.engine,
        actions=LifecycleActions(clarity.lifecycle, services.session_factory),
        public_url=settings.clarity_public_url,
        admin_user_ids=settings.split(settings.clarity_admin_user_ids),
        session_ttl_s=settings.clarity_web_session_ttl_s,
        scrub=clarity.slack.scrub,
        git_url=settings.github_git_url,
    )

    if settings.clarity_simulator:
        simulator.setup(
            app,
            signing_secret=settings.secret("slack_signing_secret") or "",
            bot_token=settings.secret("slack_bot_token") or "",
            public_url=settings.public_base(),
        )

    pool = WorkerPool(services, clarity.jobs, concurrency=services.settings.clarity_workers)
    app[WORKERS_KEY] = pool
    start = services.settings.clarity_run_workers if run_workers is None else run_workers

    async def on_startup(_: web.Application) -> None:
        if clarity.dispatcher.problem is not None:
            log.warning(
                "no agent can run: %s; requests will be recorded and answered with an error "
                "saying so",
                clarity.dispatcher.problem,
            )
        # The sweeps re-queue themselves; this covers a database that has none queued (any
        # replica's workers run them).
        try:
            await clarity.dispatcher.seed_watchdog()
            if start:
                await clarity.maintenance.schedule(delay=dt.timedelta(minutes=1))
        except Exception:
            log.warning("could not queue the watchdog and maintenance jobs", exc_info=True)
        if start:
            pool.start()

    async def on_shutdown(_: web.Application) -> None:
        await clarity.activity.close()

    async def on_cleanup(_: web.Application) -> None:
        await pool.stop()
        await clarity.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
