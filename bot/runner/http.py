"""The `http` runner backend: POST each job to RUNNER_URL, as DESIGN.md "Dispatch" says.

The runner is someone else's: Clarity hands it the job document with the header
`Idempotency-Key: <requestId>:<attempt>` and hears back only through the side-API. A 2xx
answer means accepted; a Retry-After is honoured; anything else is retried with backoff by
the dispatch job. A cancel is a job too (`kind: cancel`), so `cancel` here does nothing:
the control plane delivers the cancel document with `start`. What the runner does with a
run cannot be observed from here: `observe` says RUNNING until the run is reaped, and the
run is followed by what the agent reports.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable

import aiohttp

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.workers import RetryLater
from storage.models import utcnow

RUNNER_TIMEOUT_S = 30.0
PREFIX = "http:"


class RunnerUnavailableError(Exception):
    """The runner did not accept the job this time (retried with backoff)."""


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - utcnow()).total_seconds(), 0.0)


def idempotency_key(spec: RunSpec) -> str:
    """`<requestId>:<attempt>`: the same on every try of one dispatch, new for the next."""
    return f"{spec.request_id}:{spec.attempt}"


class HttpBackend:
    """Jobs POSTed to an outside runner; it reports back through the side-API."""

    name = "http"
    # The runner is told to stop by a job of its own (kind cancel), delivered with `start`.
    delivers_cancel = True

    def __init__(
        self,
        *,
        url: str | None,
        session: Callable[[], aiohttp.ClientSession],
        timeout_s: float = RUNNER_TIMEOUT_S,
    ) -> None:
        self.url = url
        self._session = session
        self.timeout_s = timeout_s

    @property
    def configured(self) -> bool:
        """Whether jobs have somewhere to go (RUNNER_URL is set)."""
        return bool(self.url)

    async def start(self, spec: RunSpec) -> str:
        """POST the job; returns when accepted (2xx), raises otherwise."""
        if not self.url:
            raise RunnerUnavailableError("RUNNER_URL is not set")
        key = idempotency_key(spec)
        try:
            async with self._session().post(
                self.url,
                json=dict(spec.job),
                headers={"Idempotency-Key": key},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as response:
                if 200 <= response.status < 300:
                    return PREFIX + key
                delay = retry_after_seconds(response.headers.get("Retry-After"))
                reason = f"runner answered {response.status} for {key}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RunnerUnavailableError(
                f"runner unreachable for {key}: {type(exc).__name__}: {exc}"
            ) from exc
        if delay is not None:
            raise RetryLater(reason, delay)
        raise RunnerUnavailableError(reason)

    async def cancel(self, sandbox_id: str, *, grace_s: float = 10.0) -> None:
        """Nothing to do here: the cancel job itself tells the runner."""

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        """Unknowable from here: the run is followed by its reports."""
        return SandboxStatus(SandboxState.RUNNING)

    async def reap(self, sandbox_id: str) -> None:
        """Nothing is left here."""

    async def sandboxes(self) -> list[str]:
        """None that this process can list."""
        return []

    async def close(self) -> None:
        """The HTTP session is the services' to close."""
