"""Announcements of request changes, by subscription.

The lifecycle publishes every change inside the change's transaction; subscribers (the
Slack and GitHub notifiers, wired in bot.app) queue their own jobs in that same
transaction, so a notification is never lost and never sent for a change that rolled back.
The lifecycle imports no subscriber.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from storage.jobs import CoalescedJob
from storage.models import FeatureRequest, RequestMessage
from storage.request_events import announce


@dataclass(frozen=True)
class RequestChange:
    """What happened to a request: a new message, a status change, or both."""

    request: FeatureRequest
    message: RequestMessage | None = None
    status_changed: bool = False


Subscriber = Callable[[AsyncSession, RequestChange], Awaitable[None]]


class RequestEvents:
    """The subscribers to request changes."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        # Agent activity is the hot path: it is written in bulk by one statement, which
        # queues at most this one coalesced job per request (bot.api.activity).
        self.activity_job: CoalescedJob | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` for every change, in the change's transaction."""
        self._subscribers.append(subscriber)

    async def publish(self, session: AsyncSession, change: RequestChange) -> None:
        """Tell every subscriber, and the event streams (NOTIFY at commit)."""
        await announce(session, change.request.request_id)
        for subscriber in self._subscribers:
            await subscriber(session, change)
