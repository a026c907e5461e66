"""RequestMessagesRepository: every operation of the ADR's repository of the same name."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, StorageError, translate
from storage.models import AGENT_MESSAGE_TYPES, MessageSource, MessageType, RequestMessage
from storage.schemas import MessageMetadata

SYSTEM_ACTOR = ("system", "Clarity AI")


class InvalidMetadataError(StorageError):
    """Message metadata that does not fit the typed shape."""


@dataclass(frozen=True)
class Actor:
    id: str
    name: str


@dataclass(frozen=True)
class TotalMetrics:
    total_duration_ms: int
    total_cost_cents: int


@dataclass(frozen=True)
class RunActivity:
    """One run's agent activity: counters, the latest steps, the summary and todo list."""

    steps: int
    tool_calls: int
    files_changed: int
    commands: int
    latest: list[RequestMessage]
    summary: RequestMessage | None
    # The latest TodoWrite call (its metadata carries `todos`), if the agent keeps a list.
    todos: RequestMessage | None = None


@dataclass(frozen=True)
class AgentActivity:
    messages: list[RequestMessage]
    turns: dict[str, list[RequestMessage]]
    total_turns: int


def metadata_of(message: RequestMessage) -> MessageMetadata:
    """The message's metadata as a typed model (unknown keys kept)."""
    try:
        return MessageMetadata.model_validate(message.metadata_ or {})
    except ValidationError as exc:
        raise InvalidMetadataError(f"message {message.id} has invalid metadata", cause=exc) from exc


