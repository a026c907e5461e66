"""One place that tells every destination about a change to a request.

Called in the same transaction as the change: each destination enqueues its own jobs
(Slack thread and root message; the GitHub issue for github_issue requests), so a
notification is never lost and never sent for a change that rolled back.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import Services
from storage.models import FeatureRequest, RequestMessage


async def request_changed(
    services: Services,
    session: AsyncSession,
    request: FeatureRequest,
    *,
    message: RequestMessage | None = None,
    status_changed: bool = False,
) -> None:
    """Enqueue the notifications for a new message and/or a status change."""
    from bot.github import notify as github_notify
    from bot.slack import notify as slack_notify

    await slack_notify.enqueue_for_event(
        services, session, request, message=message, status_changed=status_changed
    )
    await github_notify.enqueue_for_event(
        services, session, request, message=message, status_changed=status_changed
    )
