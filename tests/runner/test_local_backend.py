"""The local backend on its own: one process group per run, started once, observed through
/proc, stopped with SIGTERM then SIGKILL (its whole tree), reaped without its work folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.runner.base import RunSpec, SandboxState
from bot.runner.local import (
    LocalBackend,
    ProcessStat,
    SandboxRef,
    descendants,
    process_table,
    read_stat,
)

TOKEN = "clj1.job-token-that-must-stay-on-stdin"


@pytest.fixture
def base() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="clarity-local-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spec(attempt: int = 1, kind: str = "cancel") -> RunSpec:
    job = {
        "requestId": "req_local_backend",
        "attempt": attempt,
        "kind": kind,
        "repo": "octo-org/widgets",
        "title": "t",
        "description": "d",
        "apiUrl": "http://127.0.0.1:9/api",
        "apiToken": TOKEN,
    }
    return RunSpec("req_local_backend", attempt, kind, job, {"PATH": "/usr/bin:/bin"})


async def _finished(backend: LocalBackend, sandbox: str) -> None:
    for _ in range(300):
        if (await backend.observe(sandbox)).finished:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the sandbox did not finish")


async def test_a_run_starts_once_and_is_reaped_without_its_work(base: Path) -> None:
    backend = LocalBackend(runs_dir=base / "runs")
    first, second = await asyncio.gather(backend.start(_spec()), backend.start(_spec()))
    assert first == second and await backend.start(_spec()) == first
    ref = SandboxRef.parse(first)
    assert ref is not None and ref.host == backend.hostname and backend.owns(first)
    assert not backend.owns(first.replace(f":{ref.host}:", ":another-host:"))
    await _finished(backend, first)
    status = await backend.observe(first)
    assert (status.state, status.exit_code) == (SandboxState.EXITED, 0)
    assert "kind cancel: nothing to run" in backend.log_path("req_local_backend", 1).read_text()
    assert await backend.sandboxes() == [first]
    work = backend.work_dir("req_local_backend")
    if os.geteuid() == 0:
        assert work.stat().st_uid != 0  # the agent's own user's
    await backend.reap(first)
    assert await backend.sandboxes() == []
    assert (await backend.observe(first)).state == SandboxState.GONE
    assert work.is_dir() and not backend.home_dir("req_local_backend", 1).exists()
    # A later attempt is a new sandbox.
    assert await backend.start(_spec(2)) != first


async def test_the_job_document_goes_on_stdin_only(base: Path) -> None:
    script = base / "hold.sh"
    # Stands in for the interpreter: shows what it was given, then waits.
    script.write_text('#!/bin/sh\ncat > "$HOME/stdin.json"\nexec sleep 30\n')
    script.chmod(0o755)
    backend = LocalBackend(runs_dir=base / "runs", python=str(script))
    sandbox = await backend.start(_spec())
    ref = SandboxRef.parse(sandbox)
    assert ref is not None
    home = backend.home_dir("req_local_backend", 1)
    for _ in range(100):
        if (home / "stdin.json").exists() and (home / "stdin.json").stat().st_size:
            break
        await asyncio.sleep(0.05)
    assert json.loads((home / "stdin.json").read_text())["apiToken"] == TOKEN
    _check_processes(ref.pid)
    await backend.cancel(sandbox, grace_s=5)
    await backend.reap(sandbox)


async def test_cancel_escalates_to_killing_the_whole_tree(base: Path) -> None:
    script = base / "stubborn.sh"
    # Ignores SIGTERM, and leaves a child in a session of its own (as Claude Code's shell
    # commands are).
    script.write_text("#!/bin/sh\ntrap '' TERM\nsetsid sleep 300 &\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    backend = LocalBackend(runs_dir=base / "runs", python=str(script), grace_s=1.0)
    sandbox = await backend.start(_spec())
    ref = SandboxRef.parse(sandbox)
    assert ref is not None
    for _ in range(100):
        if any(p.sid != ref.pid and p.ppid != 1 for p in _tree(ref.pid)):
            break
        await asyncio.sleep(0.05)
    tree = _tree(ref.pid)
    assert any(p.sid != ref.pid for p in tree), "the child in its own session"
    await backend.cancel(sandbox)
    for info in tree:
        found = read_stat(info.pid)
        assert found is None or not found.running or found.start != info.start
    status = await backend.observe(sandbox)
    assert status.state == SandboxState.FAILED and "killed" in str(status.reason)
    await backend.reap(sandbox)


async def test_a_killed_sandbox_is_failed_and_an_unknown_one_gone(base: Path) -> None:
    script = base / "sleepy.sh"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    backend = LocalBackend(runs_dir=base / "runs", python=str(script))
    sandbox = await backend.start(_spec())
    assert (await backend.observe(sandbox)).state == SandboxState.RUNNING
    ref = SandboxRef.parse(sandbox)
    assert ref is not None
    os.killpg(ref.pid, signal.SIGKILL)
    await _finished(backend, sandbox)
    assert (await backend.observe(sandbox)).state == SandboxState.FAILED
    assert (await backend.observe("local:elsewhere:1:2")).state == SandboxState.GONE
    assert (await backend.observe("not-a-sandbox")).state == SandboxState.GONE
    await backend.cancel("local:elsewhere:1:2")  # ignored
    await backend.reap(sandbox)


def _check_processes(pgid: int) -> None:
    """The run's processes: the token in neither environment nor command line; not root."""
    for info in process_table():
        if info.pgid != pgid:
            continue
        environ = Path(f"/proc/{info.pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in environ and TOKEN.encode() not in cmdline
        if os.geteuid() == 0:
            status = Path(f"/proc/{info.pid}/status").read_text()
            uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uid.split()[1] != "0"


def _tree(pid: int) -> list[ProcessStat]:
    table = process_table()
    return [p for p in table if p.pid == pid] + descendants(pid, table)
