"""What the side-API does to requests, as plain async functions of a session.

Each function runs inside the caller's transaction and tells the destinations through
bot.events.request_changed in that same transaction, so a change and its notifications
commit or roll back together.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot import events
from bot.api.models import CreateRequestBody, MessageBody, StatusUpdateBody
from bot.dispatch import DispatchKind, enqueue_dispatch
from bot.services import Services
from storage.errors import IllegalTransitionError
from storage.lifecycle import can_transition
from storage.models import (
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestStatus,
    TaskStatus,
)
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository


class InvalidInputError(Exception):
    """Input that is well-formed but not acceptable in the request's state (a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_TASK_STATUS = {
    RequestStatus.PROCESSING: TaskStatus.PROCESSING,
    RequestStatus.AWAITING_CLARIFICATION: TaskStatus.PROCESSING,
    RequestStatus.PR_CREATED: TaskStatus.COMPLETED,
    RequestStatus.COMPLETED: TaskStatus.COMPLETED,
    RequestStatus.ERROR: TaskStatus.ERROR,
}


def new_request_id() -> str:
    """A fresh public request id."""
    return str(uuid.uuid4())


async def create_request(
    services: Services, session: AsyncSession, body: CreateRequestBody
) -> FeatureRequest:
    """File a request from the API: the row, its initial_request message and its dispatch."""
    owner, _, name = body.repo.partition("/")
    row = await FeatureRequestRepository(session).create(
        request_id=new_request_id(),
        origin=body.origin,
        repo=body.repo,
        title=body.title,
        description=body.description,
        repository_name=body.repo,
        repository_owner=owner,
        repository_name_only=name,
        repository_url=f"https://github.com/{body.repo}",
    )
    message = await RequestMessagesRepository(session).add_message(
        row.request_id,
        MessageType.INITIAL_REQUEST,
        MessageSource.WEB,
        body.description,
        actor_id="api",
        actor_name="side-API",
    )
    await enqueue_dispatch(
        session,
        row.request_id,
        DispatchKind.INITIAL,
        max_attempts=services.settings.clarity_job_max_attempts,
    )
    services.metrics.requests_created.labels(row.origin.value).inc()
    await events.request_changed(services, session, row, message=message, status_changed=True)
    return row


async def request_detail(
    session: AsyncSession, request_id: str
) -> tuple[FeatureRequest, list[RequestMessage]]:
    """The request and its whole conversation, oldest first (NotFoundError if unknown)."""
    row = await FeatureRequestRepository(session).get(request_id)
    messages = await RequestMessagesRepository(session).get_thread(request_id)
    return row, messages


def _cents(usd: float | None) -> int | None:
    return None if usd is None else round(usd * 100)


async def change_status(
    services: Services, session: AsyncSession, request_id: str, body: StatusUpdateBody
) -> FeatureRequest:
    """Apply a status report from the agent, recording it as a message of the trail."""
    # costUsd and durationMs describe the run being reported: its message keeps them
    # (costCents, durationMs) and the request's totals add them up.
    requests = FeatureRequestRepository(session)
    row = await requests.get(request_id, lock=True)
    old_status, had_pr = row.status, row.pr_url is not None
    new_status = body.status
    if not can_transition(old_status, new_status):
        raise IllegalTransitionError(request_id, old_status.value, new_status.value)
    fields: dict[str, Any] = {}
    if body.pr_url is not None:
        fields["pr_url"] = str(body.pr_url)
    if body.pr_number is not None:
        fields["pr_number"] = body.pr_number
    if body.pr_branch_name is not None:
        fields["pr_branch_name"] = body.pr_branch_name
    if new_status == RequestStatus.PR_CREATED and not (fields.get("pr_url") or row.pr_url):
        raise InvalidInputError("prUrl", "required when status is pr_created")
    cost_cents, duration_ms = _cents(body.cost_usd), body.duration_ms
    if cost_cents is not None:
        fields["cost_usd"] = (row.cost_usd or 0) + cost_cents
    if duration_ms is not None:
        fields["duration_ms"] = (row.duration_ms or 0) + duration_ms
    if new_status in _TASK_STATUS:
        fields["task_status"] = _TASK_STATUS[new_status]

    changed = new_status != old_status
    reported = (
        cost_cents is not None
        or duration_ms is not None
        or body.error_code is not None
        or body.error_message is not None
    )
    touched = any(getattr(row, k) != v for k, v in fields.items())
    if not (changed or reported or touched):
        return row
    row = await requests.update_status(request_id, new_status, **fields)
    message = None
    if changed or reported:
        message = await _record_status(
            session, row, old_status, body, had_pr=had_pr, cost_cents=cost_cents
        )
    await events.request_changed(services, session, row, message=message, status_changed=changed)
    return row


async def _record_status(
    session: AsyncSession,
    row: FeatureRequest,
    old_status: RequestStatus,
    body: StatusUpdateBody,
    *,
    had_pr: bool,
    cost_cents: int | None,
) -> RequestMessage:
    """The audit-trail message for a status report."""
    new_status = row.status
    metadata: dict[str, Any] = {
        "fromStatus": old_status.value,
        "toStatus": new_status.value,
        "durationMs": body.duration_ms,
        "costCents": cost_cents,
    }
    if new_status == RequestStatus.PR_CREATED:
        # A second PR report for a request that already had one is an update of that PR.
        message_type = MessageType.PR_UPDATED if had_pr else MessageType.PR_CREATED
        content = "Pull Request updated" if had_pr else "Pull Request created"
    elif new_status == RequestStatus.ERROR:
        message_type = MessageType.ERROR
        content = body.error_message or "The agent reported an error."
        metadata["errorCode"] = body.error_code or "AGENT_ERROR"
        metadata["errorMessage"] = content
    elif new_status == RequestStatus.CANCELLED:
        message_type, content = MessageType.CANCELLED, "Cancelled by the agent"
    elif new_status == RequestStatus.COMPLETED:
        message_type, content = MessageType.PROCESSING_UPDATE, "Completed"
    elif new_status == old_status:
        message_type, content = MessageType.PROCESSING_UPDATE, f"Run report ({new_status.value})"
    else:
        message_type = MessageType.PROCESSING_UPDATE
        content = f"Status changed from {old_status.value} to {new_status.value}"
    return await RequestMessagesRepository(session).add_system(
        row.request_id, message_type, content, metadata
    )


async def add_agent_message(
    services: Services, session: AsyncSession, request_id: str, body: MessageBody
) -> RequestMessage:
    """Record what the agent reports; a clarification_ask also puts the request on hold."""
    requests = FeatureRequestRepository(session)
    asks = body.type == MessageType.CLARIFICATION_ASK.value
    # Only a question changes the request, so only a question takes the row lock: agent
    # activity for one request can be written by many connections at once.
    row = await requests.get(request_id, lock=asks)
    status_changed = False
    if asks and row.status != RequestStatus.AWAITING_CLARIFICATION:
        if not can_transition(row.status, RequestStatus.AWAITING_CLARIFICATION):
            raise IllegalTransitionError(
                request_id, row.status.value, RequestStatus.AWAITING_CLARIFICATION.value
            )
        row = await requests.update_status(request_id, RequestStatus.AWAITING_CLARIFICATION)
        status_changed = True
    message = await RequestMessagesRepository(session).add_system(
        request_id,
        MessageType(body.type),
        body.content,
        body.metadata.to_json_dict() if body.metadata else None,
    )
    await events.request_changed(
        services, session, row, message=message, status_changed=status_changed
    )
    return message
