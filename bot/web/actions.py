"""Retry and Cancel from the dashboard: who may press them, and the lifecycle that acts.

The rules are the Slack buttons': the person who filed the request or a Clarity admin
(CLARITY_ADMIN_USER_IDS); Retry only on a failed request, Cancel only on an unfinished
one. The lifecycle module performs the change (audit message, dispatch, notifications)
and has the last word; the dashboard checks first so that it shows only buttons that work.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.requests.actions import Actor, RequestLifecycle
from storage.lifecycle import FINAL
from storage.models import FeatureRequest, MessageSource, RequestStatus


class RequestActions(Protocol):
    """The lifecycle's retry and cancel, as the dashboard calls them."""

    async def retry(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        """None when done, else a refusal sentence to show."""
        ...

    async def cancel(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        """None when done, else a refusal sentence to show."""
        ...


NOT_ALLOWED = "Only the person who filed this request (or a Clarity admin) can do that."


def may_act(user_id: str, request: FeatureRequest, admins: Collection[str]) -> bool:
    """The requester (same Slack user id) or an admin."""
    return user_id in admins or (
        request.slack_user_id is not None and user_id == request.slack_user_id
    )


def can_retry(request: FeatureRequest) -> bool:
    return request.status == RequestStatus.ERROR


def can_cancel(request: FeatureRequest) -> bool:
    return request.status not in FINAL


class LifecycleActions:
    """RequestActions over the lifecycle: the person acts as themselves, from the web."""

    def __init__(
        self, lifecycle: RequestLifecycle, session_factory: async_sessionmaker[AsyncSession]
    ) -> None:
        self.lifecycle = lifecycle
        self.session_factory = session_factory

    async def retry(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        """Retry a failed request; a refusal sentence when the lifecycle says no."""
        async with self.session_factory.begin() as session:
            outcome = await self.lifecycle.retry(
                session, request_id, Actor(actor_id, actor_name, MessageSource.WEB)
            )
        return outcome.refusal

    async def cancel(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        """Cancel an unfinished request; a refusal sentence when the lifecycle says no."""
        async with self.session_factory.begin() as session:
            outcome = await self.lifecycle.cancel(
                session, request_id, Actor(actor_id, actor_name, MessageSource.WEB)
            )
        return outcome.refusal
