"""The dashboard's sign-in link from Slack: `/clarity dashboard` and App Home's button.

The link reaches only the person who asked (the command's response_url, else an ephemeral
message; never chat.postMessage), signs in once, and App Home carries a fresh one each time.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.slack.blocks import ACTION_OPEN_DASHBOARD
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import Clarity, running_clarity
from tests.slack.signing import slash_command_body

PUBLIC_URL = "https://clarity.example.com"
LINK = re.compile(
    r"<(https://clarity\.example\.com/login\?token=[^|>]+)\|Open the Clarity dashboard>"
)


@pytest.fixture
async def clarity(db_url: str, fake_slack: FakeSlack) -> AsyncIterator[Clarity]:
    """The real server with CLARITY_PUBLIC_URL set: links name that address."""
    async with running_clarity(db_url, fake_slack, clarity_public_url=PUBLIC_URL) as running:
        yield running


async def _sign_in(clarity: Clarity, link: str) -> tuple[int, str | None]:
    """Press the sign-in page's button for `link` (POST /login on the test server):
    the status and the session cookie it set, if any."""
    token = link.split("token=", 1)[1]
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{clarity.url}/login", data={"token": token}, allow_redirects=False) as got,
    ):
        cookie = got.cookies.get("clarity_session")
        return got.status, None if cookie is None else cookie.value


def _posted_anywhere(slack: FakeSlack, text: str) -> bool:
    """Whether `text` is in any message of any channel (what chat.postMessage made)."""
    return text in json.dumps(slack.messages)


def _no_public_post(slack: FakeSlack, link: str) -> None:
    assert slack.calls("chat.postMessage") == []
    assert not _posted_anywhere(slack, link)


async def test_command_sends_the_link_to_the_response_url_and_it_signs_in_once(
    clarity: Clarity,
) -> None:
    sent = await clarity.sender.command(
        "dashboard", user="U0ALICE", user_name="alice", channel="C0GENERAL"
    )
    # Acked at once and empty: nothing that anyone else could see.
    assert (sent.status, sent.text) == (200, "")
    await clarity.settle()

    [answer] = clarity.slack.responses
    assert answer.params.get("response_type") == "ephemeral"
    assert answer.params.get("replace_original") is not True
    found = LINK.search(answer["text"])
    assert found is not None, answer["text"]
    link = found.group(1)
    _no_public_post(clarity.slack, link)
    assert clarity.slack.calls("chat.postEphemeral") == []

    status, session = await _sign_in(clarity, link)
    assert status == 303 and session
    # The same link again is refused, and starts no session.
    assert await _sign_in(clarity, link) == (400, None)

    # Each use of the command makes a new link.
    await clarity.sender.command("dashboard", user="U0ALICE", user_name="alice")
    await clarity.settle()
    again = LINK.search(clarity.slack.responses[-1]["text"])
    assert again is not None and again.group(1) != link
    assert (await _sign_in(clarity, again.group(1)))[0] == 303


async def test_without_a_response_url_the_link_is_an_ephemeral_message(
    clarity: Clarity,
) -> None:
    body = slash_command_body(
        "dashboard", user="U0ALICE", user_name="alice", channel="C0GENERAL", response_url=""
    )
    sent = await clarity.sender.post(body, "application/x-www-form-urlencoded")
    assert sent.status == 200
    await clarity.settle()

    assert clarity.slack.responses == []
    [ephemeral] = clarity.slack.calls("chat.postEphemeral")
    assert (ephemeral["channel"], ephemeral["user"]) == ("C0GENERAL", "U0ALICE")
    found = LINK.search(ephemeral["text"])
    assert found is not None, ephemeral["text"]
    _no_public_post(clarity.slack, found.group(1))
    assert (await _sign_in(clarity, found.group(1)))[0] == 303
    assert (await _sign_in(clarity, found.group(1)))[0] == 400


def _home_link(call: Any) -> str:
    """The URL of App Home's open_dashboard button in a views.publish call."""
    buttons = [
        block["accessory"]
        for block in call["view"]["blocks"]
        if (block.get("accessory") or {}).get("action_id") == ACTION_OPEN_DASHBOARD
    ]
    assert len(buttons) == 1, call["view"]["blocks"]
    url = buttons[0]["url"]
    assert isinstance(url, str) and url.startswith(f"{PUBLIC_URL}/login?token=")
    return url


async def test_app_home_carries_a_fresh_single_use_link_each_time(clarity: Clarity) -> None:
    for _ in range(2):
        sent = await clarity.sender.app_home_opened("U0ALICE")
        assert sent.status == 200
        await clarity.settle()
    first, second = clarity.slack.calls("views.publish")
    assert first["user_id"] == second["user_id"] == "U0ALICE"
    old, new = _home_link(first), _home_link(second)
    assert old != new
    _no_public_post(clarity.slack, old)

    # Each link signs in once; an older one still works until used or expired.
    assert (await _sign_in(clarity, new))[0] == 303
    assert (await _sign_in(clarity, new))[0] == 400
    assert (await _sign_in(clarity, old))[0] == 303

    # Slack tells of a press of the button (a link); it is acked and changes nothing.
    calls = len(clarity.slack.log)
    clicked = await clarity.sender.click(ACTION_OPEN_DASHBOARD, "open", user="U0ALICE")
    assert clicked.status == 200
    await clarity.settle()
    assert clarity.slack.log[calls:] == []
    assert clarity.slack.responses == []


async def test_the_signed_in_session_is_the_person_who_asked(clarity: Clarity) -> None:
    await clarity.sender.command("dashboard", user="U0BOB", user_name="bob")
    await clarity.settle()
    found = LINK.search(clarity.slack.responses[-1]["text"])
    assert found is not None
    token = found.group(1).split("token=", 1)[1]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{clarity.url}/login", data={"token": token}) as page:
            # Secure cookies (the public URL is https) are not sent back over plain http:
            # carry the session by hand.
            assert page.status == 200
        cookie = next(c for c in http.cookie_jar if c.key == "clarity_session")
        assert cookie["secure"]
        headers = {"Cookie": f"clarity_session={cookie.value}"}
        async with http.get(f"{clarity.url}/requests", headers=headers) as page:
            assert page.status == 200
            body = await page.text()
    assert "bob" in body
