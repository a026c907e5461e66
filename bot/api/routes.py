"""The side-API's routes: one table drives both the aiohttp router and the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
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
    BundleOut,
    ClaudeKeyOut,
    CreateRequestBody,
    GitCredentialsBody,
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
from bot.settings import Settings
from storage import artifacts
from storage.artifacts import ArtifactTooLargeError
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
from storage.repositories.runs import RunsRepository

# Who may call a route: the global token only, or also a job token for the request in the
# path ("request"), or a job token whose request is still live ("live"); "job": only the
# job token of the request in the path (the global token is refused), "job_live" the same
# while the request is live.
Access = Literal["global", "request", "live", "job", "job_live"]
UPLOAD_CHUNK = 64 * 1024
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Header:
    """A header a route requires (documented, and checked: 422 when missing or invalid)."""

    name: str
    description: str
    pattern: str | None = None
    enum: tuple[str, ...] | None = None

    def schema(self) -> dict[str, object]:
        """Its JSON schema."""
        if self.enum is not None:
            return {"type": "string", "enum": list(self.enum)}
        return {"type": "string", "pattern": self.pattern or ".+"}

    def check(self, value: str | None) -> str:
        """The header's value, or 422."""
        if value is None or not value:
            raise invalid(self.name, "header is required")
        if self.enum is not None and value not in self.enum:
            raise invalid(self.name, f"must be one of {', '.join(self.enum)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise invalid(self.name, f"must match {self.pattern}")
        return value


@dataclass(frozen=True)
class Binary:
    """Bytes on the wire instead of JSON (an upload's body, or a download's answer),
    streamed in chunks: never held whole in memory."""

    media_types: tuple[str, ...]
    description: str
    headers: tuple[Header, ...] = ()
    # The limit of an upload, from the settings (413 beyond it, nothing kept).
    limit: Callable[[Settings], int] | None = None


SESSION_ID = Header(
    "Clarity-Session-Id",
    "The Claude Code session id the transcript belongs to",
    pattern=r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}",
)
RUN_OUTCOME = Header(
    "Clarity-Run-Outcome",
    "How the run ended: completed (a ready PR), asked, cancelled or budget (a draft PR)",
    enum=("completed", "asked", "cancelled", "budget"),
)


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
    # The HTTP request itself, for routes whose body or answer is a stream of bytes.
    http: web.Request | None = None
    # Validated path parameters beyond requestId, and required headers.
    params: dict[str, int] | None = None
    headers: dict[str, str] | None = None


RouteAnswer = tuple[int, BaseModel | None] | web.StreamResponse
RouteFn = Callable[[Call], Awaitable[RouteAnswer]]


@dataclass(frozen=True)
class Route:
    """One side-API route: how it is served, who may call it, and its wire models."""

    method: str
    path: str
    fn: RouteFn
    summary: str
    access: Access
    answer: type[BaseModel] | None
    status: int = 200
    body: type[BaseModel] | None = None
    description: str = ""
    # Query parameters, validated like a body (GET routes).
    query: type[BaseModel] | None = None
    # Whether the shell holds a database slot around the call (the function may do it).
    gated: bool = True
    # A body of bytes (not JSON), or an answer of bytes (not JSON).
    upload: Binary | None = None
    download: Binary | None = None
    # Integer path parameters beyond requestId: name → (minimum, maximum).
    int_params: tuple[tuple[str, int, int], ...] = ()


# --- route functions: each is a thin shell around one plain async function ---------------


async def _create(call: Call) -> RouteAnswer:
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


async def _list(call: Call) -> RouteAnswer:
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


async def _detail(call: Call) -> RouteAnswer:
    async with call.context.services.session_factory() as session:
        row = await FeatureRequestRepository(session).get(call.request_id)
        messages = await RequestMessagesRepository(session).get_thread(call.request_id)
    return 200, RequestDetail.model_construct(
        request=RequestOut.of(row), messages=[MessageOut.of(m) for m in messages]
    )


async def _status(call: Call) -> RouteAnswer:
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


async def _message(call: Call) -> RouteAnswer:
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


