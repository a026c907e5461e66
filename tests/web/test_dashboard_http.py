"""The dashboard over plain HTTP: sign-in rules, CSRF, who may act, headers, event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import text

from storage.models import MessageType, RequestStatus
from storage.repositories.web_sessions import token_hash
from tests.slack.fake_slack import FakeSlack
from tests.web.conftest import ADMIN, Served, serve

PAGES = ["/requests", "/requests/req-1", "/stats", "/requests?status=error"]


async def test_without_a_session_pages_redirect_and_data_answers_401(served: Served) -> None:
    await served.add_request("req-1")
    client = await served.client(user_id=None)
    try:
        for path in PAGES:
            status, _, headers = await client.get(path)
            assert (status, headers["Location"]) == (303, "/login"), path
        for path in ["/events", "/events?request=req-1", "/requests/req-1/live?after=0"]:
            status, _, _ = await client.get(path)
            assert status == 401, path
        status, _, _ = await client.get("/requests", headers={"X-Clarity-Fragment": "1"})
        assert status == 401
        for path in ["/requests/req-1/cancel", "/requests/req-1/retry", "/logout"]:
            status, _, _ = await client.post(path, {"csrf": "anything"})
            assert status == 401, path
        status, body, _ = await client.get("/login")
        assert status == 200 and "Sign in from Slack" in body
    finally:
        await client.close()
    assert served.actions.calls == []


async def test_a_link_signs_in_once_and_returns_to_the_page_asked_for(served: Served) -> None:
    await served.add_request("req-1")
    link = await served.login_link()
    token = link.split("token=", 1)[1]
    assert link.startswith(served.url + "/login?token=")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # Following the link (as a link scanner would) spends nothing.
        for _ in range(2):
            async with http.get(link) as response:
                assert response.status == 200
                assert 'name="token"' in await response.text()
        async with http.get(served.url + "/requests/req-1", allow_redirects=False) as response:
            assert response.status == 303
        async with http.post(
            served.url + "/login", data={"token": token}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/requests/req-1"
            cookie = response.cookies["clarity_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
            assert not cookie["secure"]  # plain http here
            assert int(cookie["max-age"]) == 7 * 24 * 3600
        async with http.get(served.url + "/requests/req-1") as response:
            assert response.status == 200

    # The same link again is refused, on the page and on the button.
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as response:
            assert response.status == 400
            assert "expired or was already used" in await response.text()
        async with http.post(
            served.url + "/login", data={"token": token}, allow_redirects=False
        ) as response:
            assert response.status == 400
            assert "clarity_session" not in response.cookies


async def test_an_expired_or_unknown_link_is_refused(served: Served) -> None:
    link = await served.login_link()
    token = link.split("token=", 1)[1]
    async with served.session_factory.begin() as session:
        await session.execute(
            text(
                "UPDATE clarity_login_tokens SET expires_at = now() - interval '1 second'"
                " WHERE token_hash = :h"
            ),
            {"h": token_hash(token)},
        )
    async with aiohttp.ClientSession() as http:
        for value in (token, "not-a-token", ""):
            async with http.post(
                served.url + "/login", data={"token": value}, allow_redirects=False
            ) as response:
                assert response.status == 400, value
        async with http.get(link) as response:
            assert response.status == 400


async def test_only_hashes_of_tokens_are_stored(served: Served) -> None:
    link = await served.login_link()
    token = link.split("token=", 1)[1]
    client = await served.client()
    try:
        session_token = next(c.value for c in client.http.cookie_jar if c.key == "clarity_session")
    finally:
        await client.close()
    async with served.session_factory() as session:
        stored = (
            await session.execute(
                text(
                    "SELECT token_hash FROM clarity_login_tokens"
                    " UNION ALL SELECT token_hash FROM clarity_web_sessions"
                )
            )
        ).scalars()
        values = set(stored)
    assert token_hash(token) in values and token_hash(session_token) in values
    assert token not in values and session_token not in values


async def test_a_form_post_without_its_csrf_token_is_403(served: Served) -> None:
    await served.add_request("req-1", status=RequestStatus.ERROR)
    client = await served.client()
    other = await served.client("U0OTHER", "Grace Hopper")
    try:
        for data in ({}, {"csrf": "wrong"}, {"csrf": other.csrf}):
            for path in ["/requests/req-1/cancel", "/requests/req-1/retry", "/logout"]:
                status, _, _ = await client.post(path, data)
                assert status == 403, (path, data)
        status, _, _ = await client.get("/requests")
        assert status == 200, "still signed in"
    finally:
        await client.close()
        await other.close()
    assert served.actions.calls == []


async def test_only_the_requester_or_an_admin_may_retry_or_cancel(served: Served) -> None:
    await served.add_request("req-1", status=RequestStatus.ERROR)
    stranger = await served.client("U0OTHER", "Grace Hopper")
    admin = await served.client(ADMIN, "Admin")
    try:
        status, body, _ = await stranger.get("/requests/req-1")
        assert status == 200 and "Cancel request" not in body and ">Retry<" not in body
        status, body, _ = await stranger.post("/requests/req-1/cancel", {"csrf": stranger.csrf})
        assert status == 403 and "Only the person who filed this request" in body
        assert served.actions.calls == []

        admin.csrf = await admin.csrf_from("/requests/req-1")
        status, body, _ = await admin.get("/requests/req-1")
        assert "Cancel request" in body and ">Retry<" in body
        status, _, headers = await admin.post("/requests/req-1/retry", {"csrf": admin.csrf})
        assert (status, headers["Location"]) == (303, "/requests/req-1")
        # Retry is for a failed request only: it is processing now.
        status, body, _ = await admin.post("/requests/req-1/retry", {"csrf": admin.csrf})
        assert status == 409 and "Only a failed request can be retried." in body
    finally:
        await stranger.close()
        await admin.close()
    assert served.actions.calls == [("retry", "req-1", ADMIN)]


async def test_pages_carry_security_headers_and_agent_html_is_text(served: Served) -> None:
    await served.add_request("req-1", title="<i>Title</i>")
    await served.add_message(
        "req-1",
        MessageType.AGENT_TOOL_RESULT,
        "out",
        {"toolName": "Bash", "toolOutput": "<script>alert(1)</script>"},
    )
    await served.record_message(
        "req-1", MessageType.PROCESSING_UPDATE, "x", {"prUrl": "javascript:alert(1)"}
    )
    client = await served.client()
    try:
        for path, expected in [
            ("/requests", 200),
            ("/requests/req-1", 200),
            ("/stats", 200),
            ("/login?token=unknown", 400),
        ]:
            status, body, headers = await client.get(path)
            assert status == expected, path
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "<script>" not in body.replace('<script src="/static/app.js?v=', ""), path
        _, body, _ = await client.get("/requests/req-1")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "&lt;i&gt;Title&lt;/i&gt;" in body
    finally:
        await client.close()


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield name, data
            name, data = "message", ""


async def test_event_streams_carry_changes_for_a_request_and_for_the_list(served: Served) -> None:
    await served.add_request("req-1")
    await served.add_request("req-2")
    client = await served.client()
    try:
        one = await client.http.get(served.url + "/events?request=req-1")
        every = await client.http.get(served.url + "/events")
        try:
            assert one.headers["Content-Type"] == "text/event-stream"
            first = await one.content.readuntil(b"\n\n")
            assert first.startswith(b"retry: ")
            # Subscribed before the first bytes were written.
            await every.content.readuntil(b"\n\n")
            assert len(served.dash.hub) == 2

            await served.add_message("req-2", MessageType.AGENT_THINKING, "other request")
            await served.add_message("req-1", MessageType.AGENT_THINKING, "hmm")
            async with asyncio.timeout(5):
                assert await anext(_events(one)) == ("change", "req-1")
                name, data = await anext(_events(every))
            assert name == "change" and set(json.loads(data)) <= {"req-1", "req-2"}
            assert "req-2" in json.loads(data)
        finally:
            one.close()
            every.close()
    finally:
        await client.close()


async def test_a_lost_listen_connection_is_reopened_and_pages_resync(served: Served) -> None:
    await served.add_request("req-1")
    client = await served.client()
    try:
        stream = await client.http.get(served.url + "/events?request=req-1")
        try:
            await stream.content.readuntil(b"\n\n")
            assert len(served.dash.hub) == 1
            listener = served.dash.listener
            assert listener is not None
            async with served.session_factory.begin() as session:
                killed = await session.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                    )
                )
            assert killed == 1
            async with asyncio.timeout(10):
                assert await anext(_events(stream)) == ("resync", "resync")
            await listener.listening.wait()
            await served.add_message("req-1", MessageType.AGENT_THINKING, "after the blip")
            async with asyncio.timeout(5):
                assert await anext(_events(stream)) == ("change", "req-1")
        finally:
            stream.close()
    finally:
        await client.close()


async def test_signing_out_ends_the_session_and_its_streams(served: Served) -> None:
    client = await served.client()
    try:
        stream = await client.http.get(served.url + "/events")
        await stream.content.readuntil(b"\n\n")
        status, _, headers = await client.post("/logout", {"csrf": client.csrf})
        assert (status, headers["Location"]) == (303, "/login")
        async with asyncio.timeout(5):
            assert await stream.content.read() == b""  # the server ended the stream
        stream.close()
        status, _, _ = await client.get("/requests")
        assert status == 303
    finally:
        await client.close()


@pytest.fixture
async def served_https(db_url: str, fake_slack: FakeSlack) -> AsyncIterator[Served]:
    async with serve(
        db_url,
        fake_slack,
        clarity_public_url="https://clarity.example.com",
        clarity_web_session_ttl_s=3600,
    ) as value:
        yield value


async def test_the_cookie_is_secure_behind_an_https_public_url(served_https: Served) -> None:
    link = await served_https.login_link()
    token = link.split("token=", 1)[1]
    assert link.startswith("http://127.0.0.1")  # the link uses the public URL it was given
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            served_https.url + "/login", data={"token": token}, allow_redirects=False
        ) as response,
    ):
        cookie = response.cookies["clarity_session"]
        assert cookie["secure"] and cookie["httponly"]
        assert int(cookie["max-age"]) == 3600
