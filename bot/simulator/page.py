"""The simulator's page: a Slack-like channel view, threads, modals and App Home.

Everything is rendered on the server (Block Kit through `blockkit.Renderer`); the page's
script only sends what the person did (`POST <base>/ui/…`, JSON bodies, which a form on
another site cannot send) and swaps in the HTML fragments that arrive on its event stream
(`GET <base>/events`, Server-Sent Events, one stream per page).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from bot.simulator.blockkit import Renderer, emoji, esc
from bot.simulator.interactions import Interactions, Refused
from bot.simulator.workspace import (
    DEMO_CHANNEL,
    GENERAL,
    TEAM_NAME,
    YOU,
    Change,
    Message,
    View,
    Workspace,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
QUICK_REACTIONS = ("+1", "eyes", "tada", "white_check_mark")
KEEPALIVE_S = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dom_id(prefix: str, channel: str, ts: str) -> str:
    return f"{prefix}-{channel}-{ts.replace('.', '-')}"


class Page:
    """Renders the workspace for one person and takes what they do."""

    def __init__(self, workspace: Workspace, people: Interactions, *, base: str) -> None:
        self.ws = workspace
        self.people = people
        self.base = base
        self.render = Renderer(
            user_name=lambda uid: u.name if (u := workspace.users.get(uid)) else None,
            channel_name=lambda cid: c.name if (c := workspace.channels.get(cid)) else None,
        )
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )
        self._closing = asyncio.Event()

    # --- fragments ------------------------------------------------------------------------

    def message_html(self, message: Message, viewer: str, *, in_thread: bool = False) -> str:
        """One message as the page shows it, in the channel or in the thread panel."""
        author = self.ws.users.get(message.user)
        name = author.real_name if author else message.user
        is_bot = bool(author and author.is_bot)
        when = dt.datetime.fromtimestamp(float(message.ts), dt.UTC).strftime("%H:%M")
        if message.blocks and any(b.get("type") != "rich_text" for b in message.blocks):
            content = self.render.blocks(message.blocks)
        else:
            content = f'<div class="bk-text">{self.render.mrkdwn(message.text)}</div>'
        prefix = "t" if in_thread else "m"
        classes = ["msg"]
        extra = ""
        if message.ephemeral_for:
            classes.append("ephemeral")
            extra += '<div class="only-you">👁 Only visible to you</div>'
        head = f'<span class="author">{esc(name)}</span>'
        if is_bot:
            head += '<span class="app-badge">APP</span>'
        head += f'<time class="time" datetime="{esc(message.ts)}">{when}</time>'
        if message.edited:
            head += '<span class="edited">(edited)</span>'
        reactions = ""
        if message.reactions:
            chips = "".join(
                f'<button type="button" class="reaction{" mine" if viewer in users else ""}" '
                f'data-name="{esc(rname)}" title=":{esc(rname)}:">'
                f"{emoji(esc(':' + rname + ':'))} <span>{len(users)}</span></button>"
                for rname, users in message.reactions.items()
            )
            reactions = f'<div class="reactions">{chips}</div>'
        tools = ""
        if not message.ephemeral_for:
            picks = "".join(
                f'<button type="button" class="quick-react" data-name="{r}" '
                f'title=":{r}:">{emoji(":" + r + ":")}</button>'
                for r in QUICK_REACTIONS
            )
            reply = ""
            if not in_thread and not message.is_reply:
                reply = (
                    '<button type="button" class="open-thread" title="Reply in thread">💬</button>'
                )
            tools = f'<div class="msg-tools">{picks}{reply}</div>'
        replies = ""
        if not in_thread and message.replies:
            count = len(message.replies)
            replies = (
                f'<button type="button" class="open-thread replies">{count} '
                f"{'reply' if count == 1 else 'replies'}</button>"
            )
        initial = esc((name or "?")[:1].upper())
        thread_attr = f' data-thread-ts="{esc(message.thread_ts)}"' if message.thread_ts else ""
        return (
            f'<div class="{" ".join(classes)}" id="{_dom_id(prefix, message.channel, message.ts)}" '
            f'data-channel="{esc(message.channel)}" data-ts="{esc(message.ts)}"{thread_attr} '
            f'data-v="{self.ws.version}">'
            f'<div class="avatar{" bot" if is_bot else ""}" aria-hidden="true">{initial}</div>'
            f'<div class="msg-body"><div class="msg-head">{head}</div>{extra}'
            f'<div class="msg-content">{content}</div>{reactions}{replies}</div>{tools}</div>'
        )

    def modal_html(self, view: View | None) -> str:
        if view is None:
            return ""
        p = view.payload
        title = self.render.text(p.get("title"))
        close = self.render.text(p.get("close")) or "Cancel"
        submit = ""
        if p.get("submit"):
            submit = (
                '<button type="button" class="btn primary" data-submit>'
                f"{self.render.text(p['submit'])}</button>"
            )
        general = ""
        if "" in view.errors:
            general = f'<div class="bk-error" role="alert">{esc(view.errors[""])}</div>'
        body = self.render.blocks(p.get("blocks"), values=view.values, errors=view.errors)
        depth = len(self.ws.modal_stacks.get(view.user) or [])
        back = "\u2190" if depth > 1 else "\u00d7"  # back arrow, or a close cross
        return (
            '<div class="modal-backdrop"><div class="modal" role="dialog" aria-modal="true" '
            f'data-view-id="{esc(view.id)}"><header class="modal-head"><h2>{title}</h2>'
            f'<button type="button" class="modal-x" data-close aria-label="Close">{back}</button>'
            f'</header><div class="modal-body">{general}{body}</div>'
            f'<footer class="modal-foot"><button type="button" class="btn" data-close>{close}'
            f"</button>{submit}</footer></div></div>"
        )

    def home_html(self, user: str) -> str:
        view = self.ws.find_view(self.ws.homes.get(user))
        if view is None:
            return '<div class="home-empty">The app has not published a Home tab for you yet.</div>'
        body = self.render.blocks(view.payload.get("blocks"), values=view.values)
        return f'<div class="home" data-view-id="{esc(view.id)}">{body}</div>'

    def thread_html(self, channel: str, thread_ts: str, viewer: str) -> str:
        return "".join(
            self.message_html(m, viewer, in_thread=True)
            for m in self.ws.thread(channel, thread_ts, viewer)
        )

    # --- pages ----------------------------------------------------------------------------

    def _viewer(self, request: web.Request) -> str:
        user = request.query.get("user", YOU)
        return user if user in self.ws.users else YOU

    def _page(self, request: web.Request, *, tab: str, channel_id: str) -> web.Response:
        viewer = self._viewer(request)
        channel = self.ws.channels.get(channel_id)
        if channel is None or channel.is_im:
            raise web.HTTPNotFound(text="no such channel")
        if tab == "channel":
            main = "".join(
                self.message_html(m, viewer) for m in self.ws.top_level(channel.id, viewer)
            )
        else:
            main = self.home_html(viewer)
        people = [u for u in self.ws.users.values() if not u.is_bot]
        html = self.templates.get_template("page.html").render(
            base=self.base,
            team=TEAM_NAME,
            tab=tab,
            channel=channel,
            channels=self.ws.visible_channels(viewer),
            viewer=self.ws.users[viewer],
            people=people,
            topic=Markup(self.render.mrkdwn(channel.topic)),  # noqa: S704 - rendered escaped
            main=Markup(main),  # noqa: S704 - rendered escaped
            modal=Markup(self.modal_html(self.ws.top_modal(viewer))),  # noqa: S704
            open_thread=request.query.get("thread_ts", ""),
        )
        return web.Response(text=html, content_type="text/html")

    async def channel_page(self, request: web.Request) -> web.StreamResponse:
        default = DEMO_CHANNEL if DEMO_CHANNEL in self.ws.channels else GENERAL
        return self._page(request, tab="channel", channel_id=request.query.get("channel", default))

    async def home_page(self, request: web.Request) -> web.StreamResponse:
        default = DEMO_CHANNEL if DEMO_CHANNEL in self.ws.channels else GENERAL
        return self._page(request, tab="home", channel_id=default)

    async def archives(self, request: web.Request) -> web.StreamResponse:
        """A permalink (`/archives/C…/p…`) opens the channel, with the thread if it is one."""
        channel = request.match_info["channel"]
        thread = request.query.get("thread_ts")
        raw = request.match_info["p"].removeprefix("p")
        ts = f"{raw[:-6]}.{raw[-6:]}" if raw.isdigit() and len(raw) > 6 else raw
        location = f"{self.base}/?channel={channel}&thread_ts={thread or ts}"
        raise web.HTTPFound(location)

    async def pane_fragment(self, request: web.Request) -> web.StreamResponse:
        """The main pane and the modal as they are now (the page asks once its stream is
        open, so nothing that happened in between is missed)."""
        viewer = self._viewer(request)
        if request.query.get("tab") == "home":
            main = self.home_html(viewer)
        else:
            channel = request.query.get("channel", "")
            main = "".join(self.message_html(m, viewer) for m in self.ws.top_level(channel, viewer))
        modal = self.modal_html(self.ws.top_modal(viewer))
        return web.json_response({"main": main, "modal": modal, "v": self.ws.version})

    async def thread_fragment(self, request: web.Request) -> web.StreamResponse:
        viewer = self._viewer(request)
        channel = request.query.get("channel", "")
        ts = request.query.get("ts", "")
        if self.ws.find_message(channel, ts) is None:
            raise web.HTTPNotFound(text="no such thread")
        return web.Response(text=self.thread_html(channel, ts, viewer), content_type="text/html")

    # --- what the person does -------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="JSON only")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="bad JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="bad JSON")
        user = body.get("user")
        body["user"] = user if isinstance(user, str) and user in self.ws.users else YOU
        return body

    @staticmethod
    def _str(body: dict[str, Any], key: str) -> str:
        value = body.get(key)
        return value if isinstance(value, str) else ""

    async def ui(self, request: web.Request) -> web.StreamResponse:
        """POST <base>/ui/<what>: say, click, submit, close, react, home."""
        what = request.match_info["what"]
        body = await self._body(request)
        user = body["user"]
        s = self._str
        try:
            if what == "say":
                await self.people.say(
                    user,
                    s(body, "channel"),
                    s(body, "text"),
                    thread_ts=s(body, "thread_ts") or None,
                )
            elif what == "click":
                await self.people.click(
                    user,
                    block_id=s(body, "block_id"),
                    action_id=s(body, "action_id"),
                    channel=s(body, "channel") or None,
                    ts=s(body, "ts") or None,
                    view_id=s(body, "view_id") or None,
                )
            elif what == "submit":
                values = body.get("values")
                clean = {
                    str(b): {str(a): str(v) for a, v in acts.items()}
                    for b, acts in (values if isinstance(values, dict) else {}).items()
                    if isinstance(acts, dict)
                }
                await self.people.submit(user, s(body, "view_id"), clean)
            elif what == "close":
                await self.people.close_view(user, s(body, "view_id"))
            elif what == "react":
                self.people.react(user, s(body, "channel"), s(body, "ts"), s(body, "name"))
            elif what == "home":
                self.people.open_home(user)
            else:
                raise web.HTTPNotFound(text="unknown action")
        except Refused as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=409)
        return web.json_response({"ok": True})

    # --- live updates ---------------------------------------------------------------------

    def fragments(self, change: Change, viewer: str) -> list[tuple[str, dict[str, Any]]]:
        """What one change means for one person's page: (event name, data) pairs."""
        if change.user is not None and change.user != viewer and change.kind != "message":
            return []
        if change.kind == "message":
            message = self.ws.find_message(change.channel or "", change.ts or "")
            if message is None or message.ephemeral_for not in (None, viewer):
                return []
            data = {
                "channel": message.channel,
                "ts": message.ts,
                "thread_ts": message.thread_ts if message.is_reply else None,
                "top": not message.is_reply or message.reply_broadcast,
                "html": self.message_html(message, viewer),
                "thread_html": self.message_html(message, viewer, in_thread=True),
            }
            return [("message", data)]
        if change.kind == "message_deleted":
            return [("message_deleted", {"channel": change.channel, "ts": change.ts})]
        if change.kind == "view":
            return [("view", {"html": self.modal_html(self.ws.top_modal(viewer))})]
        if change.kind == "home":
            return [("home", {"html": self.home_html(viewer)})]
        if change.kind == "notice":
            return [("notice", {"text": change.text})]
        return []

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET <base>/events?user=…: this page's Server-Sent Events."""
        viewer = self._viewer(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = self.ws.subscribe()
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await response.write(b"retry: 1000\nevent: ready\ndata: {}\n\n")
            while not self._closing.is_set():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, closing}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if not self._closing.is_set():
                        await response.write(b": keepalive\n\n")
                    continue
                for name, data in self.fragments(getter.result(), viewer):
                    await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            closing.cancel()
            self.ws.unsubscribe(queue)
        return response

    def close(self) -> None:
        """End every event stream (server shutdown)."""
        self._closing.set()
