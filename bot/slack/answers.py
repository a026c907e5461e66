"""Answering the agent's questions — from a thread reply, an option button or the modal.

All three paths end in `record_answer`, under the request's row lock, so whichever comes
first wins and the others find the request no longer waiting.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.dispatch import DispatchKind, enqueue_dispatch
from bot.events import request_changed
from bot.services import Services
from storage.deliveries import claim_delivery, delivery_seen
from storage.models import FeatureRequest, MessageType, RequestMessage, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.request_messages import Actor


async def open_question(session: AsyncSession, request_id: str) -> RequestMessage | None:
    """The latest clarification_ask of a request."""
    asks = await RequestMessagesRepository(session).get_thread(
        request_id, types=[MessageType.CLARIFICATION_ASK]
    )
    return asks[-1] if asks else None


async def record_answer(
    services: Services,
    session: AsyncSession,
    request: FeatureRequest,
    question: RequestMessage | None,
    answer: str,
    actor: Actor,
    metadata: dict[str, Any],
) -> RequestMessage | None:
    """Record the answer and dispatch it; None if the request is not waiting for this one."""
    # The caller holds the request's row lock; claiming the question id as a delivery makes
    # "answered once" explicit beyond the status check.
    if request.status != RequestStatus.AWAITING_CLARIFICATION:
        return None
    if question is not None:
        if not await claim_delivery(session, "slack_answer", str(question.id)):
            return None
        metadata = {**metadata, "questionMessageId": question.id}
    message = await RequestMessagesRepository(session).add_clarification_answer(
        request.request_id, answer, actor, "slack", metadata=metadata
    )
    request = await FeatureRequestRepository(session).update_status(
        request.request_id, RequestStatus.PROCESSING
    )
    await enqueue_dispatch(
        session,
        request.request_id,
        DispatchKind.CLARIFICATION_ANSWER,
        max_attempts=services.settings.clarity_job_max_attempts,
    )
    await request_changed(services, session, request, message=message, status_changed=True)
    return message


class Answered(enum.Enum):
    """What became of an answer given by button or modal."""

    RECORDED = "recorded"
    # This very delivery was recorded before (sent twice, or its job run again).
    REPEATED = "repeated"
    # Someone answered first, or a newer question replaced this one.
    TOO_LATE = "too_late"


async def answer_question(
    services: Services,
    question_id: int,
    answer: str,
    actor: Actor,
    via: str,
    delivery: tuple[str, str] | None = None,
) -> Answered:
    """Answer a specific question (button or modal), once per question and per delivery."""
    async with services.session_factory.begin() as session:
        question = await session.get(RequestMessage, question_id)
        if question is None or question.type != MessageType.CLARIFICATION_ASK:
            return Answered.TOO_LATE
        request = await FeatureRequestRepository(session).get(question.request_id, lock=True)
        # Under the request's row lock, so checking first and claiming with the answer is safe.
        if delivery is not None and await delivery_seen(session, *delivery):
            return Answered.REPEATED
        latest = await open_question(session, request.request_id)
        if latest is None or latest.id != question.id:
            # A newer question replaced this one; its buttons are stale.
            return Answered.TOO_LATE
        recorded = await record_answer(
            services, session, request, question, answer, actor, {"answeredVia": via}
        )
        if recorded is None:
            return Answered.TOO_LATE
        if delivery is not None:
            await claim_delivery(session, *delivery)
        return Answered.RECORDED
