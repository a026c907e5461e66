"""The run's checkout: clone or fetch, the request's branch, commits, and the bundle.

Network commands (clone, fetch) name the credential helper on their command line only, so
no token reaches .git/config, the remote URL or the environment of anything else; every
other command works offline on the local repository.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent import credential
from agent.scrub import Scrubber, tail

log = logging.getLogger(__name__)

DEFAULT_GIT_URL = "https://github.com/"
DEFAULT_NAME = "Clarity Agent"
DEFAULT_EMAIL = "agent@clarity.invalid"
BRANCH_PREFIX = "clarity/"
NETWORK_TIMEOUT_S = 900.0
LOCAL_TIMEOUT_S = 120.0
SLUG_LENGTH = 40


class GitError(Exception):
    """A git command failed; the message is scrubbed and says which command."""


def slugify(title: str, limit: int = SLUG_LENGTH) -> str:
    """Lowercase ASCII letters, digits and single hyphens, at most `limit` characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug[:limit].rstrip("-")


def branch_name(request_id: str, title: str) -> str:
    """`clarity/<short id>-<slug>`: the branch of a request that has none yet."""
    short = request_id.removeprefix("req_")
    short = re.sub(r"[^A-Za-z0-9]", "", short)[:8].lower() or "request"
    slug = slugify(title)
    return f"{BRANCH_PREFIX}{short}-{slug}" if slug else f"{BRANCH_PREFIX}{short}"


def remote_url(base: str, repo: str) -> str:
    """`<GITHUB_GIT_URL><owner>/<repo>.git`."""
    if not base.endswith("/"):
        base += "/"
    return f"{base}{repo}.git"


@dataclass(frozen=True)
class Identity:
    """Who the run's commits are by (GIT_AUTHOR_*/GIT_COMMITTER_*)."""

    author_name: str
    author_email: str
    committer_name: str
    committer_email: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Identity:
        """The sandbox's git identity, Clarity's own when it has none."""
        author_name = env.get("GIT_AUTHOR_NAME") or DEFAULT_NAME
        author_email = env.get("GIT_AUTHOR_EMAIL") or DEFAULT_EMAIL
        return cls(
            author_name=author_name,
            author_email=author_email,
            committer_name=env.get("GIT_COMMITTER_NAME") or author_name,
            committer_email=env.get("GIT_COMMITTER_EMAIL") or author_email,
        )

    def env(self) -> dict[str, str]:
        """The variables git reads it from."""
        return {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.committer_name,
            "GIT_COMMITTER_EMAIL": self.committer_email,
        }


