"""Bad side-API input of every kind: a 4xx with a JSON error, and not one row written."""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from fakes.harness import API_TOKEN, Harness, running_clarity

from bot.api.tokens import TokenAuthority

OK_MESSAGE = {"type": "agent_thinking", "content": "hmm"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    token: str | None = API_TOKEN
    status: int = 422
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


CASES: dict[str, Case] = {
    # authentication
    "no token": Case("GET", "/requests/{rid}", token=None, status=401),
    "wrong token": Case("GET", "/requests/{rid}", token="nope", status=401),
    "not bearer": Case(
        "GET", "/requests/{rid}", token=None, status=401, headers={"Authorization": "Basic eA=="}
    ),
    "tampered job token": Case("GET", "/requests/{rid}", token="{tampered}", status=401),
    "job token of another request": Case("GET", "/requests/{rid}", token="{other}", status=401),
    "job token creating requests": Case(
        "POST", "/requests", {"repo": "a/b", "description": "x"}, token="{scoped}", status=401
    ),
    "no token on openapi": Case("GET", "/openapi.json", token=None, status=401),
    "no token on config": Case("GET", "/config/github", token=None, status=401),
    # not JSON
    "empty body": Case("POST", "/requests", raw=b"", status=400),
    "not json": Case("POST", "/requests", raw=b"{repo: x", status=400),
    "NaN": Case(
        "PATCH", "/requests/{rid}/status", raw=b'{"status":"error","costUsd":NaN}', status=400
    ),
    "not utf-8": Case("POST", "/requests", raw=b'{"repo":"\xff\xfe"}', status=400),
    "deeply nested": Case("POST", "/requests", raw=b"[" * 100_000 + b"]" * 100_000, status=400),
    # wrong shape
    "array body": Case("POST", "/requests", ["octo/widgets"], field="body"),
    "missing repo": Case("POST", "/requests", {"description": "x"}, field="repo"),
    "bad repo": Case("POST", "/requests", {"repo": "not a repo", "description": "x"}, field="repo"),
    "blank description": Case(
        "POST", "/requests", {"repo": "a/b", "description": "   "}, field="description"
    ),
    "unknown field": Case(
        "POST", "/requests", {"repo": "a/b", "description": "x", "status": "done"}, field="status"
    ),
    "snake_case field": Case(
        "POST", "/requests", {"repo": "a/b", "description": "x", "request_type": "bug"}
    ),
    "bad origin": Case(
        "POST", "/requests", {"repo": "a/b", "description": "x", "origin": "email"}, field="origin"
    ),
    "wrong type": Case("POST", "/requests", {"repo": 5, "description": "x"}, field="repo"),
    "NUL in text": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_thinking", "content": "a\u0000b"},
        field="content",
    ),
    "lone surrogate": Case(
        "POST",
        "/requests/{rid}/messages",
        raw=b'{"type": "agent_thinking", "content": "\\ud800"}',
        field="content",
    ),
    "NUL in metadata key": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_thinking", "content": "x", "metadata": {"a\u0000": 1}},
    ),
    # status reports
    "unknown status": Case("PATCH", "/requests/{rid}/status", {"status": "done"}, field="status"),
    "negative prNumber": Case(
        "PATCH",
        "/requests/{rid}/status",
        {"status": "processing", "prNumber": -1},
        field="prNumber",
    ),
    "huge prNumber": Case(
        "PATCH",
        "/requests/{rid}/status",
        {"status": "processing", "prNumber": 2**40},
        field="prNumber",
    ),
    "negative cost": Case(
        "PATCH", "/requests/{rid}/status", {"status": "processing", "costUsd": -1}, field="costUsd"
    ),
    "huge cost": Case(
        "PATCH",
        "/requests/{rid}/status",
        {"status": "processing", "costUsd": 1e12},
        field="costUsd",
    ),
    "bad prUrl": Case(
        "PATCH", "/requests/{rid}/status", {"status": "pr_created", "prUrl": "nope"}, field="prUrl"
    ),
    "pr_created without prUrl": Case(
        "PATCH", "/requests/{rid}/status", {"status": "pr_created"}, field="prUrl"
    ),
    "forbidden transition": Case(
        "PATCH", "/requests/{rid}/status", {"status": "completed"}, status=409
    ),
    "status of unknown request": Case(
        "PATCH", "/requests/nope/status", {"status": "processing"}, status=404
    ),
    # messages
    "message type people write": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "initial_request", "content": "x"},
        field="type",
    ),
    "empty content": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_thinking", "content": ""},
        field="content",
    ),
    "metadata not an object": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_thinking", "content": "x", "metadata": 3},
        field="metadata",
    ),
    "bad metadata field": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_terminal", "content": "ls", "metadata": {"exitCode": "zero"}},
        field="metadata.exitCode",
    ),
    "too many options": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "clarification_ask", "content": "?", "metadata": {"options": list("abcdefghijk")}},
        field="metadata.options",
    ),
    "message to unknown request": Case("POST", "/requests/nope/messages", OK_MESSAGE, status=404),
    "unknown request": Case("GET", "/requests/nope", status=404),
    "unknown route": Case("GET", "/nothing-here", status=404),
    # size
    "too large (Content-Length)": Case(
        "POST",
        "/requests/{rid}/messages",
        {"type": "agent_thinking", "content": "x" * 300_000},
        status=413,
    ),
}


