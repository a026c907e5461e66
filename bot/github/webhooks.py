"""POST /github/webhook: check the signature, parse the few fields used, act once, answer.

Nothing slow happens here: each effect is a handful of rows written in one transaction,
together with the delivery's dedupe claim and the jobs that do the slow work (dispatch,
comments), so a redelivered or concurrently delivered event has exactly one effect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.api.http import ApiError, error_response, read_body
from bot.github.auth import webhook_secret
from bot.github.issues import answer_from_comment, file_from_issue, is_trigger, may_answer
from bot.github.payloads import Action, IssueCommentEvent, IssuesEvent, PullRequestEvent
from bot.github.pulls import pull_request_closed
from bot.requests.actions import RequestLifecycle
from bot.services import Services
from storage.deliveries import claim_delivery
from storage.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

PATH = "/github/webhook"
# GitHub caps webhook payloads at 25 MB.
BODY_LIMIT = 25 * 1024 * 1024

ModelT = TypeVar("ModelT", bound=BaseModel)
Effect = Callable[[AsyncSession], Awaitable[str]]


class BadDeliveryError(Exception):
    """A signed delivery whose body is not the event it claims to be (400)."""


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 is the HMAC-SHA256 of the raw body under the webhook secret."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def _parse(model: type[ModelT], data: object) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadDeliveryError(f"{model.__name__}: {exc.error_count()} invalid field(s)") from exc


def _effect(
    services: Services, lifecycle: RequestLifecycle, event: str, data: object
) -> Effect | None:
    """What this delivery does, or None when Clarity does not act on it."""
    settings = services.settings
    action = _parse(Action, data).action
    if event == "issues" and action == "labeled":
        issues_event = _parse(IssuesEvent, data)
        if is_trigger(settings, issues_event):
            return lambda session: file_from_issue(lifecycle, settings, session, issues_event)
    elif event == "issue_comment" and action == "created":
        comment_event = _parse(IssueCommentEvent, data)
        if may_answer(settings, comment_event):
            return lambda session: answer_from_comment(lifecycle, session, comment_event)
    elif event == "pull_request" and action == "closed":
        pr_event = _parse(PullRequestEvent, data)
        return lambda session: pull_request_closed(lifecycle, session, pr_event)
    return None


async def handle_delivery(
    services: Services, lifecycle: RequestLifecycle, event: str, delivery_id: str, body: bytes
) -> str:
    """Act on one verified delivery; returns what happened (for the answer and the log)."""
    if event == "ping":
        return "pong"
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadDeliveryError("body is not JSON") from exc
    effect = _effect(services, lifecycle, event, data)
    if effect is None:
        return "ignored"
    async with services.session_factory.begin() as session:
        if not await claim_delivery(session, "github", delivery_id):
            return "duplicate"
        return await effect(session)


async def webhook(
    services: Services, lifecycle: RequestLifecycle, request: web.Request
) -> web.Response:
    """The route: 401 before anything is parsed unless the signature is right."""
    try:
        body = await read_body(request, BODY_LIMIT)
        async with services.session_factory() as session:
            secret = await webhook_secret(services, session)
        if secret is None:
            log.warning("GitHub webhook refused: GITHUB_WEBHOOK_SECRET is not configured")
            raise ApiError(401, "unauthorized", "webhook secret not configured")
        if not signature_valid(secret, body, request.headers.get("X-Hub-Signature-256")):
            raise ApiError(401, "unauthorized", "bad X-Hub-Signature-256")
        event = request.headers.get("X-GitHub-Event", "")
        delivery_id = request.headers.get("X-GitHub-Delivery", "")
        if not event or not delivery_id:
            raise ApiError(400, "bad_request", "X-GitHub-Event and X-GitHub-Delivery required")
        result = await handle_delivery(services, lifecycle, event, delivery_id, body)
    except ApiError as exc:
        return error_response(exc)
    except BadDeliveryError as exc:
        return error_response(ApiError(400, "bad_request", str(exc)))
    except DatabaseUnavailableError:
        return error_response(ApiError(503, "unavailable", "database unavailable"))
    log.info("GitHub %s delivery %s: %s", event, delivery_id, result)
    return web.json_response({"ok": True, "result": result})
