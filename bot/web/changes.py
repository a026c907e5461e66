"""A request page's "changes": the diff of a local branch, or a link to the pull request.

With a `file://` GITHUB_GIT_URL (the demo, tests) and no GitHub App, the publish job
pushes a request's branch to a local bare repository, `<GITHUB_GIT_URL path><repo>.git`,
and its `pr_url` is the request's own page (`…/requests/<id>#changes`). The page then
shows that branch's diff against the repository's default branch (`git diff
<default>...<branch>`, what the branch adds since it left the default branch), read by a
git subprocess off the event loop, bounded in bytes and time. For any other remote the
section links to the pull request.

git runs with nothing of ours in its environment (no secret), no global or system
config, no external diff or textconv driver, and one reader per page at most
`concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.models import FeatureRequest

MAX_DIFF_BYTES = 512 * 1024
GIT_TIMEOUT_S = 10.0
CONCURRENCY = 2
# owner/name as GitHub allows them; "." and ".." are never a path segment.
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# What git allows in a branch name, minus what could read as an option or a range.
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/@+=,-]+(?<![./])$")


@dataclass(frozen=True)
class Changes:
    """What a request page's changes section shows."""

    # The diff of a local branch (file:// remotes): which branch, against what.
    local: bool = False
    branch: str | None = None
    base: str | None = None
    diff: str = ""
    stat: str = ""  # git's --shortstat line: "3 files changed, 10 insertions(+), …"
    truncated: bool = False
    max_bytes: int = MAX_DIFF_BYTES
    # A sentence when the diff cannot be shown (no such branch, git failed, too slow).
    problem: str | None = None
    # Where the pull request is, when it is not this page.
    pr_url: str | None = None
    pr_number: int | None = None


def local_root(git_url: str | None) -> Path | None:
    """The folder a `file://` GITHUB_GIT_URL names; None for any other remote."""
    if not git_url:
        return None
    parts = urlsplit(git_url)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


def repository_path(root: Path, repo: str) -> Path | None:
    """`<root><owner>/<name>.git`, or None for a name that is not owner/name."""
    if not _REPO.match(repo) or any(part in (".", "..") for part in repo.split("/")):
        return None
    return root / f"{repo}.git"


def changes_repo(repository: Path) -> str:
    """owner/name of a repository folder, for sentences."""
    return f"{repository.parent.name}/{repository.name.removesuffix('.git')}"


def is_own_page(request: FeatureRequest) -> bool:
    """Whether the request's PR link is its own page (a local branch, no GitHub)."""
    return bool(request.pr_url) and str(request.pr_url).endswith(
        f"/requests/{request.request_id}#changes"
    )


def _git_env(repository: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repository),
        "GIT_DIR": str(repository),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


@dataclass(frozen=True)
class _Output:
    code: int
    out: bytes
    truncated: bool


class ChangesReader:
    """Reads a request's branch diff from a local repository (one per Dashboard)."""

    def __init__(
        self,
        git_url: str | None,
        *,
        max_bytes: int = MAX_DIFF_BYTES,
        timeout_s: float = GIT_TIMEOUT_S,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.root = local_root(git_url)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)

    async def for_request(self, request: FeatureRequest) -> Changes | None:
        """What the request's changes section shows; None when it has no PR or branch."""
        branch = request.pr_branch_name
        link = None if is_own_page(request) else request.pr_url
        if self.root is None or not branch:
            if not link:
                return None
            return Changes(pr_url=link, pr_number=request.pr_number)
        changes = Changes(
            local=True,
            branch=branch,
            max_bytes=self.max_bytes,
            pr_url=link,
            pr_number=request.pr_number,
        )
        repository = repository_path(self.root, request.repo)
        if repository is None or not _BRANCH.match(branch):
            return replace(changes, problem="This request's branch cannot be shown.")
        try:
            async with self._slots, asyncio.timeout(self.timeout_s):
                return await self._read(changes, repository, branch)
        except TimeoutError:
            return replace(changes, problem="Reading the diff took too long.")

    async def _read(self, changes: Changes, repository: Path, branch: str) -> Changes:
        try:
            head = await self._git(repository, "symbolic-ref", "--quiet", "HEAD")
        except OSError:  # no such folder (or no git)
            return replace(changes, problem=f"There is no repository {changes_repo(repository)}.")
        default = head.out.decode(errors="replace").strip()
        if head.code != 0 or not default.startswith("refs/heads/"):
            return replace(changes, problem="The repository has no default branch.")
        base = default.removeprefix("refs/heads/")
        changes = replace(changes, base=base)
        ref = f"refs/heads/{branch}"
        found = await self._git(repository, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if found.code != 0:
            return replace(changes, problem=f"The branch {branch} is not in the repository.")
        spec = f"{default}...{ref}"
        flags = ["--no-color", "--no-ext-diff", "--no-textconv", "--find-renames"]
        stat = await self._git(repository, "diff", *flags, "--shortstat", spec, "--")
        diff = await self._git(repository, "diff", *flags, spec, "--", limit=self.max_bytes)
        if stat.code != 0 or (diff.code != 0 and not diff.truncated):
            return replace(changes, problem="git could not compute the diff.")
        text = diff.out
        if diff.truncated:
            # Whole lines only.
            text = text[: self.max_bytes]
            text = text[: text.rfind(b"\n") + 1] if b"\n" in text else text
        return replace(
            changes,
            diff=text.decode(errors="replace"),
            stat=stat.out.decode(errors="replace").strip(),
            truncated=diff.truncated,
        )

    async def _git(self, repository: Path, *args: str, limit: int = 64 * 1024) -> _Output:
        """Run git in `repository`: its exit code and at most `limit` bytes of its output
        (more is cut, and the process stopped)."""
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=repository,
            env=_git_env(repository),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        out = bytearray()
        truncated = False
        try:
            while chunk := await process.stdout.read(64 * 1024):
                out += chunk
                if len(out) > limit:
                    truncated = True
                    process.kill()
                    break
            code = await process.wait()
        finally:
            # Cancelled or timed out: the process does not outlive the page.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return _Output(code, bytes(out), truncated)
