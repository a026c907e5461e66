"""`clarity-agent run` end to end against the fake Claude Code, a fake side-API and a local
git remote: the outcomes of a run and what each reports."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.claude import descendants, group_alive, process_table
from agent.session import project_key
from tests.agent.conftest import (
    API_KEY,
    REQUEST_ID,
    Sandbox,
    fake_cli,
    finish,
    make_job,
    run_agent,
    start_agent,
)
from tests.agent.fake_sideapi import GIT_TOKEN, JOB_TOKEN

BRANCH = "clarity/4f2a9c1b-add-a-hello-file"


async def test_edit_uploads_the_runs_commits_as_a_bundle(sandbox: Sandbox, tmp_path: Path) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "edit")))
    assert done.returncode == 0, done.stderr

    # The bundle applies to the remote as it is, and the branch carries the work.
    [(request_id, attempt, outcome, bundle)] = api.bundles
    assert (request_id, attempt, outcome) == (REQUEST_ID, 1, "completed")
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == "Hello from Clarity\n"
    assert "See hello.txt" in sandbox.remote.show(BRANCH, "README.md")
    assert sandbox.remote.log(BRANCH) == ["Add hello.txt", "Initial commit"]

    # What the agent did, as messages, in order; then the cost, the session and the bundle.
    order = api.order()
    assert order[-3:] == ["PATCH status:processing", "PUT agent-session", "PUT bundle:completed"]
    types = [m["type"] for m in api.messages()]
    assert types[0] == "agent_thinking" and types[-1] == "agent_summary"
    assert {"agent_tool_call", "agent_tool_result", "agent_terminal", "agent_file_change"} <= set(
        types
    )

    calls = api.messages("agent_tool_call")
    assert calls[0]["metadata"]["toolName"] == "TaskCreate"
    assert calls[0]["metadata"]["todos"] == [{"content": "Write hello.txt", "status": "pending"}]
    last_todos = [c["metadata"]["todos"] for c in calls if "todos" in c["metadata"]][-1]
    assert last_todos == [
        {"content": "Write hello.txt", "status": "completed"},
        {"content": "Mention it in the README", "status": "completed"},
    ]
    assert all(c["metadata"]["turnNumber"] >= 1 and c["metadata"]["turnId"] for c in calls)

    [terminal] = api.messages("agent_terminal")
    assert terminal["metadata"]["command"] == "git status --short && cat hello.txt"
    assert terminal["metadata"]["exitCode"] == 0
    assert "Hello from Clarity" in terminal["metadata"]["stdout"]

    changes = {m["metadata"]["filePath"]: m["metadata"] for m in api.messages("agent_file_change")}
    assert changes["hello.txt"]["fileAction"] == "created"
    assert "+Hello from Clarity" in changes["hello.txt"]["diffPreview"]
    assert changes["README.md"]["fileAction"] == "modified"

    [summary] = api.messages("agent_summary")
    assert summary["content"].startswith("Add hello.txt")
    cost_cents = summary["metadata"]["costCents"]
    assert cost_cents >= 1 and summary["metadata"]["numTurns"] >= 5
    [report] = api.statuses()
    assert report["status"] == "processing"
    assert round(report["costUsd"] * 100) == cost_cents and report["durationMs"] >= 0

    # The CLI ran with our flags and an environment without the job's secrets.
    [start] = sandbox.fake_starts()
    argv = start["argv"]
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--max-budget-usd") + 1] == "5"
    assert "mcp__clarity__ask_user" in argv[argv.index("--allowedTools") + 1]
    mcp = json.loads(argv[argv.index("--mcp-config") + 1])["mcpServers"]["clarity"]
    assert mcp["args"][-3:-1] == ["mcp", "--questions"]
    assert start["cwd"] == str(sandbox.work_dir)
    env = start["env"]
    assert env["ANTHROPIC_API_KEY"] == API_KEY
    assert env["CLAUDE_CONFIG_DIR"] == str(sandbox.config_dir)
    assert env["GIT_AUTHOR_NAME"] == "Clarity Agent"
    assert not [k for k in env if k.startswith(("CLARITY_", "GITHUB_"))]
    assert JOB_TOKEN not in json.dumps(env)
    assert "Add a hello file" in start["prompt"] and "mention it in the README" in start["prompt"]


async def test_a_question_saves_the_session_and_ends_the_run(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "ask")))
    assert done.returncode == 0, done.stderr

    [ask] = api.messages("clarification_ask")
    assert ask["content"] == "Which greeting should hello.txt use?"
    assert ask["metadata"]["options"] == ["Hello, world!", "Howdy, partner!", "Hi there!"]
    # The cost is reported and the session saved before the question goes out.
    order = api.order()
    assert order.index("PATCH status:processing") < order.index("POST clarification_ask")
    assert order.index("PUT agent-session") < order.index("POST clarification_ask")
    assert order[-1] == "POST clarification_ask"
    [call] = [
        m
        for m in api.messages("agent_tool_call")
        if m["metadata"]["toolName"] == "mcp__clarity__ask_user"
    ]
    assert call["metadata"]["toolInput"]["question"] == ask["content"]
    assert REQUEST_ID in api.sessions
    # Nothing changed yet, so nothing to publish; no error either.
    assert api.bundles == []
    assert [s["status"] for s in api.statuses()] == ["processing"]


def answered(job: dict[str, Any], question: dict[str, Any], answer: str) -> dict[str, Any]:
    """The next job after a person answered the agent's question."""
    conversation = [
        *job["conversation"],
        {
            "type": "clarification_ask",
            "source": "system",
            "actorName": None,
            "content": question["content"],
            "metadata": question["metadata"],
        },
        {
            "type": "clarification_answer",
            "source": "slack",
            "actorName": "Ada",
            "content": answer,
            "metadata": {},
        },
    ]
    return {
        **job,
        "kind": "clarification_answer",
        "attempt": job["attempt"] + 1,
        "conversation": conversation,
    }


