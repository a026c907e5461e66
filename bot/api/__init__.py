"""The side-API agent containers call (DESIGN.md "Side-API"), and the runner-dispatch jobs."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from sqlalchemy import select

from bot import dispatch
from bot.api.activity import activity_writer
from bot.api.http import ApiError, json_errors
from bot.api.openapi import build_document
from bot.api.routes import ROUTES, database_slots, handler
from bot.api.tokens import TokenAuthority, TokenError
from bot.services import Services
from bot.workers import JobHandler
from storage.models import FeatureRequest, RequestStatus

PREFIX = "/api"

log = logging.getLogger(__name__)


def build_api(services: Services) -> web.Application:
    """The /api sub-application: every route of the table plus its OpenAPI document."""
    api = web.Application(middlewares=[json_errors])
    authority = TokenAuthority(services.settings)
    slots = asyncio.Semaphore(database_slots(services))
    for route in ROUTES:
        api.router.add_route(route.method, route.path, handler(services, authority, route, slots))
    document = json.dumps(build_document(ROUTES)).encode()

    async def openapi(request: web.Request) -> web.Response:
        try:
            authority.authenticate(request.headers.get("Authorization"))
        except TokenError as exc:
            raise ApiError(
                401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}
            ) from exc
        return web.Response(body=document, content_type="application/json")

    api.router.add_get("/openapi.json", openapi)
    return api


def setup(app: web.Application, services: Services) -> None:
    """Mount the side-API under /api."""
    app.add_subapp(PREFIX, build_api(services))

    async def finish_writes(_: web.Application) -> None:
        await activity_writer(services).close()

    async def seed_watchdog(_: web.Application) -> None:
        # The sweep re-queues itself while requests are processing; this covers a database
        # that has processing requests but no sweep queued (e.g. one adopted from elsewhere).
        try:
            async with services.session_factory.begin() as session:
                processing = await session.scalar(
                    select(FeatureRequest.id)
                    .where(FeatureRequest.status == RequestStatus.PROCESSING)
                    .limit(1)
                )
                if processing is not None:
                    await dispatch.ensure_watchdog(services, session)
        except Exception:
            log.warning("could not queue the runner watchdog", exc_info=True)

    app.on_startup.append(seed_watchdog)
    app.on_shutdown.append(finish_writes)


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """Dispatch to the runner and the runner watchdog."""
    return dispatch.job_handlers(services)
