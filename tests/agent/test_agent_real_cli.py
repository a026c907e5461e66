"""clarity-agent with the real Claude Code CLI (from the npm registry), its model a local
fake of the Anthropic Messages API: the flags, the stream, MCP and --resume as they are."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.session import project_key
from tests.agent.conftest import (
    REQUEST_ID,
    ROOT,
    Sandbox,
    finish,
    make_job,
    run_agent,
    start_agent,
)
from tests.agent.fake_anthropic import FakeAnthropic, text, tool_use
from tests.agent.test_agent_run import BRANCH, answered, until

# The CLI these tests pin; its stream-json shapes are what agent/stream.py reads.
CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.197"
CACHE = Path(os.environ.get("CLARITY_CLAUDE_CODE_CACHE") or ROOT / ".cache" / "claude-code")


def installed_cli() -> Path:
    """The CLI's executable, installed into the cache folder on first use (reused after)."""
    cli = CACHE / "node_modules" / ".bin" / "claude"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(cli):
            if shutil.which("npm") is None:
                pytest.skip("npm is not installed: cannot fetch Claude Code")
            subprocess.run(
                [
                    "npm",
                    "install",
                    "--prefix",
                    str(CACHE),
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    CLAUDE_CODE,
                ],
                check=True,
                timeout=600,
                capture_output=True,
            )
            package = CACHE / "node_modules" / "@anthropic-ai" / "claude-code"
            if not _works(cli) and (package / "install.cjs").exists():
                # npm versions that hold back install scripts leave the placeholder binary.
                subprocess.run(
                    ["node", "install.cjs"],
                    cwd=package,
                    check=True,
                    timeout=300,
                    capture_output=True,
                )
        assert _works(cli), "Claude Code did not install"
    return cli