def self_command() -> tuple[list[str], dict[str, str]]:
    """How to start this program again (argv prefix and environment additions).

    `-P` keeps the current directory (a checkout that may have its own `agent/`) off
    sys.path; PYTHONPATH finds this package whether or not it is installed.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, "-P", "-m", "agent"], {"PYTHONPATH": root}


class Checkout:
    """The request's repository in the work folder."""

    def __init__(
        self,
        path: str,
        url: str,
        *,
        env: Mapping[str, str],
        credential_env: Mapping[str, str],
        scrubber: Scrubber,
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = url
        self._env = dict(env)
        self._credential_env = dict(credential_env)
        self._scrub = scrubber
        self._lock = threading.Lock()
        self._current: subprocess.Popen[bytes] | None = None
        self._aborted = False
        argv, extra = self_command()
        self._helper = "!" + " ".join(shlex.quote(a) for a in [*argv, "credential"])
        self._helper_env = extra

    # --- running git ----------------------------------------------------------------------

    def git(
        self,
        *args: str,
        network: bool = False,
        check: bool = True,
        cwd: str | None = None,
        timeout_s: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one git command in the checkout and return its output."""
        # Hooks and an fsmonitor program are the checkout's (the agent may have set them up):
        # none of them runs in our own commands.
        argv = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
        env = dict(self._env)
        pass_fds: Sequence[int] = ()
        report: tuple[int, int] | None = None
        if network:
            argv += ["-c", "credential.helper=", "-c", f"credential.helper={self._helper}"]
            report = os.pipe()
            os.set_blocking(report[0], False)
            pass_fds = (report[1],)
            env.update(self._helper_env)
            env.update(self._credential_env)
            env[credential.REPORT_FD_ENV] = str(report[1])
        argv += list(args)
        timeout = timeout_s or (NETWORK_TIMEOUT_S if network else LOCAL_TIMEOUT_S)
        try:
            with self._lock:
                if self._aborted:
                    raise GitError(f"git {args[0]}: stopped")
                proc = subprocess.Popen(  # noqa: S603 - git, with our arguments
                    argv,
                    cwd=cwd or self.path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=pass_fds,
                    start_new_session=True,
                )
                self._current = proc
            if report:
                os.close(report[1])
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                out, err = proc.communicate()
                raise GitError(f"git {args[0]}: timed out after {timeout:.0f}s") from None
            finally:
                with self._lock:
                    self._current = None
        finally:
            if report:
                self._learn_tokens(report[0])
                os.close(report[0])
        result = subprocess.CompletedProcess(
            argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and result.returncode != 0:
            detail = tail(self._scrub(result.stderr.strip() or result.stdout.strip()), 2000)
            raise GitError(f"git {args[0]} failed ({result.returncode}): {detail}")
        return result

    def abort(self) -> None:
        """Stop the git command running now, and any later one (a cancel)."""
        with self._lock:
            self._aborted = True
            if self._current is not None:
                _kill_group(self._current)

    def _learn_tokens(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        for token in data.decode(errors="replace").split():
            self._scrub.add(token)

    def ref(self, name: str) -> str | None:
        """The commit a ref names, or None."""
        result = self.git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    # --- the run's steps ------------------------------------------------------------------

    def sync(self) -> None:
        """Clone the repository into the work folder, or fetch when it is already there."""
        if os.path.isdir(os.path.join(self.path, ".git")):
            self.git("remote", "set-url", "origin", self.url)
            self.git("fetch", "--prune", "--no-tags", "origin", network=True)
            if self.ref("refs/remotes/origin/HEAD") is None:
                self.git("remote", "set-head", "origin", "--auto", network=True, check=False)
            return
        os.makedirs(self.path, exist_ok=True)
        if os.listdir(self.path):
            raise GitError(f"the work folder {self.path} is not empty and not a git checkout")
        self.git(
            "clone",
            "--no-tags",
            "--origin",
            "origin",
            self.url,
            self.path,
            network=True,
            cwd=os.path.dirname(self.path),
        )

    def checkout_branch(self, branch: str) -> bool:
        """Check out the request's branch; returns whether the remote already has it.

        A local branch ahead of the remote (an earlier run's unpublished commits) is kept;
        otherwise the branch starts from the remote's, or from the remote default branch.
        """
        self.git("check-ref-format", "--branch", branch)
        local = self.ref(f"refs/heads/{branch}")
        remote = self.ref(f"refs/remotes/origin/{branch}")
        if local and (remote is None or self._is_ancestor(remote, local)):
            if self.current_branch() != branch:
                self.git("checkout", "--force", branch)
        elif remote:
            self.git("checkout", "--force", "--no-track", "-B", branch, remote)
        else:
            base = self.ref("refs/remotes/origin/HEAD")
            if base:
                self.git("checkout", "--force", "--no-track", "-B", branch, base)
            else:
                # An empty repository: the branch's first commit will be the run's.
                self.git("checkout", "--force", "--orphan", branch)
        return remote is not None

    def current_branch(self) -> str | None:
        """The branch HEAD is on."""
        result = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.strip() or None

    def is_dirty(self) -> bool:
        """Whether the work tree has changes git would commit."""
        return bool(self.git("status", "--porcelain", "--untracked-files=all").stdout.strip())

    def commit_all(self, message: str) -> bool:
        """Commit every change in the work tree; returns whether there was anything."""
        self.git("add", "--all")
        if self.git("diff", "--cached", "--quiet", check=False).returncode == 0:
            return False
        self.git("commit", "--no-verify", "--quiet", "-m", message)
        return True

    def unpublished(self, branch: str) -> int:
        """How many commits of the branch the remote does not have."""
        if self.ref(f"refs/heads/{branch}") is None:
            return 0
        result = self.git(
            "rev-list", "--count", f"refs/heads/{branch}", "--not", "--remotes=origin"
        )
        return int(result.stdout.strip() or 0)

    def bundle(self, branch: str, path: str) -> bool:
        """Write a bundle of the branch's commits the remote lacks; False when there are none."""
        if self.unpublished(branch) == 0:
            return False
        self.git("bundle", "create", path, f"refs/heads/{branch}", "--not", "--remotes=origin")
        return True

    def file_change(self, file_path: str) -> tuple[str, str, str] | None:
        """(path in the repository, created|modified|deleted, diff) of a file, None if outside."""
        absolute = os.path.abspath(os.path.join(self.path, file_path))
        relative = os.path.relpath(absolute, self.path)
        top = relative.split(os.sep, 1)[0]
        if top in ("..", ".git"):
            return None
        in_head = self.git("cat-file", "-e", f"HEAD:{relative}", check=False).returncode == 0
        if not os.path.lexists(absolute):
            action = "deleted"
            diff = self.git("diff", "--no-color", "HEAD", "--", relative, check=False).stdout
        elif in_head:
            action = "modified"
            diff = self.git("diff", "--no-color", "HEAD", "--", relative, check=False).stdout
        else:
            action = "created"
            diff = self.git(
                "diff", "--no-color", "--no-index", "--", os.devnull, relative, check=False
            ).stdout
        return relative, action, diff

    def _is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return (
            self.git("merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode
            == 0
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
