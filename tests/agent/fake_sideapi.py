"""A small real side-API for agent tests: checks the job token, records every call, keeps
sessions and bundles, hands out a git token, and serves git repositories over smart HTTP
(`git http-backend` behind basic auth with that git token)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JOB_TOKEN = "clj1.job-token-for-tests.abcdef0123456789"
GIT_TOKEN = "ghs_FakeInstallationToken0123456789abcdef"


@dataclass
class Call:
    """One request the fake answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body) if self.body else None


@dataclass
class FakeSideApi:
    """The routes clarity-agent calls, under /api/requests/{id}/."""

    git_root: str | None = None
    git_token: str = GIT_TOKEN
    calls: list[Call] = field(default_factory=list)
    sessions: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    bundles: list[tuple[str, int, str, bytes]] = field(default_factory=list)
    git_requests: list[dict[str, str]] = field(default_factory=list)
    # Answer the next N message posts with 503 (retry tests).
    fail_messages: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    # --- what tests read ---------------------------------------------------------------------

    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Posted messages (bodies), in order, optionally of one type."""
        out = [
            c.json
            for c in self.calls
            if c.method == "POST" and c.path.endswith("/messages") and c.status == 201
        ]
        return [m for m in out if type_ is None or m["type"] == type_]

    def statuses(self) -> list[dict[str, Any]]:
        """PATCH status bodies, in order."""
        return [c.json for c in self.calls if c.method == "PATCH"]

    def order(self) -> list[str]:
        """What was called, as `METHOD last-path-part` (messages by type), in order."""
        out = []
        for c in self.calls:
            if c.status >= 300:
                continue
            tail = c.path.rsplit("/", 1)[-1]
            if c.path.endswith("/messages"):
                tail = c.json["type"]
            elif c.method == "PATCH":
                tail = f"status:{c.json['status']}"
            elif "/bundle" in c.path:
                tail = f"bundle:{c.headers.get('Clarity-Run-Outcome')}"
            out.append(f"{c.method} {tail}")
        return out

    # --- server ------------------------------------------------------------------------------

    async def start(self) -> FakeSideApi:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/requests/{request_id}/{rest:.*}", self._api)
        app.router.add_route("*", "/git/{path:.*}", self._git)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The job's apiUrl."""
        return f"{self.url}/api"

    @property
    def git_url(self) -> str:
        """A GITHUB_GIT_URL served by this fake over smart HTTP."""
        return f"{self.url}/git/"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Call(request.method, request.path, dict(request.headers), body)
        self.calls.append(call)
        response = self._answer(request, body)
        call.status = response.status
        return response

    def _answer(self, request: web.Request, body: bytes) -> web.Response:
        rest = request.match_info["rest"]
        request_id = request.match_info["request_id"]
        if request.headers.get("Authorization") != f"Bearer {JOB_TOKEN}":
            return _error(401, "unauthorized", "bad token")
        if request.method == "POST" and rest == "messages":
            if self.fail_messages > 0:
                self.fail_messages -= 1
                return _error(503, "unavailable", "try again")
            data = json.loads(body)
            if data.get("type") == "bogus":
                return _error(422, "invalid", "unknown type")
            return web.json_response({"message": data}, status=201)
        if request.method == "PATCH" and rest == "status":
            return web.json_response({"request": json.loads(body)})
        if request.method == "POST" and rest == "git-credentials":
            return web.json_response({"token": self.git_token, "expiresAt": "2099-01-01T00:00:00Z"})
        if rest == "agent-session":
            if request.method == "PUT":
                self.sessions[request_id] = (request.headers["Clarity-Session-Id"], body)
                return web.Response(status=204)
            saved = self.sessions.get(request_id)
            if saved is None:
                return _error(404, "not_found", "no session")
            return web.Response(
                body=saved[1],
                content_type="application/gzip",
                headers={"Clarity-Session-Id": saved[0]},
            )
        if request.method == "PUT" and rest.startswith("runs/") and rest.endswith("/bundle"):
            attempt = int(rest.split("/")[1])
            self.bundles.append(
                (request_id, attempt, request.headers.get("Clarity-Run-Outcome", ""), body)
            )
            return web.json_response({"accepted": True}, status=202)
        return _error(404, "not_found", f"no route {request.method} {rest}")

    async def _git(self, request: web.Request) -> web.StreamResponse:
        """git smart HTTP through `git http-backend` (CGI), behind the git token."""
        assert self.git_root is not None
        auth = request.headers.get("Authorization", "")
        self.git_requests.append({"path": request.path, "auth": auth})
        credentials = f"x-access-token:{self.git_token}".encode()
        expected = "Basic " + base64.b64encode(credentials).decode()
        if auth != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": "/" + request.match_info["path"],
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