async def test_an_answer_resumes_the_saved_session_in_a_fresh_sandbox(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "ask"))
    job = make_job(api)
    assert (await run_agent(job, env)).returncode == 0
    [ask] = api.messages("clarification_ask")
    session_id, _ = api.sessions[REQUEST_ID]
    transcript = sandbox.config_dir / "projects" / project_key(str(sandbox.work_dir))
    assert (transcript / f"{session_id}.jsonl").is_file()

    # The next run gets a new sandbox: no checkout, no Claude config.
    shutil.rmtree(sandbox.work_dir)
    shutil.rmtree(sandbox.config_dir)
    done = await run_agent(answered(job, ask, "Howdy, partner!"), env)
    assert done.returncode == 0, done.stderr

    second = sandbox.fake_starts()[1]
    argv = second["argv"]
    assert argv[argv.index("--resume") + 1] == session_id
    # Resumed, the prompt is the answer, not the whole request again.
    assert "Howdy, partner!" in second["prompt"]
    assert "Please add a hello file" not in second["prompt"]
    assert (transcript / f"{session_id}.jsonl").is_file()
    [summary] = api.messages("agent_summary")[-1:]
    assert "Howdy, partner!" in summary["content"]

    [(_, attempt, outcome, bundle)] = api.bundles
    assert (attempt, outcome) == (2, "completed")
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == "Howdy, partner!\n"
    assert api.sessions[REQUEST_ID][0] == session_id


async def test_a_lost_transcript_falls_back_to_a_new_session(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "ask"))
    job = make_job(api)
    assert (await run_agent(job, env)).returncode == 0
    [ask] = api.messages("clarification_ask")
    session_id, _ = api.sessions[REQUEST_ID]
    # A saved session whose archive holds no transcript (say, saved by another CLI version).
    api.sessions[REQUEST_ID] = (session_id, archive_of({"tasks/x/1.json": b"{}"}))
    shutil.rmtree(sandbox.config_dir)

    done = await run_agent(answered(job, ask, "Hi there!"), env)
    assert done.returncode == 0, done.stderr
    starts = sandbox.fake_starts()[1:]
    assert [("--resume" in s["argv"]) for s in starts] == [True, False]
    # The new session gets the whole request, the answer included.
    assert "Please add a hello file" in starts[1]["prompt"]
    assert "Hi there!" in starts[1]["prompt"]
    assert [b[2] for b in api.bundles] == ["completed"]
    # The failed resume is not reported as the run's summary.
    assert "No conversation found" not in json.dumps(api.messages())


async def test_a_follow_up_continues_the_published_branch(sandbox: Sandbox, tmp_path: Path) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "edit"))
    job = make_job(api)
    assert (await run_agent(job, env)).returncode == 0
    sandbox.remote.fetch_bundle(api.bundles[0][3], BRANCH, tmp_path)  # Clarity publishes it

    follow_up = {
        **job,
        "kind": "follow_up",
        "attempt": 2,
        "branch": BRANCH,
        "prNumber": 7,
        "conversation": [
            *job["conversation"],
            {"type": "pr_created", "source": "system", "content": "Opened PR #7", "metadata": {}},
            {
                "type": "follow_up_request",
                "source": "slack",
                "actorName": "Ada",
                "content": "Also say it twice",
                "metadata": {},
            },
        ],
    }
    done = await run_agent(follow_up, env)
    assert done.returncode == 0, done.stderr
    second = sandbox.fake_starts()[1]
    assert "--resume" in second["argv"]
    assert second["prompt"].startswith("**Ada asked for more:**\nAlso say it twice")

    [(_, attempt, outcome, bundle)] = api.bundles[1:]
    assert (attempt, outcome) == (2, "completed")
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt").splitlines() == [
        "Hello from Clarity",
        "Again: Also say it twice",
    ]
    assert len(sandbox.remote.log(BRANCH)) == 3