@pytest.fixture
async def scene(harness: Harness) -> tuple[Harness, dict[str, str]]:
    status, body = await harness.api("POST", "/requests", {"repo": "a/b", "description": "one"})
    assert status == 201
    rid = body["requestId"]
    other = (await harness.api("POST", "/requests", {"repo": "a/b", "description": "two"}))[1]
    await harness.run_jobs()  # both dispatched: processing
    authority = TokenAuthority(harness.services.settings)
    scoped = authority.issue(rid, 600)
    names = {
        "rid": rid,
        "scoped": scoped,
        "other": authority.issue(other["requestId"], 600),
        "tampered": scoped[:-2] + ("AA" if not scoped.endswith("AA") else "BB"),
    }
    return harness, names


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_is_refused_and_writes_nothing(
    scene: tuple[Harness, dict[str, str]], name: str
) -> None:
    harness, names = scene
    case = CASES[name]
    before = await harness.counts()
    token = case.token.format(**names) if case.token else None
    status, body = await harness.api(
        case.method,
        case.path.format(**names),
        case.body,
        raw=case.raw,
        token=token,
        headers=case.headers,
    )
    assert status == case.status, body
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if case.field is not None:
        assert case.field in [d["field"] for d in body["error"]["details"]], body
    assert await harness.counts() == before


async def test_oversize_chunked_body_is_refused(scene: tuple[Harness, dict[str, str]]) -> None:
    harness, names = scene
    before = await harness.counts()

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"type": "agent_thinking", "content": "'
        for _ in range(40):
            yield b"x" * 8192
        yield b'"}'

    async with harness.client.post(
        f"/api/requests/{names['rid']}/messages",
        data=chunks(),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await harness.counts() == before


async def test_wrong_method_is_json(scene: tuple[Harness, dict[str, str]]) -> None:
    harness, names = scene
    status, body = await harness.api("DELETE", f"/requests/{names['rid']}")
    assert status == 405 and "error" in body


def test_cases_are_valid_json_where_given() -> None:
    for case in CASES.values():
        if case.body is not None:
            json.dumps(case.body)


async def test_database_down_is_a_503_not_a_crash() -> None:
    """Nothing listens where the database should be: every write says so as a JSON 503."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing is listening on `port` once the socket is closed.
    async with running_clarity(f"postgresql://clarity:x@127.0.0.1:{port}/clarity") as h:
        rid = "00000000-0000-4000-8000-000000000000"
        for body in (
            OK_MESSAGE,
            {"type": "clarification_ask", "content": "A or B?", "metadata": {"options": ["A"]}},
        ):
            status, answer = await h.api("POST", f"/requests/{rid}/messages", body)
            assert status == 503, answer
            assert answer["error"] == {"code": "unavailable", "message": "database unavailable"}
        status, answer = await h.api("PATCH", f"/requests/{rid}/status", {"status": "cancelled"})
        assert (status, answer["error"]["code"]) == (503, "unavailable")
