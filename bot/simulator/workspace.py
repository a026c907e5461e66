"""The simulated Slack workspace, in memory: people, channels, messages, views, triggers.

Everything here is plain state and its wire shapes (the JSON Slack would send for a user, a
channel or a message). The Web API (`webapi.py`), what people do on the page
(`interactions.py`) and the page itself (`page.py`) all read and change this one object;
each change is announced to subscribers (the page's live stream) as a `Change`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

TEAM_ID = "T0CLARITY"
TEAM_NAME = "Clarity Demo"
TEAM_DOMAIN = "clarity-demo"
ENTERPRISE_ID = None
APP_ID = "A0CLARITY"
BOT_USER_ID = "UBOTCLARITY"
BOT_ID = "BCLARITY"
BOT_NAME = "clarity"
YOU = "U0YOU"
GENERAL = "C0GENERAL"
DEMO_CHANNEL = "C0DEMO"
# The legacy verification token Slack still puts in every payload (Bolt ignores it).
VERIFICATION_TOKEN = "sim-verification-token"  # noqa: S105 - a public, meaningless value

# A trigger_id may open a view within 3 s, once; a response_url takes 5 posts in 30 min.
TRIGGER_TTL_S = 3.0
HOOK_TTL_S = 30 * 60.0
HOOK_USES = 5
MAX_MODAL_STACK = 3


@dataclass
class User:
    """A person (or the app's bot user) in the workspace."""

    id: str
    name: str
    real_name: str
    is_bot: bool = False
    bot_id: str | None = None

    def wire(self) -> JSON:
        """users.info's `user`."""
        return {
            "id": self.id,
            "team_id": TEAM_ID,
            "name": self.name,
            "deleted": False,
            "real_name": self.real_name,
            "tz": "Europe/London",
            "is_admin": False,
            "is_owner": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "profile": {
                "display_name": self.name,
                "real_name": self.real_name,
                "real_name_normalized": self.real_name,
                "display_name_normalized": self.name,
                "team": TEAM_ID,
                **({"bot_id": self.bot_id, "api_app_id": APP_ID} if self.bot_id else {}),
            },
        }


@dataclass
class Channel:
    """A public or private channel, or a direct-message channel (`is_im`)."""

    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_private: bool = False
    is_im: bool = False
    topic: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    # Test-suite channels made on first use: everyone is a member.
    open_membership: bool = False

    def has_member(self, user_id: str) -> bool:
        return self.open_membership or user_id in self.members

    def wire(self, *, viewer: str = BOT_USER_ID) -> JSON:
        """conversations.info's `channel`."""
        if self.is_im:
            other = next(iter(self.members - {BOT_USER_ID}), "")
            return {"id": self.id, "is_im": True, "user": other, "created": self.created}
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_private": self.is_private,
            "is_archived": False,
            "is_general": self.id == GENERAL,
            "is_member": self.has_member(viewer),
            "created": self.created,
            "creator": YOU,
            "topic": {"value": self.topic, "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
            "num_members": len(self.members),
        }


@dataclass
class Message:
    """One message in a channel; `ephemeral_for` makes it visible to one person only."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[JSON] = field(default_factory=list)
    thread_ts: str | None = None
    bot_id: str | None = None
    metadata: JSON | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)
    edited: JSON | None = None
    ephemeral_for: str | None = None
    reply_broadcast: bool = False
    client_msg_id: str | None = None
    # Replies, kept on the parent for the thread summary (oldest first).
    replies: list[str] = field(default_factory=list)
    reply_users: list[str] = field(default_factory=list)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def wire(self, *, with_metadata: bool = True, parent_user: str | None = None) -> JSON:
        """The message as conversations.history / replies and events show it."""
        out: JSON = {"type": "message", "text": self.text, "user": self.user, "ts": self.ts}
        out["team"] = TEAM_ID
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = APP_ID
            out["bot_profile"] = {
                "id": self.bot_id,
                "app_id": APP_ID,
                "name": "Clarity",
                "team_id": TEAM_ID,
                "deleted": False,
            }
        if self.client_msg_id:
            out["client_msg_id"] = self.client_msg_id
        if self.blocks:
            out["blocks"] = self.blocks
        if self.is_reply:
            out["thread_ts"] = self.thread_ts
            if parent_user:
                out["parent_user_id"] = parent_user
            if self.reply_broadcast:
                out["subtype"] = "thread_broadcast"
        elif self.replies:
            out["thread_ts"] = self.ts
            out["reply_count"] = len(self.replies)
            out["reply_users_count"] = len(self.reply_users)
            out["reply_users"] = list(self.reply_users)
            out["latest_reply"] = self.replies[-1]
            out["is_locked"] = False
            out["subscribed"] = False
        if self.edited:
            out["edited"] = dict(self.edited)
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in self.reactions.items()
            ]
        if with_metadata and self.metadata:
            out["metadata"] = self.metadata
        if self.ephemeral_for:
            out["is_ephemeral"] = True
        return out


@dataclass
class View:
    """A modal (in a person's stack) or a Home tab, with what the person typed into it."""

    id: str
    user: str
    payload: JSON
    root_view_id: str
    previous_view_id: str | None = None
    hash: str = field(default_factory=lambda: f"{time.time():.6f}.{secrets.token_hex(4)}")
    values: dict[str, dict[str, JSON]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.payload.get("type", "modal"))

    def wire(self) -> JSON:
        """The view as views.* answers and interaction payloads carry it."""
        p = self.payload
        out: JSON = {
            "id": self.id,
            "team_id": TEAM_ID,
            "type": self.type,
            "blocks": p.get("blocks", []),
            "private_metadata": p.get("private_metadata", ""),
            "callback_id": p.get("callback_id", ""),
            "state": {"values": self.values},
            "hash": self.hash,
            "title": p.get("title"),
            "clear_on_close": bool(p.get("clear_on_close", False)),
            "notify_on_close": bool(p.get("notify_on_close", False)),
            "close": p.get("close"),
            "submit": p.get("submit"),
            "previous_view_id": self.previous_view_id,
            "root_view_id": self.root_view_id,
            "app_id": APP_ID,
            "external_id": p.get("external_id", ""),
            "app_installed_team_id": TEAM_ID,
            "bot_id": BOT_ID,
        }
        if self.type == "home":
            for key in ("submit", "close", "title", "clear_on_close", "notify_on_close"):
                out.pop(key, None)
        return out


@dataclass
class Trigger:
    """A trigger_id handed to the app with a command or a click."""

    id: str
    user: str
    issued_at: float
    used: bool = False


@dataclass
class Hook:
    """A response_url: where the app answers a command or a click, and about what."""

    token: str
    user: str | None
    channel: str | None
    message_ts: str | None = None
    thread_ts: str | None = None
    source_ephemeral: bool = False
    created_at: float = 0.0
    uses: int = 0


@dataclass(frozen=True)
class Change:
    """Something visible changed; the page re-renders what it names."""

    kind: str  # message | message_deleted | view | home | notice
    channel: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    user: str | None = None  # for ephemerals, views and notices: who sees it
    text: str = ""


class Workspace:
    """The whole simulated workspace."""

    def __init__(
        self,
        *,
        lenient: bool = False,
        trigger_ttl_s: float = TRIGGER_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `lenient`: the test suite's mode — channels are made on first use (everyone a
        # member) and trigger_ids the workspace never issued are accepted once.
        # `clock` measures trigger and response_url lifetimes (tests move it by hand).
        self.lenient = lenient
        self.trigger_ttl_s = trigger_ttl_s
        self.clock = clock
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, list[Message]] = {}
        self.views: dict[str, View] = {}
        self.modal_stacks: dict[str, list[str]] = {}
        self.homes: dict[str, str] = {}
        self.triggers: dict[str, Trigger] = {}
        self.hooks: dict[str, Hook] = {}
        self._subscribers: set[asyncio.Queue[Change]] = set()
        # Counts changes: what a page shows was rendered at some version, and an older
        # rendering never replaces a newer one (a fetch can cross a live update).
        self.version = 0
        self._last_ts = 0.0
        self._ids = itertools.count(1)
        self._seed()

    def _seed(self) -> None:
        self.add_user(BOT_USER_ID, BOT_NAME, real_name="Clarity", is_bot=True, bot_id=BOT_ID)
        self.add_user(YOU, "you", real_name="You")
        self.add_channel(GENERAL, "general", members={YOU, BOT_USER_ID})
        self.add_channel(
            DEMO_CHANNEL,
            "clarity-demo",
            members={YOU, BOT_USER_ID},
            topic="Try `/clarity add a friendly greeting`",
        )
        if self.lenient:
            for channel in self.channels.values():
                channel.open_membership = True

    # --- people and channels -----------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        is_bot: bool = False,
        bot_id: str | None = None,
    ) -> User:
        user = User(user_id, name, real_name or name.title(), is_bot=is_bot, bot_id=bot_id)
        self.users[user_id] = user
        for channel in self.channels.values():
            if channel.id == GENERAL and not is_bot:
                channel.members.add(user_id)
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: set[str] | None = None,
        is_private: bool = False,
        topic: str = "",
    ) -> Channel:
        channel = Channel(channel_id, name, set(members or ()), is_private=is_private, topic=topic)
        self.channels[channel_id] = channel
        self.messages.setdefault(channel_id, [])
        return channel

    def find_channel(self, ref: str) -> Channel | None:
        """A channel by id, `#name` or name; a user id opens the app's DM with them."""
        ref = ref.strip()
        if ref in self.channels:
            return self.channels[ref]
        if ref.startswith("U") and ref in self.users:
            return self.direct_channel(ref)
        name = ref.removeprefix("#")
        for channel in self.channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        if self.lenient and ref[:1] in ("C", "G", "D") and ref.isalnum():
            channel = self.add_channel(ref, ref.lower())
            channel.open_membership = True
            return channel
        return None

    def direct_channel(self, user_id: str) -> Channel:
        """The app's direct-message channel with a person."""
        for channel in self.channels.values():
            if channel.is_im and user_id in channel.members:
                return channel
        channel = self.add_channel(f"D{user_id[1:]}", user_id, members={user_id, BOT_USER_ID})
        channel.is_im = True
        return channel

    def visible_channels(self, user_id: str) -> list[Channel]:
        return [
            c
            for c in self.channels.values()
            if not c.is_im and (not c.is_private or c.has_member(user_id))
        ]

    # --- messages ------------------------------------------------------------------------

    def next_ts(self) -> str:
        """A message ts as Slack makes them: the time, to the microsecond, unique here."""
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    def find_message(self, channel: str, ts: str) -> Message | None:
        for message in self.messages.get(channel, []):
            if message.ts == ts:
                return message
        return None

    def post(self, message: Message) -> Message:
        """Add a message (or a reply, which also updates its parent's thread summary)."""
        if message.thread_ts:
            parent = self.find_message(message.channel, message.thread_ts)
            if parent is not None and parent.is_reply and parent.thread_ts:
                message.thread_ts = parent.thread_ts  # a reply to a reply joins its thread
                parent = self.find_message(message.channel, parent.thread_ts)
            if parent is not None and not message.ephemeral_for:
                parent.replies.append(message.ts)
                if message.user not in parent.reply_users:
                    parent.reply_users.append(message.user)
                self.notify(Change("message", message.channel, parent.ts, None))
        self.messages.setdefault(message.channel, []).append(message)
        self.notify(
            Change(
                "message",
                message.channel,
                message.ts,
                message.thread_ts,
                user=message.ephemeral_for,
            )
        )
        return message

    def delete(self, message: Message) -> None:
        self.messages[message.channel] = [
            m for m in self.messages.get(message.channel, []) if m is not message
        ]
        if message.is_reply and message.thread_ts:
            parent = self.find_message(message.channel, message.thread_ts)
            if parent is not None and message.ts in parent.replies:
                parent.replies.remove(message.ts)
                self.notify(Change("message", message.channel, parent.ts))
        self.notify(
            Change(
                "message_deleted",
                message.channel,
                message.ts,
                message.thread_ts,
                user=message.ephemeral_for,
            )
        )

    def changed(self, message: Message) -> None:
        self.notify(
            Change(
                "message",
                message.channel,
                message.ts,
                message.thread_ts,
                user=message.ephemeral_for,
            )
        )

    def top_level(self, channel: str, viewer: str) -> Iterator[Message]:
        """What the channel shows a person: messages and broadcasts, and their ephemerals."""
        for m in self.messages.get(channel, []):
            if m.ephemeral_for not in (None, viewer):
                continue
            if not m.is_reply or m.reply_broadcast:
                yield m

    def thread(self, channel: str, thread_ts: str, viewer: str | None = None) -> list[Message]:
        """The parent and its replies (and the viewer's ephemerals in it), oldest first."""
        return [
            m
            for m in self.messages.get(channel, [])
            if (m.ts == thread_ts or m.thread_ts == thread_ts)
            and (m.ephemeral_for is None or m.ephemeral_for == viewer)
        ]

    # --- views ---------------------------------------------------------------------------

    def new_view_id(self) -> str:
        return f"V{next(self._ids):04d}{secrets.token_hex(3).upper()}"

    def open_modal(self, user: str, payload: JSON, *, push: bool = False) -> View:
        stack = self.modal_stacks.setdefault(user, [])
        if not push:
            for view_id in stack:
                self.views.pop(view_id, None)
            stack.clear()
        view_id = self.new_view_id()
        view = View(
            view_id,
            user,
            payload,
            root_view_id=stack[0] if stack else view_id,
            previous_view_id=stack[-1] if stack else None,
        )
        self.views[view_id] = view
        stack.append(view_id)
        self.notify(Change("view", user=user))
        return view

    def notify_view(self, view: View) -> None:
        """A view's errors or typed values changed: show it again."""
        self.notify(Change("home" if view.type == "home" else "view", user=view.user))

    def top_modal(self, user: str) -> View | None:
        stack = self.modal_stacks.get(user) or []
        return self.views.get(stack[-1]) if stack else None

    def close_modal(self, user: str, *, all_views: bool = False) -> list[View]:
        """Pop the top modal (or the whole stack); returns the views closed."""
        stack = self.modal_stacks.get(user) or []
        closed: list[View] = []
        while stack:
            view = self.views.pop(stack.pop(), None)
            if view is not None:
                closed.append(view)
            if not all_views:
                break
        self.notify(Change("view", user=user))
        return closed

    def replace_view(self, view: View, payload: JSON) -> View:
        view.payload = payload
        view.hash = f"{time.time():.6f}.{secrets.token_hex(4)}"
        view.errors = {}
        # Inputs keep what was typed in blocks that are still there, as Slack does.
        block_ids = {b.get("block_id") for b in payload.get("blocks", []) if isinstance(b, dict)}
        view.values = {k: v for k, v in view.values.items() if k in block_ids}
        self.notify(Change("home" if view.type == "home" else "view", user=view.user))
        return view

    def publish_home(self, user: str, payload: JSON) -> View:
        view_id = self.homes.get(user)
        if view_id and view_id in self.views:
            return self.replace_view(self.views[view_id], payload)
        view_id = self.new_view_id()
        view = View(view_id, user, payload, root_view_id=view_id)
        self.views[view_id] = view
        self.homes[user] = view_id
        self.notify(Change("home", user=user))
        return view

    def find_view(self, view_id: str | None = None, external_id: str | None = None) -> View | None:
        if view_id:
            return self.views.get(view_id)
        if external_id:
            for view in self.views.values():
                if view.payload.get("external_id") == external_id:
                    return view
        return None

    # --- triggers and response URLs ------------------------------------------------------

    def issue_trigger(self, user: str) -> Trigger:
        tid = f"{next(self._ids)}{int(time.time())}.{TEAM_ID[1:]}.{secrets.token_hex(16)}"
        trigger = Trigger(tid, user, self.clock())
        self.triggers[tid] = trigger
        return trigger

    def exchange_trigger(self, trigger_id: str) -> tuple[Trigger | None, str | None]:
        """Use a trigger for a view: (the trigger, None) or (None, Slack's error code)."""
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            if self.lenient and trigger_id:
                trigger = Trigger(trigger_id, YOU, self.clock())
                self.triggers[trigger_id] = trigger
            else:
                return None, "invalid_trigger_id"
        if trigger.used:
            return None, "exchanged_trigger_id"
        if self.clock() - trigger.issued_at > self.trigger_ttl_s:
            return None, "expired_trigger_id"
        trigger.used = True
        return trigger, None

    def issue_hook(
        self,
        user: str | None,
        channel: str | None,
        *,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        source_ephemeral: bool = False,
        token: str | None = None,
    ) -> Hook:
        hook = Hook(
            token or uuid.uuid4().hex,
            user,
            channel,
            message_ts=message_ts,
            thread_ts=thread_ts,
            source_ephemeral=source_ephemeral,
            created_at=self.clock(),
        )
        self.hooks[hook.token] = hook
        return hook

    # --- change notifications ------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Change]) -> None:
        self._subscribers.discard(queue)

    def notify(self, change: Change) -> None:
        self.version += 1
        for queue in list(self._subscribers):
            if queue.full():
                # A page that stopped reading is dropped rather than holding memory.
                self._subscribers.discard(queue)
                continue
            queue.put_nowait(change)

    def notice(self, user: str, text: str) -> None:
        """A transient note on a person's page (a failed command, a refused click)."""
        self.notify(Change("notice", user=user, text=text))
