"""Starting Claude Code headless, reading its events, and stopping it.

The CLI runs in its own process group (with its MCP server; Claude Code starts each shell
command in a session of its own, so those groups are tracked and killed with it), with an
environment reduced to what it needs: never the job token, the job document or the git
credential variables.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.git import self_command
from agent.mcp import QUALIFIED_TOOL_NAME, SERVER_NAME

log = logging.getLogger(__name__)

DEFAULT_CLI = "claude"
# Edits inside the checkout are allowed without asking, and so are the tools we list; the
# CLI refuses bypassPermissions as root, and in the other modes a tool that would need a
# person's approval is denied (nobody can approve in a sandbox), which the model sees.
PERMISSION_MODE = "acceptEdits"
ALLOWED_TOOLS = (
    QUALIFIED_TOOL_NAME,
    "Bash",
    "Edit",
    "Write",
    "MultiEdit",
    "NotebookEdit",
    "Read",
    "Glob",
    "Grep",
    "LS",
    "TodoWrite",
    "TaskCreate",
    "TaskUpdate",
    "TaskGet",
    "TaskList",
)
# Variables the CLI may see, by name or prefix; everything else stays with us.
_PASS = frozenset(
    {
        "HOME",
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "CLAUDE_CONFIG_DIR",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
_PASS_PREFIXES = ("LC_", "CLAUDE_CODE_", "DISABLE_")
# Stopping: SIGINT (the CLI writes its result and exits), then SIGTERM, then SIGKILL.
INTERRUPT_GRACE_S = 3.0
TERMINATE_GRACE_S = 1.5
# After the CLI exits, how long its output may still drain before the group is killed.
DRAIN_S = 2.0
STDERR_LINES = 200
# How long the killed group's processes may take to disappear.
GROUP_GONE_S = 2.0
# How often the CLI's descendants are looked for (their process groups are remembered).
SURVEY_S = 1.0

EOF_MARK = None


@dataclass(frozen=True)
class ProcessInfo:
    """One line of the process table (from /proc)."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    running: bool


def process_table() -> list[ProcessInfo] | None:
    """Every process, or None where there is no /proc."""
    try:
        names = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    table = []
    for name in names:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session …"; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 4:
            continue
        table.append(
            ProcessInfo(
                int(name),
                int(fields[1]),
                int(fields[2]),
                int(fields[3]),
                fields[0] not in (b"Z", b"X"),
            )
        )
    return table


