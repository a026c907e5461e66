"""The side-API routes of a run: git-credentials, agent-session, and the bundle upload.

Each is the job token's alone (the global token gets 401), uploads are streamed into
storage and refused over their limits with nothing kept; schemathesis checks the routes
against the OpenAPI document with a real job token.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from fakes.harness import API_TOKEN, Harness, running_clarity
from sqlalchemy import func, select

from storage.models import Artifact, ArtifactChunk, Run

ST = Path(shutil.which("st") or Path(os.sys.executable).parent / "st")  # type: ignore[attr-defined]
BUNDLE = b"# v2 git bundle\n" + os.urandom(3000)


async def _dispatched(h: Harness) -> tuple[str, str]:
    """A request dispatched to the (fake) runner: its id and job token."""
    status, body = await h.api(
        "POST", "/requests", {"repo": "octo-org/widgets", "description": "Add a dark mode"}
    )
    assert status == 201
    await h.run_jobs()
    job = h.runner.accepted[-1].body
    return str(body["requestId"]), str(job["apiToken"])


async def _put(
    h: Harness,
    path: str,
    data: bytes | AsyncIterator[bytes],
    *,
    token: str | None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    h2 = dict(headers or {})
    if token is not None:
        h2["Authorization"] = f"Bearer {token}"
    async with h.client.put("/api" + path, data=data, headers=h2) as resp:
        text = await resp.text()
        return resp.status, (await resp.json() if text else None)


async def _get(h: Harness, path: str, token: str) -> tuple[int, bytes, dict[str, str]]:
    async with h.client.get("/api" + path, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def _chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


async def _artifact_rows(h: Harness) -> tuple[int, int]:
    async with h.services.session_factory() as s:
        artifacts = await s.scalar(select(func.count()).select_from(Artifact))
        chunks = await s.scalar(select(func.count()).select_from(ArtifactChunk))
    return int(artifacts or 0), int(chunks or 0)


async def test_git_credentials_are_a_read_token_for_the_job_alone(db_url: str) -> None:
    async with running_clarity(db_url) as h:
        rid, token = await _dispatched(h)
        other, other_token = await _dispatched(h)
        path = f"/requests/{rid}/git-credentials"
        assert (await h.api("POST", path, {}, token=API_TOKEN))[0] == 401
        assert (await h.api("POST", path, {}, token=other_token))[0] == 401
        assert (await h.api("POST", path, {"extra": 1}, token=token))[0] == 422
        status, body = await h.api("POST", path, {}, token=token)
        assert status == 200 and set(body) == {"token", "expiresAt"}
        (asked,) = [c for c in h.github.calls_to("POST", "/access_tokens") if c.body]
        assert asked.body == {"repositories": ["widgets"], "permissions": {"contents": "read"}}
        assert h.github.token_scopes[body["token"]]["permissions"] == {"contents": "read"}
        # Not kept anywhere by Clarity: the stored installation token (if any) is another.
        assert body["token"] != h.clarity.github_app.cached_token()
        # Once the request is over, the job's token gets no more.
        async with h.services.session_factory.begin() as session:
            from bot.requests.actions import SYSTEM

            await h.clarity.lifecycle.cancel(session, rid, SYSTEM)
        assert (await h.api("POST", path, {}, token=token))[0] == 401
        assert other


async def test_agent_session_is_saved_and_given_back(db_url: str) -> None:
    async with running_clarity(db_url, clarity_session_limit_bytes=20_000) as h:
        rid, token = await _dispatched(h)
        path = f"/requests/{rid}/agent-session"
        status, _body, _ = await _get(h, path, token)
        assert status == 404
        archive = gzip.compress(os.urandom(5000))
        header = {"Clarity-Session-Id": "3f1c2b7e-0d4a-4c1e-9a55-1f0e2d3c4b5a"}
        assert (await _put(h, path, archive, token=API_TOKEN, headers=header))[0] == 401
        status, err = await _put(h, path, archive, token=token)
        assert status == 422 and err["error"]["details"][0]["field"] == "Clarity-Session-Id"
        bad = {"Clarity-Session-Id": "../../etc"}
        assert (await _put(h, path, archive, token=token, headers=bad))[0] == 422
        status, err = await _put(h, path, b"not gzip at all", token=token, headers=header)
        assert status == 422 and "gzip" in err["error"]["message"]
        assert await _artifact_rows(h) == (0, 0)

        status, _ = await _put(h, path, _chunks(archive, 700), token=token, headers=header)
        assert status == 204
        status, back, headers = await _get(h, path, token)
        assert (status, back) == (200, archive)
        assert headers["Clarity-Session-Id"] == header["Clarity-Session-Id"]
        assert headers["Content-Type"] == "application/gzip"
        async with h.services.session_factory() as s:
            run = await s.scalar(select(Run).where(Run.request_id == rid))
        assert run is not None and run.claude_session_id == header["Clarity-Session-Id"]

        # Too large: refused (announced or not), and the saved session stays as it was.
        big = gzip.compress(os.urandom(30_000))
        status, err = await _put(h, path, big, token=token, headers=header)
        assert status == 413 and err["error"]["code"] == "payload_too_large"
        status, _ = await _put(h, path, _chunks(big), token=token, headers=header)
        assert status == 413
        assert (await _get(h, path, token))[1] == archive


async def test_a_bundle_is_stored_as_it_arrives_and_queued_for_publishing(db_url: str) -> None:
    async with running_clarity(db_url, clarity_bundle_limit_bytes=100_000) as h:
        rid, token = await _dispatched(h)
        path = f"/requests/{rid}/runs/1/bundle"
        done = {"Clarity-Run-Outcome": "completed"}
        assert (await _put(h, path, BUNDLE, token=API_TOKEN, headers=done))[0] == 401
        assert (await _put(h, path, BUNDLE, token=token))[0] == 422
        odd = {"Clarity-Run-Outcome": "finished"}
        assert (await _put(h, path, BUNDLE, token=token, headers=odd))[0] == 422
        assert (await _put(h, f"/requests/{rid}/runs/x/bundle", BUNDLE, token=token, headers=done))[
            0
        ] == 422
        status, err = await _put(
            h, f"/requests/{rid}/runs/9/bundle", BUNDLE, token=token, headers=done
        )
        assert status == 404 and "no run 9" in err["error"]["message"]
        assert (await _put(h, path, b"PK\x03\x04 a zip", token=token, headers=done))[0] == 422
        assert (await _put(h, path, b"", token=token, headers=done))[0] == 422
        too_big = b"# v2 git bundle\n" + os.urandom(120_000)
        assert (await _put(h, path, too_big, token=token, headers=done))[0] == 413
        assert (await _put(h, path, _chunks(too_big), token=token, headers=done))[0] == 413
        assert await _artifact_rows(h) == (0, 0)
        assert await h.jobs("publish") == []

        status, body = await _put(h, path, _chunks(BUNDLE, 999), token=token, headers=done)
        assert status == 202
        assert body == {
            "attempt": 1,
            "outcome": "completed",
            "size": len(BUNDLE),
            "sha256": hashlib.sha256(BUNDLE).hexdigest(),
        }
        (publish,) = await h.jobs("publish")
        assert publish.payload == {"requestId": rid, "attempt": 1, "sha256": body["sha256"]}
        # The same bundle again changes nothing more.
        assert (await _put(h, path, BUNDLE, token=token, headers=done))[0] == 202
        assert len(await h.jobs("publish")) == 1


async def test_the_run_routes_conform_to_the_document_with_a_job_token(db_url: str) -> None:
    async with running_clarity(db_url, anthropic_api_key="sk-ant-api-test-key") as h:
        rid, token = await _dispatched(h)
        # A saved session, so GET agent-session has something to answer.
        saved = await _put(
            h,
            f"/requests/{rid}/agent-session",
            gzip.compress(b"transcript"),
            token=token,
            headers={"Clarity-Session-Id": "3f1c2b7e-0d4a-4c1e-9a55-1f0e2d3c4b5a"},
        )
        assert saved[0] == 204
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "schemathesis.toml"
            config.write_text(f'[parameters]\n"path.requestId" = "{rid}"\n')
            await _schemathesis(h, token, config)


async def _schemathesis(h: Harness, token: str, config: Path) -> None:
    url = str(h.client.make_url("/api/openapi.json"))
    process = await asyncio.create_subprocess_exec(
        str(ST),
        "--config-file",
        str(config),
        "run",
        url,
        "--header",
        f"Authorization: Bearer {token}",
        "--include-path-regex",
        "git-credentials|agent-session|/bundle$",
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        "all",
        # The bodies must be a gzip file and a git bundle (422 otherwise, with the reason):
        # a JSON schema cannot say so of bytes, so bytes the document allows are refused.
        "--exclude-checks",
        "ignored_auth,positive_data_acceptance",
        "--max-examples",
        "30",
        "--seed",
        "20261206",
        "--request-timeout",
        "20",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    report = out.decode()
    assert process.returncode == 0, report[-6000:]
    assert "Authentication failed" not in report, report[-3000:]


__all__ = ["aiohttp"]
