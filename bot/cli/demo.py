"""`clarity demo`: the whole loop in a browser, with no Slack workspace, GitHub or API key.

One command starts the embedded database, the server with the Slack simulator at /_sim/,
the `local` runner, and a demo repository `demo/hello` (a git repository in the data
folder, reached through a `file://` GITHUB_GIT_URL). With ANTHROPIC_API_KEY set and the
`claude` CLI installed the real agent works on it; otherwise the scripted demo agent (the
fake Claude's `demo` scenario) works for a few seconds, asks one question with options and
finishes. The result is the branch in the local repository, shown on the request's page.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from bot.app import build_app
from bot.cli.database import EMBEDDED_DATABASE, Database, data_dir, resolve_database
from bot.cli.errors import CliError, settings_or_fail
from bot.cli.serve import serve_app
from bot.runner.base import RunnerBackend, SandboxState
from bot.runner.local import LocalBackend
from bot.server import build_web_app
from bot.settings import Settings, with_simulator
from bot.simulator import DEMO_CHANNEL
from storage.embedded import EmbeddedPostgres
from storage.repositories.channels import ChannelSettingsRepository

log = logging.getLogger(__name__)

DEMO_REPO = "demo/hello"
# How long an agent at work when the demo stops gets to say so and end (it stops Claude Code
# within 12 s), and one a worker started while the demo stopped (the side-API is gone then).
RUN_GRACE_S = 12.0
LATE_RUN_GRACE_S = 2.0
DEMO_AGENT = "clarity-fake-claude --default-scenario demo"

_FILES = {
    "README.md": "# hello\n\nA tiny program to try Clarity on.\n",
    "hello.py": (
        '"""Say hello."""\n\n\n'
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n\n\n'
        'if __name__ == "__main__":\n'
        '    print(greet("world"))\n'
    ),
    "test_hello.py": (
        "from hello import greet\n\n\n"
        "def test_greet() -> None:\n"
        '    assert greet("Ada") == "Hello, Ada!"\n'
    ),
}


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(  # noqa: S603 - fixed arguments, no shell
        ["git", *args],  # noqa: S607 - git from PATH, as the agent uses it
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(cwd),
            "GIT_AUTHOR_NAME": "Clarity demo",
            "GIT_AUTHOR_EMAIL": "demo@clarity.invalid",
            "GIT_COMMITTER_NAME": "Clarity demo",
            "GIT_COMMITTER_EMAIL": "demo@clarity.invalid",
        },
    )


def ensure_demo_repository(root: Path) -> Path:
    """`<root>/demo/hello.git` with a first commit on `main` (made once, kept after)."""
    bare = root / f"{DEMO_REPO}.git"
    if (bare / "HEAD").exists():
        return bare
    if shutil.which("git") is None:
        raise CliError("the demo needs git: install it (e.g. `apt-get install git`)")
    bare.mkdir(parents=True, exist_ok=True)
    _git("init", "--bare", "--quiet", "--initial-branch=main", cwd=bare)
    seed = root / ".seed"
    shutil.rmtree(seed, ignore_errors=True)
    _git("clone", "--quiet", str(bare), str(seed), cwd=root)
    for name, text in _FILES.items():
        (seed / name).write_text(text)
    _git("add", ".", cwd=seed)
    _git("commit", "--quiet", "-m", "A tiny program to try Clarity on", cwd=seed)
    _git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    shutil.rmtree(seed, ignore_errors=True)
    # The agent (as the unprivileged user when run as root) reads it; Clarity writes it.
    for path in (root, *root.rglob("*")):
        path.chmod(path.stat().st_mode | 0o055)
    return bare


def demo_settings(settings: Settings, git_root: Path) -> Settings:
    """The demo's settings on top of the user's: simulator, local runner, local git."""
    updates: dict[str, object] = {
        "clarity_simulator": True,
        "clarity_runner": "local",
        "runner_url": None,
        "github_git_url": git_root.as_uri() + "/",
        # The demo never talks to GitHub.
        "github_app_id": None,
        "github_private_key": None,
        "github_installation_id": None,
        "clarity_agent_cli": settings.clarity_agent_cli
        if uses_real_agent(settings)
        else DEMO_AGENT,
        # Links in the simulated Slack (the root message's dashboard link, the result) point
        # at this server.
        "clarity_public_url": settings.public_base(),
    }
    return with_simulator(settings.model_copy(update=updates))


def uses_real_agent(settings: Settings) -> bool:
    """An Anthropic key and the Claude Code CLI: the real agent works on the demo repository."""
    cli = (
        shutil.which(settings.clarity_agent_cli.split()[0]) if settings.clarity_agent_cli else None
    )
    return bool(settings.secret("anthropic_api_key")) and cli is not None


def banner(settings: Settings, db: Database, git_root: Path) -> str:
    """What `clarity demo` prints once it listens: where to go and what to type."""
    base = settings.public_base()
    if settings.clarity_agent_cli == DEMO_AGENT:
        agent = "a scripted demo agent (ANTHROPIC_API_KEY and `claude` give the real one)"
    else:
        agent = f"Claude Code (`{settings.clarity_agent_cli}`) with your ANTHROPIC_API_KEY"
    # A URL psql takes; the password stays in its file.
    where = urlsplit(db.url)
    database = (
        f"postgresql://{where.username}:***@{where.hostname}:{where.port}/{EMBEDDED_DATABASE}"
        f"  (password in {data_dir(settings) / 'pgdata.password'})"
    )
    return (
        "\n"
        "Clarity demo is running.\n"
        f"  open       {base}/_sim/  (a simulated Slack workspace)\n"
        "  type       /clarity add a friendly greeting   (in #clarity-demo)\n"
        f"  agent      {agent}\n"
        f"  repository {DEMO_REPO}, a git repository in {git_root}\n"
        f"  dashboard  {base}/requests  (type /clarity dashboard to sign in)\n"
        f"  database   DATABASE_URL={database}\n"
        "  stop       Ctrl-C\n"
    )


async def stop_runs(backend: RunnerBackend, grace_s: float = RUN_GRACE_S) -> list[str]:
    """Stop the agents still working: the demo leaves nothing running when it stops.

    (A server's local runs outlive it on purpose and are followed by the next one; the
    demo's are a person's experiment, stopped with it. The next `clarity demo` finds them
    ended, and the request offers Retry.)"""
    live = [
        sandbox
        for sandbox in await backend.sandboxes()
        if (await backend.observe(sandbox)).state == SandboxState.RUNNING
    ]
    if live:
        log.info("stopping %d agent run(s)", len(live))
        await asyncio.gather(*(backend.cancel(sandbox, grace_s=grace_s) for sandbox in live))
    return live


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def fresh_demo_folder(root: Path) -> Iterator[Path]:
    """`<data>/demo`, emptied, for this demo alone while it runs.

    Each `clarity demo` starts afresh: its Slack workspace lives in memory, so its database,
    repository and runs are made anew too, and none of it mixes with `clarity serve`'s in
    the same data folder. A lock beside it keeps a second demo off the folder; what a demo
    killed outright left running (its PostgreSQL, agents) is stopped first.
    """
    folder = root / "demo"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "demo.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(
                f"another clarity demo is running with the data folder {root}: stop it first, "
                "or give this one another CLARITY_DATA_DIR"
            ) from None
        if folder.exists():
            runs = folder / "runs"
            if runs.exists():
                asyncio.run(stop_runs(LocalBackend(runs_dir=runs), grace_s=LATE_RUN_GRACE_S))
            EmbeddedPostgres(folder / "pgdata").stop()
            shutil.rmtree(folder)
        folder.mkdir()
        # As root, PostgreSQL and the agent run as their own users and pass through it.
        folder.chmod(0o755)
        yield folder


def run_demo(*, host: str | None, port: int | None) -> int:
    """`clarity demo`: blocks until SIGTERM/SIGINT."""
    # Until the server takes over SIGTERM, it stops start-up as Ctrl-C does, so the
    # embedded PostgreSQL started meanwhile is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = settings_or_fail()
    if settings.secret("database_url"):
        log.info("the demo uses its own embedded database; DATABASE_URL is ignored")
        settings = settings.model_copy(update={"database_url": None})
    flags = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=flags)
    with fresh_demo_folder(data_dir(settings)) as folder:
        settings = settings.model_copy(update={"clarity_data_dir": folder})
        settings, db = resolve_database(settings)
        try:
            git_root = folder / "git"
            ensure_demo_repository(git_root)
            settings = demo_settings(settings, git_root)
            asyncio.run(_serve_demo(settings, db, git_root))
        finally:
            db.release()
    log.info("Clarity demo stopped")
    return 0


async def _serve_demo(settings: Settings, db: Database, git_root: Path) -> None:
    clarity = build_app(settings, db.url)
    async with clarity.services.session_factory.begin() as session:
        await ChannelSettingsRepository(session).set_default_repo(DEMO_CHANNEL, DEMO_REPO, "demo")
    app = build_web_app(clarity, run_workers=True)

    def ready() -> None:
        print(banner(settings, db, git_root), flush=True)

    async def stopping() -> None:
        # While the side-API still answers, so the agents can say they stopped.
        await stop_runs(clarity.backend)

    try:
        await serve_app(app, settings.host, settings.port, on_listening=ready, on_stopping=stopping)
    finally:
        # Anything a worker started meanwhile.
        await stop_runs(clarity.backend, grace_s=LATE_RUN_GRACE_S)