async def test_no_changes_is_an_error_with_the_summary(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "noop")))
    assert done.returncode == 0, done.stderr
    assert api.bundles == []
    report, error = api.statuses()
    assert report["status"] == "processing" and report["costUsd"] > 0
    assert error["status"] == "error" and error["errorCode"] == "NO_CHANGES"
    assert "Nothing to change" in error["errorMessage"]


async def test_a_crash_is_reported_with_the_clis_error_output(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "crash")))
    assert done.returncode == 0, done.stderr
    [error] = api.statuses()
    assert error["status"] == "error" and error["errorCode"] == "AGENT_FAILED"
    assert "exit status 3" in error["errorMessage"]
    assert "fake crash: the model connection was lost" in error["errorMessage"]
    assert api.bundles == []
    assert "agent_terminal" in [m["type"] for m in api.messages()]


async def test_the_budget_stop_uploads_the_work_so_far(sandbox: Sandbox, tmp_path: Path) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "budget")))
    assert done.returncode == 0, done.stderr
    report, error = api.statuses()
    assert report["status"] == "processing" and report["costUsd"] > 5
    assert error["errorCode"] == "BUDGET_EXCEEDED"
    assert "$5.00" in error["errorMessage"] and f"${report['costUsd']:.2f}" in error["errorMessage"]
    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "budget"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "partial.txt") == "partial work\n"
    order = api.order()
    assert order.index("PATCH status:processing") < order.index("PUT bundle:budget")
    assert order[-1] == "PATCH status:error"


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for something the agent does (polling; fails after timeout_s)."""
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


def group_gone(pgid: int) -> bool:
    """Whether no process of a process group is left running (zombies wait for init)."""
    return not group_alive(pgid)


@pytest.mark.parametrize("scenario", ["slow", "stubborn"])
async def test_sigterm_stops_the_cli_and_hands_over_the_work(
    sandbox: Sandbox, tmp_path: Path, scenario: str
) -> None:
    """A cancel: the CLI's whole process group is gone and the work uploaded within 12 s,
    whether the CLI ends on SIGINT (slow) or has to be killed (stubborn)."""
    api = sandbox.side_api
    proc = await start_agent(make_job(api), sandbox.env(fake_cli("--scenario", scenario)))
    try:
        await until(lambda: any(m["content"].startswith("Step 1") for m in api.messages()))
        [start] = sandbox.fake_starts()
        # Its shell commands run in sessions of their own, as Claude Code runs them.
        await until(lambda: bool(sleeping_children(start["pid"])))
        sleepers = sleeping_children(start["pid"])
        assert not group_gone(start["pgid"])
        proc.send_signal(signal.SIGTERM)
        done = await finish(proc, timeout_s=12.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert done.returncode == 0, done.stderr
    assert group_gone(start["pgid"])
    assert [pid for pid in sleepers if command_of(pid).startswith("sleep ")] == []

    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "cancelled"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "slow.txt") == "started\n"
    statuses = [s["status"] for s in api.statuses()]
    # Clarity cancelled the request: the agent reports no error, only what it cost.
    assert statuses == (["processing"] if scenario == "slow" else [])


def command_of(pid: int) -> str:
    """A running process's command line ("" once it is gone or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def sleeping_children(pid: int) -> list[int]:
    """The `sleep` commands a process started, at any depth."""
    table = process_table() or []
    return [
        p.pid
        for p in descendants(pid, table)
        if p.running and command_of(p.pid).startswith("sleep ")
    ]


