"""Slack's Web API (`<base>/api/<method>`), response URLs and Socket Mode, over the workspace.

Bodies are read as Slack reads them: JSON (token in the Authorization header only) or a
form (token in the header or as `token`); read methods take form parameters only, so a
JSON body sent to them counts as no arguments at all. Every call is recorded (`log`,
`calls()`), and tests can make the next calls of a method fail (`fail_next`) or take effect
and then lose their answer (`lose_next`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.simulator import validation
from bot.simulator.workspace import (
    BOT_ID,
    BOT_USER_ID,
    HOOK_TTL_S,
    HOOK_USES,
    MAX_MODAL_STACK,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
    YOU,
    Channel,
    Hook,
    Message,
    View,
    Workspace,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Methods Slack only reads form (or query) parameters for.
FORM_ONLY = frozenset(
    {
        "users.info",
        "conversations.history",
        "conversations.replies",
        "conversations.info",
        "conversations.members",
        "chat.getPermalink",
    }
)
JSON_FIELDS = ("blocks", "view", "metadata", "attachments")
MAX_TEXT = 40_000
_REACTION = re.compile(r"^[a-z0-9_+'\-]+$")


@dataclass(frozen=True)
class Call:
    """One request the simulator received (a Web API call or a response_url post)."""

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


class ApiError(Exception):
    """An `ok: false` answer."""

    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)

    def body(self) -> JSON:
        out: JSON = {"ok": False, "error": self.error}
        if self.messages:
            out["response_metadata"] = {"messages": self.messages}
            if self.error == "invalid_blocks":
                out["errors"] = [m.removeprefix("[ERROR] ") for m in self.messages]
        return out


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def assign_ids(blocks: list[Any]) -> list[Any]:
    """Slack gives every block a block_id, and every element an action_id, when missing."""
    out: list[Any] = []
    for block in blocks:
        if not isinstance(block, dict):
            out.append(block)
            continue
        block = dict(block)
        block.setdefault("block_id", secrets.token_urlsafe(3))
        for key in ("elements", "accessory", "element"):
            value = block.get(key)
            if block.get("type") == "context":
                continue
            if isinstance(value, list):
                block[key] = [_with_action_id(e) for e in value]
            elif isinstance(value, dict):
                block[key] = _with_action_id(value)
        out.append(block)
    return out


def _with_action_id(element: Any) -> Any:
    if isinstance(element, dict) and element.get("type") not in ("image", None):
        element = dict(element)
        element.setdefault("action_id", secrets.token_urlsafe(3))
    return element


class WebApi:
    """The Web API and response URLs of one simulated workspace."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        bot_token: str | None,
        app_token: str | None = None,
        base_url: Callable[[], str],
    ) -> None:
        # bot_token None: any `xoxb-` token is the bot's (the test suite uses several).
        self.ws = workspace
        self.bot_token = bot_token
        self.app_token = app_token
        self.base_url = base_url
        self.log: list[Call] = []
        self.responses: list[Call] = []
        self.socket_envelopes: list[JSON] = []
        # What chat.postMessage made, per channel, as it was posted (oldest first).
        self.posted: dict[str, list[JSON]] = {}
        self._failures: dict[str, deque[Failure]] = {}
        self._lose: dict[str, int] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._socket_open = asyncio.Event()
        self._acks: dict[str, asyncio.Future[JSON]] = {}
        self.methods: dict[str, Callable[[JSON], JSON]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.chat_post_message,
            "chat.update": self.chat_update,
            "chat.postEphemeral": self.chat_post_ephemeral,
            "chat.getPermalink": self.chat_get_permalink,
            "reactions.add": self.reactions_add,
            "views.open": self.views_open,
            "views.push": self.views_push,
            "views.update": self.views_update,
            "views.publish": self.views_publish,
            "users.info": self.users_info,
            "conversations.info": self.conversations_info,
            "conversations.history": self.conversations_history,
            "conversations.replies": self.conversations_replies,
            "conversations.members": self.conversations_members,
            "apps.connections.open": self.apps_connections_open,
        }

    # --- scripting and inspection ---------------------------------------------------------

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

    # --- HTTP -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """POST (or GET) <base>/api/<method>."""
        method = request.match_info["method"]
        try:
            params, token = await self._read(request, method)
        except ApiError as exc:
            self.log.append(Call(method, {}, dict(request.headers), time.monotonic()))
            return web.json_response(exc.body())
        call = Call(method, params, dict(request.headers), time.monotonic())
        self.log.append(call)
        queue = self._failures.get(method)
        if queue:
            failure = queue.popleft()
            headers = {}
            if failure.retry_after is not None and failure.status == 429:
                headers["Retry-After"] = f"{failure.retry_after:g}"
            error = failure.error or ("ratelimited" if failure.status == 429 else "fatal_error")
            return web.json_response(
                {"ok": False, "error": error}, status=failure.status, headers=headers
            )
        fn = self.methods.get(method)
        if fn is None:
            return web.json_response({"ok": False, "error": "unknown_method", "req_method": method})
        try:
            self._authenticate(method, token)
            answer = fn(params)
        except ApiError as exc:
            answer = exc.body()
        if self._lose.get(method):
            self._lose[method] -= 1
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        return web.json_response(answer)

    async def _read(self, request: web.Request, method: str) -> tuple[JSON, str | None]:
        params: JSON = dict(request.query)
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip() or token
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                try:
                    body = json.loads(raw or "{}")
                except ValueError:
                    raise ApiError("invalid_json") from None
                if not isinstance(body, dict):
                    raise ApiError("invalid_json")
                if method not in FORM_ONLY:
                    params.update(body)
            else:
                form = dict(parse_qsl(raw, keep_blank_values=True))
                if "token" in form:
                    token = token or form.pop("token")
                params.update(form)
        for key in JSON_FIELDS:
            if isinstance(params.get(key), str) and params[key]:
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise ApiError(
                        "invalid_blocks_format" if key == "blocks" else "invalid_arguments",
                        f"[ERROR] invalid JSON [json-pointer:/{key}]",
                    ) from None
        return params, token

    def _authenticate(self, method: str, token: str | None) -> None:
        if not token:
            raise ApiError("not_authed")
        if method == "apps.connections.open":
            if token.startswith("xoxb-"):
                raise ApiError("not_allowed_token_type")
            if not token.startswith("xapp-") or self.app_token not in (None, token):
                raise ApiError("invalid_auth")
            return
        if token.startswith("xapp-"):
            raise ApiError("not_allowed_token_type")
        if self.bot_token is not None:
            if not secrets.compare_digest(token, self.bot_token):
                raise ApiError("invalid_auth")
        elif not token.startswith("xoxb-"):
            raise ApiError("invalid_auth")

    # --- lookups --------------------------------------------------------------------------

    def _channel(self, params: JSON, key: str = "channel") -> Channel:
        ref = params.get(key)
        channel = self.ws.find_channel(str(ref)) if ref else None
        if channel is None:
            raise ApiError("channel_not_found")
        return channel

    def _readable(self, params: JSON) -> Channel:
        channel = self._channel(params)
        if not channel.has_member(BOT_USER_ID):
            if channel.is_private:
                raise ApiError("channel_not_found")
            raise ApiError("not_in_channel")
        return channel

    def _message(self, channel: Channel, ts: Any) -> Message:
        message = self.ws.find_message(channel.id, str(ts)) if ts else None
        if message is None or message.ephemeral_for is not None:
            raise ApiError("message_not_found")
        return message

    def _content(self, params: JSON, *, required: bool = True) -> tuple[str, list[Any] | None]:
        """Text and blocks of a message, checked as chat.postMessage checks them."""
        text = params.get("text")
        text = "" if text is None else str(text)
        blocks = params.get("blocks")
        if blocks is not None:
            problems = validation.check_blocks(blocks)
            if problems:
                raise ApiError("invalid_blocks", *problems)
        if required and not text.strip() and not blocks and not params.get("attachments"):
            raise ApiError("no_text")
        if len(text) > MAX_TEXT:
            raise ApiError("msg_too_long")
        return text, (assign_ids(blocks) if isinstance(blocks, list) else None)

    def _metadata(self, params: JSON) -> JSON | None:
        metadata = params.get("metadata")
        if metadata is None or metadata == "":
            return None
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload", {}), dict)
        ):
            raise ApiError("invalid_metadata_format")
        return {
            "event_type": metadata["event_type"],
            "event_payload": metadata.get("event_payload", {}),
        }

    def _wire(self, message: Message, *, with_metadata: bool = True) -> JSON:
        parent_user = None
        if message.is_reply and message.thread_ts:
            parent = self.ws.find_message(message.channel, message.thread_ts)
            parent_user = parent.user if parent is not None else None
        return message.wire(with_metadata=with_metadata, parent_user=parent_user)

    # --- methods --------------------------------------------------------------------------

    def auth_test(self, params: JSON) -> JSON:
        return {
            "ok": True,
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": TEAM_NAME,
            "user": "clarity",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def chat_post_message(self, params: JSON) -> JSON:
        channel = self._channel(params)
        if not channel.has_member(BOT_USER_ID):
            raise ApiError("not_in_channel")
        text, blocks = self._content(params)
        metadata = self._metadata(params)
        thread_ts = params.get("thread_ts")
        message = Message(
            channel=channel.id,
            ts=self.ws.next_ts(),
            user=BOT_USER_ID,
            text=text,
            blocks=blocks or [],
            thread_ts=str(thread_ts) if thread_ts else None,
            bot_id=BOT_ID,
            metadata=metadata,
            reply_broadcast=_truthy(params.get("reply_broadcast")),
        )
        self.ws.post(message)
        wire = self._wire(message)
        self.posted.setdefault(channel.id, []).append(dict(wire))
        return {"ok": True, "channel": channel.id, "ts": message.ts, "message": wire}

    def chat_update(self, params: JSON) -> JSON:
        channel = self._channel(params)
        message = self._message(channel, params.get("ts"))
        if message.user != BOT_USER_ID:
            raise ApiError("cant_update_message")
        text, blocks = self._content(params, required=False)
        if "text" in params:
            message.text = text
        if blocks is not None:
            message.blocks = blocks
        if not message.text.strip() and not message.blocks:
            raise ApiError("no_text")
        metadata = self._metadata(params)
        if metadata is not None:
            message.metadata = metadata
        message.edited = {"user": BOT_USER_ID, "ts": self.ws.next_ts()}
        self.ws.changed(message)
        return {
            "ok": True,
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": self._wire(message),
        }

    def chat_post_ephemeral(self, params: JSON) -> JSON:
        channel = self._channel(params)
        if not channel.has_member(BOT_USER_ID):
            raise ApiError("not_in_channel")
        user = str(params.get("user") or "")
        if user not in self.ws.users and not (self.ws.lenient and user):
            raise ApiError("user_not_found")
        if not channel.has_member(user):
            raise ApiError("user_not_in_channel")
        text, blocks = self._content(params)
        thread_ts = params.get("thread_ts")
        message = Message(
            channel=channel.id,
            ts=self.ws.next_ts(),
            user=BOT_USER_ID,
            text=text,
            blocks=blocks or [],
            thread_ts=str(thread_ts) if thread_ts else None,
            bot_id=BOT_ID,
            ephemeral_for=user,
        )
        self.ws.post(message)
        return {"ok": True, "message_ts": message.ts}

    def chat_get_permalink(self, params: JSON) -> JSON:
        channel = self._channel(params)
        message = self._message(channel, params.get("message_ts"))
        link = f"{self.base_url()}/archives/{channel.id}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"ok": True, "channel": channel.id, "permalink": link}

    def reactions_add(self, params: JSON) -> JSON:
        channel = self._readable(params)
        name = str(params.get("name") or "").strip(":")
        if not params.get("timestamp"):
            raise ApiError("no_item_specified")
        message = self._message(channel, params.get("timestamp"))
        if not _REACTION.match(name):
            raise ApiError("invalid_name")
        users = message.reactions.setdefault(name, [])
        if BOT_USER_ID in users:
            raise ApiError("already_reacted")
        users.append(BOT_USER_ID)
        self.ws.changed(message)
        return {"ok": True}

    def _view_payload(self, params: JSON, *, kind: str) -> JSON:
        view = params.get("view")
        problems = validation.check_view(view)
        if problems:
            raise ApiError("invalid_arguments", *problems)
        assert isinstance(view, dict)
        if view.get("type") != kind:
            raise ApiError("invalid_arguments", f"[ERROR] must be {kind} [json-pointer:/view/type]")
        view = dict(view)
        view["blocks"] = assign_ids(list(view.get("blocks") or []))
        return view

    def _trigger_user(self, params: JSON) -> str:
        trigger_id = str(params.get("trigger_id") or params.get("interactivity_pointer") or "")
        trigger, error = self.ws.exchange_trigger(trigger_id)
        if trigger is None:
            assert error is not None
            what = {
                "invalid_trigger_id": "invalid `trigger_id`",
                "exchanged_trigger_id": "`trigger_id` already exchanged",
                "expired_trigger_id": "`trigger_id` expired",
            }[error]
            raise ApiError(error, f"[ERROR] {what} [json-pointer:/trigger_id]")
        return trigger.user

    def views_open(self, params: JSON) -> JSON:
        payload = self._view_payload(params, kind="modal")
        user = self._trigger_user(params)
        view = self.ws.open_modal(user, payload)
        return {"ok": True, "view": view.wire()}

    def views_push(self, params: JSON) -> JSON:
        payload = self._view_payload(params, kind="modal")
        user = self._trigger_user(params)
        if len(self.ws.modal_stacks.get(user) or []) >= MAX_MODAL_STACK:
            raise ApiError("push_limit_reached")
        view = self.ws.open_modal(user, payload, push=True)
        return {"ok": True, "view": view.wire()}

    def views_update(self, params: JSON) -> JSON:
        view = self.ws.find_view(params.get("view_id"), params.get("external_id"))
        if view is None:
            raise ApiError("not_found")
        payload = self._view_payload(params, kind=view.type)
        self._check_hash(view, params)
        self.ws.replace_view(view, payload)
        return {"ok": True, "view": view.wire()}

    def views_publish(self, params: JSON) -> JSON:
        user = str(params.get("user_id") or "")
        if user not in self.ws.users and not (self.ws.lenient and user):
            raise ApiError("user_not_found")
        payload = self._view_payload(params, kind="home")
        existing = self.ws.find_view(self.ws.homes.get(user))
        if existing is not None:
            self._check_hash(existing, params)
        view = self.ws.publish_home(user, payload)
        return {"ok": True, "view": view.wire()}

    @staticmethod
    def _check_hash(view: View, params: JSON) -> None:
        given = params.get("hash")
        if given and given != view.hash:
            raise ApiError("hash_conflict")

    def users_info(self, params: JSON) -> JSON:
        user = self.ws.users.get(str(params.get("user") or ""))
        if user is None:
            raise ApiError("user_not_found")
        return {"ok": True, "user": user.wire()}

    def conversations_info(self, params: JSON) -> JSON:
        channel = self._channel(params)
        if channel.is_private and not channel.has_member(BOT_USER_ID):
            raise ApiError("channel_not_found")
        return {"ok": True, "channel": channel.wire()}

    def conversations_members(self, params: JSON) -> JSON:
        channel = self._readable(params)
        members = sorted(self.ws.users) if channel.open_membership else sorted(channel.members)
        return {"ok": True, "members": members, "response_metadata": {"next_cursor": ""}}

    def conversations_history(self, params: JSON) -> JSON:
        channel = self._readable(params)
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
        inclusive = _truthy(params.get("inclusive"))
        found = [
            m
            for m in reversed(self.ws.messages.get(channel.id, []))
            if m.ephemeral_for is None
            and (not m.is_reply or m.reply_broadcast)
            and (oldest <= float(m.ts) <= latest if inclusive else oldest < float(m.ts) < latest)
        ]
        return self._page(found, params)

    def conversations_replies(self, params: JSON) -> JSON:
        channel = self._readable(params)
        ts = str(params.get("ts") or "")
        message = self.ws.find_message(channel.id, ts)
        if message is None or message.ephemeral_for is not None:
            raise ApiError("thread_not_found")
        root = message.thread_ts if message.is_reply and message.thread_ts else message.ts
        found = [m for m in self.ws.thread(channel.id, root) if m.ephemeral_for is None]
        return self._page(found, params)

    def _page(self, found: list[Message], params: JSON) -> JSON:
        """One page of messages; the cursor is an offset, opaque to the caller."""
        try:
            limit = max(1, min(int(params.get("limit") or 100), 1000))
            start = int(str(params.get("cursor") or "0").removeprefix("bmV4dF90czo"), 16)
        except ValueError:
            raise ApiError("invalid_cursor") from None
        page = found[start : start + limit]
        more = start + limit < len(found)
        with_metadata = _truthy(params.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [self._wire(m, with_metadata=with_metadata) for m in page],
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": f"bmV4dF90czo{start + limit:x}" if more else ""},
        }

    def apps_connections_open(self, params: JSON) -> JSON:
        ws_base = self.base_url().replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return {"ok": True, "url": f"{ws_base}/socket?ticket={uuid.uuid4()}"}

    # --- response URLs --------------------------------------------------------------------

    def response_url(self, token: str | None = None) -> str:
        """A response_url not tied to a message; posts to it are recorded in `responses`."""
        hook = self.ws.issue_hook(None, None, token=token)
        return self.hook_url(hook)

    def hook_url(self, hook: Hook) -> str:
        return f"{self.base_url()}/response/{hook.token}"

    async def handle_response(self, request: web.Request) -> web.StreamResponse:
        """POST <base>/response/<token>: the app answers a command or a click."""
        raw = await request.text()
        params: JSON
        try:
            if request.content_type == "application/json":
                params = json.loads(raw or "{}")
            else:
                form = dict(parse_qsl(raw, keep_blank_values=True))
                params = json.loads(form["payload"]) if "payload" in form else form
        except (ValueError, KeyError):
            params = {}
        if not isinstance(params, dict):
            params = {}
        call = Call("response_url", params, dict(request.headers), time.monotonic())
        self.responses.append(call)
        self.log.append(call)
        hook = self.ws.hooks.get(request.match_info["token"])
        if hook is None:
            return web.Response(status=404, text="no_active_hooks")
        if self.ws.clock() - hook.created_at > HOOK_TTL_S:
            return web.Response(status=404, text="expired_url")
        if hook.uses >= HOOK_USES:
            return web.Response(status=404, text="used_url")
        hook.uses += 1
        try:
            self.apply_response(hook, params)
        except ApiError as exc:
            return web.Response(
                status=400 if exc.error != "message_not_found" else 404, text=exc.error
            )
        return web.Response(text="ok")

    def apply_response(self, hook: Hook, params: JSON) -> None:
        """What a response_url post (or a command's ack body) does to the workspace."""
        if hook.channel is None:
            return  # a test's response URL: recorded, shown nowhere
        source = self.ws.find_message(hook.channel, hook.message_ts) if hook.message_ts else None
        if _truthy(params.get("delete_original")):
            if source is None:
                raise ApiError("message_not_found")
            self.ws.delete(source)
            return
        text, blocks = self._content(params)
        if _truthy(params.get("replace_original")):
            if source is None:
                raise ApiError("message_not_found")
            source.text = text
            source.blocks = blocks or []
            self.ws.changed(source)
            return
        thread_ts = params.get("thread_ts") or hook.thread_ts
        in_channel = params.get("response_type") == "in_channel"
        message = Message(
            channel=hook.channel,
            ts=self.ws.next_ts(),
            user=BOT_USER_ID,
            text=text,
            blocks=blocks or [],
            thread_ts=str(thread_ts) if thread_ts else None,
            bot_id=BOT_ID,
            ephemeral_for=None if in_channel else (hook.user or YOU),
        )
        self.ws.post(message)

    # --- Socket Mode ----------------------------------------------------------------------

    @property
    def socket_connected(self) -> bool:
        return any(not ws.closed for ws in self._sockets)

    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets)})
        self._socket_open.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                envelope_id = data.get("envelope_id") if isinstance(data, dict) else None
                future = self._acks.pop(envelope_id, None) if envelope_id else None
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_open.clear()
        return ws

    async def send_envelope(self, kind: str, payload: JSON, *, timeout_s: float = 5.0) -> JSON:
        """Send one Socket Mode envelope to the connected app; returns the app's ack."""
        async with asyncio.timeout(timeout_s):
            await self._socket_open.wait()
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        self.socket_envelopes.append(envelope)
        await self._sockets[-1].send_json(envelope)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._acks.pop(envelope_id, None)

    async def close_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
