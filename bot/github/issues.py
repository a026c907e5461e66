"""GitHub issues as a front door: a trigger label files a request, a comment answers a question."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from bot.github import notify
from bot.github.payloads import IssueCommentEvent, IssuesEvent, Repository
from bot.requests.actions import Actor, Filing, IssueRef, RequestLifecycle
from bot.requests.ids import Repo
from bot.settings import Settings
from storage.models import MessageSource, RequestOrigin, RequestStatus
from storage.repositories import FeatureRequestRepository

log = logging.getLogger(__name__)


def is_trigger(settings: Settings, event: IssuesEvent) -> bool:
    """Whether this `issues` delivery is the trigger label being put on an issue."""
    return (
        event.action == "labeled"
        and event.label is not None
        and event.label.name.casefold() == settings.github_trigger_label.casefold()
    )


def repo_allowed(settings: Settings, repository: Repository) -> bool:
    """CLARITY_ALLOWED_REPOS (empty: every repository the App is installed on)."""
    allowed = {r.casefold() for r in settings.split(settings.clarity_allowed_repos)}
    return not allowed or repository.full_name.casefold() in allowed


def association_allowed(settings: Settings, association: str) -> bool:
    """CLARITY_ALLOWED_AUTHOR_ASSOCIATIONS (default OWNER, MEMBER, COLLABORATOR)."""
    allowed = {a.upper() for a in settings.split(settings.clarity_allowed_author_associations)}
    return association.upper() in allowed


def refusal(settings: Settings, event: IssuesEvent) -> str | None:
    """Why this issue may not file a request, or None when it may."""
    if not repo_allowed(settings, event.repository):
        return (
            f"Sorry @{event.sender.login}, Clarity is not enabled for "
            f"`{event.repository.full_name}`, so this issue was not handed to the agent."
        )
    if not association_allowed(settings, event.issue.author_association):
        roles = ", ".join(sorted(settings.split(settings.clarity_allowed_author_associations)))
        return (
            f"Sorry @{event.sender.login}, Clarity only takes requests from issues opened by "
            f"repository members ({roles.lower()}), so this one was not handed to the agent. "
            "A maintainer can open a new issue with the same request."
        )
    return None


async def file_from_issue(
    lifecycle: RequestLifecycle, settings: Settings, session: AsyncSession, event: IssuesEvent
) -> str:
    """The trigger label: file one request per issue and dispatch it (or politely refuse)."""
    issue, repository = event.issue, event.repository
    reason = refusal(settings, event)
    if reason is not None:
        await notify.enqueue_comment(session, repository.full_name, issue.number, reason)
        return "refused"
    existing = await FeatureRequestRepository(session).find_by_issue_id(issue.id, lock=True)
    sender = Actor(event.sender.login, event.sender.login, MessageSource.GITHUB)
    if existing is not None:
        if existing.status == RequestStatus.ERROR:
            await lifecycle.retry(session, existing.request_id, sender)
            return "retried"
        return "already filed"
    filing = Filing(
        origin=RequestOrigin.GITHUB_ISSUE,
        repo=Repo(repository.owner.login, repository.name),
        title=issue.title,
        description=(issue.body or "").strip() or issue.title,
        content=issue.title + (f"\n\n{issue.body}" if issue.body else ""),
        metadata={"labeledBy": event.sender.login},
        issue=IssueRef(
            id=issue.id,
            number=issue.number,
            title=issue.title,
            body=issue.body,
            url=issue.html_url,
            labels=[label.name for label in issue.labels],
            author=issue.user.login,
            repository_id=repository.id,
            repository_url=repository.html_url,
        ),
    )
    author = Actor(issue.user.login, issue.user.login, MessageSource.GITHUB)
    filed = await lifecycle.file(session, filing, author)
    # None: a concurrent delivery for the same issue won.
    return "filed" if filed is not None else "already filed"


def may_answer(settings: Settings, event: IssueCommentEvent) -> bool:
    """A new comment by a human member: a candidate answer."""
    return (
        event.action == "created"
        and not event.comment.user.is_bot
        and not event.sender.is_bot
        and association_allowed(settings, event.comment.author_association)
    )


async def answer_from_comment(
    lifecycle: RequestLifecycle, session: AsyncSession, event: IssueCommentEvent
) -> str:
    """A comment on a request's issue while it awaits clarification is the answer."""
    row = await FeatureRequestRepository(session).find_by_issue_id(event.issue.id, lock=True)
    if row is None:
        return "not a request"
    if row.status != RequestStatus.AWAITING_CLARIFICATION:
        return f"ignored ({row.status.value})"
    author = event.comment.user.login
    outcome = await lifecycle.answer(
        session,
        row,
        event.comment.body,
        Actor(author, author, MessageSource.GITHUB),
        metadata={"issueCommentId": event.comment.id, "answeredVia": "issue_comment"},
    )
    return "answered" if outcome.done else "ignored (already answered)"
