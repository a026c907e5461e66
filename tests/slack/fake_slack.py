"""A fake Slack Web API: a real aiohttp server on 127.0.0.1 that records every call.

Usage (reusable from any test; import as `tests.slack.fake_slack` from the repository root)::

    async with FakeSlack() as slack:
        settings = ...(slack_api_url=slack.api_url)
        ...
        slack.calls("chat.postMessage")          # [Call(method, params, headers), ...]
        slack.fail_next("chat.update", status=429, retry_after=1)
        slack.responses                          # POSTs to response URLs (slack.response_url())

It answers like Slack for chat.postMessage, chat.update, chat.postEphemeral, reactions.add,
views.open, views.publish, views.update, users.info, conversations.info,
conversations.history, conversations.replies (the messages posted to it, with their
metadata when asked for) and auth.test; `lose_next(method)` lets a call take effect and
then answers it with a 500, as when the connection drops after Slack acted;
`apps.connections.open` hands out a WebSocket URL on the same server for Socket Mode tests
(see `socket_envelopes` / `send_envelope`). Unknown methods answer `ok: false`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

BOT_USER_ID = "UBOTCLARITY"
BOT_ID = "BCLARITY"
TEAM_ID = "T0CLARITY"


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class Failure:
    status: int
    retry_after: float | None
    error: str | None


@dataclass
class FakeSlack:
    """Start with `async with FakeSlack() as slack:` (or `await slack.start()`)."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[Call] = field(default_factory=list)
    responses: list[Call] = field(default_factory=list)
    socket_envelopes: list[dict[str, Any]] = field(default_factory=list)
    # Messages posted with chat.postMessage, per channel, oldest first.
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._failures: dict[str, deque[Failure]] = {}
        self._lose: dict[str, int] = {}
        self._last_ts = 0.0
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_open = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{token}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL should be."""
        return f"{self.url}/api/"

    def response_url(self, token: str | None = None) -> str:
        """A response_url for a signed command or click; posts to it land in `responses`."""
        return f"{self.url}/response/{token or uuid.uuid4().hex}"

    # --- scripting and inspection --------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: float | None = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with an error (429 + Retry-After by
        default; status 200 with `error` gives an `ok: false` answer)."""
        queue = self._failures.setdefault(method, deque())
        for _ in range(times):
            queue.append(Failure(status=status, retry_after=retry_after, error=error))

    def lose_next(self, method: str, *, times: int = 1) -> None:
        """The next `times` calls of `method` take effect, then are answered with a 500."""
        self._lose[method] = self._lose.get(method, 0) + times

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls (all, or of one method), oldest first; failed ones included."""
        return [c for c in self.log if method is None or c.method == method]

    def clear(self) -> None:
        self.log.clear()
        self.responses.clear()

    def add_user(self, user_id: str, name: str) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "real_name": name.title(),
            "profile": {"display_name": name, "real_name": name.title()},
        }

    # --- handlers ------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                params.update(json.loads(raw or "{}"))
            else:
                params.update(dict(parse_qsl(raw)))
        for key in ("blocks", "view"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = Call(method, await self._params(request), dict(request.headers), time.monotonic())
        self.log.append(call)
        queue = self._failures.get(method)
        if queue:
            failure = queue.popleft()
            headers = {}
            if failure.retry_after is not None and failure.status == 429:
                headers["Retry-After"] = f"{failure.retry_after:g}"
            body = {
                "ok": False,
                "error": failure.error
                or ("ratelimited" if failure.status == 429 else "fatal_error"),
            }
            return web.json_response(body, status=failure.status, headers=headers)
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"ok": False, "error": "not_authed"})
        answer = self._answer(method, call.params)
        if self._lose.get(method):
            self._lose[method] -= 1
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        return web.json_response(answer)

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "chat.postMessage":
            ts = self._next_ts()
            message: dict[str, Any] = {
                "type": "message",
                "ts": ts,
                "text": params.get("text", ""),
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
            }
            if params.get("thread_ts"):
                message["thread_ts"] = str(params["thread_ts"])
            if params.get("metadata"):
                message["metadata"] = params["metadata"]
            self.messages.setdefault(str(params.get("channel")), []).append(message)
            return {"ok": True, "channel": params.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method in ("conversations.history", "conversations.replies"):
            return self._read_messages(method, params)
        if method == "chat.update":
            return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "reactions.add":
            return {"ok": True}
        if method in ("views.open", "views.publish", "views.update"):
            return {"ok": True, "view": {"id": f"V{uuid.uuid4().hex[:10].upper()}"}}
        if method == "users.info":
            user_id = str(params.get("user"))
            user = self.users.get(user_id)
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "conversations.info":
            channel_id = str(params.get("channel"))
            channel = self.channels.get(channel_id, {"id": channel_id, "name": channel_id.lower()})
            return {"ok": True, "channel": channel}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://clarity-test.slack.com/",
                "team": "Clarity Test",
                "user": "clarity",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/socket"}
        return {"ok": False, "error": "unknown_method"}

    def _next_ts(self) -> str:
        """A message ts as Slack makes them: the time, to the microsecond, unique here."""
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    def _read_messages(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        posted = self.messages.get(str(params.get("channel")), [])
        if method == "conversations.history":
            # Top-level messages since `oldest`, newest first.
            oldest = float(params.get("oldest") or 0)
            found = [
                m for m in reversed(posted) if "thread_ts" not in m and float(m["ts"]) >= oldest
            ]
        else:
            # The thread's parent, then its replies, oldest first.
            ts = str(params.get("ts"))
            found = [m for m in posted if m["ts"] == ts or m.get("thread_ts") == ts]
            if not any(m["ts"] == ts for m in found):
                return {"ok": False, "error": "thread_not_found"}
        with_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        shown = [
            m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in found
        ]
        return {"ok": True, "messages": shown, "response_metadata": {"next_cursor": ""}}

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        call = Call(
            "response_url",
            await self._params(request),
            dict(request.headers),
            time.monotonic(),
        )
        self.responses.append(call)
        self.log.append(call)
        return web.Response(text="ok")

    # --- Socket Mode ---------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1})
        self._socket_open.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                future = self._acks.pop(envelope_id, None) if envelope_id else None
                if future is not None and not future.done():
                    future.set_result(data)
        self._sockets.remove(ws)
        return ws

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Send one Socket Mode envelope to the connected app; returns the app's ack."""
        async with asyncio.timeout(timeout_s):
            await self._socket_open.wait()
        envelope_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        self.socket_envelopes.append(envelope)
        await self._sockets[-1].send_json(envelope)
        async with asyncio.timeout(timeout_s):
            return await future
