"""The whole loop on one machine: the real server and workers on PostgreSQL, the `local`
runner backend running the real agent program with the fake Claude, a local bare git
repository as the remote, the fake GitHub and the fake Slack.

    async with running_loop(db_url) as loop:
        request = await loop.file("octo-org/widgets add a greeting")
        await loop.wait_for(lambda: loop.bundle(request.request_id, 1), "the bundle")

The workers run in the background (as `clarity serve` runs them), so tests wait for what
they expect, with generous limits; every process a run starts is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestServer
from fakes.fake_github import FakeGitHub
from fakes.harness import APP_ID, app_key
from sqlalchemy import select

from bot.app import Clarity as Graph
from bot.app import build_app, build_services
from bot.requests.queue import PUBLISH_JOB
from bot.runner.local import LocalBackend
from bot.server import build_web_app
from bot.settings import load_settings
from bot.workers import Backoff, JobHandler, WorkerPool
from storage import artifacts
from storage.artifacts import StoredArtifact
from storage.jobs import ClaimedJob
from storage.models import FeatureRequest, Job, RequestMessage, Run
from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import BOT_TOKEN, ENCRYPTION_KEY, SIGNING_SECRET
from tests.slack.signing import SlackSender

REPO = "octo-org/widgets"
API_TOKEN = "clarity-runner-test-api-token-7c41"
# Secrets Clarity's own environment holds while the loop runs: none may reach a sandbox.
HOST_SECRETS = {
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    "ENCRYPTION_KEY": ENCRYPTION_KEY,
    "CLARITY_API_TOKEN": API_TOKEN,
    "GITHUB_WEBHOOK_SECRET": "runner-webhook-secret-5d2e",
    "MASTER_DATABASE_URL": "postgresql://admin:admin-password-91@db.invalid/postgres",
}
WAIT_S = 90.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def git(*args: str, cwd: Path | None = None) -> str:
    """git as root on the test's own repositories (owned by root, trusted explicitly)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    done = subprocess.run(
        ["git", "-c", "safe.directory=*", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"git {args}: {done.stderr}"
    return done.stdout


def make_remote(base: Path, repo: str = REPO) -> Path:
    """A bare repository `<base>/git/<repo>.git` with one commit on main."""
    bare = base / "git" / f"{repo}.git"
    bare.parent.mkdir(parents=True)
    git("init", "-q", "--bare", str(bare))
    seed = base / "seed"
    git("clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("# widgets\n\nA small project.\n")
    git("add", "README.md", cwd=seed)
    git("commit", "-q", "-m", "Initial commit", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    shutil.rmtree(seed)
    subprocess.run(["chmod", "-R", "a+rX", str(base / "git")], check=True)
    return bare


@contextlib.contextmanager
def host_environment(values: dict[str, str]) -> Iterator[None]:
    """Clarity's own environment holds these while the loop runs (restored after)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie (it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def processes_under(folder: Path) -> list[int]:
    """Live processes working in `folder` (their cwd) or running from it: a run's leftovers."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (cwd.startswith(str(folder)) or str(folder) in cmdline) and not process_gone(int(name)):
            found.append(int(name))
    return found


@dataclass
class Loop:
    """A running Clarity (server and workers) and the handles a test needs."""

    url: str
    graph: Graph
    slack: FakeSlack
    github: FakeGitHub
    sender: SlackSender
    pool: WorkerPool
    base: Path
    remote: Path
    fake_log_path: Path
    published: list[tuple[str, int]]

    @property
    def backend(self) -> LocalBackend:
        backend = self.graph.backend
        assert isinstance(backend, LocalBackend)
        return backend

    # -- waiting -------------------------------------------------------------------------

    async def wait_for(
        self, probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = WAIT_S
    ) -> T:
        """The first truthy answer of `probe`, polled; fails naming `what` after timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
            await asyncio.sleep(0.1)

    async def status_is(self, request_id: str, *statuses: str) -> FeatureRequest | None:
        row = await self.request(request_id)
        return row if row.status.value in statuses else None

    # -- Slack ---------------------------------------------------------------------------

    async def file(self, text: str, *, user: str = "U0ALICE") -> FeatureRequest:
        """`/clarity <text>`; the request once recorded."""
        before = len(await self.requests())
        sent = await self.sender.command(text, user=user)
        assert sent.status == 200, sent.text

        async def recorded() -> FeatureRequest | None:
            rows = await self.requests()
            return rows[-1] if len(rows) > before else None

        return await self.wait_for(recorded, f"the request of {text!r}")

    def buttons(self, action_id: str) -> list[dict[str, Any]]:
        """Every button with this action id in what Clarity posted or edited."""
        found = []
        for call in self.slack.calls():
            if call.method not in ("chat.postMessage", "chat.update"):
                continue
            for block in call.get("blocks") or []:
                if block.get("type") != "actions":
                    continue
                for element in block["elements"]:
                    if element.get("action_id") == action_id:
                        found.append({**element, "block_id": block.get("block_id")})
        return found

    # -- the database --------------------------------------------------------------------

    async def requests(self) -> list[FeatureRequest]:
        async with self.graph.services.session_factory() as s:
            return list((await s.scalars(select(FeatureRequest).order_by(FeatureRequest.id))).all())

    async def request(self, request_id: str) -> FeatureRequest:
        async with self.graph.services.session_factory() as s:
            row = await s.scalar(
                select(FeatureRequest).where(FeatureRequest.request_id == request_id)
            )
        assert row is not None
        return row

    async def messages(self, request_id: str) -> list[RequestMessage]:
        async with self.graph.services.session_factory() as s:
            return list(
                (
                    await s.scalars(
                        select(RequestMessage)
                        .where(RequestMessage.request_id == request_id)
                        .order_by(RequestMessage.id)
                    )
                ).all()
            )

    async def runs(self, request_id: str) -> list[Run]:
        async with self.graph.services.session_factory() as s:
            return list(
                (
                    await s.scalars(
                        select(Run).where(Run.request_id == request_id).order_by(Run.attempt)
                    )
                ).all()
            )

    async def run(self, request_id: str, attempt: int) -> Run:
        (found,) = [r for r in await self.runs(request_id) if r.attempt == attempt]
        return found

    async def jobs(self, kind: str) -> list[Job]:
        async with self.graph.services.session_factory() as s:
            return list(
                (await s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id))).all()
            )

    async def bundle(self, request_id: str, attempt: int) -> StoredArtifact | None:
        async with self.graph.services.session_factory() as s:
            return await artifacts.find(s, request_id, artifacts.BUNDLE, attempt)

    async def session_artifact(self, request_id: str) -> StoredArtifact | None:
        async with self.graph.services.session_factory() as s:
            return await artifacts.find(s, request_id, artifacts.SESSION, 0)

    async def bundle_bytes(self, stored: StoredArtifact) -> bytes:
        async with self.graph.services.session_factory() as s:
            return b"".join([c async for c in artifacts.chunks(s, stored.id)])

    async def publish_queued(self, request_id: str, attempt: int) -> Job | None:
        for job in await self.jobs(PUBLISH_JOB):
            if job.request_id == request_id and job.payload.get("attempt") == attempt:
                return job
        return None

    # -- the sandbox ---------------------------------------------------------------------

    def fake_log(self) -> list[dict[str, Any]]:
        """Every start of the fake Claude: argv, environment, cwd, prompt, pid."""
        if not self.fake_log_path.exists():
            return []
        return [json.loads(line) for line in self.fake_log_path.read_text().splitlines()]

    async def all_reaped(self) -> bool:
        """No sandbox of this machine is left (every run's pid file reaped)."""
        return not await self.backend.sandboxes()

    def request_dir(self, request_id: str) -> Path:
        return self.backend.request_dir(request_id)

    def work_dir(self, request_id: str) -> Path:
        return self.backend.work_dir(request_id)

    def agent_log(self, request_id: str, attempt: int) -> str:
        path = self.backend.log_path(request_id, attempt)
        return path.read_text() if path.exists() else ""


def _prepare_base() -> tuple[Path, Path, Path]:
    base = Path(tempfile.mkdtemp(prefix="clarity-runner-", dir="/tmp"))
    # The agent runs as another user (as root): it must get through to its folders.
    base.chmod(0o755)
    remote = make_remote(base)
    fake_log = base / "fake-claude.log"
    fake_log.touch()
    fake_log.chmod(0o666)
    return base, remote, fake_log


@contextlib.asynccontextmanager
async def running_loop(
    db_url: str,
    *,
    cli: str = "clarity-fake-claude",
    publish: bool = False,
    watch_period_s: float = 1.0,
    git_url: str | None = None,
    step_s: float | None = None,
    start_workers: bool = True,
    progress_interval_s: float = 0.2,
    workers: int = 3,
    **settings: Any,
) -> AsyncIterator[Loop]:
    """Clarity on 127.0.0.1 with background workers, the local backend and the fakes."""
    base, remote, fake_log = await asyncio.to_thread(_prepare_base)
    private_pem, public_pem = app_key()
    port = free_port()
    host_env = {
        **HOST_SECRETS,
        "DATABASE_URL": db_url,
        "GITHUB_PRIVATE_KEY": private_pem,
        "CLAUDE_CODE_FAKE_LOG": str(fake_log),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if step_s is not None:
        host_env["CLAUDE_CODE_FAKE_STEP_S"] = str(step_s)
    published: list[tuple[str, int]] = []
    async with FakeSlack() as slack:
        slack.add_user("U0ALICE", "alice")
        slack.add_user("U0BOB", "bob")
        github = await FakeGitHub(app_id=APP_ID, public_key=public_pem).start()
        values: dict[str, Any] = {
            "_env_file": None,
            "database_url": db_url,
            "encryption_key": ENCRYPTION_KEY,
            "clarity_api_token": API_TOKEN,
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_app_token": None,
            "slack_api_url": slack.api_url,
            "github_api_url": github.url,
            "github_app_id": APP_ID,
            "github_private_key": private_pem,
            "github_installation_id": str(github.installation_id),
            "host": "127.0.0.1",
            "port": port,
            "clarity_public_url": None,
            "clarity_run_workers": False,
            "clarity_runner": "local",
            "clarity_data_dir": base / "data",
            "github_git_url": git_url or f"file://{base}/git/",
            "clarity_agent_cli": cli,
            "clarity_job_max_attempts": 3,
            **settings,
        }
        graph: Graph | None = None
        pool: WorkerPool | None = None
        server: TestServer | None = None
        try:
            with host_environment(host_env):
                config = load_settings(**values)
                graph = build_app(
                    config,
                    services=build_services(config, db_url, pool_size=5, max_overflow=20),
                    progress_interval_s=progress_interval_s,
                )
                graph.watcher.period_s = watch_period_s
                server = TestServer(build_web_app(graph, run_workers=False), port=port)
                await server.start_server()
                async with aiohttp.ClientSession() as http:
                    sender = SlackSender(
                        http, str(server.make_url("/slack/events")), SIGNING_SECRET, slack
                    )
                    handlers = dict(graph.jobs)
                    loop = Loop(
                        url=str(server.make_url("")).rstrip("/"),
                        graph=graph,
                        slack=slack,
                        github=github,
                        sender=sender,
                        pool=WorkerPool(graph.services, {}),
                        base=base,
                        remote=remote,
                        fake_log_path=fake_log,
                        published=published,
                    )
                    if publish:
                        real_publish = handlers[PUBLISH_JOB].run

                        async def publish_job(job: ClaimedJob) -> None:
                            # The real publish job (bot/publish.py), noted for the test.
                            await real_publish(job)
                            loop.published.append(
                                (str(job.payload["requestId"]), int(job.payload["attempt"]))
                            )

                        handlers[PUBLISH_JOB] = JobHandler(run=publish_job, timeout_s=300)
                    else:
                        # Left queued: the test looks at the bundle as it arrived.
                        handlers.pop(PUBLISH_JOB, None)
                    pool = WorkerPool(
                        graph.services,
                        handlers,
                        concurrency=workers,
                        poll_interval_s=0.2,
                        backoff=Backoff(base_s=0.2, cap_s=2.0),
                        worker_id=f"{socket.gethostname()}:{os.getpid()}:test",
                    )
                    loop.pool = pool
                    if start_workers:
                        pool.start()
                    yield loop
        finally:
            if pool is not None:
                await pool.stop(timeout_s=30)
            if graph is not None:
                await stop_sandboxes(graph)
            if server is not None:
                await server.close()
            if graph is not None:
                await graph.close()
            await github.close()
            shutil.rmtree(base, ignore_errors=True)


async def stop_sandboxes(graph: Graph) -> None:
    """Every sandbox a test left running is stopped (and reaped)."""
    backend = graph.backend
    for sandbox in await backend.sandboxes():
        await backend.cancel(sandbox, grace_s=2.0)
        await backend.reap(sandbox)


def scratch_clone(loop: Loop, bundle: bytes) -> tuple[Path, list[str]]:
    """A clone of the remote with the bundle fetched into it: (clone, bundle's branches)."""
    clone = loop.base / f"scratch-{time.monotonic_ns()}"
    git("clone", "-q", str(loop.remote), str(clone))
    path = clone.parent / (clone.name + ".bundle")
    path.write_bytes(bundle)
    heads = [
        line.split()[1].removeprefix("refs/heads/")
        for line in git("bundle", "list-heads", str(path), cwd=clone).splitlines()
    ]
    git("fetch", "-q", str(path), "refs/heads/*:refs/remotes/bundle/*", cwd=clone)
    return clone, heads


def dump(value: Any) -> str:
    return json.dumps(value, default=str)
