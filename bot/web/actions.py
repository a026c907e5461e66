"""Retry and Cancel from the dashboard: who may press them, and the lifecycle that acts.

The rules are the Slack buttons': the person who filed the request or a Clarity admin
(CLARITY_ADMIN_USER_IDS); Retry only on a failed request, Cancel only on an unfinished
one. The lifecycle module performs the change (audit message, dispatch, notifications)
and has the last word; the dashboard checks first so that it shows only buttons that work.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from storage.lifecycle import FINAL
from storage.models import FeatureRequest, RequestStatus


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
