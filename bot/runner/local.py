"""The `local` runner backend: the agent program as a child process of a worker.

Each run is `python -P -m agent run` in a process group (and session) of its own, its job
document on standard input, in the request's work folder
`<CLARITY_DATA_DIR>/runs/<request id>/work` — the same path for every run of the request,
so a resumed Claude session is found where the CLI looks. Each run gets a fresh HOME (and
CLAUDE_CONFIG_DIR) beside it. Run as root, the agent runs as the unprivileged system user
`clarity-agent` (created on first use), which owns the work folder and the run's HOME and
nothing else; the files this backend keeps (pid files, logs) stay root's.

A sandbox id is `local:<hostname>:<pid>:<process start time>`: any replica tells its own
runs from another machine's, and a pid the kernel reused is never taken for the run. The
process is a small shell that runs the agent and writes its exit status to a file, so the
status is known even when the worker that started it died meanwhile (its child lives on in
its own session, and is followed by whichever worker on this machine watches runs next).

Cancel: SIGTERM to the group (the agent stops Claude Code, writes its result and exits),
up to `grace_s` (12 s), then SIGKILL to the group and to every process group its
descendants made.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.runner.environment import with_paths

log = logging.getLogger(__name__)

AGENT_USER = "clarity-agent"
FALLBACK_USER = "nobody"
PREFIX = "local"
GRACE_S = 12.0
KILL_WAIT_S = 3.0
POLL_S = 0.1
# The run's process: a shell that runs the agent (its arguments) and keeps its exit status.
# A trapped TERM/INT waits for the agent (which handles them) before the status is written.
WRAPPER = (
    'exit_file=$1; shift; trap ":" TERM INT; "$@"; code=$?; '
    'echo "$code" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"; exit "$code"'
)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
EXIT_FILE = "exit-status"
PIDS = ".pids"
BIN = ".bin"


# Programs this backend puts on the sandbox's PATH itself (whatever the machine's PATH has).
PROVIDED_PROGRAMS = {"clarity-agent": "agent", "clarity-fake-claude": "agent.fake_claude"}


class LocalBackendError(RuntimeError):
    """The local backend cannot run the agent here (the message says why, for a person)."""


@dataclass(frozen=True)
class ProcessStat:
    """What /proc says of one process."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int
    running: bool


