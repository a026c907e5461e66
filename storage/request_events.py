"""Request change notifications: PostgreSQL NOTIFY on one channel, LISTENed by each process.

Every change to a request (status, a message, agent activity) is announced in the
transaction that makes it, so the notification is sent only if the change commits, and
every replica that serves a dashboard hears it. The payload is the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from storage.errors import DB_ERRORS, QueryError, translate

log = logging.getLogger(__name__)

REQUEST_EVENTS_CHANNEL = "clarity_request_events"

_ANNOUNCE = text("SELECT pg_notify(:channel, :request_id)")


async def announce(session_or_conn: AsyncSession | AsyncConnection, request_id: str) -> None:
    """Tell every listener that `request_id` changed, when the caller's transaction commits."""
    try:
        await session_or_conn.execute(
            _ANNOUNCE, {"channel": REQUEST_EVENTS_CHANNEL, "request_id": request_id}
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "announcing a request change") from exc


class RequestEventListener:
    """One LISTEN connection per process; calls `on_event(request_id)` for each notification.

    A lost connection is noticed (asyncpg's termination callback, or a failed ping) and
    reopened; `on_resync()` is then called, because notifications sent meanwhile are lost.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_event: Callable[[str], None],
        on_resync: Callable[[], None],
        ping_interval_s: float = 15.0,
        retry_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.on_event = on_event
        self.on_resync = on_resync
        self.ping_interval_s = ping_interval_s
        self.retry_s = retry_s
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening in a background task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="request-events-listener")

    async def stop(self) -> None:
        """Stop listening and release the connection."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        connected_before = False
        while not self._stopping.is_set():
            try:
                await self._listen_once(resync=connected_before)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("request events: LISTEN connection lost; reconnecting", exc_info=True)
            connected_before = True
            self.listening.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_s):
                    await self._stopping.wait()

    async def _listen_once(self, *, resync: bool) -> None:
        lost = asyncio.Event()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self.on_event(payload)

        def on_terminate(_conn: Any) -> None:
            lost.set()

        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(REQUEST_EVENTS_CHANNEL, on_notify)
            driver.add_termination_listener(on_terminate)
            try:
                self.listening.set()
                if resync:
                    self.on_resync()
                while not (lost.is_set() or self._stopping.is_set()):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.ping_interval_s):
                            await lost.wait()
                    if not (lost.is_set() or self._stopping.is_set()):
                        async with asyncio.timeout(5):
                            await driver.execute("SELECT 1")
            finally:
                with contextlib.suppress(Exception):
                    driver.remove_termination_listener(on_terminate)
                    await driver.remove_listener(REQUEST_EVENTS_CHANNEL, on_notify)
            if lost.is_set():
                raise ConnectionError("LISTEN connection terminated")
