"""HTTP plumbing of the side-API: bounded body reading, strict JSON, errors as JSON."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.api.models import ErrorDetail

log = logging.getLogger(__name__)

BODY_LIMIT = 256 * 1024

ModelT = TypeVar("ModelT", bound=BaseModel)

# PostgreSQL text and jsonb cannot hold NUL, and lone surrogates cannot be encoded as UTF-8:
# both would fail at INSERT time, so they are refused up front as bad input.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ApiError(Exception):
    """An error answer: HTTP status, machine code, human message, optional field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def invalid(field: str, message: str) -> ApiError:
    """A 422 about one field."""
    return ApiError(
        422,
        "validation_error",
        f"{field}: {message}",
        [ErrorDetail(field=field, message=message)],
    )


def error_response(exc: ApiError) -> web.Response:
    """The JSON answer for an ApiError."""
    info: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details:
        info["details"] = [d.model_dump(mode="json") for d in exc.details]
    body = {"error": info}
    return web.json_response(body, status=exc.status, headers=exc.headers)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """A model as a camelCase JSON answer."""
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(),
        status=status,
        content_type="application/json",
    )


async def read_body(request: web.Request, limit: int = BODY_LIMIT) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        # Counted as read, so a lying or absent Content-Length cannot get past the limit.
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


MAX_DEPTH = 32


def _find_unstorable(value: Any, path: str, depth: int = 0) -> str | None:
    if depth > MAX_DEPTH:
        raise invalid(path or "body", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return path if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _UNSTORABLE.search(key):
                return where
            found = _find_unstorable(item, where, depth + 1)
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_unstorable(item, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); 400 when it is not JSON."""
    if not raw.strip():
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ApiError(400, "bad_request", f"request body is not valid JSON: {reason}") from exc
    found = _find_unstorable(value, "")
    if found is not None:
        raise invalid(found or "body", "contains NUL or an unpaired surrogate character")
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validate(model: type[ModelT], value: Any, *, raw: bytes | None = None) -> ModelT:
    """The input as `model`, or 422 naming each bad field.

    A JSON body (`raw`) is validated strictly, as JSON: an integer field takes no `false`,
    `"3"` or `3.5`, a number field no `true` — what the OpenAPI document says is what is
    accepted. Query parameters (strings on the wire) are validated as text.
    """
    try:
        if raw is not None:
            return model.model_validate_json(raw, strict=True)
        return model.model_validate(value)
    except ValidationError as exc:
        details = [
            ErrorDetail(field=_loc(err["loc"]), message=err["msg"])
            for err in exc.errors(include_url=False, include_input=False)
        ]
        message = "; ".join(f"{d.field}: {d.message}" for d in details)
        raise ApiError(422, "validation_error", message, details) from exc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /api is JSON, including unknown routes and unexpected failures."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPNotFound:
        return error_response(ApiError(404, "not_found", f"no route {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            ApiError(
                405,
                "bad_request",
                f"{request.method} is not allowed on {request.path}",
                headers={"Allow": ", ".join(sorted(exc.allowed_methods))},
            )
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("side-API %s %s failed", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal error"))