def _validated(metadata: MessageMetadata | dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    try:
        model = (
            metadata
            if isinstance(metadata, MessageMetadata)
            else MessageMetadata.model_validate(metadata)
        )
    except ValidationError as exc:
        raise InvalidMetadataError("invalid message metadata", cause=exc) from exc
    data = model.to_json_dict()
    return data or None


class RequestMessagesRepository:
    """The conversation and audit trail of each request."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_thread(
        self, request_id: str, *, types: Iterable[MessageType] | None = None
    ) -> list[RequestMessage]:
        """All messages of a request, oldest first."""
        stmt = select(RequestMessage).where(RequestMessage.request_id == request_id)
        if types is not None:
            stmt = stmt.where(RequestMessage.type.in_(list(types)))
        stmt = stmt.order_by(RequestMessage.created_at, RequestMessage.id)
        try:
            return list((await self.session.scalars(stmt)).all())
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading thread") from exc

    async def add_message(
        self,
        request_id: str,
        type: MessageType,
        source: MessageSource,
        content: str,
        *,
        actor_id: str | None = None,
        actor_name: str | None = None,
        metadata: MessageMetadata | dict[str, Any] | None = None,
    ) -> RequestMessage:
        """Append one message; metadata is validated before it is written."""
        row = RequestMessage(
            request_id=request_id,
            type=type,
            source=source,
            content=content,
            actor_id=actor_id,
            actor_name=actor_name,
            metadata_=_validated(metadata),
        )
        self.session.add(row)
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "adding message") from exc
        return row

    async def add_system(
        self,
        request_id: str,
        type: MessageType,
        content: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> RequestMessage:
        """A message from Clarity itself; metadata keys whose value is None are left out."""
        kept = {k: v for k, v in (metadata or {}).items() if v is not None}
        return await self.add_message(
            request_id,
            type,
            MessageSource.SYSTEM,
            content,
            actor_id=SYSTEM_ACTOR[0],
            actor_name=SYSTEM_ACTOR[1],
            metadata=kept or None,
        )

    async def _system(
        self, request_id: str, type: MessageType, content: str, **metadata: Any
    ) -> RequestMessage:
        return await self.add_system(request_id, type, content, metadata)

    async def add_clarification_ask(
        self,
        request_id: str,
        questions: str,
        slack_thread_ts: str | None = None,
        options: list[str] | None = None,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.CLARIFICATION_ASK,
            questions,
            slackThreadTs=slack_thread_ts,
            options=options,
        )

    async def add_clarification_answer(
        self,
        request_id: str,
        answer: str,
        actor: Actor,
        source: Literal["slack", "github"] | MessageSource,
        metadata: MessageMetadata | dict[str, Any] | None = None,
    ) -> RequestMessage:
        return await self.add_message(
            request_id,
            MessageType.CLARIFICATION_ANSWER,
            MessageSource(source),
            answer,
            actor_id=actor.id,
            actor_name=actor.name,
            metadata=metadata,
        )

    async def add_follow_up_request(
        self,
        request_id: str,
        description: str,
        actor: Actor,
        metadata: MessageMetadata | dict[str, Any] | None = None,
        source: MessageSource = MessageSource.SLACK,
    ) -> RequestMessage:
        return await self.add_message(
            request_id,
            MessageType.FOLLOW_UP_REQUEST,
            source,
            description,
            actor_id=actor.id,
            actor_name=actor.name,
            metadata=metadata,
        )

    async def add_pr_created(
        self, request_id: str, duration_ms: int | None, cost_cents: int | None
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.PR_CREATED,
            "Pull Request created",
            durationMs=duration_ms,
            costCents=cost_cents,
        )

    async def add_pr_updated(
        self,
        request_id: str,
        commit_sha: str | None,
        duration_ms: int | None,
        cost_cents: int | None,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.PR_UPDATED,
            "Pull Request updated",
            commitSha=commit_sha,
            durationMs=duration_ms,
            costCents=cost_cents,
        )

    async def add_error(
        self,
        request_id: str,
        error_code: str,
        error_message: str,
        error_stack: str | None = None,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.ERROR,
            error_message,
            errorCode=error_code,
            errorMessage=error_message,
            errorStack=error_stack,
        )

    async def add_retry(
        self,
        request_id: str,
        retry_count: int,
        triggered_by: Actor,
        source: MessageSource = MessageSource.SLACK,
    ) -> RequestMessage:
        return await self.add_message(
            request_id,
            MessageType.RETRY,
            source,
            f"Retry attempt #{retry_count}",
            actor_id=triggered_by.id,
            actor_name=triggered_by.name,
            metadata={"retryCount": retry_count},
        )

    async def get_total_metrics(self, request_id: str) -> TotalMetrics:
        """Sum of durationMs and costCents over a request's messages."""
        duration = func.coalesce(
            func.sum(func.coalesce(RequestMessage.metadata_["durationMs"].as_float(), 0)), 0
        )
        cost = func.coalesce(
            func.sum(func.coalesce(RequestMessage.metadata_["costCents"].as_float(), 0)), 0
        )
        try:
            row = (
                await self.session.execute(
                    select(duration, cost).where(RequestMessage.request_id == request_id)
                )
            ).one()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "summing metrics") from exc
        return TotalMetrics(total_duration_ms=int(row[0]), total_cost_cents=int(row[1]))

    async def add_agent_thinking(
        self, request_id: str, thinking: str, turn_id: str, turn_number: int
    ) -> RequestMessage:
        return await self._system(
            request_id, MessageType.AGENT_THINKING, thinking, turnId=turn_id, turnNumber=turn_number
        )

    async def add_agent_tool_call(
        self,
        request_id: str,
        tool_name: str,
        tool_input: dict[str, Any],
        turn_id: str,
        turn_number: int,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.AGENT_TOOL_CALL,
            f"Calling {tool_name}",
            toolName=tool_name,
            toolInput=tool_input,
            turnId=turn_id,
            turnNumber=turn_number,
        )

    async def add_agent_tool_result(
        self,
        request_id: str,
        tool_name: str,
        tool_output: str,
        tool_duration_ms: int,
        turn_id: str,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.AGENT_TOOL_RESULT,
            tool_output[:500],
            toolName=tool_name,
            toolOutput=tool_output,
            toolDurationMs=tool_duration_ms,
            turnId=turn_id,
        )

    async def add_agent_file_change(
        self,
        request_id: str,
        file_path: str,
        file_action: Literal["created", "modified", "deleted"],
        diff_preview: str | None = None,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.AGENT_FILE_CHANGE,
            f"{file_action} {file_path}",
            filePath=file_path,
            fileAction=file_action,
            diffPreview=diff_preview,
        )

    async def add_agent_terminal(
        self,
        request_id: str,
        command: str,
        exit_code: int,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.AGENT_TERMINAL,
            command,
            command=command,
            exitCode=exit_code,
            stdout=stdout,
            stderr=stderr,
        )

    async def add_agent_summary(
        self, request_id: str, summary: str, duration_ms: int, cost_cents: int
    ) -> RequestMessage:
        return await self._system(
            request_id,
            MessageType.AGENT_SUMMARY,
            summary,
            durationMs=duration_ms,
            costCents=cost_cents,
        )

    async def get_agent_activity(self, request_id: str) -> AgentActivity:
        """Agent messages, grouped by turnId (first-seen order)."""
        messages = await self.get_thread(request_id, types=AGENT_MESSAGE_TYPES)
        turns: dict[str, list[RequestMessage]] = {}
        for msg in messages:
            turn_id = str((msg.metadata_ or {}).get("turnId") or "unknown")
            turns.setdefault(turn_id, []).append(msg)
        return AgentActivity(messages=messages, turns=turns, total_turns=len(turns))

    async def count(self, request_id: str) -> int:
        try:
            value = await self.session.scalar(
                select(func.count()).where(RequestMessage.request_id == request_id)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "counting messages") from exc
        return int(value or 0)

    async def open_question(self, request_id: str) -> RequestMessage | None:
        """The request's latest clarification_ask."""
        try:
            return await self.session.scalar(
                select(RequestMessage)
                .where(
                    RequestMessage.request_id == request_id,
                    RequestMessage.type == MessageType.CLARIFICATION_ASK,
                )
                .order_by(RequestMessage.created_at.desc(), RequestMessage.id.desc())
                .limit(1)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading the open question") from exc

    async def get(self, message_id: int) -> RequestMessage | None:
        """One message by id."""
        try:
            return await self.session.get(RequestMessage, message_id)
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading a message") from exc

    async def run_activity(
        self,
        request_id: str,
        types: Iterable[MessageType],
        *,
        since: dt.datetime | None,
        latest: int,
    ) -> RunActivity:
        """A run's activity at a glance: counters, the latest steps, the summary if any."""
        activity = select(RequestMessage).where(
            RequestMessage.request_id == request_id, RequestMessage.type.in_(list(types))
        )
        if since is not None:
            activity = activity.where(RequestMessage.created_at >= since)
        counted = activity.subquery()
        try:
            totals = (
                await self.session.execute(
                    select(
                        func.count(),
                        func.count().filter(counted.c.type == MessageType.AGENT_TOOL_CALL),
                        func.count(distinct(counted.c.metadata["filePath"].astext)).filter(
                            counted.c.type == MessageType.AGENT_FILE_CHANGE
                        ),
                        func.count().filter(counted.c.type == MessageType.AGENT_TERMINAL),
                    ).select_from(counted)
                )
            ).one()
            recent: list[RequestMessage] = []
            summary = None
            todos = None
            if totals[0]:
                recent = list(
                    (
                        await self.session.scalars(
                            activity.where(RequestMessage.type != MessageType.AGENT_SUMMARY)
                            .order_by(RequestMessage.id.desc())
                            .limit(latest)
                        )
                    ).all()
                )
                summary = await self.session.scalar(
                    activity.where(RequestMessage.type == MessageType.AGENT_SUMMARY)
                    .order_by(RequestMessage.id.desc())
                    .limit(1)
                )
                todos = await self.session.scalar(
                    activity.where(
                        RequestMessage.type == MessageType.AGENT_TOOL_CALL,
                        RequestMessage.metadata_.has_key("todos"),
                    )
                    .order_by(RequestMessage.id.desc())
                    .limit(1)
                )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading run activity") from exc
        return RunActivity(
            steps=int(totals[0]),
            tool_calls=int(totals[1]),
            files_changed=int(totals[2]),
            commands=int(totals[3]),
            latest=list(reversed(recent)),
            summary=summary,
            todos=todos,
        )
