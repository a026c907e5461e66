"""What a person does in the simulated workspace, and what Slack then does with the app's
answer: post a message (an Events API `message` to the app), run a slash command (its ack
shown privately), click a button, submit or close a modal, react, open App Home.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bot.simulator import validation
from bot.simulator.delivery import Answer, Delivery
from bot.simulator.webapi import ApiError, WebApi, assign_ids
from bot.simulator.workspace import (
    APP_ID,
    BOT_USER_ID,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
    Channel,
    Hook,
    Message,
    View,
    Workspace,
)

JSON = dict[str, Any]
SLACKBOT = "USLACKBOT"
_MENTION = re.compile(r"(?<![\w<])@([a-z0-9._\-]+)")
_CHANNEL_REF = re.compile(r"(?<![\w<&])#([a-z0-9_\-]+)")


class Refused(Exception):
    """What the person tried cannot be done (shown to them as a note)."""


class Interactions:
    """A person's actions, turned into what Slack sends the app."""

    def __init__(
        self,
        workspace: Workspace,
        api: WebApi,
        delivery: Delivery,
        *,
        commands: Sequence[str] = ("/clarity",),
    ) -> None:
        self.ws = workspace
        self.api = api
        self.delivery = delivery
        self.commands = tuple(commands)
        if SLACKBOT not in workspace.users:
            workspace.add_user(SLACKBOT, "slackbot", real_name="Slackbot", is_bot=True)

    # --- helpers --------------------------------------------------------------------------

    def _user_wire(self, user_id: str) -> JSON:
        user = self.ws.users.get(user_id)
        name = user.name if user else user_id
        return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}

    def _channel(self, channel_id: str, user: str) -> Channel:
        channel = self.ws.channels.get(channel_id)
        if channel is None or not (channel.has_member(user) or not channel.is_private):
            raise Refused("That channel does not exist.")
        return channel

    def slack_text(self, typed: str) -> str:
        """What a Slack client sends for typed text: escapes, and @name / #name as mentions."""
        text = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        by_name = {u.name: u.id for u in self.ws.users.values()}
        channels = {c.name: c.id for c in self.ws.channels.values() if not c.is_im}
        text = _MENTION.sub(
            lambda m: f"<@{by_name[m.group(1)]}>" if m.group(1) in by_name else m.group(0), text
        )
        return _CHANNEL_REF.sub(
            lambda m: (
                f"<#{channels[m.group(1)]}|{m.group(1)}>" if m.group(1) in channels else m.group(0)
            ),
            text,
        )

    def _failed(self, user: str, channel: str, what: str, answer: Answer) -> None:
        """Slack's own note when the app did not answer in time or answered with an error."""
        error = answer.error or "dispatch_failed"
        self.ws.post(
            Message(
                channel=channel,
                ts=self.ws.next_ts(),
                user=SLACKBOT,
                text=f'{what} failed with the error "{error}"',
                ephemeral_for=user,
            )
        )

    # --- messages and commands ------------------------------------------------------------

    async def say(
        self, user: str, channel_id: str, typed: str, *, thread_ts: str | None = None
    ) -> Message | Answer | None:
        """Type into a composer: a slash command, or a message (delivered as an event)."""
        if typed.startswith("/"):
            return await self.command(user, channel_id, typed, thread_ts=thread_ts)
        channel = self._channel(channel_id, user)
        if not typed.strip():
            return None
        text = self.slack_text(typed)
        message = Message(
            channel=channel.id,
            ts=self.ws.next_ts(),
            user=user,
            text=text,
            blocks=[_rich_text(typed)],
            thread_ts=thread_ts,
            client_msg_id=str(uuid.uuid4()),
        )
        self.ws.post(message)
        if channel.has_member(BOT_USER_ID):
            event = message.wire()
            event.update(
                {
                    "channel": channel.id,
                    "event_ts": message.ts,
                    "channel_type": "im"
                    if channel.is_im
                    else ("group" if channel.is_private else "channel"),
                }
            )
            if message.is_reply and message.thread_ts:
                parent = self.ws.find_message(channel.id, message.thread_ts)
                if parent is not None:
                    event["parent_user_id"] = parent.user
            self.delivery.event(event)
        return message

    async def command(
        self, user: str, channel_id: str, line: str, *, thread_ts: str | None = None
    ) -> Answer | None:
        """`/command text`: the form body Slack sends; the ack is shown privately."""
        channel = self._channel(channel_id, user)
        name, _, text = line.strip().partition(" ")
        if name not in self.commands:
            self.ws.post(
                Message(
                    channel=channel.id,
                    ts=self.ws.next_ts(),
                    user=SLACKBOT,
                    text=f"`{name}` is not a valid command. In Slack, all messages that start "
                    'with the "/" character are interpreted as commands.',
                    ephemeral_for=user,
                )
            )
            return None
        trigger = self.ws.issue_trigger(user)
        hook = self.ws.issue_hook(user, channel.id, thread_ts=thread_ts)
        person = self.ws.users.get(user)
        fields = Delivery.command_body(
            command=name,
            text=text.strip(),
            user_id=user,
            user_name=person.name if person else user,
            channel_id=channel.id,
            channel_name=channel.name if not channel.is_im else "directmessage",
            trigger_id=trigger.id,
            response_url=self.api.hook_url(hook),
        )
        answer = await self.delivery.command(fields)
        if not answer.ok:
            self._failed(user, channel.id, name, answer)
            return answer
        self._show_ack(hook, answer)
        return answer

    def _show_ack(self, hook: Hook, answer: Answer) -> None:
        """A command's ack body is its first answer: ephemeral unless `in_channel`."""
        body = answer.json
        if body is None:
            if answer.text.strip():
                body = {"text": answer.text.strip()}
            else:
                return
        if not (body.get("text") or body.get("blocks")):
            return
        try:
            self.api.apply_response(hook, body)
        except ApiError as exc:
            assert hook.user is not None and hook.channel is not None
            self._failed(hook.user, hook.channel, "The app's answer", Answer(200, error=exc.error))

    # --- buttons --------------------------------------------------------------------------

    def _find_button(self, blocks: list[Any], block_id: str, action_id: str) -> JSON | None:
        for block in blocks:
            if not isinstance(block, dict) or block.get("block_id") != block_id:
                continue
            elements = list(block.get("elements") or [])
            if isinstance(block.get("accessory"), dict):
                elements.append(block["accessory"])
            for element in elements:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return element
        return None

    def _action(self, element: JSON, block_id: str) -> JSON:
        action: JSON = {
            "action_id": element.get("action_id"),
            "block_id": block_id,
            "text": element.get("text"),
            "type": element.get("type", "button"),
            "action_ts": f"{time.time():.6f}",
        }
        for key in ("value", "style", "url"):
            if key in element:
                action[key] = element[key]
        return action

    def _base_payload(self, kind: str, user: str, trigger: str | None) -> JSON:
        payload: JSON = {
            "type": kind,
            "user": self._user_wire(user),
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
        }
        if trigger:
            payload["trigger_id"] = trigger
        payload["team"] = {"id": TEAM_ID, "domain": TEAM_DOMAIN}
        payload["enterprise"] = None
        payload["is_enterprise_install"] = False
        return payload

    async def click(
        self,
        user: str,
        *,
        block_id: str,
        action_id: str,
        channel: str | None = None,
        ts: str | None = None,
        view_id: str | None = None,
    ) -> Answer:
        """Press a button in a message (channel + ts) or a view (view_id)."""
        trigger = self.ws.issue_trigger(user).id
        payload = self._base_payload("block_actions", user, trigger)
        if view_id:
            view = self.ws.views.get(view_id)
            if view is None or view.user != user:
                raise Refused("That view is closed.")
            element = self._find_button(view.payload.get("blocks") or [], block_id, action_id)
            if element is None:
                raise Refused("That button is gone.")
            payload["container"] = {"type": "view", "view_id": view.id}
            payload["view"] = view.wire()
        else:
            message = self.ws.find_message(channel or "", ts or "")
            if message is None or message.ephemeral_for not in (None, user):
                raise Refused("That message is gone.")
            element = self._find_button(message.blocks, block_id, action_id)
            if element is None:
                raise Refused("That button is gone.")
            where = self.ws.channels[message.channel]
            ephemeral = message.ephemeral_for is not None
            container: JSON = {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": where.id,
                "is_ephemeral": ephemeral,
            }
            if message.is_reply:
                container["thread_ts"] = message.thread_ts
            payload["container"] = container
            payload["channel"] = {"id": where.id, "name": where.name}
            if not ephemeral:
                payload["message"] = self.api._wire(message, with_metadata=False)
            hook = self.ws.issue_hook(
                user,
                where.id,
                message_ts=message.ts,
                thread_ts=message.thread_ts,
                source_ephemeral=ephemeral,
            )
            payload["response_url"] = self.api.hook_url(hook)
        payload["state"] = {"values": {}}
        payload["actions"] = [self._action(element, block_id)]
        answer = await self.delivery.interaction(payload)
        if not answer.ok:
            self.ws.notice(user, f"The app did not answer the click ({answer.error}).")
        return answer

    # --- modals ---------------------------------------------------------------------------

    async def submit(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> Answer:
        """Submit the top modal with what was typed: {block_id: {action_id: text}}."""
        view = self.ws.views.get(view_id)
        if view is None or view.user != user or view.type != "modal":
            raise Refused("That form is closed.")
        view.values = {
            block: {
                action: {"type": "plain_text_input", "value": text if text != "" else None}
                for action, text in actions.items()
            }
            for block, actions in values.items()
        }
        missing = self._required_missing(view)
        if missing:
            view.errors = missing
            self.ws.notify_view(view)
            return Answer(0, error="required_fields")
        payload = self._base_payload("view_submission", user, self.ws.issue_trigger(user).id)
        payload["view"] = view.wire()
        payload["response_urls"] = []
        answer = await self.delivery.interaction(payload)
        if not answer.ok:
            view.errors = {"": "We had some trouble connecting. Try again?"}
            self.ws.notify_view(view)
            return answer
        self._after_submit(user, view, answer.json or {})
        return answer

    def _required_missing(self, view: View) -> dict[str, str]:
        """Slack itself refuses to send a form whose required inputs are empty."""
        missing: dict[str, str] = {}
        for block in view.payload.get("blocks") or []:
            if not isinstance(block, dict) or block.get("type") != "input" or block.get("optional"):
                continue
            element = block.get("element") or {}
            value = (
                view.values.get(str(block.get("block_id")), {})
                .get(str(element.get("action_id")), {})
                .get("value")
            )
            if not value:
                missing[str(block.get("block_id"))] = "Please complete this required field."
        return missing

    def _after_submit(self, user: str, view: View, body: JSON) -> None:
        action = body.get("response_action")
        if action == "errors" and isinstance(body.get("errors"), dict):
            view.errors = {str(k): str(v) for k, v in body["errors"].items()}
            self.ws.notify_view(view)
        elif action in ("update", "push"):
            problems = validation.check_view(body.get("view"))
            if problems:
                view.errors = {"": "The app answered with a view Slack cannot show."}
                self.ws.notify_view(view)
                return
            new = dict(body["view"])
            new["blocks"] = assign_ids(list(new.get("blocks") or []))
            if action == "update":
                self.ws.replace_view(view, new)
            else:
                self.ws.open_modal(user, new, push=True)
        elif action == "clear":
            self.ws.close_modal(user, all_views=True)
        else:
            self.ws.close_modal(user)

    async def close_view(self, user: str, view_id: str) -> None:
        """The person closes (cancels) the top modal."""
        view = self.ws.views.get(view_id)
        if view is None or view.user != user:
            return
        all_views = bool(view.payload.get("clear_on_close"))
        closed = self.ws.close_modal(user, all_views=all_views)
        if view.payload.get("notify_on_close") and closed:
            payload = self._base_payload("view_closed", user, None)
            payload["view"] = view.wire()
            payload["is_cleared"] = all_views
            await self.delivery.interaction(payload)

    # --- reactions and App Home -----------------------------------------------------------

    def react(self, user: str, channel: str, ts: str, name: str) -> None:
        """Add the person's reaction, or take it back if it is there."""
        message = self.ws.find_message(channel, ts)
        if message is None or message.ephemeral_for is not None:
            raise Refused("That message is gone.")
        users = message.reactions.setdefault(name, [])
        if user in users:
            users.remove(user)
            if not users:
                del message.reactions[name]
        else:
            users.append(user)
        self.ws.changed(message)

    def open_home(self, user: str) -> JSON:
        """The person opens the app's Home tab: `app_home_opened` goes to the app."""
        event: JSON = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.ws.direct_channel(user).id,
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        home = self.ws.find_view(self.ws.homes.get(user))
        if home is not None:
            event["view"] = home.wire()
        return self.delivery.event(event)


def _rich_text(text: str) -> JSON:
    """The rich_text block a Slack client adds to what a person types."""
    return {
        "type": "rich_text",
        "block_id": uuid.uuid4().hex[:5],
        "elements": [
            {
                "type": "rich_text_section",
                "elements": [{"type": "text", "text": text}],
            }
        ],
    }
