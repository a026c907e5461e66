"""Pull requests closing: merged completes the request, closed unmerged is recorded."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import events
from bot.github.payloads import PullRequestEvent
from bot.services import Services
from storage.lifecycle import can_transition
from storage.models import FeatureRequest, MessageSource, MessageType, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository


async def find_request_for_pr(
    session: AsyncSession, repo: str, pr_number: int
) -> FeatureRequest | None:
    """The request whose PR this is; repository names compare case-insensitively on GitHub."""
    found = await FeatureRequestRepository(session).find_by_pr(repo, pr_number, lock=True)
    if found is not None:
        return found
    stmt = (
        select(FeatureRequest)
        .where(
            func.lower(FeatureRequest.repo) == repo.lower(),
            FeatureRequest.pr_number == pr_number,
        )
        .limit(1)
        .with_for_update()
    )
    return (await session.scalars(stmt)).first()


async def pull_request_closed(
    services: Services, session: AsyncSession, event: PullRequestEvent
) -> str:
    """Complete the request when its PR is merged; otherwise just note the closing."""
    pr = event.pull_request
    row = await find_request_for_pr(session, event.repository.full_name, pr.number)
    if row is None:
        return "not a request's PR"
    actor = (pr.merged_by or event.sender).login
    old_status = row.status
    completes = pr.merged and can_transition(old_status, RequestStatus.COMPLETED)
    if completes:
        row = await FeatureRequestRepository(session).update_status(
            row.request_id, RequestStatus.COMPLETED
        )
    content = (
        f"Pull request #{pr.number} was merged by @{actor}"
        if pr.merged
        else f"Pull request #{pr.number} was closed without merging by @{actor}"
    )
    metadata: dict[str, object] = {"prNumber": pr.number, "merged": pr.merged}
    if completes:
        metadata |= {"fromStatus": old_status.value, "toStatus": RequestStatus.COMPLETED.value}
    message = await RequestMessagesRepository(session).add_message(
        row.request_id,
        MessageType.PROCESSING_UPDATE,
        MessageSource.GITHUB,
        content,
        actor_id=actor,
        actor_name=actor,
        metadata=metadata,
    )
    await events.request_changed(services, session, row, message=message, status_changed=completes)
    return "completed" if completes else ("merged" if pr.merged else "closed")
