"""Mirroring to GitHub: comments on a github_issue request's issue, and tracking issues.

`GitHubNotifier.on_change` is subscribed to the lifecycle's changes and runs in the
change's transaction, only queueing jobs; the jobs call GitHub. Text is scrubbed of known
secrets and cut to GitHub's comment limit when the job runs, so tokens fetched at run time
are masked too.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from github import GithubException
from sqlalchemy.ext.asyncio import AsyncSession

from bot.github.auth import GitHubApp, configured
from bot.github.client import GitHubRest, IssueInfo, as_job_error
from bot.requests.actions import IssueRef, RequestLifecycle
from bot.requests.events import RequestChange
from bot.scrub import GITHUB_COMMENT_LIMIT, Scrubber, truncate
from bot.services import NotConfiguredError, Services
from bot.workers import JobHandler, PermanentJobError
from storage import jobs, locks
from storage.deliveries import claim_delivery
from storage.jobs import ClaimedJob
from storage.lifecycle import FINAL
from storage.models import (
    FeatureRequest,
    MessageType,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
)
from storage.repositories import AppConfigRepository, FeatureRequestRepository
from storage.repositories.app_config import CONFIG_MODELS

log = logging.getLogger(__name__)

COMMENT_JOB = "github_comment"
TRACKING_ISSUE_JOB = "github_tracking_issue"
# Outbound effects recorded as attempted (in clarity_inbound_deliveries, by this source).
INTENT = "github-effect"
# Our clock and GitHub's may differ: issue lookups reach back this much further.
CLOCK_SKEW = dt.timedelta(minutes=10)


# --- rendering --------------------------------------------------------------------------


def _money(cents: int | None) -> str:
    return f"${(cents or 0) / 100:.2f}"


def _duration(ms: int | None) -> str:
    seconds = round((ms or 0) / 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def render(
    label: str,
    request: FeatureRequest,
    message: RequestMessage | None,
    status_changed: bool,
) -> str | None:
    """The comment for a change of a github_issue request, or None when it gets none."""
    if status_changed and request.status == RequestStatus.COMPLETED:
        return (
            f"✅ Done: {request.pr_url or 'the pull request'} was merged. "
            f"Total cost {_money(request.cost_usd)}, agent time {_duration(request.duration_ms)}."
        )
    if message is None:
        return None
    kind = message.type
    if kind == MessageType.INITIAL_REQUEST:
        return (
            f"👋 Clarity filed this issue as request `{request.request_id}` and handed it to "
            "the agent. Questions and the pull request will be posted here."
        )
    if kind == MessageType.CLARIFICATION_ASK:
        options = (message.metadata_ or {}).get("options") or []
        listed = "".join(f"\n- {option}" for option in options)
        return (
            f"❓ **The agent has a question:**\n\n{message.content}\n"
            + (f"\nOptions:{listed}\n" if listed else "")
            + "\nReply in a comment to answer."
        )
    if kind in (MessageType.PR_CREATED, MessageType.PR_UPDATED):
        verb = "Opened" if kind == MessageType.PR_CREATED else "Updated"
        return f"🔀 {verb} a pull request: {request.pr_url or '(link not reported)'}"
    if kind == MessageType.CANCELLED:
        who = f" by {message.actor_name}" if message.actor_name else ""
        return f"🛑 Request `{request.request_id}` was cancelled{who}."
    if kind == MessageType.ERROR:
        return (
            f"⚠️ The run failed: {message.content}\n\n"
            f"Remove and add the `{label}` label again to retry."
        )
    return None


# --- enqueueing (inside the change's transaction) ----------------------------------------


async def enqueue_comment(
    session: AsyncSession,
    repo: str,
    issue_number: int,
    body: str,
    *,
    request_id: str | None = None,
) -> None:
    """Queue one comment on an issue."""
    await jobs.enqueue(
        session,
        COMMENT_JOB,
        {"repo": repo, "issueNumber": issue_number, "body": body},
        request_id=request_id,
    )


class GitHubNotifier:
    """Mirrors request changes to GitHub: tracking issues and comments, through jobs."""

    def __init__(
        self,
        services: Services,
        app: GitHubApp,
        rest: GitHubRest,
        lifecycle: RequestLifecycle,
    ) -> None:
        self.services = services
        self.app = app
        self.rest = rest
        self.lifecycle = lifecycle

    async def on_change(self, session: AsyncSession, change: RequestChange) -> None:
        """Queue the GitHub side of a change: a tracking issue, or a comment on the issue."""
        request, message = change.request, change.message
        if message is not None and message.type.value.startswith("agent_"):
            return  # the hot path: agent activity is never mirrored to GitHub
        if (
            request.origin == RequestOrigin.SLACK
            and message is not None
            and message.type == MessageType.INITIAL_REQUEST
            and request.issue_number is None
            and await configured(self.services, session)
        ):
            await jobs.enqueue(
                session,
                TRACKING_ISSUE_JOB,
                {"requestId": request.request_id},
                request_id=request.request_id,
                dedupe_key=f"{TRACKING_ISSUE_JOB}:{request.request_id}",
            )
            return
        if request.origin != RequestOrigin.GITHUB_ISSUE or request.issue_number is None:
            return
        body = render(
            self.services.settings.github_trigger_label, request, message, change.status_changed
        )
        if body is not None:
            await enqueue_comment(
                session, request.repo, request.issue_number, body, request_id=request.request_id
            )

    async def scrubber(self) -> Scrubber:
        """A scrubber that knows every secret: settings, environment, app_config, live token."""
        services = self.services
        scrub = Scrubber(services.settings.known_secrets())
        if services.cipher is not None:
            async with services.session_factory() as session:
                repo = AppConfigRepository(session, services.cipher)
                for model in CONFIG_MODELS.values():
                    try:
                        stored = await repo.get(model)
                    except Exception:
                        log.warning("could not read stored %s secrets to scrub", model.__name__)
                        continue
                    for field in type(stored).SECRET_FIELDS if stored is not None else ():
                        scrub.add(getattr(stored, field))
        cached = self.app.cached_token()
        if cached is not None:
            scrub.add(cached)
        return scrub

    async def run_comment(self, job: ClaimedJob) -> None:
        """The `github_comment` job: post one (scrubbed, size-limited) comment, once."""
        payload: dict[str, Any] = job.payload
        repo, number = str(payload["repo"]), int(payload["issueNumber"])
        scrub = await self.scrubber()
        marker = f"<!-- clarity:comment:{job.id} -->"
        try:
            # GitHub has no idempotency key: a try after the first may follow one whose
            # comment was posted but whose answer was lost, so it looks for its marker first.
            if job.attempts > 1 and await self.rest.find_comment(repo, number, marker) is not None:
                log.info("comment of job %s was posted by an earlier try", job.id)
                return
            await self.rest.create_comment(
                repo, number, marked(scrub(str(payload["body"])), marker)
            )
        except (GithubException, NotConfiguredError) as exc:
            raise _github_failure(exc) from exc

    async def open_tracking_issue(self, request_id: str) -> None:
        """Open the tracking issue of a Slack request (once) and record it on the request."""
        if not await self._tracking_issue_pending(request_id):
            return
        services = self.services
        # A transaction-scoped advisory lock per request makes the job and an early dispatch
        # that both try to open it take turns, so the second finds the issue recorded.
        async with services.session_factory.begin() as guard:
            await locks.hold(guard, f"{TRACKING_ISSUE_JOB}:{request_id}")
            row = await FeatureRequestRepository(guard).find_by_request_id(request_id)
            if row is None or row.issue_number is not None or row.status in FINAL:
                return
            scrub = await self.scrubber()
            title = truncate(scrub(row.title or row.description.strip().splitlines()[0]), 250)
            marker = f"<!-- clarity:request:{request_id} -->"
            # Committed before GitHub is asked: when a later try finds it, an earlier one may
            # have opened the issue and lost the answer, so it looks for the marker first.
            async with services.session_factory.begin() as intent:
                first_try = await claim_delivery(intent, INTENT, f"tracking-issue:{request_id}")
            issue = None
            if not first_try:
                issue = await self.rest.find_issue(row.repo, marker, row.created_at - CLOCK_SKEW)
            if issue is None:
                issue = await self.rest.create_issue(
                    row.repo, title, marked(scrub(_issue_body(row)), marker)
                )
            async with services.session_factory.begin() as session:
                await self.lifecycle.tracking_issue_opened(session, request_id, _ref(issue))

    async def _tracking_issue_pending(self, request_id: str) -> bool:
        async with self.services.session_factory() as session:
            return await jobs.has_pending(session, TRACKING_ISSUE_JOB, request_id)

    async def run_tracking_issue(self, job: ClaimedJob) -> None:
        """The `github_tracking_issue` job."""
        try:
            await self.open_tracking_issue(str(job.payload["requestId"]))
        except (GithubException, NotConfiguredError) as exc:
            raise _github_failure(exc) from exc

    def job_handlers(self) -> dict[str, JobHandler]:
        """Comment and tracking-issue jobs."""
        return {
            COMMENT_JOB: JobHandler(run=self.run_comment, timeout_s=60),
            TRACKING_ISSUE_JOB: JobHandler(run=self.run_tracking_issue, timeout_s=60),
        }


def _ref(issue: IssueInfo) -> IssueRef:
    return IssueRef(
        id=issue.id,
        number=issue.number,
        title=issue.title,
        body=issue.body,
        url=issue.html_url,
        labels=issue.labels,
        author=issue.author,
    )


def _github_failure(exc: Exception) -> Exception:
    if isinstance(exc, GithubException):
        return as_job_error(exc)
    if isinstance(exc, NotConfiguredError):
        return PermanentJobError(str(exc))
    return exc


def marked(text: str, marker: str) -> str:
    """`text` cut to GitHub's limit with an invisible marker at the end that identifies it."""
    return f"{truncate(text, GITHUB_COMMENT_LIMIT - len(marker) - 2)}\n\n{marker}"


def _issue_body(request: FeatureRequest) -> str:
    who = request.slack_user_name or request.slack_user_id or "someone"
    where = f" in #{request.slack_channel_name}" if request.slack_channel_name else ""
    return (
        f"{request.description}\n\n---\n"
        f"Filed from Slack by {who}{where}. Clarity request `{request.request_id}`: "
        "the agent's pull request will close this issue."
    )