def archive_of(files: dict[str, bytes]) -> bytes:
    """A gzip'd tar holding these files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_secrets_never_leave_in_messages(sandbox: Sandbox) -> None:
    """The fake echoes the title into README.md, so the diff, the tool input and the summary
    would carry these values if nothing masked them."""
    api = sandbox.side_api
    aws = "AKIAABCDEFGHIJKLMNOP"
    slack = "xoxb-1234567890-abcdefghijkl"
    title = f"Rotate {JOB_TOKEN} {API_KEY} {aws} {slack} ghp_{'a' * 36}"
    env = sandbox.env(fake_cli("--scenario", "edit"))
    done = await run_agent(make_job(api, title=title), env)
    assert done.returncode == 0, done.stderr
    posted = json.dumps([c.json for c in api.calls if c.method in ("POST", "PATCH")])
    for secret in (JOB_TOKEN, API_KEY, aws, slack, "ghp_" + "a" * 36):
        assert secret not in posted
        assert secret not in done.stderr
    assert "[redacted]" in json.dumps(api.messages("agent_file_change"))
    assert "[redacted]" in json.dumps(api.messages("agent_summary"))


async def test_messages_survive_a_flaky_side_api_in_order(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    api.fail_messages = 2
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "edit")))
    assert done.returncode == 0, done.stderr
    attempts = [c for c in api.calls if c.path.endswith("/messages")]
    delivered = api.messages()
    assert len(attempts) == len(delivered) + 2
    assert delivered[0]["type"] == "agent_thinking" and delivered[-1]["type"] == "agent_summary"
    turns = [m["metadata"]["turnNumber"] for m in delivered if "turnNumber" in m["metadata"]]
    assert turns == sorted(turns)


async def test_git_over_https_uses_the_credential_helper_and_keeps_no_token(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The remote wants the installation token (basic auth, as GitHub): the agent clones with
    it, yet it is in no file of the checkout, not in the remote URL, not in the CLI's
    argv or environment and not in any message."""
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "edit"), GITHUB_GIT_URL=api.git_url)
    done = await run_agent(make_job(api), env)
    assert done.returncode == 0, done.stderr

    assert api.calls[0].path.endswith("/git-credentials")
    assert any(r["auth"].startswith("Basic ") for r in api.git_requests)
    git_dir = sandbox.work_dir / ".git"
    for path in git_dir.rglob("*"):
        if path.is_file():
            assert GIT_TOKEN.encode() not in path.read_bytes(), path
    config = (git_dir / "config").read_text()
    assert f"url = {api.git_url}acme/widget.git" in config
    assert "credential" not in config
    [start] = sandbox.fake_starts()
    assert GIT_TOKEN not in json.dumps(start)
    assert not [k for k in start["env"] if k.startswith("CLARITY_CREDENTIAL")]
    posted = json.dumps([c.json for c in api.calls if c.method in ("POST", "PATCH")])
    assert GIT_TOKEN not in posted and GIT_TOKEN not in done.stderr

    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "completed"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == "Hello from Clarity\n"


async def test_a_cli_that_keeps_going_after_asking_is_interrupted(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    done = await run_agent(make_job(api), sandbox.env(fake_cli("--scenario", "chatty")))
    assert done.returncode == 0, done.stderr
    assert "stopping Claude Code (ask)" in done.stderr
    [ask] = api.messages("clarification_ask")
    assert ask["content"] == "Should I keep going?"
    [summary] = api.messages("agent_summary")
    assert summary["metadata"]["subtype"] == "error_during_execution"
    assert [s["status"] for s in api.statuses()] == ["processing"]
    assert REQUEST_ID in api.sessions


async def test_the_run_stops_itself_before_its_time_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "slow"), CLARITY_RUN_TIMEOUT_S="2")
    done = await run_agent(make_job(api), env)
    assert done.returncode == 0, done.stderr
    report, error = api.statuses()
    assert report["status"] == "processing"
    assert (
        error["errorCode"] == "TIMEOUT" and "work so far is on the branch" in error["errorMessage"]
    )
    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "cancelled"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)


async def test_the_demo_scenario_asks_and_then_uses_the_answer(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "demo"), CLAUDE_CODE_FAKE_STEP_S="0")
    job = make_job(api)
    assert (await run_agent(job, env)).returncode == 0
    [ask] = api.messages("clarification_ask")
    assert len(ask["metadata"]["options"]) == 3
    reads = [m for m in api.messages("agent_tool_call") if m["metadata"]["toolName"] == "Read"]
    assert reads and api.messages("agent_terminal")
    choice = ask["metadata"]["options"][1]
    assert (await run_agent(answered(job, ask, choice), env)).returncode == 0
    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "completed"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == f"{choice}\n"
    assert f"The greeting is: {choice}" in sandbox.remote.show(BRANCH, "README.md")


async def test_the_exit_status_says_whether_the_outcome_was_reported(sandbox: Sandbox) -> None:
    api = sandbox.side_api
    env = sandbox.env(fake_cli("--scenario", "edit"))
    wrong_token = await run_agent(make_job(api, apiToken="clj1.not-this-one"), env)
    assert wrong_token.returncode == 1
    assert "bundle upload failed" in wrong_token.stderr
    assert "clj1.not-this-one" not in wrong_token.stderr
    nothing_to_do = await run_agent(make_job(api, kind="cancel"), env)
    assert nothing_to_do.returncode == 0
    bad_job = await run_agent({"kind": "initial"}, env)
    assert bad_job.returncode == 2 and "must be" in bad_job.stderr
    no_cli = await run_agent(make_job(api), {**env, "CLARITY_AGENT_CLI": "/nonexistent/claude"})
    assert no_cli.returncode == 0, no_cli.stderr
    error = api.statuses()[-1]
    assert error["errorCode"] == "AGENT_FAILED" and "/nonexistent/claude" in error["errorMessage"]
