"""Pull requests closing: merged completes the request, closed unmerged is recorded."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.github.payloads import PullRequestEvent
from bot.requests.actions import Actor, RequestLifecycle
from storage.models import MessageSource
from storage.repositories import FeatureRequestRepository


async def pull_request_closed(
    lifecycle: RequestLifecycle, session: AsyncSession, event: PullRequestEvent
) -> str:
    """Complete the request when its PR is merged; otherwise just note the closing."""
    pr = event.pull_request
    row = await FeatureRequestRepository(session).find_by_pr(
        event.repository.full_name, pr.number, lock=True
    )
    if row is None:
        return "not a request's PR"
    login = (pr.merged_by or event.sender).login
    actor = Actor(login, login, MessageSource.GITHUB)
    return await lifecycle.pr_closed(session, row, pr.number, pr.merged, actor)
