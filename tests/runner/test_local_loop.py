"""End to end on one machine: /clarity → the local backend runs the agent program with the
fake Claude → its work arrives as a bundle; questions, answers and resumed sessions; the
sandbox's environment.

Through the real server and PostgreSQL, the fake Slack and GitHub, a bare repository as
the remote. bot/publish.py (the lead's) pushes bundles and opens PRs: these tests stop at
"bundle stored, publish job queued" (a stand-in pushes the bundle where a test needs the
next run to find the branch).
"""

from __future__ import annotations

import os
import re
import shutil

from bot.runner.environment import FORBIDDEN
from tests.runner.local_support import (
    HOST_SECRETS,
    REPO,
    dump,
    git,
    processes_under,
    running_loop,
    scratch_clone,
)

EXPECTED_ENV = {
    "HOME",
    "PATH",
    "LANG",
    "LC_ALL",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "CLAUDE_CONFIG_DIR",
    "DISABLE_AUTOUPDATER",
}


async def test_a_request_is_worked_by_the_agent_and_its_bundle_arrives(db_url: str) -> None:
    async with running_loop(db_url) as loop:
        request = await loop.file(f"{REPO} add a greeting file")
        rid = request.request_id
        stored = await loop.wait_for(lambda: loop.bundle(rid, 1), "the run's bundle")
        assert stored.label == "completed"
        publish = await loop.wait_for(lambda: loop.publish_queued(rid, 1), "the publish job")
        assert publish.payload["sha256"] == stored.sha256

        # The bundle holds the agent's commit on the request's branch, on top of main.
        clone, heads = scratch_clone(loop, await loop.bundle_bytes(stored))
        (branch,) = heads
        assert re.fullmatch(r"clarity/[a-z0-9]{1,8}-add-a-greeting-file", branch)
        assert "Hello from Clarity" in git("show", f"bundle/{branch}:hello.txt", cwd=clone)
        git("merge-base", "--is-ancestor", "origin/main", f"bundle/{branch}", cwd=clone)

        # The run: started once through the local backend, followed to its end and reaped.
        run = await loop.wait_for(
            lambda: _state(loop, rid, 1, "succeeded"), "the run to be recorded succeeded"
        )
        assert run.backend == "local" and run.kind == "initial"
        assert run.sandbox_id is not None and run.sandbox_id.startswith("local:")
        assert run.heartbeat_at is not None and run.finished_at is not None
        await loop.wait_for(loop.all_reaped, "the reap")
        assert processes_under(loop.request_dir(rid)) == []
        # The work folder stays for the next run; the run's HOME went with the reap.
        assert (loop.work_dir(rid) / ".git").is_dir()
        assert not (loop.request_dir(rid) / "attempt-1").exists()

        # The thread shows the agent's progress and its cost; the trail has the run report.
        progress = await loop.wait_for(lambda: _progress_with_cost(loop), "progress with cost")
        assert "files changed" in progress
        trail = [m.type.value for m in await loop.messages(rid)]
        assert trail[:3] == ["initial_request", "processing_update", "processing_started"]
        assert {"agent_tool_call", "agent_file_change", "agent_summary"} <= set(trail)
        report = next(m for m in await loop.messages(rid) if m.content.startswith("Run report"))
        assert report.metadata_ is not None and report.metadata_["costCents"] > 0
        assert (await loop.request(rid)).status.value == "processing"  # until published

        # What the fake Claude saw: our flags, the budget, and an environment built from
        # named values only; not one of Clarity's secrets.
        (start,) = loop.fake_log()
        argv, env = start["argv"], start["env"]
        assert argv[argv.index("--max-budget-usd") + 1] == "10"
        assert start["cwd"] == str(loop.work_dir(rid))
        assert set(env) >= EXPECTED_ENV
        assert env["CLAUDE_CONFIG_DIR"].startswith(str(loop.request_dir(rid)))
        assert not set(env) & FORBIDDEN
        assert not [k for k in env if k.startswith(("SLACK_", "GITHUB_"))]
        seen = dump(start)
        for secret in HOST_SECRETS.values():
            assert secret not in seen
        assert loop.graph.services.settings.secret("database_url") not in seen
        # The job token and the job document stay with the agent program.
        assert "clj1." not in seen and "CLARITY_JOB" not in env
        if os.geteuid() == 0:
            assert env.get("USER") in (None, "clarity-agent")
            assert (loop.work_dir(rid) / "hello.txt").stat().st_uid != 0


async def test_a_question_then_an_answer_resumes_the_same_session(db_url: str) -> None:
    async with running_loop(db_url, publish=True) as loop:
        request = await loop.file(f"{REPO} [fake:ask] write a greeting")
        rid = request.request_id
        await loop.wait_for(
            lambda: loop.status_is(rid, "awaiting_clarification"), "the agent's question"
        )
        saved = await loop.wait_for(lambda: loop.session_artifact(rid), "the saved session")
        first = loop.fake_log()[0]
        assert "--resume" not in first["argv"]
        question = next(m for m in await loop.messages(rid) if m.type.value == "clarification_ask")
        assert question.metadata_ is not None
        assert question.metadata_["options"] == ["Hello, world!", "Howdy, partner!", "Hi there!"]
        run = await loop.wait_for(lambda: _state(loop, rid, 1, "succeeded"), "run 1's end")
        assert run.claude_session_id == saved.label

        # The thread offers the options as buttons; the work folder is gone meanwhile.
        options = await loop.wait_for(
            lambda: _async(loop.buttons("clarification_option")), "the option buttons"
        )
        shutil.rmtree(loop.work_dir(rid))
        howdy = next(b for b in options if b["value"] == "Howdy, partner!")
        clicked = await loop.sender.click(
            "clarification_option", howdy["value"], block_id=howdy["block_id"]
        )
        assert clicked.status == 200

        stored = await loop.wait_for(lambda: loop.bundle(rid, 2), "the answer run's bundle")
        assert stored.label == "completed"
        second = loop.fake_log()[-1]
        resumed = second["argv"][second["argv"].index("--resume") + 1]
        assert resumed == saved.label
        clone, (branch,) = scratch_clone(loop, await loop.bundle_bytes(stored))
        assert git("show", f"bundle/{branch}:hello.txt", cwd=clone) == "Howdy, partner!\n"
        runs = await loop.runs(rid)
        assert [(r.attempt, r.kind) for r in runs] == [(1, "initial"), (2, "clarification_answer")]


async def _async(value: object) -> object:
    return value


async def _state(loop: object, request_id: str, attempt: int, state: str) -> object:
    from tests.runner.local_support import Loop

    assert isinstance(loop, Loop)
    run = await loop.run(request_id, attempt)
    return run if run.state == state else None


async def _progress_with_cost(loop: object) -> str | None:
    from tests.runner.local_support import Loop

    assert isinstance(loop, Loop)
    for call in reversed(loop.slack.calls()):
        if call.method not in ("chat.postMessage", "chat.update"):
            continue
        text = dump(call.get("blocks"))
        if "step" in text and "cost $" in text:
            return text
    return None
