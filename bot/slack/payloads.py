"""Narrow models of the Slack payloads Clarity reads: only the fields it uses."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SlashCommand(_Payload):
    """A `/clarity` invocation (form fields of the command request)."""

    text: str = ""
    user_id: str
    user_name: str = ""
    channel_id: str
    channel_name: str = ""
    team_id: str = ""
    trigger_id: str = ""
    response_url: str | None = None

    @property
    def delivery_id(self) -> str:
        """Slash commands carry no event id; trigger_id is unique per invocation."""
        raw = "|".join((self.team_id, self.channel_id, self.user_id, self.trigger_id))
        return hashlib.sha256(raw.encode()).hexdigest()


class MessageEvent(_Payload):
    type: str
    channel: str = ""
    user: str | None = None
    text: str = ""
    ts: str = ""
    thread_ts: str | None = None
    bot_id: str | None = None
    subtype: str | None = None

    # Subtypes that are still a person writing in the thread; edits, deletions, joins,
    # bot posts and the like are not replies.
    HUMAN_SUBTYPES: ClassVar[frozenset[str | None]] = frozenset(
        {None, "thread_broadcast", "file_share"}
    )

    @property
    def is_human_reply(self) -> bool:
        """A person's reply inside a thread (not the thread's parent, not a bot)."""
        return (
            self.subtype in self.HUMAN_SUBTYPES
            and self.bot_id is None
            and self.user is not None
            and self.thread_ts is not None
            and self.thread_ts != self.ts
        )


class EventCallback(_Payload):
    event_id: str
    team_id: str = ""
    event: MessageEvent


class AppHomeOpened(_Payload):
    user: str
    tab: str = "home"


class SlackUser(_Payload):
    id: str
    username: str | None = None
    name: str | None = None

    @property
    def display(self) -> str:
        return self.username or self.name or self.id


class Channel(_Payload):
    id: str
    name: str | None = None


class ActionMessage(_Payload):
    ts: str


class Action(_Payload):
    action_id: str
    block_id: str = ""
    value: str | None = None
    action_ts: str = ""


class BlockActions(_Payload):
    """A button click (`block_actions`) with its one action."""

    user: SlackUser
    channel: Channel | None = None
    message: ActionMessage | None = None
    response_url: str | None = None
    trigger_id: str = ""
    actions: list[Action] = Field(min_length=1)

    @property
    def action(self) -> Action:
        return self.actions[0]

    @property
    def delivery_id(self) -> str:
        """The same for one click however often it is delivered; another click differs."""
        action = self.action
        raw = "|".join(
            (self.user.id, self.trigger_id, action.action_id, action.block_id, action.action_ts)
        )
        return hashlib.sha256(raw.encode()).hexdigest()


class ViewState(_Payload):
    values: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)

    def text(self, block_id: str, action_id: str) -> str:
        """A plain-text input's value, stripped ('' when empty)."""
        element = self.values.get(block_id, {}).get(action_id, {})
        value = element.get("value")
        return value.strip() if isinstance(value, str) else ""


class View(_Payload):
    id: str
    callback_id: str = ""
    private_metadata: str = ""
    state: ViewState = Field(default_factory=ViewState)


class ViewSubmission(_Payload):
    user: SlackUser
    view: View
