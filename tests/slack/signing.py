"""Signed Slack requests, built the way Slack builds them, sent over real HTTP.

Pure builders (`slash_command_body`, `event_body`, `block_actions_body`,
`view_submission_body`, `sign`) and `SlackSender`, which posts them to a running server::

    sender = SlackSender(session, server_url + "/slack/events", SIGNING_SECRET, fake_slack)
    sent = await sender.command("acme/web add dark mode", user="U1")
    sent.status, sent.body, sent.response_url
    await sender.thread_reply(channel="C1", thread_ts=ts, text="blue", user="U1")
    await sender.click("retry_request", value=request_id, user="U1", channel="C1")
    await sender.submit_view("clarity_file_request", {"repo": {"repo": "acme/web"}, ...})
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

TEAM_ID = "T0CLARITY"
APP_ID = "A0CLARITY"
_counter = itertools.count(1)


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers for `body`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def next_ts() -> str:
    """A message ts unique within the test run."""
    return f"{1800000000 + next(_counter)}.{next(_counter):06d}"


def slash_command_body(
    text: str,
    *,
    user: str = "U0ALICE",
    user_name: str = "alice",
    channel: str = "C0GENERAL",
    channel_name: str = "general",
    response_url: str = "",
    trigger_id: str | None = None,
    command: str = "/clarity",
) -> str:
    """The form body of a slash command."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "clarity-test",
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or f"{next(_counter)}.{uuid.uuid4().hex[:12]}",
        }
    )


def event_body(event: dict[str, Any], *, event_id: str | None = None) -> str:
    """The JSON body of an Events API callback."""
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": "UBOTCLARITY", "is_bot": True}],
        }
    )


def _interactive(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def block_actions_body(
    action_id: str,
    value: str | None,
    *,
    user: str = "U0ALICE",
    user_name: str = "alice",
    channel: str = "C0GENERAL",
    message_ts: str = "1800000000.000001",
    block_id: str = "block",
    response_url: str = "",
    trigger_id: str | None = None,
) -> str:
    """The form body of a button click."""
    action: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": action_id},
        "action_ts": f"{time.time():.6f}",
    }
    if value is not None:
        action["value"] = value
    return _interactive(
        {
            "type": "block_actions",
            "user": {"id": user, "username": user_name, "name": user_name, "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id or f"{next(_counter)}.{uuid.uuid4().hex[:12]}",
            "team": {"id": TEAM_ID, "domain": "clarity-test"},
            "channel": {"id": channel, "name": "general"},
            "message": {"type": "message", "ts": message_ts, "text": "", "blocks": []},
            "response_url": response_url,
            "actions": [action],
        }
    )


def view_submission_body(
    callback_id: str,
    values: dict[str, dict[str, str]],
    *,
    private_metadata: dict[str, Any] | None = None,
    user: str = "U0ALICE",
    user_name: str = "alice",
    view_id: str | None = None,
) -> str:
    """The form body of a modal submission; `values` is {block_id: {action_id: text}}."""
    state = {
        block: {
            action: {"type": "plain_text_input", "value": text} for action, text in acts.items()
        }
        for block, acts in values.items()
    }
    return _interactive(
        {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "clarity-test"},
            "user": {"id": user, "username": user_name, "name": user_name, "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": f"{next(_counter)}.{uuid.uuid4().hex[:12]}",
            "view": {
                "id": view_id or f"V{uuid.uuid4().hex[:10].upper()}",
                "team_id": TEAM_ID,
                "type": "modal",
                "callback_id": callback_id,
                "private_metadata": json.dumps(private_metadata or {}),
                "state": {"values": state},
                "hash": uuid.uuid4().hex,
            },
            "response_urls": [],
        }
    )


@dataclass(frozen=True)
class Sent:
    """What the server answered."""

    status: int
    text: str
    response_url: str = ""

    @property
    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class SlackSender:
    """Posts signed requests to a Clarity server's /slack/events."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        events_url: str,
        signing_secret: str,
        response_urls: Any = None,
    ) -> None:
        self.session = session
        self.events_url = events_url
        self.secret = signing_secret
        # Anything with `response_url()` (FakeSlack) makes response URLs that are recorded.
        self.response_urls = response_urls

    def _response_url(self) -> str:
        return self.response_urls.response_url() if self.response_urls is not None else ""

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        response_url: str = "",
    ) -> Sent:
        """Sign (with `secret`, default the right one) and post one body."""
        all_headers = {"Content-Type": content_type, **sign(secret or self.secret, body, timestamp)}
        all_headers.update(headers or {})
        async with self.session.post(self.events_url, data=body.encode(), headers=all_headers) as r:
            return Sent(status=r.status, text=await r.text(), response_url=response_url)

    async def command(self, text: str, **fields: Any) -> Sent:
        """`/clarity <text>` as `user` in `channel`."""
        response_url = fields.pop("response_url", None) or self._response_url()
        body = slash_command_body(text, response_url=response_url, **fields)
        return await self.post(body, "application/x-www-form-urlencoded", response_url=response_url)

    async def event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> Sent:
        """An Events API callback (optionally marked as Slack's retry number `retry_num`)."""
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.post(
            event_body(event, event_id=event_id), "application/json", headers=headers
        )

    async def thread_reply(
        self,
        *,
        channel: str,
        thread_ts: str,
        text: str,
        user: str = "U0ALICE",
        event_id: str | None = None,
        retry_num: int | None = None,
        **extra: Any,
    ) -> Sent:
        """A person's reply in a thread (`extra` adds fields such as subtype or bot_id)."""
        event = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": extra.pop("ts", None) or next_ts(),
            "thread_ts": thread_ts,
            "channel_type": "channel",
            "event_ts": next_ts(),
            **extra,
        }
        return await self.event(event, event_id=event_id, retry_num=retry_num)

    async def app_home_opened(self, user: str = "U0ALICE") -> Sent:
        return await self.event(
            {
                "type": "app_home_opened",
                "user": user,
                "channel": "D0HOME",
                "tab": "home",
                "event_ts": next_ts(),
            }
        )

    async def click(self, action_id: str, value: str | None, **fields: Any) -> Sent:
        """A button click."""
        response_url = fields.pop("response_url", None) or self._response_url()
        body = block_actions_body(action_id, value, response_url=response_url, **fields)
        return await self.post(body, "application/x-www-form-urlencoded", response_url=response_url)

    async def submit_view(
        self, callback_id: str, values: dict[str, dict[str, str]], **fields: Any
    ) -> Sent:
        """A modal submission."""
        return await self.post(
            view_submission_body(callback_id, values, **fields),
            "application/x-www-form-urlencoded",
        )
