"""The side-API's stand-in for sandbox tests: an HTTP server on 127.0.0.1 that records what
containers POST to /report/<request id> and wakes whoever waits for a report."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web


class Reports:
    """What containers reported, in order; `wait_for` one of a kind from one request."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["request"] = request.match_info["request"]
        async with self._changed:
            self.received.append(body)
            self._changed.notify_all()
        return web.json_response({}, status=201)

    async def wait_for(self, kind: str, request_id: str, within_s: float = 120) -> dict[str, Any]:
        """The first report of `kind` from `request_id`, waiting up to `within_s` for it."""

        def match() -> dict[str, Any] | None:
            for r in self.received:
                if r["kind"] == kind and r.get("request") == request_id:
                    return r
            return None

        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: match() is not None)
        found = match()
        assert found is not None
        return found

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/report/{request}", self.handle)
        return app
