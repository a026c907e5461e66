"""The simulator's Web API answers as Slack does: tokens, bodies, errors, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.simulator import BOT_USER_ID, DEMO_CHANNEL, GENERAL, YOU, SimulatorServer
from tests.simulator.bolt import BOT_TOKEN
from tests.simulator.conftest import Clock

AUTH = {"Authorization": f"Bearer {BOT_TOKEN}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def web(sim: SimulatorServer) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=sim.api_url)


async def call(
    http: aiohttp.ClientSession,
    sim: SimulatorServer,
    method: str,
    *,
    json_body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(
        sim.api_url + method,
        json=json_body,
        data=form,
        headers=AUTH if headers is None else headers,
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_tokens_are_checked_as_slack_checks_them(
    sim: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    _, body, _ = await call(http, sim, "auth.test", headers={})
    assert body == {"ok": False, "error": "not_authed"}
    _, body, _ = await call(http, sim, "auth.test", headers={"Authorization": "Bearer xoxb-nope"})
    assert body == {"ok": False, "error": "invalid_auth"}
    # A form body may carry the token instead of the header.
    _, body, _ = await call(http, sim, "auth.test", form={"token": BOT_TOKEN}, headers={})
    assert body["ok"] and body["user_id"] == BOT_USER_ID
    # apps.connections.open takes only an app-level token.
    _, body, _ = await call(http, sim, "apps.connections.open")
    assert body["error"] == "not_allowed_token_type"
    _, body, _ = await call(
        http, sim, "apps.connections.open", headers={"Authorization": "Bearer xapp-1-A-1-x"}
    )
    assert body["ok"] and body["url"].startswith("ws://127.0.0.1:")
    assert [c.method for c in sim.calls()][:2] == ["auth.test", "auth.test"]


async def test_post_read_back_with_metadata_only_when_asked(web: AsyncWebClient) -> None:
    metadata = {"event_type": "clarity_post", "event_payload": {"key": "r1:root:"}}
    posted = await web.api_call(
        "chat.postMessage", json={"channel": DEMO_CHANNEL, "text": "root", "metadata": metadata}
    )
    ts = posted["ts"]
    assert posted["message"]["metadata"] == metadata
    reply = await web.api_call(
        "chat.postMessage", json={"channel": DEMO_CHANNEL, "text": "reply", "thread_ts": ts}
    )
    plain = await web.api_call("conversations.history", params={"channel": DEMO_CHANNEL})
    [root] = plain["messages"]
    assert root["ts"] == ts and "metadata" not in root
    assert root["reply_count"] == 1 and root["thread_ts"] == ts and root["bot_id"]
    full = await web.api_call(
        "conversations.replies",
        params={"channel": DEMO_CHANNEL, "ts": ts, "include_all_metadata": "true"},
    )
    assert [m["ts"] for m in full["messages"]] == [ts, reply["ts"]]
    assert full["messages"][0]["metadata"] == metadata
    assert full["messages"][1]["parent_user_id"] == BOT_USER_ID
    permalink = await web.api_call(
        "chat.getPermalink", params={"channel": DEMO_CHANNEL, "message_ts": ts}
    )
    assert f"/archives/{DEMO_CHANNEL}/p{ts.replace('.', '')}" in permalink["permalink"]


async def test_read_methods_take_form_parameters_only(
    sim: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    # A JSON body to a read method is no arguments at all, as in Slack.
    _, body, _ = await call(http, sim, "conversations.history", json_body={"channel": GENERAL})
    assert body["error"] == "channel_not_found"
    _, body, _ = await call(http, sim, "users.info", json_body={"user": YOU})
    assert body["error"] == "user_not_found"
    _, body, _ = await call(http, sim, "users.info", form={"user": YOU})
    assert body["user"]["name"] == "you"
    _, body, _ = await call(http, sim, "conversations.members", form={"channel": GENERAL})
    assert set(body["members"]) == {YOU, BOT_USER_ID}


async def test_slack_error_answers(
    sim: SimulatorServer, http: aiohttp.ClientSession, web: AsyncWebClient
) -> None:
    sim.workspace.add_channel("C0RANDOM", "random", members={YOU})
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("chat.postMessage", {"channel": "C0NOPE", "text": "x"}, "channel_not_found"),
        ("chat.postMessage", {"channel": "C0RANDOM", "text": "x"}, "not_in_channel"),
        ("chat.postMessage", {"channel": GENERAL}, "no_text"),
        ("chat.postMessage", {"channel": GENERAL, "text": "x" * 40_001}, "msg_too_long"),
        ("chat.update", {"channel": GENERAL, "ts": "1.000001", "text": "x"}, "message_not_found"),
        (
            "chat.postEphemeral",
            {"channel": GENERAL, "user": "U0NOBODY", "text": "x"},
            "user_not_found",
        ),
        (
            "reactions.add",
            {"channel": GENERAL, "timestamp": "1.000001", "name": "eyes"},
            "message_not_found",
        ),
        (
            "views.publish",
            {"user_id": "U0NOBODY", "view": {"type": "home", "blocks": []}},
            "user_not_found",
        ),
        ("views.update", {"view_id": "V0NOPE", "view": {"type": "modal"}}, "not_found"),
        ("chat.unknownThing", {}, "unknown_method"),
    ]
    for method, params, error in cases:
        _, body, _ = await call(http, sim, method, json_body=params)
        assert body["ok"] is False and body["error"] == error, (method, body)
    posted = await web.chat_postMessage(channel=GENERAL, text="hi")
    await web.reactions_add(channel=GENERAL, timestamp=posted["ts"], name="eyes")
    with pytest.raises(SlackApiError) as raised:
        await web.reactions_add(channel=GENERAL, timestamp=posted["ts"], name="eyes")
    assert raised.value.response["error"] == "already_reacted"


async def test_invalid_blocks_name_each_problem(
    sim: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}},
        {"type": "header", "text": {"type": "mrkdwn", "text": "not plain"}},
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "a"}, "action_id": "go"},
                {"type": "button", "text": {"type": "plain_text", "text": "b"}, "action_id": "go"},
            ],
        },
        {"type": "carousel"},
    ]
    _, body, _ = await call(
        http, sim, "chat.postMessage", json_body={"channel": GENERAL, "blocks": blocks}
    )
    assert body["error"] == "invalid_blocks"
    messages = body["response_metadata"]["messages"]
    assert (
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]" in messages
    )
    assert any("/blocks/1/text/type" in m for m in messages)
    assert any("duplicate action_id: go" in m and "/blocks/2/elements/1" in m for m in messages)
    assert any("unsupported type: carousel" in m for m in messages)
    assert sim.messages == {}
    # Form bodies carry blocks as a JSON string; bad JSON is its own error.
    _, body, _ = await call(
        http, sim, "chat.postMessage", form={"channel": GENERAL, "blocks": "[{"}
    )
    assert body["error"] == "invalid_blocks_format"


async def test_a_trigger_opens_one_view_within_three_seconds(
    sim: SimulatorServer, web: AsyncWebClient, clock: Clock
) -> None:
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Form"},
        "submit": {"type": "plain_text", "text": "Go"},
        "blocks": [
            {
                "type": "input",
                "block_id": "b",
                "label": {"type": "plain_text", "text": "What"},
                "element": {"type": "plain_text_input", "action_id": "a"},
            }
        ],
    }

    async def open_with(trigger_id: str) -> dict[str, Any]:
        try:
            return dict((await web.views_open(trigger_id=trigger_id, view=view)).data)  # type: ignore[arg-type]
        except SlackApiError as exc:
            return dict(exc.response.data)  # type: ignore[arg-type]

    fresh = sim.workspace.issue_trigger(YOU).id
    clock.advance(2.9)
    opened = await open_with(fresh)
    assert opened["ok"] and opened["view"]["root_view_id"] == opened["view"]["id"]
    assert sim.workspace.top_modal(YOU) is not None
    assert (await open_with(fresh))["error"] == "exchanged_trigger_id"
    stale = sim.workspace.issue_trigger(YOU).id
    clock.advance(3.1)
    expired = await open_with(stale)
    assert expired["error"] == "expired_trigger_id"
    assert "`trigger_id` expired" in expired["response_metadata"]["messages"][0]
    assert (await open_with("123.456.made-up"))["error"] == "invalid_trigger_id"
    # A view Slack cannot show is refused before the trigger is spent.
    bad = dict(view, title={"type": "plain_text", "text": "x" * 25})
    another = sim.workspace.issue_trigger(YOU).id
    with pytest.raises(SlackApiError) as raised:
        await web.views_open(trigger_id=another, view=bad)
    assert raised.value.response["error"] == "invalid_arguments"
    assert (await open_with(another))["ok"]


async def test_views_push_update_and_publish(sim: SimulatorServer, web: AsyncWebClient) -> None:
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "One"}, "blocks": []}
    first = await web.views_open(trigger_id=sim.workspace.issue_trigger(YOU).id, view=modal)
    pushed = await web.views_push(
        trigger_id=sim.workspace.issue_trigger(YOU).id,
        view=dict(modal, title={"type": "plain_text", "text": "Two"}),
    )
    assert pushed["view"]["previous_view_id"] == first["view"]["id"]
    assert pushed["view"]["root_view_id"] == first["view"]["id"]
    with pytest.raises(SlackApiError) as raised:
        await web.views_update(view_id=pushed["view"]["id"], view=modal, hash="stale")
    assert raised.value.response["error"] == "hash_conflict"
    updated = await web.views_update(
        view_id=pushed["view"]["id"], view=modal, hash=pushed["view"]["hash"]
    )
    assert updated["view"]["title"]["text"] == "One"
    home = {"type": "home", "blocks": [{"type": "divider"}]}
    published = await web.views_publish(user_id=YOU, view=home)
    assert published["view"]["type"] == "home"
    assert published["view"]["blocks"][0]["block_id"]  # Slack names every block


async def test_injected_faults(sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    sim.fail_next("chat.postMessage", status=429, retry_after=7)
    status, body, headers = await call(
        http, sim, "chat.postMessage", json_body={"channel": GENERAL, "text": "x"}
    )
    assert (status, body["error"], headers["Retry-After"]) == (429, "ratelimited", "7")
    sim.fail_next("chat.postMessage", status=503, retry_after=None, times=2)
    for _ in range(2):
        status, body, _ = await call(
            http, sim, "chat.postMessage", json_body={"channel": GENERAL, "text": "x"}
        )
        assert (status, body["error"]) == (503, "fatal_error")
    sim.fail_next("chat.postMessage", status=200, error="not_in_channel")
    status, body, _ = await call(
        http, sim, "chat.postMessage", json_body={"channel": GENERAL, "text": "x"}
    )
    assert (status, body) == (200, {"ok": False, "error": "not_in_channel"})
    assert sim.messages == {}
    # A lost answer: the post is made, the caller sees a 500.
    sim.lose_next("chat.postMessage")
    status, body, _ = await call(
        http, sim, "chat.postMessage", json_body={"channel": GENERAL, "text": "made"}
    )
    assert (status, body["error"]) == (500, "internal_error")
    assert [m["text"] for m in sim.messages[GENERAL]] == ["made"]
    assert len(sim.calls("chat.postMessage")) == 5
    sim.clear()
    assert sim.calls() == [] and sim.messages[GENERAL]


async def test_response_urls(sim: SimulatorServer, http: aiohttp.ClientSession) -> None:
    ws = sim.workspace
    source = await AsyncWebClient(token=BOT_TOKEN, base_url=sim.api_url).chat_postMessage(
        channel=GENERAL, text="the original"
    )
    hook = ws.issue_hook(YOU, GENERAL, message_ts=source["ts"])
    url = sim.api.hook_url(hook)

    async def respond(body: dict[str, Any]) -> tuple[int, str]:
        async with http.post(url, json=body) as response:
            return response.status, await response.text()

    assert await respond({"text": "just for you"}) == (200, "ok")
    [private] = [m for m in ws.messages[GENERAL] if m.ephemeral_for == YOU]
    assert private.text == "just for you"
    assert await respond({"text": "for all", "response_type": "in_channel"}) == (200, "ok")
    assert ws.messages[GENERAL][-1].ephemeral_for is None
    assert await respond({"text": "replaced", "replace_original": True}) == (200, "ok")
    assert ws.find_message(GENERAL, source["ts"]).text == "replaced"  # type: ignore[union-attr]
    assert await respond({"delete_original": "true"}) == (200, "ok")
    assert ws.find_message(GENERAL, source["ts"]) is None
    assert await respond({"text": "fifth"}) == (200, "ok")
    assert await respond({"text": "sixth"}) == (404, "used_url")
    assert [c["text"] for c in sim.responses[:2]] == ["just for you", "for all"]
    # Bad blocks are refused; unknown URLs are not Slack's.
    other = sim.api.hook_url(ws.issue_hook(YOU, GENERAL))
    async with http.post(other, json={"blocks": [{"type": "nope"}]}) as response:
        assert (response.status, await response.text()) == (400, "invalid_blocks")
    async with http.post(sim.api.base_url() + "/response/unknown", json={"text": "x"}) as r:
        assert r.status == 404
    assert json.loads(json.dumps(sim.responses[-1].params)) == {"text": "x"}
