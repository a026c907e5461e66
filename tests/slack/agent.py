"""What the runner reports through the side-API, done straight on the database.

Each helper is one transaction that changes the request and calls
bot.events.request_changed, as the side-API does, so Slack jobs get queued the same way.
"""

from __future__ import annotations

from typing import Any

from bot.events import request_changed
from bot.services import Services
from storage.models import MessageType, RequestMessage, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository


async def set_status(
    services: Services, request_id: str, status: RequestStatus, **fields: Any
) -> None:
    async with services.session_factory.begin() as session:
        request = await FeatureRequestRepository(session).update_status(
            request_id, status, **fields
        )
        await request_changed(services, session, request, status_changed=True)


async def ask(
    services: Services, request_id: str, question: str, options: list[str] | None = None
) -> RequestMessage:
    """processing → awaiting_clarification with a clarification_ask."""
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        current = await requests.get(request_id)
        if current.status != RequestStatus.PROCESSING:
            await requests.update_status(request_id, RequestStatus.PROCESSING)
        message = await RequestMessagesRepository(session).add_clarification_ask(
            request_id, question, options=options
        )
        request = await requests.update_status(request_id, RequestStatus.AWAITING_CLARIFICATION)
        await request_changed(services, session, request, message=message, status_changed=True)
        return message


async def open_pr(services: Services, request_id: str, number: int = 7) -> RequestMessage:
    """processing → pr_created with a pr_created message."""
    async with services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        current = await requests.get(request_id)
        if current.status != RequestStatus.PROCESSING:
            await requests.update_status(request_id, RequestStatus.PROCESSING)
        message = await RequestMessagesRepository(session).add_pr_created(request_id, 90_000, 123)
        request = await requests.update_status(
            request_id,
            RequestStatus.PR_CREATED,
            pr_url=f"https://github.com/acme/web/pull/{number}",
            pr_number=number,
            pr_branch_name="clarity/dark-mode",
        )
        await request_changed(services, session, request, message=message, status_changed=True)
        return message


async def fail(
    services: Services, request_id: str, error: str = "runner crashed"
) -> RequestMessage:
    """→ error with an error message."""
    async with services.session_factory.begin() as session:
        message = await RequestMessagesRepository(session).add_error(
            request_id, "RUNNER_FAILED", error
        )
        request = await FeatureRequestRepository(session).update_status(
            request_id, RequestStatus.ERROR
        )
        await request_changed(services, session, request, message=message, status_changed=True)
        return message


async def activity(
    services: Services, request_id: str, text: str, type: MessageType = MessageType.AGENT_THINKING
) -> None:
    """One agent_* message."""
    async with services.session_factory.begin() as session:
        request = await FeatureRequestRepository(session).get(request_id)
        repo = RequestMessagesRepository(session)
        if type == MessageType.AGENT_TOOL_CALL:
            message = await repo.add_agent_tool_call(request_id, text, {"path": "x"}, "t1", 1)
        elif type == MessageType.AGENT_FILE_CHANGE:
            message = await repo.add_agent_file_change(request_id, text, "modified")
        elif type == MessageType.AGENT_SUMMARY:
            message = await repo.add_agent_summary(request_id, text, 60_000, 250)
        else:
            message = await repo.add_agent_thinking(request_id, text, "t1", 1)
        await request_changed(services, session, request, message=message)
