"""The side-API's routes: one table drives both the aiohttp router and the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from bot.api.context import ApiContext
from bot.api.http import (
    BODY_LIMIT,
    ApiError,
    invalid,
    json_response,
    parse_json,
    read_body,
    validate,
)
from bot.api.models import (
    ClaudeKeyOut,
    CreateRequestBody,
    GitHubTokenOut,
    ListQuery,
    MessageBody,
    MessageOut,
    RequestDetail,
    RequestList,
    RequestOut,
    StatusUpdateBody,
)
from bot.api.tokens import Principal, TokenAuthority, TokenError
from bot.requests.actions import Actor, Filing, InvalidReportError, StatusReport
from bot.requests.ids import parse_repo
from bot.services import NotConfiguredError, Services
from storage.errors import (
    DB_ERRORS,
    DatabaseUnavailableError,
    IllegalTransitionError,
    NotFoundError,
    QueryError,
    translate,
)
from storage.lifecycle import FINAL
from storage.models import MessageSource, MessageType
from storage.repositories import FeatureRequestRepository, RequestMessagesRepository
from storage.repositories.feature_requests import InvalidCursorError

# Who may call a route: the global token only, or also a job token for the request in the
# path ("request"), or a job token whose request is still live ("live").
Access = Literal["global", "request", "live"]


@dataclass(frozen=True)
class Call:
    """One authenticated call: what a route function gets."""

    context: ApiContext
    principal: Principal
    request_id: str
    body: BaseModel | None
    slots: asyncio.Semaphore
    query: dict[str, str]
    # Bytes of the JSON body the call was parsed from.
    body_size: int = 0


RouteFn = Callable[[Call], Awaitable[tuple[int, BaseModel]]]


@dataclass(frozen=True)
class Route:
    """One side-API route: how it is served, who may call it, and its wire models."""

    method: str
    path: str
    fn: RouteFn
    summary: str
    access: Access
    answer: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    description: str = ""
    # Query parameters, validated like a body (GET routes).
    query: type[BaseModel] | None = None
    # Whether the shell holds a database slot around the call (the function may do it).
    gated: bool = True


# --- route functions: each is a thin shell around one plain async function ---------------


async def _create(call: Call) -> tuple[int, BaseModel]:
    assert isinstance(call.body, CreateRequestBody)
    repo = parse_repo(call.body.repo)
    if repo is None:
        raise invalid("repo", "not a GitHub repository name (owner/name)")
    filing = Filing(
        origin=call.body.origin,
        repo=repo,
        description=call.body.description,
        title=call.body.title,
    )
    actor = Actor("api", "side-API", MessageSource.WEB)
    async with call.context.services.session_factory.begin() as session:
        row = await call.context.lifecycle.file(session, filing, actor)
    assert row is not None  # a fresh id never conflicts
    return 201, RequestOut.of(row)


async def _list(call: Call) -> tuple[int, BaseModel]:
    query = validate(ListQuery, call.query)
    try:
        async with call.context.services.session_factory() as session:
            page = await FeatureRequestRepository(session).recent(
                limit=query.limit,
                cursor=query.cursor,
                status=query.status,
                repo=query.repo,
                origin=query.origin,
            )
    except InvalidCursorError as exc:
        raise invalid("cursor", "not a cursor this API gave out") from exc
    return 200, RequestList.model_construct(
        requests=[RequestOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )


async def _detail(call: Call) -> tuple[int, BaseModel]:
    async with call.context.services.session_factory() as session:
        row = await FeatureRequestRepository(session).get(call.request_id)
        messages = await RequestMessagesRepository(session).get_thread(call.request_id)
    return 200, RequestDetail.model_construct(
        request=RequestOut.of(row), messages=[MessageOut.of(m) for m in messages]
    )


async def _status(call: Call) -> tuple[int, BaseModel]:
    body = call.body
    assert isinstance(body, StatusUpdateBody)
    report = StatusReport(
        status=body.status,
        pr_url=body.pr_url,
        pr_number=body.pr_number,
        pr_branch_name=body.pr_branch_name,
        cost_usd=body.cost_usd,
        duration_ms=body.duration_ms,
        error_code=body.error_code,
        error_message=body.error_message,
    )
    async with call.context.services.session_factory.begin() as session:
        row = await call.context.lifecycle.report_status(session, call.request_id, report)
    return 200, RequestOut.of(row)


async def _message(call: Call) -> tuple[int, BaseModel]:
    body = call.body
    assert isinstance(body, MessageBody)
    if body.type.startswith("agent_"):
        # Group-committed by one writer, which needs no slot of its own per post.
        return 201, await call.context.activity.add(call.request_id, body, size=call.body_size)
    metadata = body.metadata.to_json_dict() if body.metadata else None
    async with call.slots, call.context.services.session_factory.begin() as session:
        message = await call.context.lifecycle.agent_says(
            session, call.request_id, MessageType(body.type), body.content, metadata
        )
    return 201, MessageOut.of(message)


async def _github(call: Call) -> tuple[int, BaseModel]:
    token = await call.context.credentials.github_token()
    return 200, GitHubTokenOut(token=token.token, expires_at=token.expires_at)


async def _claude(call: Call) -> tuple[int, BaseModel]:
    return 200, ClaudeKeyOut(api_key=await call.context.credentials.claude_api_key())


ROUTES: list[Route] = [
    Route(
        "POST",
        "/requests",
        _create,
        "File a feature request",
        "global",
        RequestOut,
        201,
        CreateRequestBody,
        "Records the request and its initial_request message and queues its dispatch.",
    ),
    Route(
        "GET",
        "/requests",
        _list,
        "List requests, newest first",
        "global",
        RequestList,
        description="Filters: status, repo (owner/name), origin. Pages of `limit` (default "
        "50, at most 200); pass `nextCursor` back as `cursor` for the next page.",
        query=ListQuery,
    ),
    Route(
        "GET",
        "/requests/{requestId}",
        _detail,
        "A request and its messages",
        "request",
        RequestDetail,
    ),
    Route(
        "PATCH",
        "/requests/{requestId}/status",
        _status,
        "Report a status change",
        "request",
        RequestOut,
        200,
        StatusUpdateBody,
        "The lifecycle is enforced (409 otherwise). Each report is recorded as a message "
        "(pr_created/pr_updated, error with errorCode/errorMessage, processing_update with "
        "fromStatus/toStatus). costUsd is in US dollars and stored as cents.",
    ),
    Route(
        "POST",
        "/requests/{requestId}/messages",
        _message,
        "Add a message to the request's conversation",
        "request",
        MessageOut,
        201,
        MessageBody,
        "Agent activity (agent_*) becomes the thread's progress message; a "
        "clarification_ask puts the request in awaiting_clarification and is posted with "
        "one button per metadata.options.",
        gated=False,
    ),
    Route(
        "GET",
        "/config/github",
        _github,
        "A live GitHub App installation token",
        "live",
        GitHubTokenOut,
    ),
    Route("GET", "/config/claude", _claude, "The Anthropic API key", "live", ClaudeKeyOut),
]


# --- the shell: auth, body, errors ---------------------------------------------------------


async def _authorize(
    services: Services, authority: TokenAuthority, route: Route, request: web.Request
) -> Principal:
    """Who is calling, if they may call this route (401 otherwise)."""
    try:
        principal = authority.authenticate(request.headers.get("Authorization"))
    except TokenError as exc:
        raise ApiError(
            401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    if principal.is_global:
        return principal
    if route.access == "request" and principal.may_touch(request.match_info["requestId"]):
        return principal
    if route.access == "live" and principal.request_id is not None:
        async with services.session_factory() as session:
            row = await FeatureRequestRepository(session).find_by_request_id(principal.request_id)
        if row is not None and row.status not in FINAL:
            return principal
    raise ApiError(
        401,
        "unauthorized",
        "token is not valid for this route",
        headers={"WWW-Authenticate": "Bearer"},
    )


def database_slots(services: Services) -> int:
    """How many side-API calls may use the database at once."""
    # Fewer than the pool holds: beyond it SQLAlchemy opens overflow connections and closes
    # them again, and a fresh asyncpg connection costs far more than a short wait for a slot.
    size = getattr(services.engine.pool, "size", None)
    pooled = size() if callable(size) else 10
    return max(2, int(pooled) - 2)


def handler(
    context: ApiContext, authority: TokenAuthority, route: Route, slots: asyncio.Semaphore
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for one route."""
    services = context.services

    async def handle(request: web.Request) -> web.StreamResponse:
        # An announced oversize body is refused before anything else is done with it.
        if route.body is not None and (request.content_length or 0) > BODY_LIMIT:
            raise ApiError(413, "payload_too_large", f"body exceeds {BODY_LIMIT} bytes")
        try:
            principal = await _authorize(services, authority, route, request)
            body, size = None, 0
            if route.body is not None:
                raw = await read_body(request)
                parse_json(raw)  # 400 when not JSON; 422 for what PostgreSQL cannot store
                body, size = validate(route.body, None, raw=raw), len(raw)
            call = Call(
                context,
                principal,
                request.match_info.get("requestId", ""),
                body,
                slots,
                dict(request.query),
                size,
            )
            if route.gated:
                async with slots:
                    status, answer = await route.fn(call)
            else:
                status, answer = await route.fn(call)
        except NotFoundError as exc:
            raise ApiError(404, "not_found", str(exc)) from exc
        except IllegalTransitionError as exc:
            raise ApiError(409, "conflict", str(exc)) from exc
        except InvalidReportError as exc:
            raise invalid(exc.field, exc.message) from exc
        except NotConfiguredError as exc:
            raise ApiError(503, "not_configured", str(exc)) from exc
        except DatabaseUnavailableError as exc:
            raise ApiError(503, "unavailable", "database unavailable") from exc
        except DB_ERRORS as exc:
            # A connection refused before any repository could name the operation.
            if isinstance(translate(exc, QueryError, route.path), DatabaseUnavailableError):
                raise ApiError(503, "unavailable", "database unavailable") from exc
            raise
        return json_response(answer, status)

    return handle
