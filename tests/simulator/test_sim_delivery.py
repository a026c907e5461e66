"""What the simulator delivers is accepted by a real Bolt app, unchanged, and has the fields
Slack documents (compared with the fixtures of Bolt's own tests)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt.async_app import AsyncApp

from bot.simulator import BOT_USER_ID, DEMO_CHANNEL, TEAM_ID, YOU, SimulatorServer
from bot.simulator.workspace import Message
from tests.simulator.bolt import Seen, running_bolt

# The keys of the payloads in slack-bolt's scenario tests, less enterprise-only ones.
COMMAND_FIELDS = {
    "token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
    "command", "text", "response_url", "trigger_id", "api_app_id",
}  # fmt: skip
BLOCK_ACTIONS_FIELDS = {
    "type", "user", "api_app_id", "token", "container", "trigger_id", "team", "channel",
    "response_url", "actions", "message",
}  # fmt: skip
VIEW_SUBMISSION_FIELDS = {"type", "team", "user", "api_app_id", "token", "trigger_id", "view",
                          "response_urls"}  # fmt: skip
VIEW_FIELDS = {
    "id", "team_id", "type", "blocks", "private_metadata", "callback_id", "state", "hash",
    "title", "clear_on_close", "notify_on_close", "close", "submit", "previous_view_id",
    "root_view_id", "app_id", "external_id", "app_installed_team_id", "bot_id",
}  # fmt: skip
EVENT_FIELDS = {"token", "team_id", "api_app_id", "event", "type", "event_id", "event_time",
                "authorizations"}  # fmt: skip

FORM = {
    "type": "modal",
    "callback_id": "file",
    "private_metadata": json.dumps({"channel": DEMO_CHANNEL}),
    "title": {"type": "plain_text", "text": "New request"},
    "submit": {"type": "plain_text", "text": "File"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        {
            "type": "input",
            "block_id": "repo",
            "label": {"type": "plain_text", "text": "Repository"},
            "element": {"type": "plain_text_input", "action_id": "repo"},
        }
    ],
}


def ephemerals(sim: SimulatorServer, user: str = YOU) -> list[Message]:
    return [m for m in sim.workspace.messages[DEMO_CHANNEL] if m.ephemeral_for == user]


async def test_slash_command(sim: SimulatorServer) -> None:
    got: list[dict[str, Any]] = []

    def register(bolt: AsyncApp) -> None:
        @bolt.command("/clarity")
        async def command(ack: Any, command: dict[str, Any]) -> None:
            got.append(command)
            await ack(text=f"On it: *{command['text']}*")

    async with running_bolt(sim, register) as app:
        answer = await sim.people.say(YOU, DEMO_CHANNEL, "/clarity acme/web add <dark> mode")
    [command] = got
    assert set(command) >= COMMAND_FIELDS
    assert command["command"] == "/clarity" and command["text"] == "acme/web add <dark> mode"
    assert (command["user_id"], command["user_name"]) == (YOU, "you")
    assert (command["channel_id"], command["channel_name"]) == (DEMO_CHANNEL, "clarity-demo")
    assert command["team_id"] == TEAM_ID
    assert command["response_url"].startswith(sim.base_url() + "/response/")
    [request] = app.requests
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["X-Slack-Signature"].startswith("v0=")
    assert dict(parse_qsl(request.body))["trigger_id"] == command["trigger_id"]
    # The ack's text is the first answer, shown only to the person.
    assert answer is not None and getattr(answer, "status", None) == 200
    [shown] = ephemerals(sim)
    assert shown.text == "On it: *acme/web add <dark> mode*"
    html = sim.page.message_html(shown, YOU)
    assert "Only visible to you" in html
    assert "<b>acme/web add &lt;dark&gt; mode</b>" in html


async def test_unknown_command_and_failed_delivery(sim: SimulatorServer) -> None:
    await sim.people.say(YOU, DEMO_CHANNEL, "/nope do it")
    assert "`/nope` is not a valid command" in ephemerals(sim)[-1].text

    def register(bolt: AsyncApp) -> None:
        @bolt.command("/clarity")
        async def command(ack: Any) -> None:
            await ack()

    async with running_bolt(sim, register, signing_secret="another-secret") as app:
        await sim.people.say(YOU, DEMO_CHANNEL, "/clarity help")
    assert len(app.requests) == 1
    assert ephemerals(sim)[-1].text == '/clarity failed with the error "dispatch_failed"'


async def test_block_action_and_respond(sim: SimulatorServer) -> None:
    got: list[dict[str, Any]] = []

    def register(bolt: AsyncApp) -> None:
        @bolt.action("go")
        async def clicked(ack: Any, body: dict[str, Any], respond: Any) -> None:
            got.append(body)
            await ack()
            await respond(text=f"Pressed by <@{body['user']['id']}>", replace_original=True)

    async with running_bolt(sim, register) as app:
        posted = await app.bolt.client.chat_postMessage(
            channel=DEMO_CHANNEL,
            text="Pick",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "Pick one"}},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Go"},
                            "action_id": "go",
                            "value": "v1",
                            "style": "primary",
                        }
                    ],
                },
            ],
        )
        message = sim.workspace.find_message(DEMO_CHANNEL, posted["ts"])
        assert message is not None
        block_id = message.blocks[1]["block_id"]  # given by Slack when the app gave none
        await sim.people.click(
            YOU, channel=DEMO_CHANNEL, ts=posted["ts"], block_id=block_id, action_id="go"
        )
    [body] = got
    assert set(body) >= BLOCK_ACTIONS_FIELDS
    assert body["type"] == "block_actions"
    assert body["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": DEMO_CHANNEL,
        "is_ephemeral": False,
    }
    assert body["user"] == {"id": YOU, "username": "you", "name": "you", "team_id": TEAM_ID}
    [action] = body["actions"]
    assert action["action_id"] == "go" and action["block_id"] == block_id
    assert action["value"] == "v1" and action["type"] == "button" and action["action_ts"]
    assert body["message"]["ts"] == posted["ts"] and body["message"]["user"] == BOT_USER_ID
    assert message.text == f"Pressed by <@{YOU}>" and message.blocks == []


async def test_view_submission_errors_then_closes(sim: SimulatorServer) -> None:
    submitted: list[dict[str, Any]] = []

    def register(bolt: AsyncApp) -> None:
        @bolt.command("/clarity")
        async def command(ack: Any, body: dict[str, Any], client: Any) -> None:
            await ack()
            await client.views_open(trigger_id=body["trigger_id"], view=FORM)

        @bolt.view("file")
        async def file(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
            submitted.append(body)
            repo = view["state"]["values"]["repo"]["repo"]["value"]
            if "/" not in repo:
                await ack(response_action="errors", errors={"repo": "Use owner/repo."})
            else:
                await ack()

    async with running_bolt(sim, register):
        await sim.people.say(YOU, DEMO_CHANNEL, "/clarity")
        view = sim.workspace.top_modal(YOU)
        assert view is not None and view.payload["callback_id"] == "file"
        await sim.people.submit(YOU, view.id, {"repo": {"repo": "nope"}})
        assert view.errors == {"repo": "Use owner/repo."}
        assert "Use owner/repo." in sim.page.modal_html(view)
        assert 'value="nope"' in sim.page.modal_html(view)  # what was typed stays
        await sim.people.submit(YOU, view.id, {"repo": {"repo": "acme/web"}})
        assert sim.workspace.top_modal(YOU) is None
    first, second = submitted
    assert set(first) >= VIEW_SUBMISSION_FIELDS
    assert set(first["view"]) >= VIEW_FIELDS
    assert (
        first["view"]["id"] == view.id
        and first["view"]["private_metadata"] == FORM["private_metadata"]
    )
    assert second["view"]["state"]["values"] == {
        "repo": {"repo": {"type": "plain_text_input", "value": "acme/web"}}
    }


async def test_view_submission_update_push_clear(sim: SimulatorServer) -> None:
    step = {"n": 0}

    def register(bolt: AsyncApp) -> None:
        @bolt.view("file")
        async def file(ack: Any) -> None:
            step["n"] += 1
            if step["n"] == 1:
                await ack(
                    response_action="update",
                    view=dict(FORM, title={"type": "plain_text", "text": "Updated"}),
                )
            elif step["n"] == 2:
                await ack(
                    response_action="push",
                    view=dict(FORM, title={"type": "plain_text", "text": "Pushed"}),
                )
            else:
                await ack(response_action="clear")

    async with running_bolt(sim, register):
        root = sim.workspace.open_modal(YOU, dict(FORM))
        await sim.people.submit(YOU, root.id, {"repo": {"repo": "a/b"}})
        assert sim.workspace.top_modal(YOU) is root and root.payload["title"]["text"] == "Updated"
        await sim.people.submit(YOU, root.id, {"repo": {"repo": "a/b"}})
        pushed = sim.workspace.top_modal(YOU)
        assert pushed is not None and pushed.previous_view_id == root.id
        await sim.people.submit(YOU, pushed.id, {"repo": {"repo": "a/b"}})
        assert sim.workspace.top_modal(YOU) is None


async def test_events_reach_bolt(sim: SimulatorServer) -> None:
    envelopes: list[dict[str, Any]] = []

    def register(bolt: AsyncApp) -> None:
        @bolt.event("message")
        async def message(body: dict[str, Any]) -> None:
            envelopes.append(body)

        @bolt.event("app_home_opened")
        async def home(body: dict[str, Any], client: Any) -> None:
            envelopes.append(body)
            await client.views_publish(
                user_id=body["event"]["user"],
                view={
                    "type": "home",
                    "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "Hi"}}],
                },
            )

    async with running_bolt(sim, register) as app:
        root = await sim.people.say(YOU, DEMO_CHANNEL, "hello <b> & @you")
        assert isinstance(root, Message)
        await sim.wait_idle()
        await sim.people.say(YOU, DEMO_CHANNEL, "in the thread", thread_ts=root.ts)
        await sim.wait_idle()
        sim.people.open_home(YOU)
        await sim.wait_idle()
    first, reply, home = envelopes
    assert set(first) >= EVENT_FIELDS and first["type"] == "event_callback"
    assert first["authorizations"][0]["user_id"] == BOT_USER_ID
    event = first["event"]
    assert event["type"] == "message" and event["channel_type"] == "channel"
    assert event["text"] == f"hello &lt;b&gt; &amp; <@{YOU}>"
    assert (event["user"], event["channel"], event["ts"]) == (YOU, DEMO_CHANNEL, root.ts)
    assert reply["event"]["thread_ts"] == root.ts and reply["event"]["parent_user_id"] == YOU
    assert home["event"]["type"] == "app_home_opened" and home["event"]["tab"] == "home"
    assert "Hi" in sim.page.home_html(YOU)
    assert all(r.headers["Content-Type"] == "application/json" for r in app.requests)


async def test_a_slow_event_is_retried_with_slacks_headers(sim: SimulatorServer) -> None:
    sim.delivery.ack_timeout_s = 0.3
    retried = asyncio.Event()
    calls: list[str] = []

    def register(bolt: AsyncApp) -> None:
        @bolt.event("message")
        async def message(body: dict[str, Any]) -> None:
            calls.append(body["event_id"])
            if len(calls) == 1:  # the first delivery answers only after the retry came
                async with asyncio.timeout(10):
                    await retried.wait()

    def watch(seen: Seen) -> None:
        if "X-Slack-Retry-Num" in seen.headers:
            retried.set()

    async with running_bolt(sim, register, on_request=watch) as app:
        await sim.people.say(YOU, DEMO_CHANNEL, "slow one")
        assert await sim.wait_idle()
    first, second = app.requests
    assert "X-Slack-Retry-Num" not in first.headers
    assert second.headers["X-Slack-Retry-Num"] == "1"
    assert second.headers["X-Slack-Retry-Reason"] == "http_timeout"
    assert json.loads(first.body)["event_id"] == json.loads(second.body)["event_id"]
    assert calls[0] == calls[1]


async def test_a_command_not_answered_in_time_fails_for_the_person(sim: SimulatorServer) -> None:
    sim.delivery.ack_timeout_s = 0.2
    release = asyncio.Event()

    def register(bolt: AsyncApp) -> None:
        @bolt.command("/clarity")
        async def command(ack: Any) -> None:
            async with asyncio.timeout(10):
                await release.wait()
            await ack()

    async with running_bolt(sim, register):
        await sim.people.say(YOU, DEMO_CHANNEL, "/clarity slow")
        release.set()
    assert ephemerals(sim)[-1].text == '/clarity failed with the error "operation_timeout"'
