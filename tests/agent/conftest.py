"""Fixtures of the agent program's tests: a fake side-API, a bare git remote, and a way to
run `clarity-agent run` as the sandbox would (a child process with a reduced environment)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agent.fake_sideapi import JOB_TOKEN, FakeSideApi

REPO = "acme/widget"
REQUEST_ID = "req_4f2a9c1b7d3e"
API_KEY = "sk-ant-api03-test-key-0123456789abcdefghijkl"
ROOT = Path(__file__).resolve().parents[2]


def git(*args: str, cwd: Path | str) -> str:
    """Run git, return its output (raises on failure)."""
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    ).stdout


@dataclass
class Remote:
    """A bare repository playing GitHub's part."""

    root: Path
    path: Path

    def fetch_bundle(self, bundle: bytes, branch: str, tmp: Path) -> None:
        """Apply a run's bundle as Clarity's publish job would (the branch must move forward)."""
        file = tmp / "incoming.bundle"
        file.write_bytes(bundle)
        git("bundle", "verify", str(file), cwd=self.path)
        git("fetch", str(file), f"refs/heads/{branch}:refs/heads/{branch}", cwd=self.path)

    def show(self, ref: str, path: str) -> str:
        """A file's content at a ref."""
        return git("show", f"{ref}:{path}", cwd=self.path)

    def log(self, ref: str) -> list[str]:
        """Commit subjects of a ref, newest first."""
        return git("log", "--format=%s", ref, cwd=self.path).splitlines()


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """`acme/widget` with a README on main."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    (seed / "README.md").write_text("# Widget\n\nA small project.\n")
    git("add", ".", cwd=seed)
    git("commit", "-q", "-m", "Initial commit", cwd=seed)
    root = tmp_path / "remotes"
    path = root / "acme" / "widget.git"
    path.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(seed), str(path), cwd=tmp_path)
    return Remote(root=root, path=path)


@pytest.fixture
async def side_api(remote: Remote) -> AsyncIterator[FakeSideApi]:
    """The fake side-API (and smart-HTTP git server of the remote)."""
    api = await FakeSideApi(git_root=str(remote.root)).start()
    try:
        yield api
    finally:
        await api.stop()


def fake_cli(*args: str) -> str:
    """CLARITY_AGENT_CLI for the fake Claude Code."""
    installed = shutil.which("clarity-fake-claude", path=os.path.dirname(sys.executable))
    base = [installed] if installed else [sys.executable, "-m", "agent.fake_claude"]
    return shlex.join([*base, *args])


@dataclass
class Sandbox:
    """One request's sandbox: its folders and environment."""

    tmp: Path
    side_api: FakeSideApi
    remote: Remote

    @property
    def work_dir(self) -> Path:
        return self.tmp / "work" / REQUEST_ID

    @property
    def config_dir(self) -> Path:
        return self.tmp / "home" / ".claude"

    @property
    def fake_log(self) -> Path:
        return self.tmp / "fake-claude.log"

    def env(self, cli: str, **extra: str) -> dict[str, str]:
        """The environment a runner gives the agent program."""
        (self.tmp / "home").mkdir(exist_ok=True)
        return {
            "HOME": str(self.tmp / "home"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT),
            "ANTHROPIC_API_KEY": API_KEY,
            "GITHUB_GIT_URL": f"file://{self.remote.root}/",
            "CLARITY_AGENT_CLI": cli,
            "CLARITY_WORK_DIR": str(self.work_dir),
            "CLARITY_BUDGET_USD": "5",
            "CLAUDE_CONFIG_DIR": str(self.config_dir),
            "CLAUDE_CODE_FAKE_LOG": str(self.fake_log),
            "DISABLE_AUTOUPDATER": "1",
            **extra,
        }

    def fake_starts(self) -> list[dict[str, Any]]:
        """What the fake CLI saw at each start."""
        if not self.fake_log.exists():
            return []
        return [json.loads(line) for line in self.fake_log.read_text().splitlines()]


@pytest.fixture
def sandbox(tmp_path: Path, side_api: FakeSideApi, remote: Remote) -> Sandbox:
    """A fresh sandbox for one request."""
    return Sandbox(tmp=tmp_path, side_api=side_api, remote=remote)


def make_job(api: FakeSideApi, kind: str = "initial", **fields: Any) -> dict[str, Any]:
    """A job document as the dispatcher builds it."""
    job: dict[str, Any] = {
        "requestId": REQUEST_ID,
        "attempt": 1,
        "kind": kind,
        "repo": REPO,
        "title": "Add a hello file",
        "description": "Please add a hello file and mention it in the README.",
        "branch": None,
        "prNumber": None,
        "issueNumber": None,
        "conversation": [
            {
                "type": "initial_request",
                "source": "slack",
                "actorName": "Ada",
                "content": "Please add a hello file and mention it in the README.",
                "metadata": {},
                "createdAt": "2026-01-01T00:00:00+00:00",
            },
        ],
        "apiUrl": api.api_url,
        "apiToken": JOB_TOKEN,
    }
    job.update(fields)
    return job


@dataclass
class Finished:
    """How `clarity-agent run` ended."""

    returncode: int
    stderr: str


async def start_agent(job: dict[str, Any], env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `python -m agent run` with the job on its standard input."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        env=env,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job).encode())
    await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def finish(proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> Finished:
    """Wait for the agent program; kill it (and fail) if it takes too long."""
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise AssertionError(f"clarity-agent did not finish within {timeout_s}s") from None
    assert proc.returncode is not None
    return Finished(proc.returncode, err.decode(errors="replace"))


async def run_agent(job: dict[str, Any], env: dict[str, str], timeout_s: float = 60.0) -> Finished:
    """Run the agent program to its end."""
    return await finish(await start_agent(job, env), timeout_s)