def _works(cli: Path) -> bool:
    if not cli.exists():
        return False
    done = subprocess.run(
        [str(cli), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode == 0 and "Claude Code" in done.stdout


@pytest.fixture(scope="module")
def claude_cli() -> Path:
    """The real CLI."""
    return installed_cli()


@pytest.fixture
async def model() -> AsyncIterator[FakeAnthropic]:
    """The fake Anthropic API."""
    api = await FakeAnthropic().start()
    try:
        yield api
    finally:
        await api.stop()


def real_env(sandbox: Sandbox, cli: Path, model: FakeAnthropic) -> dict[str, str]:
    return sandbox.env(
        str(cli),
        ANTHROPIC_BASE_URL=model.url,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )


async def test_the_real_cli_writes_a_file_and_the_work_is_bundled(
    sandbox: Sandbox, claude_cli: Path, model: FakeAnthropic, tmp_path: Path
) -> None:
    hello = sandbox.work_dir / "hello.txt"
    model.script = [
        [
            text("I'll add the file."),
            tool_use("Write", {"file_path": str(hello), "content": "Hello, world!\n"}),
        ],
        [text("Add hello.txt\n\nCreated hello.txt with a greeting.")],
    ]
    api = sandbox.side_api
    done = await run_agent(make_job(api), real_env(sandbox, claude_cli, model), timeout_s=120)
    assert done.returncode == 0, done.stderr

    # The model got our instructions after the CLI's own, the prompt, and our key.
    first = model.loop_requests[0]
    main = next(b["text"] for b in first["system"] if "You are an interactive agent" in b["text"])
    ours = main.index("You are Clarity's coding agent")
    assert main.index("You are an interactive agent") < ours
    assert "mcp__clarity__ask_user" in main[ours:] and "Do not push" in main[ours:]
    assert "Please add a hello file" in json.dumps(first["messages"])
    assert {t["name"] for t in first["tools"]} >= {"Write", "Bash", "mcp__clarity__ask_user"}
    assert {r["api_key"] for r in model.requests if r["path"] == "/v1/messages"} == {
        sandbox.env("x")["ANTHROPIC_API_KEY"]
    }

    assert hello.read_text() == "Hello, world!\n"
    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "completed"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == "Hello, world!\n"
    assert sandbox.remote.log(BRANCH)[0] == "Add hello.txt"

    types = [m["type"] for m in api.messages()]
    assert types == [
        "agent_thinking",
        "agent_tool_call",
        "agent_file_change",
        "agent_thinking",
        "agent_summary",
    ]
    [change] = api.messages("agent_file_change")
    assert change["metadata"]["filePath"] == "hello.txt"
    assert change["metadata"]["fileAction"] == "created"
    assert "+Hello, world!" in change["metadata"]["diffPreview"]
    [summary] = api.messages("agent_summary")
    [report] = api.statuses()
    assert report["costUsd"] > 0
    assert summary["metadata"]["costCents"] == round(report["costUsd"] * 100)
    assert summary["metadata"]["numTurns"] == 2
    assert api.order()[-3:] == [
        "PATCH status:processing",
        "PUT agent-session",
        "PUT bundle:completed",
    ]


async def test_the_real_cli_asks_through_our_mcp_server_and_resumes_with_the_answer(
    sandbox: Sandbox, claude_cli: Path, model: FakeAnthropic, tmp_path: Path
) -> None:
    hello = sandbox.work_dir / "hello.txt"
    model.script = [
        [
            tool_use(
                "mcp__clarity__ask_user",
                {"question": "Which greeting?", "options": ["Hello", "Howdy"]},
            )
        ],
        [text("I asked which greeting to use.")],
        [tool_use("Write", {"file_path": str(hello), "content": "Howdy\n"})],
        [text("Greet with Howdy")],
    ]
    api = sandbox.side_api
    env = real_env(sandbox, claude_cli, model)
    job = make_job(api)
    done = await run_agent(job, env, timeout_s=120)
    assert done.returncode == 0, done.stderr
    [ask] = api.messages("clarification_ask")
    assert ask["content"] == "Which greeting?"
    assert ask["metadata"]["options"] == ["Hello", "Howdy"]
    # The model saw our tool's answer telling it to stop.
    second = json.dumps(model.loop_requests[1]["messages"])
    assert "End your turn now" in second
    session_id, _ = api.sessions[REQUEST_ID]
    transcript = (
        sandbox.config_dir / "projects" / project_key(str(sandbox.work_dir)) / f"{session_id}.jsonl"
    )
    assert transcript.is_file()

    # A fresh sandbox: the CLI resumes the same session from the restored transcript.
    shutil.rmtree(sandbox.work_dir)
    shutil.rmtree(sandbox.config_dir)
    done = await run_agent(answered(job, ask, "Howdy"), env, timeout_s=120)
    assert done.returncode == 0, done.stderr
    resumed = model.loop_requests[2]["messages"]
    history = json.dumps(resumed)
    assert "Which greeting?" in history  # the earlier turns came from the transcript
    last_user = [m for m in resumed if m["role"] == "user"][-1]
    assert "**Ada answered:**\\nHowdy" in json.dumps(last_user)
    # The CLI tells the model its budget, so --max-budget-usd reached it.
    assert "USD budget" in history
    assert transcript.is_file()
    assert hello.read_text() == "Howdy\n"
    [(_, attempt, outcome, bundle)] = api.bundles
    assert (attempt, outcome) == (2, "completed")
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "hello.txt") == "Howdy\n"
    assert api.sessions[REQUEST_ID][0] == session_id


async def test_the_real_cli_stops_at_the_budget(
    sandbox: Sandbox, claude_cli: Path, model: FakeAnthropic
) -> None:
    model.script = [
        [
            text("Starting."),
            tool_use("Write", {"file_path": str(sandbox.work_dir / "a.txt"), "content": "a\n"}),
        ],
        [text("Done.")],
    ]
    api = sandbox.side_api
    env = {**real_env(sandbox, claude_cli, model), "CLARITY_BUDGET_USD": "0.001"}
    done = await run_agent(make_job(api), env, timeout_s=120)
    assert done.returncode == 0, done.stderr
    report, error = api.statuses()
    assert report["status"] == "processing" and report["costUsd"] > 0.001
    assert error["errorCode"] == "BUDGET_EXCEEDED"
    assert "budget of $0.001 after spending" in error["errorMessage"]
    [summary] = api.messages("agent_summary")
    assert summary["metadata"]["subtype"] == "error_max_budget_usd"
    assert "Reached maximum budget" in summary["content"]


async def test_sigterm_interrupts_the_real_cli_and_hands_over_the_work(
    sandbox: Sandbox, claude_cli: Path, model: FakeAnthropic, tmp_path: Path
) -> None:
    model.script = [
        [
            tool_use(
                "Write", {"file_path": str(sandbox.work_dir / "slow.txt"), "content": "started\n"}
            )
        ],
        [tool_use("Bash", {"command": "sleep 120", "description": "Wait"})],
    ]
    api = sandbox.side_api
    proc = await start_agent(make_job(api), real_env(sandbox, claude_cli, model))
    try:
        await until(lambda: bool(_pids_of("sleep 120")), timeout_s=60)
        sleepers = _pids_of("sleep 120")
        proc.send_signal(signal.SIGTERM)
        done = await finish(proc, timeout_s=12.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert done.returncode == 0, done.stderr
    # The CLI and the command it ran (in a session of its own) are gone; the CLI reported
    # what the run cost on its way out.
    assert not [p for p in sleepers if _running(p)]
    [(_, _, outcome, bundle)] = api.bundles
    assert outcome == "cancelled"
    sandbox.remote.fetch_bundle(bundle, BRANCH, tmp_path)
    assert sandbox.remote.show(BRANCH, "slow.txt") == "started\n"
    [report] = api.statuses()
    assert report["status"] == "processing" and report["costUsd"] > 0


def _pids_of(command: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline.strip().endswith(command) and "eval" not in cmdline:
                pids.append(int(entry.name))
    return pids


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"
