"""The run's outbox: posts agent_* messages in order from a background thread.

Reading the CLI's output never waits on the network: messages queue here (bounded, so a
side-API that is down slows the run rather than filling memory) and one thread posts them
one at a time, in order. A transient failure is tried again with backoff; a 4xx other
than 429 means the message itself is wrong, so it is logged and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.scrub import Scrubber
from agent.sideapi import SideApi, SideApiError
from agent.stream import Activity

log = logging.getLogger(__name__)

CAPACITY = 1000
# How long a full queue may hold up the reader before a message is dropped.
PUT_WAIT_S = 30.0
TRIES = 6
BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


class Outbox:
    """A bounded, ordered queue of messages and the thread that posts them."""

    def __init__(
        self, api: SideApi, scrub: Scrubber, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._api = api
        self._scrub = scrub
        self._sleep = sleep
        self._queue: queue.Queue[Activity | None] = queue.Queue(maxsize=CAPACITY)
        self._idle = threading.Condition()
        self._pending = 0
        self._stopping = threading.Event()
        self.sent = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> Outbox:
        """Start the sending thread."""
        self._thread.start()
        return self

    def put(self, activity: Activity) -> None:
        """Queue one message (waits while the queue is full, then drops it)."""
        with self._idle:
            self._pending += 1
        try:
            self._queue.put(activity, timeout=PUT_WAIT_S)
        except queue.Full:
            log.warning("outbox full: dropped a %s message", activity.type)
            self._done(dropped=True)

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued was posted or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float) -> bool:
        """Flush, then stop the thread; what is still queued after timeout_s is dropped."""
        flushed = self.flush(timeout_s)
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout=1.0)
        return flushed

    def _run(self) -> None:
        while True:
            activity = self._queue.get()
            if activity is None:
                return
            if self._stopping.is_set():
                self._done(dropped=True)
                continue
            self._done(dropped=not self._post(activity))

    def _post(self, activity: Activity) -> bool:
        content = self._scrub(activity.content) or activity.type
        metadata = self._scrub.deep(activity.metadata)
        delay = BACKOFF_S
        for number in range(1, TRIES + 1):
            try:
                self._api.post_message(activity.type, content, metadata, tries=1)
                return True
            except SideApiError as exc:
                if not exc.transient:
                    log.warning("dropped a %s message: %s", activity.type, exc)
                    return False
                if number == TRIES or self._stopping.is_set():
                    log.warning("gave up on a %s message: %s", activity.type, exc)
                    return False
                wait = max(delay, exc.retry_after_s or 0.0)
                self._sleep(min(wait, MAX_BACKOFF_S))
                delay = min(delay * 2, MAX_BACKOFF_S)
        return False

    def _done(self, *, dropped: bool) -> None:
        with self._idle:
            self._pending -= 1
            if dropped:
                self.dropped += 1
            else:
                self.sent += 1
            self._idle.notify_all()
