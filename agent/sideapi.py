"""The side-API client: the only way the agent program talks to Clarity.

Routes (DESIGN.md "Side-API"), all under the job's `apiUrl` with its job token:
`PATCH requests/{id}/status`, `POST requests/{id}/messages`,
`POST requests/{id}/git-credentials`, `GET|PUT requests/{id}/agent-session`,
`PUT requests/{id}/runs/{attempt}/bundle`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
# Tries of a call whose failure is transient (connection refused/reset, 5xx, 429).
TRIES = 5
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


class SideApiError(Exception):
    """A side-API call failed; `status` is None when no HTTP answer came."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """Worth trying again: no answer, a server error, or 429."""
        return self.status is None or self.status >= 500 or self.status in (408, 429)


@dataclass(frozen=True)
class Response:
    """A 2xx answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class SavedSession:
    """A Claude session as the side-API keeps it."""

    session_id: str
    archive: bytes


class SideApi:
    """Calls the side-API for one request with its job token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        request_id: str,
        *,
        timeout_s: float = TIMEOUT_S,
        tries: int = TRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.request_id = request_id
        self.timeout_s = timeout_s
        self.tries = tries
        self._sleep = sleep
        self._opener = urllib.request.build_opener()

    def url(self, path: str) -> str:
        """The full URL of a route under this request."""
        quoted = urllib.parse.quote(self.request_id, safe="")
        return f"{self.base_url}/requests/{quoted}/{path}"

    # --- routes ---------------------------------------------------------------------------

    def post_message(
        self,
        type_: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        tries: int | None = None,
    ) -> None:
        """POST one message of the request's trail."""
        body: dict[str, Any] = {"type": type_, "content": content}
        if metadata:
            body["metadata"] = dict(metadata)
        self.call("POST", "messages", json_body=body, tries=tries)

    def patch_status(self, status: str, **fields: Any) -> None:
        """PATCH the request's status (a run report when it carries costUsd/durationMs)."""
        body = {"status": status, **{k: v for k, v in fields.items() if v is not None}}
        self.call("PATCH", "status", json_body=body)

    def git_credentials(self) -> str:
        """A read-only installation token for this request's repository."""
        answer = self.call("POST", "git-credentials", json_body={}).json()
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise SideApiError("git-credentials answered without a token")
        return token

    def get_session(self) -> SavedSession | None:
        """The saved Claude session, or None when there is none."""
        try:
            answer = self.call("GET", "agent-session")
        except SideApiError as exc:
            if exc.status == 404:
                return None
            raise
        session_id = answer.headers.get("Clarity-Session-Id", "")
        if not session_id or not answer.body:
            return None
        return SavedSession(session_id=session_id, archive=answer.body)

    def put_session(self, session_id: str, archive_path: str) -> None:
        """Save the Claude session (a gzip'd tar) for the next run of this request."""
        self.call_file(
            "PUT",
            "agent-session",
            archive_path,
            content_type="application/gzip",
            headers={"Clarity-Session-Id": session_id},
        )

    def put_bundle(self, attempt: int, bundle_path: str, outcome: str) -> None:
        """Hand the run's commits to Clarity, which publishes them."""
        self.call_file(
            "PUT",
            f"runs/{attempt}/bundle",
            bundle_path,
            content_type="application/octet-stream",
            headers={"Clarity-Run-Outcome": outcome},
        )

    # --- transport ------------------------------------------------------------------------

    def call(
        self, method: str, path: str, *, json_body: Any = None, tries: int | None = None
    ) -> Response:
        """One JSON call, tried again with backoff while its failure is transient."""
        data = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        return self._with_retries(
            method, path, tries, lambda: self._send(method, path, data, headers)
        )

    def call_file(
        self,
        method: str,
        path: str,
        file_path: str,
        *,
        content_type: str,
        headers: Mapping[str, str],
    ) -> Response:
        """A call whose body is streamed from a file."""

        def attempt() -> Response:
            size = os.path.getsize(file_path)
            with open(file_path, "rb") as f:
                return self._send(
                    method,
                    path,
                    f,
                    {**headers, "Content-Type": content_type, "Content-Length": str(size)},
                )

        return self._with_retries(method, path, None, attempt)

    def _with_retries(
        self, method: str, path: str, tries: int | None, attempt: Callable[[], Response]
    ) -> Response:
        tries = tries or self.tries
        delay = BACKOFF_S
        for number in range(1, tries + 1):
            try:
                return attempt()
            except SideApiError as exc:
                if not exc.transient or number == tries:
                    raise
                wait = delay
                if exc.retry_after_s is not None:
                    wait = min(max(exc.retry_after_s, delay), MAX_BACKOFF_S)
                log.warning("%s %s failed (%s); trying again in %.1fs", method, path, exc, wait)
                self._sleep(wait)
                delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")

    def _send(
        self, method: str, path: str, data: bytes | IO[bytes] | None, headers: Mapping[str, str]
    ) -> Response:
        # The job's apiUrl is checked to be http(s) when the job is read.
        request = urllib.request.Request(self.url(path), data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", "clarity-agent")
        for key, value in headers.items():
            request.add_header(key, value)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                return Response(answer.status, dict(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as exc:
            raise _http_error(method, path, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SideApiError(f"{method} {path}: {reason}") from None


def _http_error(method: str, path: str, exc: urllib.error.HTTPError) -> SideApiError:
    code, message = "", ""
    try:
        body = json.loads(exc.read() or b"null")
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code") or "")
            message = str(body["error"].get("message") or "")
    except (ValueError, OSError):
        pass
    retry_after = exc.headers.get("Retry-After") if exc.headers else None
    return SideApiError(
        f"{method} {path}: HTTP {exc.code}" + (f" {code}: {message}" if code else ""),
        status=exc.code,
        code=code,
        retry_after_s=float(retry_after) if retry_after and retry_after.strip().isdigit() else None,
    )