async def _github(call: Call) -> RouteAnswer:
    token = await call.context.credentials.github_token()
    return 200, GitHubTokenOut(token=token.token, expires_at=token.expires_at)


async def _claude(call: Call) -> RouteAnswer:
    return 200, ClaudeKeyOut(api_key=await call.context.credentials.claude_api_key())


async def _git_credentials(call: Call) -> RouteAnswer:
    async with call.context.services.session_factory() as session:
        row = await FeatureRequestRepository(session).get(call.request_id)
    token = await call.context.credentials.repository_read_token(row.repo)
    return 200, GitHubTokenOut(token=token.token, expires_at=token.expires_at)


async def _stream(call: Call, magic: tuple[bytes, ...], what: str) -> AsyncIterator[bytes]:
    """The upload's body, chunk by chunk as it arrives; its first bytes must be `magic`."""
    assert call.http is not None
    first = True
    head = b""
    try:
        async for chunk in call.http.content.iter_chunked(UPLOAD_CHUNK):
            if first:
                head += chunk
                if len(head) < max(len(m) for m in magic) and not call.http.content.at_eof():
                    continue
                if not head.startswith(magic):
                    raise invalid("body", f"not {what}")
                first, chunk = False, head
            yield chunk
    except (aiohttp.ClientPayloadError, ConnectionResetError) as exc:
        raise ApiError(400, "bad_request", "the upload broke off") from exc
    if first:
        if not head:
            raise invalid("body", f"empty: expected {what}")
        if not head.startswith(magic):
            raise invalid("body", f"not {what}")
        yield head


async def _put_session(call: Call) -> RouteAnswer:
    assert call.headers is not None
    session_id = call.headers[SESSION_ID.name]
    services = call.context.services
    async with services.session_factory.begin() as session:
        await FeatureRequestRepository(session).get(call.request_id)
        await artifacts.store(
            session,
            request_id=call.request_id,
            kind=artifacts.SESSION,
            attempt=0,
            label=session_id,
            data=_stream(call, (b"\x1f\x8b",), "a gzip file"),
            limit=services.settings.clarity_session_limit_bytes,
        )
        runs = RunsRepository(session)
        run = await runs.latest(call.request_id)
        if run is not None:
            await runs.update(run.id, claude_session_id=session_id)
    return 204, None


async def _get_session(call: Call) -> RouteAnswer:
    assert call.http is not None
    async with call.context.services.session_factory() as session:
        await FeatureRequestRepository(session).get(call.request_id)
        found = await artifacts.find(session, call.request_id, artifacts.SESSION)
        if found is None:
            raise ApiError(404, "not_found", f"request {call.request_id} has no saved session")
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "application/gzip",
                SESSION_ID.name: found.label or "",
            },
        )
        response.content_length = found.size
        await response.prepare(call.http)
        async for chunk in artifacts.chunks(session, found.id):
            await response.write(chunk)
        await response.write_eof()
    return response


