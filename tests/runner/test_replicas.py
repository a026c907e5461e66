"""Two `clarity serve` replicas with workers on one database and the concurrency cap: 10
requests filed at once run exactly once each, never more than the cap at a time.

Real `python -m bot serve` processes on free ports, one PostgreSQL database, the `local`
backend running the agent program with the fake Claude, a bare repository as the remote
(file://) and the fake GitHub. Requests are filed through the side-API, spread over both
replicas; the test polls the database until every run is over.

Both replicas share one CLARITY_DATA_DIR: the `local` backend's runs belong to the machine
(its sandbox ids name the host, and any worker of the machine follows them), so replicas on
one machine must see the same runs folder. With a folder each, one replica's run watcher
finds the other's runs missing and records them lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fakes.fake_github import FakeGitHub
from fakes.harness import APP_ID, app_key
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Run
from tests.runner.local_support import free_port, make_remote, process_gone, processes_under
from tests.slack.harness import ENCRYPTION_KEY

ROOT = Path(__file__).resolve().parents[2]
REPO = "octo/widgets"
API_TOKEN = "clarity-replicas-test-api-token-3f90"
CAP = 3
REQUESTS = 10
WAIT_S = 180.0
ACTIVE = ("queued", "starting", "running")


def _environment(**extra: str) -> dict[str, str]:
    """The test's environment without any of Clarity's settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "GITHUB_", "CLARITY_", "CLAUDE_CODE_", "ANTHROPIC_"))
        and k not in ("DATABASE_URL", "MASTER_DATABASE_URL", "ENCRYPTION_KEY")
    }
    env.update(extra)
    return env


async def _healthy(port: int, proc: subprocess.Popen[bytes], http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"replica on {port} exited early ({proc.returncode})"
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"replica on {port} did not answer /healthz in time")


def _spawn(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m bot serve` on `port`, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, then the replica must drain and exit 0 within a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"a replica ignored SIGTERM:\n{log.read_text()[-4000:]}") from None
    assert proc.returncode == 0, log.read_text()[-4000:]


def _prepare(base: Path) -> Path:
    """The bare remote, the fake Claude's log and the runs' folder (the agent's user, as
    root, must get through to them); returns the log."""
    make_remote(base, REPO)
    fake_log = base / "fake-claude.log"
    fake_log.touch()
    fake_log.chmod(0o666)
    (base / "data").mkdir()
    (base / "data").chmod(0o755)
    return fake_log


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="clarity-replicas-", dir="/tmp"))
    # The agent runs as another user (as root): it must get through to its folders.
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _runs(factory: async_sessionmaker[AsyncSession]) -> list[Run]:
    async with factory() as s:
        return list((await s.scalars(select(Run).order_by(Run.id))).all())


async def test_two_replicas_run_each_request_once_within_the_cap(
    db_url: str, session_factory: async_sessionmaker[AsyncSession], base: Path
) -> None:
    fake_log = await asyncio.to_thread(_prepare, base)
    private_pem, public_pem = app_key()
    github = await FakeGitHub(app_id=APP_ID, public_key=public_pem).start()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    ports: list[int] = []
    data = base / "data"
    try:
        for n in range(2):
            port = free_port()
            log = base / f"replica-{n}.log"
            env = _environment(
                DATABASE_URL=db_url,
                ENCRYPTION_KEY=ENCRYPTION_KEY,
                CLARITY_API_TOKEN=API_TOKEN,
                CLARITY_RUNNER="local",
                CLARITY_AGENT_CLI="clarity-fake-claude --scenario edit",
                CLARITY_MAX_CONCURRENT_RUNS=str(CAP),
                CLARITY_DATA_DIR=str(data),
                GITHUB_GIT_URL=f"file://{base}/git/",
                GITHUB_API_URL=github.url,
                GITHUB_APP_ID=APP_ID,
                GITHUB_PRIVATE_KEY=private_pem,
                GITHUB_INSTALLATION_ID=str(github.installation_id),
                CLAUDE_CODE_FAKE_LOG=str(fake_log),
                CLAUDE_CODE_FAKE_STEP_S="0.05",
                CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
                HOST="127.0.0.1",
                PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            )
            procs.append((_spawn(port, env, log), log))
            ports.append(port)

        async with aiohttp.ClientSession() as http:
            for port, (proc, _) in zip(ports, procs, strict=True):
                await _healthy(port, proc, http)

            async def file(n: int) -> str:
                port = ports[n % 2]
                async with http.post(
                    f"http://127.0.0.1:{port}/api/requests",
                    json={"repo": REPO, "description": f"add greeting number {n}"},
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                ) as answer:
                    assert answer.status == 201, await answer.text()
                    return str((await answer.json())["requestId"])

            filed = await asyncio.gather(*(file(n) for n in range(REQUESTS)))
        assert len(set(filed)) == REQUESTS

        # Bounded: every request's run is over (the database says so).
        deadline = time.monotonic() + WAIT_S
        while True:
            runs = await _runs(session_factory)
            over = [r for r in runs if r.state not in ACTIVE and r.finished_at is not None]
            if len(over) >= REQUESTS and len(over) == len(runs):
                break
            if time.monotonic() > deadline:
                states = [(r.request_id, r.attempt, r.state) for r in runs]
                raise AssertionError(f"runs not over after {WAIT_S:.0f}s: {states}")
            await asyncio.sleep(0.5)

        # Exactly one run per request, each started once and finished well.
        assert sorted(r.request_id for r in runs) == sorted(filed)
        assert {r.attempt for r in runs} == {1}
        assert {r.state for r in runs} == {"succeeded"}, [(r.request_id, r.error) for r in runs]
        sandboxes = [r.sandbox_id for r in runs]
        assert all(s is not None and s.startswith("local:") for s in sandboxes)
        assert len(set(sandboxes)) == REQUESTS
        text = await asyncio.to_thread(fake_log.read_text)
        starts = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert len(starts) == REQUESTS
        # One agent invocation per request: each in its own request's work folder.
        assert len({start["cwd"] for start in starts}) == REQUESTS

        # Never more than the cap at once: the most intervals covering any instant.
        events: list[tuple[float, int]] = []
        for r in runs:
            assert r.started_at is not None and r.finished_at is not None
            events.append((r.started_at.timestamp(), 1))
            events.append((r.finished_at.timestamp(), -1))
        depth = peak = 0
        for _, step in sorted(events):  # an end before a start at the same instant
            depth += step
            peak = max(peak, depth)
        assert 1 <= peak <= CAP
    finally:
        for proc, log in procs:
            await asyncio.to_thread(_stop, proc, log)
        await github.close()
    # No agent process outlives the replicas.
    assert [pid for pid in processes_under(data) if not process_gone(pid)] == []
