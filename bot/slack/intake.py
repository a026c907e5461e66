"""What Slack sends, made durable before Slack gets its answer: group-committed job rows.

Listeners that must not lose what a person sent (a filing, a thread reply, a click, a form)
hand a `NewJob` to `accept` and answer Slack only once it returns; the job does the work.
"""

from __future__ import annotations

import asyncio

from bot.services import Services
from storage import jobs
from storage.jobs import NewJob

# Accepting runs before the ack: past this, say the database is unreachable instead.
ACCEPT_TIMEOUT_S = 2.0


class Intake:
    """Group commit: a burst of accepts costs one INSERT (`enqueue_many`), not one each."""

    # Accepts that arrive while one transaction is being written share the next one.

    def __init__(self, services: Services, *, max_batch: int = 200) -> None:
        self.services = services
        self.max_batch = max_batch
        self._pending: list[tuple[NewJob, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, job: NewJob) -> None:
        """Return once `job` is committed (or absorbed by a queued twin); raise if not."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((job, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                async with (
                    asyncio.timeout(ACCEPT_TIMEOUT_S),
                    self.services.engine.connect() as conn,
                ):
                    # enqueue_many is one statement, atomic by itself: committing it on its own
                    # spares the ack path the BEGIN and COMMIT round trips.
                    autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await jobs.enqueue_many(autocommit, [job for job, _ in batch])
            except Exception as exc:
                # Each waiting listener re-raises it and reports it to its user.
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
