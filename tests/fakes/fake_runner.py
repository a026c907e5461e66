"""A fake runner: a real local HTTP server that records the jobs POSTed to it.

It answers 200 by default; `fail_next(n, status)` or `always_fail(status)` script failures,
with an optional Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class RunnerCall:
    body: dict[str, Any]
    headers: dict[str, str]
    status: int

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass
class FakeRunner:
    calls: list[RunnerCall] = field(default_factory=list)
    _failures: int = 0
    _failure_status: int = 500
    _always: bool = False
    _retry_after: str | None = None
    _server: TestServer | None = None

    async def start(self) -> FakeRunner:
        app = web.Application()
        app.router.add_post("/jobs", self._jobs)
        self._server = TestServer(app)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/jobs"))

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        self._failures, self._failure_status, self._retry_after = count, status, retry_after

    def always_fail(self, status: int = 500) -> None:
        self._always, self._failure_status = True, status

    def recover(self) -> None:
        self._always, self._failures = False, 0

    @property
    def accepted(self) -> list[RunnerCall]:
        return [c for c in self.calls if 200 <= c.status < 300]

    async def _jobs(self, request: web.Request) -> web.Response:
        body = await request.json()
        failing = self._always or self._failures > 0
        status = self._failure_status if failing else 202
        if self._failures > 0:
            self._failures -= 1
        self.calls.append(RunnerCall(body=body, headers=dict(request.headers), status=status))
        headers = {"Retry-After": self._retry_after} if failing and self._retry_after else None
        if failing:
            return web.json_response({"error": "scripted failure"}, status=status, headers=headers)
        return web.json_response({"accepted": True}, status=status)
