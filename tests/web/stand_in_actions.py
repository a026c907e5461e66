"""TEST STAND-IN for the lifecycle's retry and cancel (bot/requests, being written by the lead).

It does over the database what the dashboard needs to see: the status change, the `retry` /
`cancelled` message of the audit trail, and the request-events NOTIFY. It does not dispatch
to the runner or tell Slack; once the lifecycle lands, the tests use it instead.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.lifecycle import FINAL
from storage.models import MessageSource, MessageType, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.request_messages import Actor
from storage.request_events import announce


class DatabaseActionsStandIn:
    """Retry and cancel written straight to the database; records each call."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory
        self.calls: list[tuple[str, str, str]] = []

    async def retry(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        self.calls.append(("retry", request_id, actor_id))
        async with self.session_factory.begin() as session:
            requests = FeatureRequestRepository(session)
            row = await requests.get(request_id, lock=True)
            if row.status != RequestStatus.ERROR:
                return "Nothing to retry: the request is not failed."
            row = await requests.record_retry(request_id)
            await RequestMessagesRepository(session).add_retry(
                request_id, row.retry_count or 1, Actor(actor_id, actor_name), MessageSource.WEB
            )
            await announce(session, request_id)
        return None

    async def cancel(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
        self.calls.append(("cancel", request_id, actor_id))
        async with self.session_factory.begin() as session:
            requests = FeatureRequestRepository(session)
            row = await requests.get(request_id, lock=True)
            if row.status in FINAL:
                return "This request is already finished."
            await requests.update_status(request_id, RequestStatus.CANCELLED)
            await RequestMessagesRepository(session).add_message(
                request_id,
                MessageType.CANCELLED,
                MessageSource.WEB,
                f"Cancelled by {actor_name}",
                actor_id=actor_id,
                actor_name=actor_name,
            )
            await announce(session, request_id)
        return None
