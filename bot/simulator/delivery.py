"""Delivering to the app as Slack does: signed HTTP requests to its Request URL, or Socket
Mode envelopes when the app is connected that way.

Slash commands are form bodies; interactions (`block_actions`, `view_submission`,
`view_closed`) are a form body with one field, `payload`, holding JSON; events are JSON
`event_callback` envelopes. Each is signed with the signing secret (`X-Slack-Signature`
v0, `X-Slack-Request-Timestamp`). Slack waits 3 s for the answer: a command or interaction
that is not answered in time fails for the person (`operation_timeout`); an event is
retried with `X-Slack-Retry-Num` / `X-Slack-Retry-Reason` (Slack's delays are about 0 s,
1 min and 5 min; tests make them small).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.simulator.workspace import (
    APP_ID,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]
ACK_TIMEOUT_S = 3.0
RETRY_DELAYS_S = (0.0, 60.0, 300.0)
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers for `body`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


@dataclass(frozen=True)
class Answer:
    """The app's answer to one delivery (status 0: no answer in time or no connection)."""

    status: int
    text: str = ""
    error: str = ""  # Slack's word for a failed delivery: operation_timeout, dispatch_failed

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def json(self) -> JSON | None:
        """The answer's body as a JSON object, if it is one."""
        try:
            data = json.loads(self.text) if self.text.strip() else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


@dataclass
class Sent:
    """One delivery as it went out (for tests and the page's log)."""

    kind: str  # command | interactive | event
    body: str
    headers: dict[str, str]
    answer: Answer | None = None
    attempts: list[dict[str, str]] = field(default_factory=list)


# An app connected over Socket Mode: (envelope type, payload) → its ack.
SocketSend = Callable[[str, JSON], Awaitable[JSON]]


class Delivery:
    """Sends commands, interactions and events to the app."""

    def __init__(
        self,
        *,
        target_url: Callable[[], str | None],
        signing_secret: str,
        socket: Callable[[], SocketSend | None] = lambda: None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        self.target_url = target_url
        self.signing_secret = signing_secret
        self.socket = socket
        self.ack_timeout_s = ack_timeout_s
        self.retry_delays_s = retry_delays_s
        self.sent: list[Sent] = []
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    # --- the three shapes -----------------------------------------------------------------

    @staticmethod
    def command_body(
        *,
        command: str,
        text: str,
        user_id: str,
        user_name: str,
        channel_id: str,
        channel_name: str,
        trigger_id: str,
        response_url: str,
    ) -> dict[str, str]:
        """The fields of a slash command, in the order Slack sends them."""
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }

    @staticmethod
    def event_envelope(event: JSON) -> JSON:
        """An Events API `event_callback` around one event."""
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "context_team_id": TEAM_ID,
            "context_enterprise_id": None,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    # --- sending --------------------------------------------------------------------------

    async def command(self, fields: dict[str, str]) -> Answer:
        """A slash command; its answer is the ack (shown to the person)."""
        socket = self.socket()
        if socket is not None:
            return await self._over_socket(socket, "slash_commands", dict(fields))
        return await self._post("command", urlencode(fields), "application/x-www-form-urlencoded")

    async def interaction(self, payload: JSON) -> Answer:
        """A block_actions, view_submission or view_closed payload."""
        socket = self.socket()
        if socket is not None:
            return await self._over_socket(socket, "interactive", payload)
        body = urlencode({"payload": json.dumps(payload)})
        return await self._post("interactive", body, "application/x-www-form-urlencoded")

    def event(self, event: JSON) -> JSON:
        """Deliver an event in the background (with Slack's retries); returns the envelope."""
        envelope = self.event_envelope(event)
        self._spawn(self._deliver_event(envelope))
        return envelope

    async def _deliver_event(self, envelope: JSON) -> None:
        socket = self.socket()
        if socket is not None:
            await self._over_socket(socket, "events_api", envelope)
            return
        body = json.dumps(envelope)
        answer = await self._post("event", body, "application/json")
        for attempt, delay in enumerate(self.retry_delays_s, start=1):
            if answer.ok:
                return
            await asyncio.sleep(delay)
            reason = "http_timeout" if answer.error == "operation_timeout" else "http_error"
            answer = await self._post(
                "event",
                body,
                "application/json",
                {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": reason},
            )
        if not answer.ok:
            log.warning("simulator: event %s was not accepted after retries", envelope["event_id"])

    async def _post(
        self, kind: str, body: str, content_type: str, extra: dict[str, str] | None = None
    ) -> Answer:
        url = self.target_url()
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            **sign(self.signing_secret, body),
            **(extra or {}),
        }
        sent = Sent(kind, body, headers)
        self.sent.append(sent)
        if not url:
            sent.answer = Answer(0, error="dispatch_failed")
            return sent.answer
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                async with self._session().post(url, data=body.encode(), headers=headers) as r:
                    text = await r.text()
                    sent.answer = Answer(
                        r.status, text, "" if r.status < 400 else "dispatch_failed"
                    )
        except TimeoutError:
            sent.answer = Answer(0, error="operation_timeout")
        except aiohttp.ClientError as exc:
            log.warning("simulator: delivery to %s failed: %s", url, exc)
            sent.answer = Answer(0, error="dispatch_failed")
        return sent.answer

    async def _over_socket(self, socket: SocketSend, kind: str, payload: JSON) -> Answer:
        sent = Sent(kind, json.dumps(payload), {})
        self.sent.append(sent)
        try:
            ack = await socket(kind, payload)
        except TimeoutError:
            sent.answer = Answer(0, error="operation_timeout")
            return sent.answer
        body = ack.get("payload")
        sent.answer = Answer(200, json.dumps(body) if body else "")
        return sent.answer

    # --- background work ------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("simulator: background delivery failed")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        self._idle.clear()

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not self._tasks:
                self._idle.set()

        task.add_done_callback(done)

    def spawn(self, work: Awaitable[None]) -> None:
        """Run work in the background, counted by `wait_idle`."""
        self._spawn(work)

    async def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every background delivery (and its retries) has finished."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._tasks:
                    await self._idle.wait()
                    await asyncio.sleep(0)
        except TimeoutError:
            return False
        return True
