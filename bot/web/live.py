"""Live pages: one LISTEN per process fanned out to every Server-Sent Events stream.

Each stream is a Subscriber with a small bounded set of pending request ids: a burst of
notifications for one request is one event, and a stream that falls too far behind is
sent `reload` (its page fetches everything again) instead of an ever-growing queue.
A request page's stream gets `change` at once; the list's gets the ids that changed,
gathered for half a second. `resync` follows a lost LISTEN connection (notifications sent
meanwhile are gone). A comment line every 15 s keeps proxies from closing idle streams and
tells us when a client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging

from aiohttp import web

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
LIST_BATCH_S = 0.5
MAX_PENDING = 200
RECONNECT_MS = 2000


class Subscriber:
    """One SSE stream: the request it follows (None: the list) and what is pending."""

    def __init__(self, request_id: str | None, session_hash: str, expires_at: dt.datetime) -> None:
        self.request_id = request_id
        self.session_hash = session_hash
        self.expires_at = expires_at
        self.pending: dict[str, None] = {}  # insertion-ordered set
        self.control: str | None = None  # reload | resync | close
        self.ready = asyncio.Event()

    def offer(self, request_id: str) -> None:
        if self.control is not None or request_id in self.pending:
            return
        if len(self.pending) >= MAX_PENDING:
            self.pending.clear()
            self.signal("reload")
            return
        self.pending[request_id] = None
        self.ready.set()

    def signal(self, control: str) -> None:
        # close wins over everything; reload over resync.
        order = {"resync": 1, "reload": 2, "close": 3}
        if self.control is None or order[control] > order[self.control]:
            self.control = control
        self.ready.set()

    def take(self) -> tuple[list[str], str | None]:
        ids, control = list(self.pending), self.control
        self.pending.clear()
        self.control = None if control != "close" else control
        self.ready.clear()
        return ids, control


class EventHub:
    """Every stream of this process, by the request it follows."""

    def __init__(self) -> None:
        self._by_request: dict[str | None, set[Subscriber]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_request.values())

    def following(self, request_id: str | None) -> int:
        """How many streams follow `request_id` (None: list pages)."""
        return len(self._by_request.get(request_id, ()))

    def subscribe(self, subscriber: Subscriber) -> None:
        self._by_request.setdefault(subscriber.request_id, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_request.get(subscriber.request_id)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._by_request[subscriber.request_id]

    def publish(self, request_id: str) -> None:
        """A request changed: tell its pages and every list."""
        for key in (request_id, None):
            for subscriber in self._by_request.get(key, ()):
                subscriber.offer(request_id)

    def _all(self) -> list[Subscriber]:
        return [s for group in self._by_request.values() for s in group]

    def resync(self) -> None:
        """Notifications may have been lost: every page fetches everything again."""
        for subscriber in self._all():
            subscriber.signal("resync")

    def end_session(self, session_hash: str) -> None:
        """Close the streams of a session that signed out."""
        for subscriber in self._all():
            if subscriber.session_hash == session_hash:
                subscriber.signal("close")

    def close_all(self) -> None:
        """Server shutdown: end every stream (browsers reconnect to another replica)."""
        for subscriber in self._all():
            subscriber.signal("close")


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


async def stream(
    request: web.Request,
    hub: EventHub,
    subscriber: Subscriber,
    headers: dict[str, str],
    *,
    heartbeat_s: float = HEARTBEAT_S,
) -> web.StreamResponse:
    """Serve one SSE stream until the client goes, the session ends or the server stops."""
    response = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    hub.subscribe(subscriber)
    try:
        await response.write(f"retry: {RECONNECT_MS}\n: connected\n\n".encode())
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat_s):
                    await subscriber.ready.wait()
            if dt.datetime.now(dt.UTC) >= subscriber.expires_at:
                await response.write(_event("signedout", "session expired"))
                break
            if not subscriber.ready.is_set():
                await response.write(b": ping\n\n")
                continue
            if subscriber.request_id is None and subscriber.control is None:
                await asyncio.sleep(LIST_BATCH_S)  # gather a burst into one event
            ids, control = subscriber.take()
            if control == "close":
                break
            if control is not None:
                await response.write(_event(control, control))
            elif subscriber.request_id is not None:
                await response.write(_event("change", subscriber.request_id))
            elif ids:
                await response.write(_event("change", json.dumps(ids)))
    except ConnectionError:
        pass  # the client went away
    finally:
        hub.unsubscribe(subscriber)
    return response
