"""Publishing a run's work: Clarity, not the sandbox, pushes the branch and opens the PR.

The agent hands back a git bundle (bot.api: PUT …/runs/{attempt}/bundle); the `publish`
job checks it — only the request's branch, a fast-forward of it or new, and no secret in
any added line — pushes it with the App's installation token (never seen by the sandbox),
and opens or updates the pull request through the lifecycle (`pr_created` / `pr_updated`).
Publishing the same bundle twice changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from github import GithubException

from bot.github.auth import GitHubApp, configured
from bot.github.client import GitHubPulls, PullInfo, as_job_error
from bot.requests.actions import RequestLifecycle
from bot.requests.ids import short_id
from bot.requests.queue import PUBLISH_JOB
from bot.scrub import GITHUB_COMMENT_LIMIT, SECRET_PATTERNS, Scrubber, truncate
from bot.services import NotConfiguredError, Services
from bot.workers import JobHandler, PermanentJobError
from storage import artifacts
from storage.deliveries import claim_delivery, delivery_seen
from storage.jobs import ClaimedJob
from storage.models import FeatureRequest, MessageType
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository

log = logging.getLogger(__name__)

# Recorded with the PR, so a publish run again after a crash finds it done.
PUBLISHED = "publish"
GIT_TIMEOUT_S = 120.0
# Shapes of credentials that must never be pushed, beyond the values Clarity knows.
PUSH_PATTERNS = [
    *SECRET_PATTERNS,
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{40}"),
]


class PublishRefusedError(Exception):
    """The bundle may not be published; the message says why, for the thread."""


@dataclass(frozen=True)
class Checked:
    """A bundle that passed the checks: what to push where."""

    branch: str
    commit: str
    new_branch: bool


async def _git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run git; its stdout, or RuntimeError with its stderr (which holds no token)."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), GIT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"git {args[0]} timed out") from None
    if process.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {err.decode(errors='replace').strip()[:500]}")
    return out.decode(errors="replace")


def _git_env(token: str | None, helper: Path) -> dict[str, str]:
    """git's environment: nothing of ours but, for an https remote, the token to push with."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(helper.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C.UTF-8",
    }
    if token is not None:
        # Read by the credential helper of this one git process: never in a URL or config.
        env["CLARITY_PUSH_TOKEN"] = token
    return env


def _write_helper(folder: Path) -> Path:
    helper = folder / "credential-helper"
    helper.write_text(
        "#!/bin/sh\n"
        'test "$1" = get || exit 0\n'
        "echo username=x-access-token\n"
        'echo "password=$CLARITY_PUSH_TOKEN"\n'
    )
    helper.chmod(stat.S_IRWXU)
    return helper


