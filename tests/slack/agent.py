"""What the runner reports through the side-API, done straight on the database.

Each helper is one transaction that changes the request and calls
the lifecycle's event bus (RequestEvents.publish), as the lifecycle does, so Slack jobs
get queued the same way.
"""

from __future__ import annotations

from typing import Any

from bot.app import Clarity
from bot.requests.events import RequestChange
from storage.models import MessageType, RequestMessage, RequestStatus
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository


async def set_status(graph: Clarity, request_id: str, status: RequestStatus, **fields: Any) -> None:
    async with graph.services.session_factory.begin() as session:
        request = await FeatureRequestRepository(session).update_status(
            request_id, status, **fields
        )
        await graph.events.publish(session, RequestChange(request, None, True))


async def ask(
    graph: Clarity, request_id: str, question: str, options: list[str] | None = None
) -> RequestMessage:
    """processing → awaiting_clarification with a clarification_ask."""
    async with graph.services.session_factory.begin() as session:
        requests = FeatureRequestRepository(session)
        current = await requests.get(request_id)
        if current.status != RequestStatus.PROCESSING:
            await requests.update_status(request_id, RequestStatus.PROCESSING)
        message = await RequestMessagesRepository(session).add_clarification_ask(
            request_id, question, options=options
        )
        request = await requests.update_status(request_id, RequestStatus.AWAITING_CLARIFICATION)
        await graph.events.publish(session, RequestChange(request, message, True))
        return message


async def open_pr(graph: Clarity, request_id: str, number: int = 7) -> RequestMessage:
    """processing → pr_created with a pr_created message."""
    async with graph.services.session_factory.begin() as session:
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
        await graph.events.publish(session, RequestChange(request, message, True))
        return message


async def fail(graph: Clarity, request_id: str, error: str = "runner crashed") -> RequestMessage:
    """→ error with an error message."""
    async with graph.services.session_factory.begin() as session:
        message = await RequestMessagesRepository(session).add_error(
            request_id, "RUNNER_FAILED", error
        )
        request = await FeatureRequestRepository(session).update_status(
            request_id, RequestStatus.ERROR
        )
        await graph.events.publish(session, RequestChange(request, message, True))
        return message


async def activity(
    graph: Clarity, request_id: str, text: str, type: MessageType = MessageType.AGENT_THINKING
) -> None:
    """One agent_* message."""
    async with graph.services.session_factory.begin() as session:
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
        await graph.events.publish(session, RequestChange(request, message))