def descendants(pid: int, table: list[ProcessInfo]) -> list[ProcessInfo]:
    """The processes started by `pid`, at any depth."""
    children: dict[int, list[ProcessInfo]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def group_alive(pgid: int) -> bool:
    """Whether a process group has a live (not zombie) member.

    A killed process stays a zombie until its parent, or init for an orphan, reaps it;
    it runs nothing, so it does not count.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    table = process_table()
    if table is None:
        return True  # no /proc: killpg's answer is all there is
    return any(p.pgid == pgid and p.running for p in table)


def cli_env(env: Mapping[str, str], *, config_dir: str) -> dict[str, str]:
    """The environment the CLI runs with."""
    out = {k: v for k, v in env.items() if k in _PASS or k.startswith(_PASS_PREFIXES)}
    out["CLAUDE_CONFIG_DIR"] = config_dir
    out.setdefault("DISABLE_AUTOUPDATER", "1")
    return out


def mcp_config(questions_path: str) -> str:
    """The --mcp-config JSON: our ask_user server, named `clarity`."""
    argv, extra = self_command()
    return json.dumps(
        {
            "mcpServers": {
                SERVER_NAME: {
                    "type": "stdio",
                    "command": argv[0],
                    "args": [*argv[1:], "mcp", "--questions", questions_path],
                    "env": extra,
                }
            }
        }
    )


def cli_argv(
    cli: str,
    *,
    instructions: str,
    budget_usd: str,
    questions_path: str,
    resume: str | None,
) -> list[str]:
    """The CLI's command line; the prompt goes to its standard input (no argv size limit)."""
    argv = [
        *shlex.split(cli or DEFAULT_CLI),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
        instructions,
        "--max-budget-usd",
        budget_usd,
        "--permission-mode",
        PERMISSION_MODE,
        "--strict-mcp-config",
        "--mcp-config",
        mcp_config(questions_path),
        "--allowedTools",
        ",".join(ALLOWED_TOOLS),
    ]
    if resume:
        argv += ["--resume", resume]
    return argv


class ClaudeProcess:
    """One CLI process: its output lines, and the escalating stop."""

    def __init__(
        self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str], prompt: str
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.prompt = prompt
        self.started = 0.0
        self.exited_at: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._threads: list[threading.Thread] = []
        self._stop_step = 0
        self._stop_at = 0.0
        # Process groups the CLI's children made (Claude Code runs each shell command in a
        # session of its own), as (pgid, sid): killed with the CLI, even once orphaned.
        self._groups: set[tuple[int, int]] = set()
        self._surveyed = 0.0

    @property
    def pid(self) -> int:
        """The CLI's pid, which is also its process group id."""
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> None:
        """Start the CLI in a new process group and begin reading its output."""
        self.started = time.monotonic()
        self._proc = subprocess.Popen(  # noqa: S603 - the configured CLI, our arguments
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._spawn(self._write_prompt)
        self._spawn(self._read_stdout)
        self._spawn(self._read_stderr)

    def next_line(self, timeout_s: float) -> bytes | bool | None:
        """The next output line; None at end of output; False when none came in time."""
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return False

    def poll(self) -> bool:
        """Whether the CLI process has exited (its children may live on)."""
        assert self._proc is not None
        if self._proc.poll() is not None and self.exited_at is None:
            self.exited_at = time.monotonic()
        return self.exited_at is not None

    def stop(self) -> None:
        """Begin stopping: interrupt now; `tick` escalates to SIGTERM and SIGKILL."""
        if self._stop_step == 0:
            self._signal(signal.SIGINT)
            self._stop_step, self._stop_at = 1, time.monotonic() + INTERRUPT_GRACE_S

    def tick(self) -> None:
        """Escalate a stop in progress, and clean up after an exit that left output open."""
        now = time.monotonic()
        if self._stop_step == 1 and now >= self._stop_at:
            self._signal(signal.SIGTERM)
            self._stop_step, self._stop_at = 2, now + TERMINATE_GRACE_S
        elif self._stop_step == 2 and now >= self._stop_at:
            self.kill_group()
            self._stop_step = 3
        if now - self._surveyed > SURVEY_S:
            self._survey()
        if self.poll() and self.exited_at is not None and now - self.exited_at > DRAIN_S:
            # A child that kept the output pipe open would hold us forever.
            self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL the CLI's process group and every group its children made."""
        self._survey()
        self._signal(signal.SIGKILL)
        table = process_table() or []
        ours = os.getpgrp()
        for pgid, sid in self._groups:
            if pgid in (ours, 0, 1):
                continue
            # Only while the group is still the one we saw (same session): pids get reused.
            if any(p.pgid == pgid and p.sid == sid for p in table):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)

    def _survey(self) -> None:
        """Remember the process groups of the CLI's descendants."""
        self._surveyed = time.monotonic()
        if self._proc is None or self.exited_at is not None:
            return
        table = process_table() or []
        for child in descendants(self._proc.pid, table):
            if child.pgid != self._proc.pid:
                self._groups.add((child.pgid, child.sid))

    def group_alive(self) -> bool:
        """Whether any process of the CLI's group, or of a group its children made, runs."""
        table = process_table()
        if table is None:
            return group_alive(self.pid)
        return any(
            p.running and (p.pgid == self.pid or (p.pgid, p.sid) in self._groups) for p in table
        )

    def finish(self, timeout_s: float = 5.0) -> int | None:
        """Reap the CLI, kill what is left of its group, stop the reader threads."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self._proc.wait()
        self.kill_group()
        self._wait_group_gone(GROUP_GONE_S)
        for thread in self._threads:
            thread.join(timeout=2.0)
        return self._proc.returncode

    def _wait_group_gone(self, timeout_s: float) -> None:
        """Wait until the killed group's processes are gone (reaped, not only dying)."""
        deadline = time.monotonic() + timeout_s
        while self.group_alive() and time.monotonic() < deadline:
            if os.getpid() == 1:
                # As a container's first process we inherit the orphans: reap them.
                with contextlib.suppress(ChildProcessError):
                    while os.waitpid(-1, os.WNOHANG)[0]:
                        pass
            time.sleep(0.05)

    def stderr_tail(self) -> str:
        """The last lines the CLI wrote to standard error."""
        return "".join(self._stderr)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _write_prompt(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(self.prompt.encode())
            self._proc.stdin.close()
        except OSError:
            pass  # the CLI exited before reading it all: its output says why

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                self._lines.put(line)
        finally:
            self._lines.put(EOF_MARK)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line.decode(errors="replace"))
