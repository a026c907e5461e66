"""The side-API's routes doing their work: create, read, status reports, messages, config."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from fakes.harness import API_TOKEN, Harness, running_clarity, types_of
from sqlalchemy import event

from bot.api.tokens import TokenAuthority
from storage.models import ConfigType
from storage.repositories import AppConfigRepository
from storage.schemas import ClaudeConfig, GitHubConfig


async def create(h: Harness, **extra: object) -> str:
    status, body = await h.api(
        "POST", "/requests", {"repo": "octo/widgets", "description": "Add a dark mode", **extra}
    )
    assert status == 201, body
    return str(body["requestId"])


async def test_create_records_request_message_and_dispatch(harness: Harness) -> None:
    status, body = await harness.api(
        "POST",
        "/requests",
        {"repo": "octo/widgets", "description": "Add a dark mode", "title": "Dark mode"},
    )
    assert status == 201
    assert body["status"] == "pending" and body["origin"] == "web"
    assert body["title"] == "Dark mode" and body["repositoryOwner"] == "octo"
    assert "request_id" not in body and body["costUsd"] is None
    rid = body["requestId"]
    assert types_of(await harness.messages(rid)) == ["initial_request"]
    assert [j.payload for j in await harness.jobs("dispatch")] == [
        {"requestId": rid, "kind": "initial", "attempt": 1}
    ]


async def test_get_returns_request_and_messages_camel_case(harness: Harness) -> None:
    rid = await create(harness)
    status, body = await harness.api("GET", f"/requests/{rid}")
    assert status == 200
    assert body["request"]["requestId"] == rid
    (message,) = body["messages"]
    assert message["type"] == "initial_request" and message["requestId"] == rid
    assert {"actorId", "actorName", "createdAt", "metadata"} <= set(message)


async def test_status_reports_follow_lifecycle_and_record_messages(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()  # dispatched: processing
    assert (await harness.request(rid)).status.value == "processing"

    status, body = await harness.api(
        "PATCH",
        f"/requests/{rid}/status",
        {
            "status": "pr_created",
            "prUrl": "https://github.com/octo/widgets/pull/7",
            "prNumber": 7,
            "prBranchName": "clarity/dark-mode",
            "costUsd": 0.42,
            "durationMs": 61_000,
        },
    )
    assert status == 200, body
    assert body["status"] == "pr_created" and body["prNumber"] == 7
    assert body["costUsd"] == 0.42 and body["costCents"] == 42 and body["durationMs"] == 61_000
    pr_message = (await harness.messages(rid))[-1]
    assert pr_message.type.value == "pr_created"
    assert pr_message.metadata_ == {
        "fromStatus": "processing",
        "toStatus": "pr_created",
        "durationMs": 61_000,
        "costCents": 42,
    }

    # A follow-up run updates the same PR: totals add up, the message says updated.
    assert (await harness.api("PATCH", f"/requests/{rid}/status", {"status": "processing"}))[
        0
    ] == 200
    status, body = await harness.api(
        "PATCH",
        f"/requests/{rid}/status",
        {"status": "pr_created", "costUsd": 1.0, "durationMs": 1000},
    )
    assert status == 200
    assert body["costCents"] == 142 and body["durationMs"] == 62_000
    assert (await harness.messages(rid))[-1].type.value == "pr_updated"

    # The lifecycle forbids going back to pending: 409, nothing written.
    before = await harness.counts()
    status, body = await harness.api("PATCH", f"/requests/{rid}/status", {"status": "pending"})
    assert status == 409 and body["error"]["code"] == "conflict"
    assert await harness.counts() == before

    # Same status, nothing new: no message.
    before = await harness.counts()
    assert (await harness.api("PATCH", f"/requests/{rid}/status", {"status": "pr_created"}))[
        0
    ] == 200
    assert await harness.counts() == before


async def test_error_report_records_code_and_message(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()
    status, body = await harness.api(
        "PATCH",
        f"/requests/{rid}/status",
        {"status": "error", "errorCode": "CLAUDE_RATE_LIMIT", "errorMessage": "rate limited"},
    )
    assert status == 200 and body["status"] == "error" and body["taskStatus"] == "error"
    error = (await harness.messages(rid))[-1]
    assert error.type.value == "error" and error.content == "rate limited"
    assert error.metadata_ is not None
    assert error.metadata_["errorCode"] == "CLAUDE_RATE_LIMIT"


async def test_clarification_ask_puts_request_on_hold(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()
    status, body = await harness.api(
        "POST",
        f"/requests/{rid}/messages",
        {
            "type": "clarification_ask",
            "content": "Which theme?",
            "metadata": {"options": ["A", "B"]},
        },
    )
    assert status == 201
    assert body["type"] == "clarification_ask" and body["metadata"] == {"options": ["A", "B"]}
    assert (await harness.request(rid)).status.value == "awaiting_clarification"


async def test_agent_messages_are_recorded_without_changing_status(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()
    status, body = await harness.api(
        "POST",
        f"/requests/{rid}/messages",
        {
            "type": "agent_tool_call",
            "content": "Calling Read",
            "metadata": {"toolName": "Read", "toolInput": {"path": "a.py"}, "turnNumber": 1},
        },
    )
    assert status == 201 and body["source"] == "system"
    assert (await harness.request(rid)).status.value == "processing"
    # The answer is the stored message, exactly as the request's detail shows it.
    _, detail = await harness.api("GET", f"/requests/{rid}")
    assert detail["messages"][-1] == body
    assert body["createdAt"].endswith("Z") or body["createdAt"].endswith("+00:00")


async def test_job_token_reaches_its_own_request_only(harness: Harness) -> None:
    rid = await create(harness)
    other = await create(harness)
    await harness.run_jobs()
    token = next(c.body["apiToken"] for c in harness.runner.accepted if c.body["requestId"] == rid)
    assert (await harness.api("GET", f"/requests/{rid}", token=token))[0] == 200
    status, _body = await harness.api(
        "POST",
        f"/requests/{rid}/messages",
        {"type": "agent_thinking", "content": "hm"},
        token=token,
    )
    assert status == 201
    assert (await harness.api("GET", f"/requests/{other}", token=token))[0] == 401
    assert (
        await harness.api("POST", "/requests", {"repo": "a/b", "description": "x"}, token=token)
    )[0] == 401
    assert (await harness.api("GET", "/config/github", token=token))[0] == 200

    # Once the request is final, its token no longer gets credentials.
    await harness.api("PATCH", f"/requests/{rid}/status", {"status": "cancelled"})
    assert (await harness.api("GET", "/config/github", token=token))[0] == 401


async def test_expired_job_token_is_refused(harness: Harness) -> None:
    rid = await create(harness)
    authority = TokenAuthority(harness.services.settings)
    stale = authority.issue(rid, 60, now=dt.datetime.now(dt.UTC).timestamp() - 120)
    status, body = await harness.api("GET", f"/requests/{rid}", token=stale)
    assert status == 401 and body["error"]["message"] == "token expired"


async def test_github_token_is_live_cached_and_stored_encrypted(harness: Harness) -> None:
    services = harness.services
    assert services.cipher is not None
    async with services.session_factory.begin() as session:
        await AppConfigRepository(session, services.cipher).set_github_config(
            GitHubConfig(
                app_id="123456",
                private_key="unused: the environment wins",
                webhook_secret="stored-secret",
                installation_id=str(harness.github.installation_id),
            )
        )
    status, first = await harness.api("GET", "/config/github")
    assert status == 200, first
    assert first["token"] in harness.github.tokens
    assert dt.datetime.fromisoformat(first["expiresAt"]) > dt.datetime.now(dt.UTC)
    status, second = await harness.api("GET", "/config/github")
    assert second["token"] == first["token"]
    assert len(harness.github.calls_to("POST", "/access_tokens")) == 1
    async with services.session_factory() as session:
        raw = await AppConfigRepository(session, services.cipher).get_raw(ConfigType.GITHUB)
    assert raw is not None and first["token"] not in str(raw)
    assert services.cipher.decrypt(raw["installationToken"]) == first["token"]


async def test_github_token_near_expiry_is_refreshed(db_url: str) -> None:
    async with running_clarity(db_url) as h:
        h.github.token_ttl = dt.timedelta(minutes=4)  # inside the 5-minute margin
        first = (await h.api("GET", "/config/github"))[1]["token"]
        second = (await h.api("GET", "/config/github"))[1]["token"]
        assert first != second
        assert len(h.github.calls_to("POST", "/access_tokens")) == 2


async def test_config_without_github_or_claude_says_what_is_missing(db_url: str) -> None:
    async with running_clarity(db_url, github_configured=False, anthropic_api_key=None) as h:
        status, body = await h.api("GET", "/config/github")
        assert status == 503 and "GITHUB_APP_ID" in body["error"]["message"]
        status, body = await h.api("GET", "/config/claude")
        assert status == 503 and "ANTHROPIC_API_KEY" in body["error"]["message"]


async def test_claude_key_from_environment_then_stored(db_url: str) -> None:
    async with running_clarity(db_url, anthropic_api_key="sk-ant-env-key-123456") as h:
        assert (await h.api("GET", "/config/claude"))[1] == {"apiKey": "sk-ant-env-key-123456"}
    async with running_clarity(db_url, anthropic_api_key=None) as h:
        assert h.services.cipher is not None
        async with h.services.session_factory.begin() as session:
            await AppConfigRepository(session, h.services.cipher).set(
                ClaudeConfig(api_key="sk-ant-stored-key-654321")
            )
        assert (await h.api("GET", "/config/claude", token=API_TOKEN))[1] == {
            "apiKey": "sk-ant-stored-key-654321"
        }


async def test_concurrent_agent_activity_is_written_once_each(harness: Harness) -> None:
    first, second = await create(harness), await create(harness)
    await harness.run_jobs()
    posts = [
        harness.api(
            "POST",
            f"/requests/{rid}/messages",
            {"type": "agent_thinking", "content": f"step {i}"},
        )
        for i in range(40)
        for rid in (first, second, "no-such-request")
    ]
    results = await asyncio.gather(*posts)
    assert sorted(status for status, _ in results) == [201] * 80 + [404] * 40
    ids = [body["id"] for status, body in results if status == 201]
    assert len(set(ids)) == 80
    for rid in (first, second):
        thinking = [m for m in await harness.messages(rid) if m.type.value == "agent_thinking"]
        assert sorted(m.content for m in thinking) == sorted(f"step {i}" for i in range(40))


async def test_big_agent_posts_are_written_in_bounded_groups(harness: Harness) -> None:
    rid = await create(harness)
    await harness.run_jobs()
    statements: list[int] = []

    def count(
        _conn: object, _cursor: object, sql: str, params: Sequence[object], *_: object
    ) -> None:
        if "jsonb_to_recordset" in sql and "request_messages" in sql:
            statements.append(max(len(p) for p in params if isinstance(p, str)))

    engine = harness.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        outputs = [chr(ord("a") + i % 26) * 150_000 for i in range(24)]
        results = await asyncio.gather(
            *(
                harness.api(
                    "POST",
                    f"/requests/{rid}/messages",
                    {"type": "agent_terminal", "content": f"run {i}", "metadata": {"stdout": out}},
                )
                for i, out in enumerate(outputs)
            )
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [status for status, _ in results] == [201] * 24
    # 24 posts of 150 KB: more than one group, none much over 2 MB.
    assert len(statements) > 1 and max(statements) < 2 * 1024 * 1024 + 160_000
    stored = {m.content: m.metadata_ for m in await harness.messages(rid)}
    assert all(stored[f"run {i}"] == {"stdout": out} for i, out in enumerate(outputs))


async def test_list_requests_newest_first_with_filters_and_pages(harness: Harness) -> None:
    ids = [await create(harness, description=f"request {i}") for i in range(5)]
    other = await create(harness, repo="acme/other", origin="github_issue")
    status, body = await harness.api("GET", "/requests?limit=2")
    assert status == 200
    assert [r["requestId"] for r in body["requests"]] == [other, ids[4]]
    seen = [r["requestId"] for r in body["requests"]]
    while body["nextCursor"]:
        status, body = await harness.api("GET", f"/requests?limit=2&cursor={body['nextCursor']}")
        assert status == 200
        seen += [r["requestId"] for r in body["requests"]]
    assert seen == [other, *reversed(ids)]
    _, by_repo = await harness.api("GET", "/requests?repo=ACME/other")
    assert [r["requestId"] for r in by_repo["requests"]] == [other]
    _, by_origin = await harness.api("GET", "/requests?origin=web")
    assert len(by_origin["requests"]) == 5
    _, by_status = await harness.api("GET", "/requests?status=completed")
    assert by_status == {"requests": [], "nextCursor": None}


async def test_list_requests_refuses_bad_queries_and_job_tokens(harness: Harness) -> None:
    rid = await create(harness)
    for query, field in (
        ("?limit=0", "limit"),
        ("?limit=abc", "limit"),
        ("?status=bogus", "status"),
        ("?cursor=garbage", "cursor"),
        ("?color=blue", "color"),
    ):
        status, body = await harness.api("GET", "/requests" + query)
        assert status == 422, (query, body)
        assert body["error"]["details"][0]["field"] == field, body
    job_token = TokenAuthority(harness.services.settings).issue(rid, 60)
    status, _ = await harness.api("GET", "/requests", token=job_token)
    assert status == 401


async def test_request_ids_have_one_format_whatever_the_door(harness: Harness) -> None:
    rid = await create(harness)
    assert rid.startswith("req_") and len(rid) == 20


async def test_agents_get_the_public_base_url_plus_api(db_url: str) -> None:
    for public in ("https://clarity.example.com", "https://clarity.example.com/api/"):
        async with running_clarity(db_url, clarity_public_url=public) as h:
            await create(h)
            await h.run_jobs()
            assert h.runner.calls[-1].body["apiUrl"] == "https://clarity.example.com/api"
