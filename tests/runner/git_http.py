"""git's smart HTTP in front of the test's bare repositories, guarded as GitHub guards them.

A real local HTTP server: each request runs `git http-backend` (git's own CGI program) on
the repositories under `root`, after checking the Basic credentials as github.com does for
an installation token (any user name, the token as password; FakeGitHub issued it) and
honouring the token's scope: only its repositories, and no push with a read-only token.
Every request is recorded, with the token it came with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from fakes.fake_github import FakeGitHub


@dataclass
class GitCall:
    method: str
    path: str
    service: str
    token: str | None
    status: int


@dataclass
class GitHttpServer:
    root: Path
    github: FakeGitHub
    calls: list[GitCall] = field(default_factory=list)
    _server: TestServer | None = None

    async def start(self) -> GitHttpServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        """GITHUB_GIT_URL for these repositories."""
        assert self._server is not None
        return str(self._server.make_url("/"))

    def _token(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service") or request.path.rsplit("/", 1)[-1]
        token = self._token(request)
        status = 200
        try:
            if token is None or token not in self.github.tokens:
                status = 401
                return web.Response(
                    status=401,
                    text="Authentication required",
                    headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
                )
            repo = request.path.strip("/").split("/")[1].removesuffix(".git")
            try:
                self.github.check_scope(token, repo, write=service == "git-receive-pack")
            except web.HTTPException as exc:
                status = exc.status
                raise
            response = await self._backend(request)
            status = response.status
            return response
        finally:
            self.calls.append(GitCall(request.method, request.path, service, token, status))

    async def _backend(self, request: web.Request) -> web.Response:
        body = await request.read()
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": "*",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin",
        }
        process = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        if process.returncode and status == 200:
            status = 500
            payload = err
        return web.Response(status=status, body=payload, headers=headers)
