"""Slack Web API calls: one place that counts them and sorts failures into retryable or not.

A 429 becomes SlackRateLimitedError (jobs turn it into RetryLater with Retry-After), 5xx and
network trouble SlackUnavailableError (retried with backoff), and an `ok: false` answer that
retrying cannot fix SlackRejectedError (the job fails at once).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.workers import PermanentJobError, RetryLater
from storage.jobs import ClaimedJob

log = logging.getLogger(__name__)

# `ok: false` errors that say "try again later" rather than "this cannot work".
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
# Read methods that Slack only accepts as form parameters, not a JSON body.
FORM_METHODS = frozenset({"users.info", "conversations.history", "conversations.replies"})
DEFAULT_RETRY_AFTER_S = 30.0


class SlackError(Exception):
    """A Slack Web API call failed."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(f"Slack {method}: {message}")
        self.method = method


class SlackRateLimitedError(SlackError):
    """Slack answered 429: call again after `retry_after` seconds."""

    def __init__(self, method: str, retry_after: float) -> None:
        super().__init__(method, f"rate limited, retry after {retry_after:g}s")
        self.retry_after = retry_after


class SlackUnavailableError(SlackError):
    """5xx, a network failure, or a transient `ok: false`: retry with backoff."""


class SlackRejectedError(SlackError):
    """Slack refused the call (`ok: false`) for a reason retrying cannot fix."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(method, error)
        self.error = error


def _retry_after(headers: Any) -> float:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(float(raw), 0.0) if raw is not None else DEFAULT_RETRY_AFTER_S
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S


class SlackApi:
    """Calls Slack's Web API (and response URLs), counting each call in metrics."""

    def __init__(
        self,
        web: AsyncWebClient,
        metrics: Metrics,
        http: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.web = web
        self.metrics = metrics
        self._http = http

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one Web API method; returns the response body or raises a SlackError."""
        args = {k: v for k, v in params.items() if v is not None}
        try:
            if method in FORM_METHODS:
                response = await self.web.api_call(method, params=args)
            else:
                response = await self.web.api_call(method, json=args)
        except SlackApiError as exc:
            raise self._classify(method, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.slack_calls.labels(method, "network").inc()
            raise SlackUnavailableError(method, f"{type(exc).__name__}: {exc}") from exc
        self.metrics.slack_calls.labels(method, "ok").inc()
        data = response.data
        return data if isinstance(data, dict) else {}

    def _classify(self, method: str, exc: SlackApiError) -> SlackError:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        data = getattr(exc.response, "data", None)
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        if status == 429 or error == "ratelimited":
            self.metrics.slack_calls.labels(method, "rate_limited").inc()
            return SlackRateLimitedError(method, _retry_after(exc.response.headers))
        if status >= 500 or error in TRANSIENT_ERRORS:
            self.metrics.slack_calls.labels(method, "unavailable").inc()
            return SlackUnavailableError(method, f"HTTP {status} {error}".strip())
        self.metrics.slack_calls.labels(method, "rejected").inc()
        return SlackRejectedError(method, error or f"HTTP {status}")

    async def respond(
        self,
        response_url: str,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        replace_original: bool = False,
    ) -> None:
        """Answer a command or click privately through its response_url."""
        body: dict[str, Any] = {"text": text, "response_type": "ephemeral"}
        if blocks is not None:
            body["blocks"] = blocks
        if replace_original:
            body["replace_original"] = True
        method = "response_url"
        try:
            async with self._http().post(
                response_url, json=body, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.slack_calls.labels(method, "network").inc()
            raise SlackUnavailableError(method, f"{type(exc).__name__}: {exc}") from exc
        if status == 429:
            self.metrics.slack_calls.labels(method, "rate_limited").inc()
            raise SlackRateLimitedError(method, DEFAULT_RETRY_AFTER_S)
        if status >= 500:
            self.metrics.slack_calls.labels(method, "unavailable").inc()
            raise SlackUnavailableError(method, f"HTTP {status}")
        if status >= 400:
            self.metrics.slack_calls.labels(method, "rejected").inc()
            raise SlackRejectedError(method, f"HTTP {status}")
        self.metrics.slack_calls.labels(method, "ok").inc()

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        """A message only `user` sees in `channel`."""
        await self.call("chat.postEphemeral", channel=channel, user=user, text=text)


SlackJobFn = Callable[[ClaimedJob], Awaitable[None]]


def as_job(fn: SlackJobFn) -> SlackJobFn:
    """Map Slack failures onto the worker's retry protocol."""

    async def run(job: ClaimedJob) -> None:
        try:
            await fn(job)
        except SlackRateLimitedError as exc:
            raise RetryLater(str(exc), exc.retry_after) from exc
        except SlackRejectedError as exc:
            raise PermanentJobError(str(exc)) from exc

    run.__name__ = getattr(fn, "__name__", "slack_job")
    run.__qualname__ = getattr(fn, "__qualname__", run.__name__)
    return run