async def _put_bundle(call: Call) -> RouteAnswer:
    assert call.headers is not None and call.params is not None
    attempt, outcome = call.params["attempt"], call.headers[RUN_OUTCOME.name]
    services = call.context.services
    async with services.session_factory.begin() as session:
        await FeatureRequestRepository(session).get(call.request_id)
        if await RunsRepository(session).get(call.request_id, attempt) is None:
            raise NotFoundError(f"request {call.request_id} has no run {attempt}")
        stored = await artifacts.store(
            session,
            request_id=call.request_id,
            kind=artifacts.BUNDLE,
            attempt=attempt,
            label=outcome,
            data=_stream(call, (b"# v2 git bundle\n", b"# v3 git bundle\n"), "a git bundle"),
            limit=services.settings.clarity_bundle_limit_bytes,
        )
        await call.context.lifecycle.bundle_received(
            session, call.request_id, attempt, outcome, stored.sha256
        )
    return 202, BundleOut(attempt=attempt, outcome=outcome, size=stored.size, sha256=stored.sha256)


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
    Route(
        "POST",
        "/requests/{requestId}/git-credentials",
        _git_credentials,
        "A read-only token for the request's repository",
        "job_live",
        GitHubTokenOut,
        200,
        GitCredentialsBody,
        "Job token only, while the request is live. A GitHub App installation token limited "
        "to `contents: read` on the request's repository alone, for the agent's git "
        "credential helper. It is not stored anywhere by Clarity.",
    ),
    Route(
        "PUT",
        "/requests/{requestId}/agent-session",
        _put_session,
        "Save the agent's Claude session",
        "job",
        None,
        204,
        description="Job token only. A gzip'd tar of the Claude Code session's files, "
        "replacing the one saved before; the next run of the request (an answer, a "
        "follow-up) restores it and resumes the session.",
        upload=Binary(
            # Taken as bytes whatever it is labelled; gzip'd is what the route checks.
            ("application/gzip", "application/octet-stream"),
            "A gzip'd tar of the session's transcript files (422 when it is not gzip)",
            headers=(SESSION_ID,),
            limit=lambda settings: settings.clarity_session_limit_bytes,
        ),
    ),
    Route(
        "GET",
        "/requests/{requestId}/agent-session",
        _get_session,
        "The saved Claude session",
        "job",
        None,
        200,
        description="Job token only. The bytes saved last, with their session id; 404 when "
        "none was saved.",
        download=Binary(
            ("application/gzip",),
            "A gzip'd tar of the session's transcript files",
            headers=(SESSION_ID,),
        ),
    ),
    Route(
        "PUT",
        "/requests/{requestId}/runs/{attempt}/bundle",
        _put_bundle,
        "Hand over a run's work (a git bundle)",
        "job",
        BundleOut,
        202,
        description="Job token only. A git bundle of the run's commits on the request's "
        "branch (refs/heads/clarity/…), stored as it arrives; Clarity's publish job pushes "
        "it and opens or updates the pull request (draft unless the run completed). "
        "Uploading again replaces the run's bundle.",
        upload=Binary(
            ("application/octet-stream",),
            "A git bundle (`git bundle create`; 422 when it is not one)",
            headers=(RUN_OUTCOME,),
            limit=lambda settings: settings.clarity_bundle_limit_bytes,
        ),
        int_params=(("attempt", 1, INT32_MAX),),
    ),
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
    job_only = route.access in ("job", "job_live")
    if principal.is_global and not job_only:
        return principal
    path_request = request.match_info.get("requestId")
    own = not principal.is_global and path_request is not None and principal.may_touch(path_request)
    if route.access == "job" and own:
        return principal
    if route.access == "job_live" and own:
        async with services.session_factory() as session:
            found = await FeatureRequestRepository(session).find_by_request_id(
                request.match_info["requestId"]
            )
        # An unknown request is the route's 404 to give.
        if found is None or found.status not in FINAL:
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

    upload_limit = (
        route.upload.limit(services.settings)
        if route.upload is not None and route.upload.limit is not None
        else None
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        # An announced oversize body is refused before anything else is done with it.
        if route.body is not None and (request.content_length or 0) > BODY_LIMIT:
            raise ApiError(413, "payload_too_large", f"body exceeds {BODY_LIMIT} bytes")
        if upload_limit is not None and (request.content_length or 0) > upload_limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {upload_limit} bytes")
        try:
            principal = await _authorize(services, authority, route, request)
            params = {
                name: _int_param(request.match_info.get(name, ""), name, low, high)
                for name, low, high in route.int_params
            }
            binary = route.upload or route.download
            headers = {
                h.name: h.check(request.headers.get(h.name))
                for h in (route.upload.headers if route.upload is not None else ())
            }
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
                http=request if binary is not None else None,
                params=params,
                headers=headers,
            )
            if route.gated:
                async with slots:
                    result = await route.fn(call)
            else:
                result = await route.fn(call)
        except ArtifactTooLargeError as exc:
            raise ApiError(413, "payload_too_large", f"body exceeds {exc.limit} bytes") from exc
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
        if isinstance(result, web.StreamResponse):
            return result
        status, answer = result
        if answer is None:
            return web.Response(status=status)
        return json_response(answer, status)

    return handle


def _int_param(raw: str, name: str, low: int, high: int) -> int:
    """An integer path parameter, or 422 naming it."""
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise invalid(name, f"must be an integer from {low} to {high}")
    return int(raw)
