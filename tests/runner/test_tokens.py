"""The installation token a run reads its repository with: scoped to that repository and to
reading, asked for on demand through the side-API, and nowhere afterwards.

The remote is served over HTTP (git's own http-backend) and asks for a token as GitHub does,
so the agent's credential helper really runs: clone → POST git-credentials → the fake
GitHub issues a token limited by the body Clarity sent → git reads with it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import aiohttp
from sqlalchemy import text

from tests.runner.git_http import GitHttpServer
from tests.runner.local_support import REPO, dump, running_loop


def _files(folder: Path) -> bytes:
    """Every file under `folder`, concatenated (for a search)."""
    out = bytearray()
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                out += path.read_bytes()
    return bytes(out)


async def test_the_read_token_is_scoped_used_and_found_nowhere(db_url: str) -> None:
    async with running_loop(db_url) as loop:
        git_server = await GitHttpServer(loop.base / "git", loop.github).start()
        try:
            # The loop's runs read the repository over HTTP from here on.
            loop.graph.dispatcher.environment = _with_git_url(loop, git_server.url)
            request = await loop.file(f"{REPO} add a greeting file")
            rid = request.request_id
            stored = await loop.wait_for(lambda: loop.bundle(rid, 1), "the run's bundle")
            assert stored.label == "completed"

            # Clarity asked GitHub for a token that can only read this one repository.
            asked = loop.github.calls_to("POST", "/access_tokens")
            scoped = [c.body for c in asked if c.body and "repositories" in c.body]
            assert scoped and all(
                b == {"repositories": ["widgets"], "permissions": {"contents": "read"}}
                for b in scoped
            )
            tokens = set(loop.github.token_scopes)
            assert tokens
            # git fetched with it (and nothing else), and it cannot push.
            used = {c.token for c in git_server.calls if c.status == 200}
            assert used and used <= tokens
            token = next(iter(tokens))
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    f"{git_server.url}{REPO}.git/info/refs?service=git-receive-pack",
                    headers={"Authorization": _basic("x-access-token", token)},
                ) as push,
            ):
                assert push.status == 403

            # Nowhere: the work folder's .git, the agent's environment and command line, its
            # log, every stored message, artifact and config, every Slack and GitHub call.
            await loop.wait_for(loop.all_reaped, "the reap")
            said = [(m.content, m.metadata_) for m in await loop.messages(rid)]
            places = {
                "work folder": _files(loop.work_dir(rid)),
                "fake claude": loop.fake_log_path.read_bytes(),
                "agent log": loop.agent_log(rid, 1).encode(),
                "messages": dump(said).encode(),
                "artifacts": await loop.bundle_bytes(stored),
                "database": await _database_text(loop),
                "slack": dump([c.params for c in loop.slack.calls()]).encode(),
                "github": dump(
                    [(c.path, c.body, c.authorization) for c in loop.github.calls]
                ).encode(),
            }
            assert places["work folder"] and places["fake claude"] and places["agent log"]
            for where, content in places.items():
                for secret in tokens:
                    assert secret.encode() not in content, f"the token is in the {where}"
            remote = json.loads(loop.fake_log_path.read_text().splitlines()[0])
            assert "x-access-token" not in dump(remote)
        finally:
            await git_server.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _with_git_url(loop: object, url: str) -> object:
    from dataclasses import replace

    from tests.runner.local_support import Loop

    assert isinstance(loop, Loop)
    return replace(loop.graph.dispatcher.environment, git_url=url)


async def _database_text(loop: object) -> bytes:
    """Every row of every table a secret could be written to, as text."""
    from tests.runner.local_support import Loop

    assert isinstance(loop, Loop)
    out = []
    async with loop.graph.services.session_factory() as session:
        for table in (
            "feature_requests",
            "request_messages",
            "app_config",
            "clarity_jobs",
            "clarity_runs",
            "clarity_artifacts",
            "clarity_slack_posts",
        ):
            rows = await session.execute(text(f"SELECT * FROM {table}"))
            out.append(dump([list(r) for r in rows]))
        chunks = await session.execute(text("SELECT data FROM clarity_artifact_chunks"))
        blobs = b"".join(bytes(r[0]) for r in chunks)
    return "".join(out).encode() + blobs
