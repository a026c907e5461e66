"""Runs that end badly, end to end on the local backend: a cancel mid-run, a crashing CLI,
an agent killed outright, and a `clarity worker` killed (kill -9) while its run goes on.

The contract's limits are what is asserted: a cancelled agent is gone within 15 s, a run
whose process died is noticed (the request in `error`, with Retry) within a minute.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bot.runner.local import SandboxRef, read_stat
from bot.slack.filing import FILE_JOB
from bot.workers import Backoff, WorkerPool
from storage.models import Run, utcnow
from tests.runner.local_support import (
    API_TOKEN,
    HOST_SECRETS,
    REPO,
    Loop,
    process_gone,
    processes_under,
    running_loop,
)
from tests.slack.harness import BOT_TOKEN, ENCRYPTION_KEY, SIGNING_SECRET

ROOT = Path(__file__).resolve().parents[2]


async def _running(loop: Loop, request_id: str, attempt: int = 1) -> Run | None:
    run = await loop.run(request_id, attempt)
    return run if run.state == "running" and run.sandbox_id else None


async def _agent_working(loop: Loop, request_id: str) -> bool:
    types = {m.type.value for m in await loop.messages(request_id)}
    return "agent_tool_call" in types and bool(loop.fake_log())


async def _error(loop: Loop, request_id: str, code: str) -> Any:
    row = await loop.request(request_id)
    if row.status.value != "error":
        return None
    errors = [m for m in await loop.messages(request_id) if m.type.value == "error"]
    assert errors and errors[-1].metadata_ is not None
    assert errors[-1].metadata_["errorCode"] == code, errors[-1].content
    return errors[-1]


def _group_gone(pgid: int) -> bool:
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = read_stat(int(name))
            if found is not None and found.pgid == pgid and found.running:
                return False
    return True


async def _gone(*checks: Any) -> bool:
    return all(check() for check in checks)


async def test_cancel_mid_run_stops_the_agent_within_15_seconds(db_url: str) -> None:
    async with running_loop(db_url) as loop:
        request = await loop.file(f"{REPO} [fake:slow] count to a thousand")
        rid = request.request_id
        run = await loop.wait_for(lambda: _running(loop, rid), "the run to start")
        await loop.wait_for(lambda: _agent_working(loop, rid), "the agent at work")
        assert run.sandbox_id is not None
        sandbox = SandboxRef.parse(run.sandbox_id)
        assert sandbox is not None
        claude = loop.fake_log()[0]

        clicked = await loop.sender.click("cancel_request", rid)
        assert clicked.status == 200
        pressed = time.monotonic()
        folder = loop.request_dir(rid)
        await loop.wait_for(
            lambda: _gone(
                lambda: _group_gone(sandbox.pid),
                lambda: _group_gone(claude["pgid"]),
                lambda: process_gone(claude["pid"]),
                lambda: not processes_under(folder),
            ),
            "the sandbox's processes to be gone",
            timeout_s=60,
        )
        assert time.monotonic() - pressed <= 15
        assert (await loop.request(rid)).status.value == "cancelled"
        stopped = await loop.wait_for(
            lambda: _state(loop, rid, 1, "cancelled"), "the run recorded cancelled"
        )
        assert stopped.finished_at is not None
        # The work so far is handed over, to be kept as a draft.
        stored = await loop.wait_for(lambda: loop.bundle(rid, 1), "the cancelled run's bundle")
        assert stored.label == "cancelled"
        await loop.wait_for(loop.all_reaped, "the reap")
        assert processes_under(folder) == []
        kinds = [(r.attempt, r.kind, r.state) for r in await loop.runs(rid)]
        assert kinds == [(1, "initial", "cancelled"), (2, "cancel", "succeeded")]


async def test_a_crashing_cli_fails_the_request_with_retry_within_a_minute(db_url: str) -> None:
    async with running_loop(db_url) as loop:
        request = await loop.file(f"{REPO} [fake:crash] do something")
        rid = request.request_id
        filed = time.monotonic()
        error = await loop.wait_for(lambda: _error(loop, rid, "AGENT_FAILED"), "the error")
        assert time.monotonic() - filed <= 60
        assert "fake crash" in error.content
        retry = await loop.wait_for(lambda: _buttons(loop, "retry_request"), "a Retry button")
        assert retry[0]["value"] == rid
        await loop.wait_for(lambda: _state(loop, rid, 1, "succeeded"), "the run's end")


async def test_an_agent_killed_outright_is_noticed_and_reported(db_url: str) -> None:
    async with running_loop(db_url) as loop:
        request = await loop.file(f"{REPO} [fake:slow] count to a thousand")
        rid = request.request_id
        run = await loop.wait_for(lambda: _running(loop, rid), "the run to start")
        await loop.wait_for(lambda: _agent_working(loop, rid), "the agent at work")
        assert run.sandbox_id is not None
        sandbox = SandboxRef.parse(run.sandbox_id)
        assert sandbox is not None
        agent = _child_of(sandbox.pid)
        os.kill(agent, signal.SIGKILL)  # the agent program dies without a word
        killed = time.monotonic()
        error = await loop.wait_for(lambda: _error(loop, rid, "AGENT_CRASHED"), "the crash report")
        assert time.monotonic() - killed <= 60
        assert "exit status 137" in error.content
        await loop.wait_for(lambda: _buttons(loop, "retry_request"), "a Retry button")
        failed = await loop.run(rid, 1)
        assert failed.state == "failed"
        # What the agent left running (Claude Code, in a session of its own) is killed.
        await loop.wait_for(loop.all_reaped, "the reap")
        await loop.wait_for(
            lambda: _gone(lambda: not processes_under(loop.request_dir(rid))), "no leftovers"
        )


def _worker_env(loop: Loop, db_url: str, step_s: float) -> dict[str, str]:
    settings = loop.graph.services.settings
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        **HOST_SECRETS,
        "DATABASE_URL": db_url,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "CLARITY_API_TOKEN": API_TOKEN,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": settings.slack_api_url,
        "GITHUB_API_URL": settings.github_api_url,
        "GITHUB_APP_ID": str(settings.github_app_id),
        "GITHUB_PRIVATE_KEY": str(settings.secret("github_private_key")),
        "GITHUB_INSTALLATION_ID": str(settings.github_installation_id),
        "HOST": "127.0.0.1",
        "PORT": str(settings.port),
        "CLARITY_RUNNER": "local",
        "CLARITY_DATA_DIR": str(settings.clarity_data_dir),
        "GITHUB_GIT_URL": settings.github_git_url,
        "CLARITY_AGENT_CLI": settings.clarity_agent_cli,
        "CLARITY_WORKERS": "2",
        "CLAUDE_CODE_FAKE_LOG": str(loop.fake_log_path),
        # Each of the fake's model turns takes this long: the run outlives the kill.
        "CLAUDE_CODE_FAKE_STEP_S": str(step_s),
    }


async def _file_without_workers(loop: Loop, text: str) -> str:
    sent = await loop.sender.command(text)
    assert sent.status == 200
    only_filing = WorkerPool(
        loop.graph.services,
        {FILE_JOB: loop.graph.jobs[FILE_JOB]},
        concurrency=1,
        backoff=Backoff(base_s=0),
    )
    await only_filing.run_until_idle()
    (request,) = await loop.requests()
    return request.request_id


def _start_worker(loop: Loop, db_url: str, step_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"],
        cwd=ROOT,
        env=_worker_env(loop, db_url, step_s),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_worker_killed_mid_run_leaves_the_run_followed_to_its_end(db_url: str) -> None:
    async with running_loop(db_url, start_workers=False) as loop:
        rid = await _file_without_workers(loop, f"{REPO} add a greeting file")
        worker = _start_worker(loop, db_url, step_s=2.0)
        try:
            run = await loop.wait_for(lambda: _running(loop, rid), "the worker to start the run")
            await loop.wait_for(lambda: _agent_working(loop, rid), "the agent at work")
        finally:
            worker.kill()  # kill -9: the worker dies; its run does not
            worker.wait()
        killed_at = utcnow()
        assert run.sandbox_id is not None and loop.backend.owns(run.sandbox_id)
        assert (await loop.backend.observe(run.sandbox_id)).state.value == "running"

        # This process's workers (another replica on the machine) follow the run to its
        # end; its work arrives through the side-API as if nothing happened.
        loop.pool.start()
        followed = await loop.wait_for(
            lambda: _heartbeat_after(loop, rid, killed_at), "a heartbeat after the kill"
        )
        assert followed.state == "running"
        stored = await loop.wait_for(lambda: loop.bundle(rid, 1), "the run's bundle")
        assert stored.label == "completed"
        await loop.wait_for(lambda: loop.publish_queued(rid, 1), "the publish job")
        done = await loop.wait_for(lambda: _state(loop, rid, 1, "succeeded"), "the run's end")
        assert done.finished_at is not None
        assert [m for m in await loop.messages(rid) if m.type.value == "error"] == []
        await loop.wait_for(loop.all_reaped, "the reap")


async def test_a_worker_killed_with_its_sandbox_is_reported_lost(db_url: str) -> None:
    async with running_loop(db_url, start_workers=False) as loop:
        rid = await _file_without_workers(loop, f"{REPO} [fake:slow] count to a thousand")
        worker = _start_worker(loop, db_url, step_s=0.4)
        try:
            run = await loop.wait_for(lambda: _running(loop, rid), "the worker to start the run")
            await loop.wait_for(lambda: _agent_working(loop, rid), "the agent at work")
        finally:
            worker.kill()
            worker.wait()
        assert run.sandbox_id is not None
        sandbox = SandboxRef.parse(run.sandbox_id)
        assert sandbox is not None
        os.killpg(sandbox.pid, signal.SIGKILL)  # the run's own process group goes too
        killed = time.monotonic()
        loop.pool.start()
        error = await loop.wait_for(lambda: _error(loop, rid, "RUN_LOST"), "the lost run")
        assert time.monotonic() - killed <= 60
        assert "Retry" in error.content
        await loop.wait_for(lambda: _buttons(loop, "retry_request"), "a Retry button")
        assert (await loop.run(rid, 1)).state == "lost"
        await loop.wait_for(loop.all_reaped, "the reap")
        await loop.wait_for(
            lambda: _gone(lambda: not processes_under(loop.request_dir(rid))), "no leftovers"
        )


def _child_of(pid: int) -> int:
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = read_stat(int(name))
            if found is not None and found.ppid == pid and found.running:
                return found.pid
    raise AssertionError(f"process {pid} has no child")


async def _buttons(loop: Loop, action_id: str) -> list[dict[str, Any]]:
    return loop.buttons(action_id)


async def _state(loop: Loop, request_id: str, attempt: int, state: str) -> Run | None:
    run = await loop.run(request_id, attempt)
    return run if run.state == state else None


async def _heartbeat_after(loop: Loop, request_id: str, when: Any) -> Run | None:
    run = await loop.run(request_id, 1)
    return run if run.heartbeat_at is not None and run.heartbeat_at > when else None


__all__ = ["asyncio"]
