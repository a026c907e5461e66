"""The few GitHub REST calls Clarity makes, as the App's installation, off the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from github import Auth, Github, GithubException
from github.Issue import Issue
from github.PullRequest import PullRequest

from bot.github.auth import HTTP_TIMEOUT_S, GitHubApp
from bot.services import Services
from bot.workers import PermanentJobError, RetryLater

T = TypeVar("T")


@dataclass(frozen=True)
class IssueInfo:
    """The fields of an issue Clarity records on a request."""

    id: int
    number: int
    html_url: str
    title: str
    body: str | None
    labels: list[str]
    author: str | None


class GitHubRest:
    """Create issues and comments on any repository the installation can reach."""

    def __init__(self, services: Services, app: GitHubApp) -> None:
        self.services = services
        self.app = app

    async def _call(self, operation: str, fn: Callable[[Github], T]) -> T:
        token = await self.app.token()
        settings = self.services.settings

        def run() -> T:
            client = Github(
                auth=Auth.Token(token.token),
                base_url=settings.github_api_url,
                timeout=HTTP_TIMEOUT_S,
                retry=None,
                lazy=True,
                seconds_between_requests=None,
                seconds_between_writes=None,
            )
            try:
                return fn(client)
            finally:
                client.close()

        calls = self.services.metrics.github_calls
        try:
            result = await asyncio.to_thread(run)
        except GithubException as exc:
            calls.labels(operation, "error").inc()
            if exc.status == 401:
                self.app.forget()
            raise
        calls.labels(operation, "ok").inc()
        return result

    async def create_issue(self, repo: str, title: str, body: str) -> IssueInfo:
        """Open an issue; its fields as recorded on a request."""

        def create(client: Github) -> IssueInfo:
            return _issue_info(client.get_repo(repo).create_issue(title=title, body=body))

        return await self._call("create_issue", create)

    async def find_issue(self, repo: str, marker: str, since: dt.datetime) -> IssueInfo | None:
        """The issue opened since `since` whose body carries `marker`, if there is one."""

        def find(client: Github) -> IssueInfo | None:
            # Newest first, and `since` (last update) bounds it: an issue opened after
            # `since` was updated after it too, so this reads a page or two at most.
            listed = client.get_repo(repo).get_issues(
                state="all", sort="created", direction="desc", since=since
            )
            for issue in listed:
                if issue.created_at < since:
                    break
                if issue.pull_request is None and marker in (issue.body or ""):
                    return _issue_info(issue)
            return None

        return await self._call("find_issue", find)

    async def create_comment(self, repo: str, issue_number: int, body: str) -> int:
        """Comment on an issue or pull request; the comment's id."""

        def comment(client: Github) -> int:
            return int(client.get_repo(repo).get_issue(issue_number).create_comment(body).id)

        return await self._call("create_comment", comment)

    async def find_comment(self, repo: str, issue_number: int, marker: str) -> int | None:
        """The id of the issue's comment whose body carries `marker`, if there is one."""

        def find(client: Github) -> int | None:
            for comment in client.get_repo(repo).get_issue(issue_number).get_comments():
                if marker in (comment.body or ""):
                    return int(comment.id)
            return None

        return await self._call("find_comment", find)


def _issue_info(issue: Issue) -> IssueInfo:
    return IssueInfo(
        id=issue.id,
        number=issue.number,
        html_url=issue.html_url,
        title=issue.title,
        body=issue.body,
        labels=[label.name for label in issue.labels],
        author=issue.user.login if issue.user is not None else None,
    )


def as_job_error(exc: GithubException) -> Exception:
    """How a job should treat a GitHub failure: wait, give up, or back off."""
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if exc.status in (403, 429) and (
        "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
    ):
        if "retry-after" in headers:
            delay = _seconds(headers["retry-after"], 60.0)
        else:
            delay = _seconds(headers.get("x-ratelimit-reset", ""), time.time() + 60) - time.time()
        return RetryLater(f"GitHub rate limit ({exc.status})", max(delay, 1.0))
    if exc.status in (404, 410, 422):
        return PermanentJobError(f"GitHub refused: {exc.status} {exc.message or exc.data}")
    return exc


def _seconds(value: str, default: float) -> float:
    try:
        return float(value)
    except ValueError:
        return default


@dataclass(frozen=True)
class PullInfo:
    """The fields of a pull request Clarity records on a request."""

    number: int
    html_url: str
    draft: bool


def _pull_info(pull: PullRequest) -> PullInfo:
    return PullInfo(number=pull.number, html_url=pull.html_url, draft=bool(pull.draft))


class GitHubPulls:
    """Pull requests of the branches Clarity publishes, as the App's installation."""

    def __init__(self, rest: GitHubRest) -> None:
        self.rest = rest

    async def default_branch(self, repo: str) -> str:
        """The repository's default branch (the base of Clarity's PRs)."""
        return await self.rest._call(
            "get_repo", lambda client: str(client.get_repo(repo).default_branch)
        )

    async def find_open(self, repo: str, branch: str) -> PullInfo | None:
        """The open PR whose head is `branch` of the repository itself, if any."""

        def find(client: Github) -> PullInfo | None:
            gh_repo = client.get_repo(repo)
            owner = repo.split("/", 1)[0]
            for pull in gh_repo.get_pulls(state="open", head=f"{owner}:{branch}"):
                return _pull_info(pull)
            return None

        return await self.rest._call("find_pull", find)

    async def create(
        self, repo: str, *, title: str, body: str, head: str, base: str, draft: bool
    ) -> PullInfo:
        """Open a PR from `head` into `base`."""

        def create(client: Github) -> PullInfo:
            pull = client.get_repo(repo).create_pull(
                title=title, body=body, head=head, base=base, draft=draft
            )
            return _pull_info(pull)

        return await self.rest._call("create_pull", create)

    async def update(self, repo: str, number: int, *, body: str, ready: bool) -> PullInfo:
        """Refresh a PR's description; `ready` takes it out of draft."""

        def update(client: Github) -> PullInfo:
            pull = client.get_repo(repo).get_pull(number)
            pull.edit(body=body)
            if ready and pull.draft:
                pull.mark_ready_for_review()
            return _pull_info(client.get_repo(repo).get_pull(number))

        return await self.rest._call("update_pull", update)