class Publisher:
    """The `publish` job."""

    def __init__(
        self,
        services: Services,
        lifecycle: RequestLifecycle,
        github_app: GitHubApp,
        pulls: GitHubPulls,
        scrubber: Callable[[], Awaitable[Scrubber]],
    ) -> None:
        self.services = services
        self.lifecycle = lifecycle
        self.github_app = github_app
        self.pulls = pulls
        # An async callable making a Scrubber that knows every secret (GitHubNotifier's).
        self.scrubber = scrubber

    def remote_url(self, repo: str) -> str:
        """`<GITHUB_GIT_URL><owner>/<repo>.git`."""
        return f"{self.services.settings.github_git_url}{repo}.git"

    async def run(self, job: ClaimedJob) -> None:
        """Publish one run's bundle (the job's sha256 names exactly which upload)."""
        request_id, attempt = str(job.payload["requestId"]), int(job.payload["attempt"])
        sha = str(job.payload["sha256"])
        key = f"{request_id}:{sha}"
        async with self.services.session_factory() as session:
            if await delivery_seen(session, PUBLISHED, key):
                return
            request = await FeatureRequestRepository(session).get(request_id)
            bundle = await artifacts.find(session, request_id, artifacts.BUNDLE, attempt)
        if bundle is None or bundle.sha256 != sha:
            log.info("publish of %s attempt %d: a newer upload replaced it", request_id, attempt)
            return
        final = bundle.label == "completed"
        try:
            with tempfile.TemporaryDirectory(prefix="clarity-publish-") as scratch:
                folder = Path(scratch)
                path = folder / "run.bundle"
                async with self.services.session_factory() as session:
                    with path.open("wb") as fh:
                        async for chunk in artifacts.chunks(session, bundle.id):
                            fh.write(chunk)
                pushed = await self._push(request, folder, path)
            pull = await self._pull_request(request, pushed, final=final)
        except PublishRefusedError as exc:
            async with self.services.session_factory.begin() as session:
                if await claim_delivery(session, PUBLISHED, key):
                    await self.lifecycle.publish_refused(session, request_id, str(exc))
            return
        except GithubException as exc:
            raise as_job_error(exc) from exc
        async with self.services.session_factory.begin() as session:
            if not await claim_delivery(session, PUBLISHED, key):
                return
            await self.lifecycle.published(
                session,
                request_id,
                pr_url=pull.html_url,
                pr_number=pull.number or None,
                branch=pushed.branch,
                commit=pushed.commit,
                created=request.pr_url is None,
                final=final,
                cost_cents=await self._run_cost(request_id),
            )

    async def _run_cost(self, request_id: str) -> int | None:
        async with self.services.session_factory() as session:
            summaries = await RequestMessagesRepository(session).get_thread(
                request_id, types=[MessageType.AGENT_SUMMARY]
            )
        cost = (summaries[-1].metadata_ or {}).get("costCents") if summaries else None
        return int(cost) if isinstance(cost, int | float) else None

    # --- git ---------------------------------------------------------------------------

    async def _token(self) -> str | None:
        """The installation token for an https remote; None for a local (file://) one."""
        if self.services.settings.github_git_url.startswith("file://"):
            return None
        return (await self.github_app.token()).token

    async def _push(self, request: FeatureRequest, folder: Path, bundle: Path) -> Checked:
        repo = folder / "repo.git"
        repo.mkdir()
        helper = _write_helper(folder)
        env = _git_env(await self._token(), helper)
        credential = ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
        await _git("init", "--bare", "--quiet", cwd=repo, env=env)
        heads = await self._heads(bundle, repo, env)
        branch = self._branch(request, heads)
        remote = self.remote_url(request.repo)
        # What the remote has: its default branch and the request's branch, if it exists.
        listing = await _git(*credential, "ls-remote", "--symref", remote, cwd=repo, env=env)
        remote_heads = {
            line.split("\t")[1]: line.split("\t")[0]
            for line in listing.splitlines()
            if "\t" in line and not line.startswith("ref:")
        }
        default = next(
            (
                line.split()[1].removeprefix("refs/heads/")
                for line in listing.splitlines()
                if line.startswith("ref:") and line.endswith("\tHEAD")
            ),
            None,
        )
        wanted = [f"refs/heads/{default}:refs/remote/default"] if default else []
        existing = remote_heads.get(f"refs/heads/{branch}")
        if existing is not None:
            wanted.append(f"refs/heads/{branch}:refs/remote/branch")
        if wanted:
            await _git(*credential, "fetch", "--quiet", remote, *wanted, cwd=repo, env=env)
        try:
            await _git(
                "fetch",
                "--quiet",
                str(bundle),
                f"refs/heads/{branch}:refs/incoming",
                cwd=repo,
                env=env,
            )
        except RuntimeError as exc:
            raise PublishRefusedError(
                "the run's work does not build on the repository's history"
            ) from exc
        commit = (await _git("rev-parse", "refs/incoming", cwd=repo, env=env)).strip()
        base = "refs/remote/branch" if existing is not None else "refs/remote/default"
        if existing is not None:
            if existing == commit:
                return Checked(branch, commit, new_branch=False)
            try:
                await _git(
                    "merge-base",
                    "--is-ancestor",
                    "refs/remote/branch",
                    "refs/incoming",
                    cwd=repo,
                    env=env,
                )
            except RuntimeError as exc:
                raise PublishRefusedError(
                    f"the run's commits do not fast-forward `{branch}` (it moved meanwhile)"
                ) from exc
        diff_range = [f"{base}..refs/incoming"] if wanted else ["refs/incoming"]
        await self._check_secrets(repo, env, diff_range)
        await _git(
            *credential,
            "push",
            "--quiet",
            remote,
            f"refs/incoming:refs/heads/{branch}",
            cwd=repo,
            env=env,
        )
        return Checked(branch, commit, new_branch=existing is None)

    async def _heads(self, bundle: Path, repo: Path, env: dict[str, str]) -> list[str]:
        try:
            listing = await _git("bundle", "list-heads", str(bundle), cwd=repo, env=env)
        except RuntimeError as exc:
            raise PublishRefusedError("the run's upload is not a git bundle") from exc
        return [line.split()[1] for line in listing.splitlines() if len(line.split()) == 2]

    def _branch(self, request: FeatureRequest, heads: list[str]) -> str:
        branches = [h.removeprefix("refs/heads/") for h in heads if h.startswith("refs/heads/")]
        if len(branches) != 1 or len(heads) != 1:
            raise PublishRefusedError("the bundle must hold exactly the request's branch")
        branch = branches[0]
        if request.pr_branch_name:
            if branch != request.pr_branch_name:
                raise PublishRefusedError(
                    f"the bundle's branch `{branch}` is not the request's "
                    f"`{request.pr_branch_name}`"
                )
        elif not branch.startswith(f"clarity/{short_id(request.request_id)}"):
            raise PublishRefusedError(f"`{branch}` is not a branch of this request")
        return branch

    async def _check_secrets(self, repo: Path, env: dict[str, str], diff_range: list[str]) -> None:
        scrub = await self.scrubber()
        diff = await _git(
            "diff", "--no-color", "--no-ext-diff", "--unified=0", *diff_range, cwd=repo, env=env
        )
        current = "?"
        for line in diff.splitlines():
            if line.startswith("+++ "):
                current = line[6:] if line.startswith("+++ b/") else line[4:]
                continue
            if not line.startswith("+"):
                continue
            added = line[1:]
            if scrub(added) != added or any(p.search(added) for p in PUSH_PATTERNS):
                raise PublishRefusedError(
                    f"`{current}` contains what looks like a secret (a token or key). "
                    "Remove it and ask again (a reply in this thread), or press Retry."
                )

    # --- the pull request -------------------------------------------------------------

    def _body(self, request: FeatureRequest, summary: str, final: bool) -> str:
        settings = self.services.settings
        lines = [summary or "Work by Clarity's agent."]
        lines.append("")
        if not final:
            lines.append("_Draft: the agent has not finished (it asked a question or stopped)._")
        if request.slack_channel_id and request.slack_thread_ts:
            ts = request.slack_thread_ts.replace(".", "")
            lines.append(
                f"Requested in Slack: https://slack.com/archives/{request.slack_channel_id}/p{ts}"
            )
        lines.append(
            f"Clarity request `{request.request_id}`: "
            f"{settings.public_base()}/requests/{request.request_id}"
        )
        if request.issue_number:
            lines.append(f"\nCloses #{request.issue_number}")
        return truncate("\n".join(lines), GITHUB_COMMENT_LIMIT)

    async def _summary(self, request_id: str) -> str:
        async with self.services.session_factory() as session:
            summaries = await RequestMessagesRepository(session).get_thread(
                request_id, types=[MessageType.AGENT_SUMMARY]
            )
        scrub = await self.scrubber()
        return scrub(summaries[-1].content) if summaries else ""

    async def _pull_request(
        self, request: FeatureRequest, pushed: Checked, *, final: bool
    ) -> PullInfo:
        async with self.services.session_factory() as session:
            github = await configured(self.services, session)
        if not github:
            if not self.services.settings.github_git_url.startswith("file://"):
                raise PermanentJobError("GitHub is not configured: cannot open the pull request")
            # A local remote (the demo, tests): the branch is the result; the dashboard
            # shows its changes.
            base = self.services.settings.public_base()
            return PullInfo(0, f"{base}/requests/{request.request_id}#changes", draft=not final)
        body = self._body(request, await self._summary(request.request_id), final)
        existing = await self.pulls.find_open(request.repo, pushed.branch)
        if existing is not None:
            return await self.pulls.update(request.repo, existing.number, body=body, ready=final)
        title = truncate(request.title or request.description.splitlines()[0], 250)
        base_branch = await self.pulls.default_branch(request.repo)
        return await self.pulls.create(
            request.repo,
            title=title,
            body=body,
            head=pushed.branch,
            base=base_branch,
            draft=not final,
        )

    def job_handlers(self) -> dict[str, JobHandler]:
        """The publish job kind."""

        async def run(job: ClaimedJob) -> None:
            try:
                await self.run(job)
            except NotConfiguredError as exc:
                raise PermanentJobError(str(exc)) from exc

        return {PUBLISH_JOB: JobHandler(run=run, timeout_s=300)}
