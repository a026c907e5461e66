"""GitHub issues as a front door: a trigger label files a request, a comment answers a question."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from bot import events
from bot.dispatch import DispatchKind, enqueue_dispatch
from bot.github import notify
from bot.github.payloads import IssueCommentEvent, IssuesEvent, Repository
from bot.services import Services
from bot.settings import Settings
from storage.errors import UniqueConflictError
from storage.models import MessageSource, MessageType, RequestOrigin, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.request_messages import Actor

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


async def file_from_issue(services: Services, session: AsyncSession, event: IssuesEvent) -> str:
    """The trigger label: file one request per issue and dispatch it (or politely refuse)."""
    settings = services.settings
    issue, repository = event.issue, event.repository
    reason = refusal(settings, event)
    if reason is not None:
        await notify.enqueue_comment(session, repository.full_name, issue.number, reason)
        return "refused"
    requests = FeatureRequestRepository(session)
    existing = await requests.find_by_issue_id(issue.id, lock=True)
    if existing is not None:
        if existing.status == RequestStatus.ERROR:
            return await _retry(services, session, existing.request_id, event)
        return "already filed"
    owner, name = repository.owner.login, repository.name
    try:
        row = await requests.create(
            request_id=str(uuid.uuid4()),
            origin=RequestOrigin.GITHUB_ISSUE,
            repo=repository.full_name,
            title=issue.title,
            description=(issue.body or "").strip() or issue.title,
            issue_id=issue.id,
            issue_number=issue.number,
            issue_title=issue.title,
            issue_body=issue.body,
            issue_labels=[label.name for label in issue.labels],
            issue_author=issue.user.login,
            issue_url=issue.html_url,
            repository_url=repository.html_url,
            repository_name=repository.full_name,
            repository_id=repository.id,
            repository_owner=owner,
            repository_name_only=name,
        )
    except UniqueConflictError:
        return "already filed"  # a concurrent delivery for the same issue won
    content = issue.title + (f"\n\n{issue.body}" if issue.body else "")
    message = await RequestMessagesRepository(session).add_message(
        row.request_id,
        MessageType.INITIAL_REQUEST,
        MessageSource.GITHUB,
        content,
        actor_id=issue.user.login,
        actor_name=issue.user.login,
        metadata={"labeledBy": event.sender.login},
    )
    await enqueue_dispatch(
        session,
        row.request_id,
        DispatchKind.INITIAL,
        max_attempts=settings.clarity_job_max_attempts,
    )
    services.metrics.requests_created.labels(row.origin.value).inc()
    await events.request_changed(services, session, row, message=message, status_changed=True)
    return "filed"


async def _retry(
    services: Services, session: AsyncSession, request_id: str, event: IssuesEvent
) -> str:
    """Labelling the issue of a failed request again retries it."""
    requests = FeatureRequestRepository(session)
    row = await requests.record_retry(request_id)
    message = await RequestMessagesRepository(session).add_retry(
        request_id,
        row.retry_count or 1,
        Actor(event.sender.login, event.sender.login),
        source=MessageSource.GITHUB,
    )
    await enqueue_dispatch(
        session,
        request_id,
        DispatchKind.RETRY,
        max_attempts=services.settings.clarity_job_max_attempts,
    )
    await events.request_changed(services, session, row, message=message, status_changed=True)
    return "retried"


def may_answer(settings: Settings, event: IssueCommentEvent) -> bool:
    """A new comment by a human member: a candidate answer."""
    return (
        event.action == "created"
        and not event.comment.user.is_bot
        and not event.sender.is_bot
        and association_allowed(settings, event.comment.author_association)
    )


async def answer_from_comment(
    services: Services, session: AsyncSession, event: IssueCommentEvent
) -> str:
    """A comment on a request's issue while it awaits clarification is the answer."""
    requests = FeatureRequestRepository(session)
    row = await requests.find_by_issue_id(event.issue.id, lock=True)
    if row is None:
        return "not a request"
    if row.status != RequestStatus.AWAITING_CLARIFICATION:
        return f"ignored ({row.status.value})"
    author = event.comment.user.login
    message = await RequestMessagesRepository(session).add_clarification_answer(
        row.request_id,
        event.comment.body,
        Actor(author, author),
        MessageSource.GITHUB,
        metadata={"issueCommentId": event.comment.id},
    )
    row = await requests.update_status(row.request_id, RequestStatus.PROCESSING)
    await enqueue_dispatch(
        session,
        row.request_id,
        DispatchKind.CLARIFICATION_ANSWER,
        max_attempts=services.settings.clarity_job_max_attempts,
    )
    await events.request_changed(services, session, row, message=message, status_changed=True)
    return "answered"
