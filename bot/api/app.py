"""The /api sub-application: every route of the table plus its OpenAPI document."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from bot.api.context import ApiContext
from bot.api.http import ApiError, json_errors
from bot.api.openapi import build_document
from bot.api.routes import ROUTES, database_slots, handler
from bot.api.tokens import TokenAuthority, TokenError

PREFIX = "/api"


def build_api(context: ApiContext) -> web.Application:
    """The side-API as an aiohttp application, to mount under /api."""
    api = web.Application(middlewares=[json_errors])
    authority = TokenAuthority(context.services.settings)
    slots = asyncio.Semaphore(database_slots(context.services))
    for route in ROUTES:
        api.router.add_route(route.method, route.path, handler(context, authority, route, slots))
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