def read_stat(pid: int) -> ProcessStat | None:
    """/proc/<pid>/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session … starttime(22nd)"; comm may hold spaces and ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcessStat(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        start=int(fields[19]),
        running=fields[0] not in (b"Z", b"X"),
    )


def process_table() -> list[ProcessStat]:
    """Every process /proc shows."""
    table = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                found = read_stat(int(name))
                if found is not None:
                    table.append(found)
    return table


def descendants(pid: int, table: list[ProcessStat]) -> list[ProcessStat]:
    """Processes started by `pid`, at any depth."""
    children: dict[int, list[ProcessStat]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessStat] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


@dataclass(frozen=True)
class SandboxRef:
    """A parsed sandbox id."""

    host: str
    pid: int
    start: int

    @property
    def id(self) -> str:
        return f"{PREFIX}:{self.host}:{self.pid}:{self.start}"

    @property
    def key(self) -> str:
        return f"{self.pid}-{self.start}"

    @classmethod
    def parse(cls, sandbox_id: str) -> SandboxRef | None:
        parts = sandbox_id.split(":")
        if len(parts) != 4 or parts[0] != PREFIX:
            return None
        try:
            return cls(parts[1], int(parts[2]), int(parts[3]))
        except ValueError:
            return None


@dataclass(frozen=True)
class Account:
    """Whom the agent runs as (None: as this process's own user)."""

    name: str
    uid: int
    gid: int


def agent_root() -> Path:
    """The folder the `agent` package is in (what PYTHONPATH must name): installed beside
    `bot` (a checkout, or site-packages), else wherever Python finds it."""
    beside = Path(__file__).resolve().parents[2]
    if (beside / "agent" / "cli.py").is_file():
        return beside
    spec = importlib.util.find_spec("agent.cli")
    if spec is None or spec.origin is None:
        raise LocalBackendError("the agent program (package `agent`) is not installed")
    return Path(spec.origin).resolve().parent.parent


def safe_name(request_id: str) -> str:
    """A request id as a folder name."""
    return _SAFE.sub("-", request_id)[:120] or "request"


class LocalBackend:
    """Runs each run as a child process of this worker, in a folder per request."""

    name = "local"

    def __init__(
        self,
        *,
        runs_dir: Path,
        python: str | None = None,
        user: str | None = None,
        grace_s: float = GRACE_S,
        hostname: str | None = None,
    ) -> None:
        """`python`: the interpreter for the agent (unset: one the agent's user can run).
        `user`: whom the agent runs as; unset, `clarity-agent` as root, else this user."""
        self.runs_dir = Path(runs_dir)
        self.python = python
        self.user = user
        self.grace_s = grace_s
        self.hostname = hostname or socket.gethostname()
        self._account: Account | None = None
        self._prepared = False
        self._prepare_lock = asyncio.Lock()
        self._starting: dict[tuple[str, int], asyncio.Lock] = {}
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # --- who owns what --------------------------------------------------------------------

    @property
    def scope(self) -> str:
        """Runs of this backend are this machine's: watched from this machine only."""
        return self.hostname

    def owns(self, sandbox_id: str) -> bool:
        """Whether the sandbox was started on this machine."""
        ref = SandboxRef.parse(sandbox_id)
        return ref is not None and ref.host == self.hostname

    def request_dir(self, request_id: str) -> Path:
        """`<runs>/<request id>`: the request's work folder, pid files, logs."""
        return self.runs_dir / safe_name(request_id)

    def work_dir(self, request_id: str) -> Path:
        """The checkout: the same path for every run of the request."""
        return self.request_dir(request_id) / "work"

    def home_dir(self, request_id: str, attempt: int) -> Path:
        """The run's own HOME (its CLAUDE_CONFIG_DIR inside)."""
        return self.request_dir(request_id) / f"attempt-{attempt}"

    def log_path(self, request_id: str, attempt: int) -> Path:
        """What the agent program wrote to stdout and stderr (scrubbed by it)."""
        return self.request_dir(request_id) / f"attempt-{attempt}.log"

    def _marker(self, request_id: str, attempt: int) -> Path:
        # Written once the run's process exists: a second start of the attempt finds it.
        return self.request_dir(request_id) / f"attempt-{attempt}.sandbox"

    def _pid_file(self, ref: SandboxRef) -> Path:
        return self.runs_dir / PIDS / f"{ref.key}.json"

    # --- preparing the machine ------------------------------------------------------------

    async def _prepare(self) -> None:
        async with self._prepare_lock:
            if not self._prepared:
                await asyncio.to_thread(self._prepare_sync)
                self._prepared = True

    def _prepare_sync(self) -> None:
        for folder in (self.runs_dir, self.runs_dir / PIDS, self.runs_dir / BIN):
            folder.mkdir(parents=True, exist_ok=True)
            # Root's; others may pass through (the agent's user reaches its own folders).
            os.chmod(folder, 0o700 if folder.name == PIDS else 0o755)
        self._account = self._resolve_account()
        self._check_reachable()
        root = agent_root()
        python = self.python or self._find_python(root)
        self.python = python
        self._write_bin(python, root)

    def _resolve_account(self) -> Account | None:
        if self.user is None and os.geteuid() != 0:
            return None
        name = self.user or AGENT_USER
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name != AGENT_USER or os.geteuid() != 0:
                raise LocalBackendError(f"no user {name!r} to run the agent as") from None
            entry = _create_user(name)
        if entry.pw_uid == os.geteuid():
            return None
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def _find_python(self, root: Path) -> str:
        """An interpreter (3.11+) the agent's user can run that finds the agent program."""
        candidates = [
            os.path.realpath(sys.executable),
            shutil.which("python3") or "",
            "/usr/bin/python3",
            "/usr/local/bin/python3",
        ]
        probe = "import sys, agent.cli; sys.exit(0 if sys.version_info >= (3, 11) else 1)"
        tried = []
        for candidate in dict.fromkeys(c for c in candidates if c):
            tried.append(candidate)
            if self._run_as_agent([candidate, "-P", "-c", probe], {"PYTHONPATH": str(root)}):
                return candidate
        who = self._account.name if self._account else "this user"
        raise LocalBackendError(
            f"no Python 3.11+ that {who} can run finds the agent program in {root} "
            f"(tried {', '.join(tried)}): make the installation readable by {who}"
        )

    def _write_bin(self, python: str, root: Path) -> None:
        """`clarity-agent` and `clarity-fake-claude` for the sandbox's PATH, runnable by
        the agent's user whatever the installation's own scripts point at."""
        for name, module in PROVIDED_PROGRAMS.items():
            path = self.runs_dir / BIN / name
            text = (
                "#!/bin/sh\n"
                f'PYTHONPATH={_quote(str(root))} exec {_quote(python)} -P -m {module} "$@"\n'
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o755)  # noqa: S103 - a script anyone may run
            os.replace(tmp, path)

    def _run_as_agent(self, argv: list[str], env: dict[str, str]) -> bool:
        """Whether a short command succeeds as the agent's user."""
        account = self._account
        try:
            done = subprocess.run(  # noqa: S603 - our own probes
                argv,
                env={"PATH": "/usr/bin:/bin", **env},
                cwd="/",
                capture_output=True,
                timeout=30,
                check=False,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0

    def _check_reachable(self) -> None:
        """The agent's user must get through to the runs folder (its own folders inside)."""
        if self._account is None:
            return
        if not self._run_as_agent(["/bin/sh", "-c", 'cd "$1"', "probe", str(self.runs_dir)], {}):
            raise LocalBackendError(
                f"the runs folder {self.runs_dir} is out of reach of the user "
                f"{self._account.name!r} the agent runs as: let it through (chmod o+x on "
                "each folder above it) or set CLARITY_DATA_DIR elsewhere"
            )

    def _own(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)
        os.chmod(path, mode)

    # --- the backend interface ------------------------------------------------------------

    async def start(self, spec: RunSpec) -> str:
        """Start the run; a second start of the same (request, attempt) returns the first."""
        await self._prepare()
        lock = self._starting.setdefault((spec.request_id, spec.attempt), asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._start_sync, spec)

    def _start_sync(self, spec: RunSpec) -> str:
        folder = self.request_dir(spec.request_id)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # noqa: S103 - the agent's user passes through to its own
        with open(folder / f"attempt-{spec.attempt}.lock", "a+b") as lock:
            # Other processes of this machine (more workers) take turns here.
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            marker = self._marker(spec.request_id, spec.attempt)
            if marker.exists():
                started = marker.read_text().strip()
                if SandboxRef.parse(started) is not None:
                    return started
            return self._spawn(spec, marker)

    def _spawn(self, spec: RunSpec, marker: Path) -> str:
        assert self.python is not None
        work = self.work_dir(spec.request_id)
        home = self.home_dir(spec.request_id, spec.attempt)
        if home.exists():
            shutil.rmtree(home, ignore_errors=True)  # a start that died half-way
        self._own(work)
        self._own(home)
        if spec.env.get("GITHUB_GIT_URL", "").startswith("file://"):
            # A local remote (the demo's, the tests') belongs to another user than the
            # agent's: git refuses such a repository unless told to trust it.
            self._trust_local_remotes(home)
        env = with_paths(spec.env, home=str(home), work_dir=str(work))
        # The run's temporary files go with its HOME when it is reaped, even when the agent
        # was killed before it could clean up.
        tmp = home / "tmp"
        self._own(tmp)
        env["TMPDIR"] = str(tmp)
        env["PATH"] = os.pathsep.join([str(self.runs_dir / BIN), env.get("PATH", "")]).rstrip(
            os.pathsep
        )
        env["PYTHONPATH"] = str(agent_root())
        argv = [
            "/bin/sh",
            "-c",
            WRAPPER,
            "clarity-run",
            str(home / EXIT_FILE),
            self.python,
            "-P",
            "-m",
            "agent",
            "run",
        ]
        log_path = self.log_path(spec.request_id, spec.attempt)
        # The job document (it holds the job's token) on stdin from an unnamed file: it is
        # never in the environment, on a command line, or anywhere in the file system.
        account = self._account
        with tempfile.TemporaryFile() as job, open(log_path, "ab") as out:
            job.write(json.dumps(dict(spec.job), separators=(",", ":")).encode())
            job.flush()
            job.seek(0)
            process = subprocess.Popen(  # noqa: S603 - /bin/sh with our own script
                argv,
                stdin=job,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(home),
                env=env,
                start_new_session=True,
                close_fds=True,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
        status = read_stat(process.pid)
        ref = SandboxRef(self.hostname, process.pid, status.start if status else 0)
        record = {
            "sandboxId": ref.id,
            "requestId": spec.request_id,
            "attempt": spec.attempt,
            "home": str(home),
            "startedAt": time.time(),
            "timeoutS": spec.timeout_s,
        }
        _write_atomically(self._pid_file(ref), json.dumps(record))
        _write_atomically(marker, ref.id)
        self._children[process.pid] = process
        threading.Thread(target=self._reap_child, args=(process,), daemon=True).start()
        log.info(
            "run %s:%d started as %s (log %s)", spec.request_id, spec.attempt, ref.id, log_path
        )
        return ref.id

    def _trust_local_remotes(self, home: Path) -> None:
        config = home / ".gitconfig"
        config.write_text("[safe]\n\tdirectory = *\n")
        if self._account is not None:
            os.chown(config, self._account.uid, self._account.gid)

    def _reap_child(self, process: subprocess.Popen[bytes]) -> None:
        # Our child: wait for it, so it does not linger as a zombie.
        process.wait()
        self._children.pop(process.pid, None)

    def _record(self, ref: SandboxRef) -> dict[str, object] | None:
        try:
            data = json.loads(self._pid_file(ref).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("sandboxId") == ref.id else None

    def _alive(self, ref: SandboxRef) -> bool:
        found = read_stat(ref.pid)
        return found is not None and found.start == ref.start and found.running

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        """RUNNING while the process lives; EXITED with its status once it ended."""
        ref = SandboxRef.parse(sandbox_id)
        if ref is None or ref.host != self.hostname:
            return SandboxStatus(SandboxState.GONE, reason="not a sandbox of this machine")
        record = self._record(ref)
        if record is None:
            return SandboxStatus(SandboxState.GONE, reason="no such sandbox on this machine")
        if self._alive(ref):
            return SandboxStatus(SandboxState.RUNNING)
        code = _read_exit(Path(str(record.get("home"))) / EXIT_FILE)
        if code is None:
            return SandboxStatus(
                SandboxState.FAILED, reason="the agent's process was killed before it exited"
            )
        return SandboxStatus(SandboxState.EXITED, exit_code=code)

    async def cancel(self, sandbox_id: str, *, grace_s: float | None = None) -> None:
        """SIGTERM the group, wait up to `grace_s` for it to end, then SIGKILL what is left
        (the group and every group its descendants made)."""
        ref = SandboxRef.parse(sandbox_id)
        if ref is None or ref.host != self.hostname or not self._alive(ref):
            return
        grace = self.grace_s if grace_s is None else grace_s
        groups = self._groups(ref)
        _signal_group(ref.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            groups |= self._groups(ref)
            if not self._any_alive(groups):
                return
            await asyncio.sleep(POLL_S)
        log.warning("sandbox %s did not stop within %.0f s: killing it", sandbox_id, grace)
        groups |= self._groups(ref)
        record = self._record(ref)
        home = record.get("home") if record else None
        if isinstance(home, str):
            groups |= {(p.pgid, p.sid) for p in leftovers(home)}
        for pgid, _sid in sorted(groups):
            _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            if not self._any_alive(groups):
                return
            await asyncio.sleep(POLL_S)

    def _groups(self, ref: SandboxRef) -> set[tuple[int, int]]:
        """(pgid, sid) of the sandbox's group and of every group its descendants made."""
        if not self._alive(ref):
            return set()
        table = process_table()
        groups = {(ref.pid, ref.pid)}
        for child in descendants(ref.pid, table):
            if child.pgid not in (0, 1, os.getpgrp()):
                groups.add((child.pgid, child.sid))
        return groups

    @staticmethod
    def _any_alive(groups: set[tuple[int, int]]) -> bool:
        wanted = set(groups)
        return any(p.running and (p.pgid, p.sid) in wanted for p in process_table())

    async def reap(self, sandbox_id: str) -> None:
        """Remove the run's pid file and HOME; the work folder and the log stay."""
        ref = SandboxRef.parse(sandbox_id)
        if ref is None or ref.host != self.hostname:
            return
        record = self._record(ref)
        if record is None:
            return
        if self._alive(ref):
            await self.cancel(sandbox_id)
        home = record.get("home")
        if isinstance(home, str) and home.startswith(str(self.runs_dir)):
            # An agent that died without stopping Claude Code leaves it running, orphaned:
            # every process of the run still has the run's own HOME.
            await kill_leftovers(home)
            await asyncio.to_thread(shutil.rmtree, home, True)
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(ref).unlink()

    async def sandboxes(self) -> list[str]:
        """Every sandbox of this machine that was not reaped."""
        try:
            names = sorted(os.listdir(self.runs_dir / PIDS))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                data = json.loads((self.runs_dir / PIDS / name).read_text())
            except (OSError, ValueError):
                continue
            sandbox = data.get("sandboxId") if isinstance(data, dict) else None
            if isinstance(sandbox, str) and self.owns(sandbox):
                found.append(sandbox)
        return found

    async def close(self) -> None:
        """Nothing to release: runs go on in their own sessions and are followed later."""

    # --- for tests and the watcher --------------------------------------------------------

    def env_of(self, sandbox_id: str) -> Mapping[str, str]:
        """The environment a live sandbox's process has (root or the same user only)."""
        ref = SandboxRef.parse(sandbox_id)
        if ref is None:
            return {}
        try:
            raw = Path(f"/proc/{ref.pid}/environ").read_bytes()
        except OSError:
            return {}
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def leftovers(home: str) -> list[ProcessStat]:
    """Live processes of a run, found by its HOME (which every process of the run has, even
    one orphaned in a session of its own): what an agent killed outright leaves behind."""
    marker = f"HOME={home}".encode()
    found = []
    for info in process_table():
        if not info.running or info.pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{info.pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(info)
    return found


async def kill_leftovers(home: str) -> int:
    """SIGKILL the process groups of a finished run's leftovers; how many there were."""
    found = leftovers(home)
    for pgid in sorted({p.pgid for p in found}):
        _signal_group(pgid, signal.SIGKILL)
    for pid in (p.pid for p in found):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if found:
        log.warning("killed %d process(es) a run left behind (HOME %s)", len(found), home)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            if not leftovers(home):
                break
            await asyncio.sleep(POLL_S)
    return len(found)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_exit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _create_user(name: str) -> pwd.struct_passwd:
    """The unprivileged system user the agent runs as (as root), made on first use."""
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run(  # noqa: S603 - useradd with fixed arguments
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not run useradd: %s", exc)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        log.warning("could not create user %s; running the agent as %s", name, FALLBACK_USER)
        return pwd.getpwnam(FALLBACK_USER)


__all__ = ["AGENT_USER", "LocalBackend", "LocalBackendError", "SandboxRef"]
