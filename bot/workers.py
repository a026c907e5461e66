"""Job workers: claim due jobs from PostgreSQL, run their handler, retry with backoff.

A handler is a plain async function of the job, bound to its feature when the app is wired
(bot.app gathers every kind in one registry). It raises RetryLater to be run
again after a delay (e.g. a 429's Retry-After), PermanentJobError to stop at once, and any
other exception to be retried with exponential backoff until max_attempts; then the kind's
`on_exhausted` hook runs (e.g. the request goes to `error` with a Retry button).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.services import Services
from storage import jobs
from storage.errors import is_database_down
from storage.jobs import ClaimedJob

log = logging.getLogger(__name__)

JobFn = Callable[[ClaimedJob], Awaitable[None]]

# A claimed job is leased for LEASE_S and the lease renewed every HEARTBEAT_S while it runs,
# so a job held by a worker that died is picked up again within about LEASE_S + the
# janitor's period, however long the job itself may take.
LEASE_S = 10.0
HEARTBEAT_S = 3.0
JANITOR_S = 5.0


class RetryLater(Exception):
    """Run this job again after `delay` seconds (counts as an attempt)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentJobError(Exception):
    """Retrying cannot help: fail the job now."""


@dataclass(frozen=True)
class JobHandler:
    run: JobFn
    on_exhausted: JobFn | None = None
    # Upper bound on how long one run may take; the lease is a little longer.
    timeout_s: float = 60.0


@dataclass
class Backoff:
    """Exponential backoff with full jitter: base * 2**(attempt-1), capped."""

    base_s: float = 2.0
    cap_s: float = 300.0

    def delay(self, attempt: int) -> float:
        if self.base_s <= 0:
            return 0.0
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter


class WorkerPool:
    """N concurrent workers in this process, woken by NOTIFY and a poll interval."""

    def __init__(
        self,
        services: Services,
        handlers: dict[str, JobHandler],
        *,
        concurrency: int = 2,
        poll_interval_s: float = 1.0,
        backoff: Backoff | None = None,
        worker_id: str | None = None,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        janitor_s: float = JANITOR_S,
    ) -> None:
        self.services = services
        self.handlers = handlers
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.backoff = backoff or Backoff()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = dt.timedelta(seconds=lease_s)
        self.heartbeat_s = heartbeat_s
        self.janitor_s = janitor_s
        self._database_down = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Set once enqueue notifications reach this pool (tests wait on it).
        self.listening = asyncio.Event()

    # --- running one job ----------------------------------------------------------------

    async def run_one(self) -> bool:
        """Claim and run one due job; False when none is due."""
        sf = self.services.session_factory
        handler_kinds = list(self.handlers)
        async with sf.begin() as session:
            job = await jobs.claim(session, self.worker_id, lease=self.lease, kinds=handler_kinds)
        if job is None:
            return False
        await self._execute(job)
        return True

    async def _execute(self, job: ClaimedJob) -> None:
        handler = self.handlers[job.kind]
        metrics = self.services.metrics
        sf = self.services.session_factory
        heartbeat = asyncio.create_task(self._heartbeat(job))
        try:
            async with asyncio.timeout(handler.timeout_s):
                await handler.run(job)
        except RetryLater as exc:
            await self._retry(job, handler, str(exc), at_least_s=exc.delay)
        except PermanentJobError as exc:
            await self._exhausted(job, handler, str(exc))
        except Exception as exc:
            log.warning(
                "job %s (%s) attempt %d/%d failed",
                job.id,
                job.kind,
                job.attempts,
                job.max_attempts,
                exc_info=True,
            )
            await self._retry(job, handler, f"{type(exc).__name__}: {exc}")
        else:
            async with sf.begin() as session:
                await jobs.complete(session, job.id, self.worker_id)
            metrics.jobs.labels(job.kind, "done").inc()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _heartbeat(self, job: ClaimedJob) -> None:
        """Renew the job's lease while it runs (a failed renewal is tried again next beat)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                async with self.services.session_factory.begin() as session:
                    await jobs.extend_lease(session, job.id, self.worker_id, self.lease)
            except Exception as exc:
                log.debug("lease renewal of job %s failed: %s", job.id, exc)

    async def _retry(
        self, job: ClaimedJob, handler: JobHandler, error: str, *, at_least_s: float = 0.0
    ) -> None:
        """Schedule the next try with backoff (never sooner than `at_least_s`), or give up."""
        if job.last_attempt:
            await self._exhausted(job, handler, error)
            return
        delay = dt.timedelta(seconds=max(at_least_s, self.backoff.delay(job.attempts)))
        async with self.services.session_factory.begin() as session:
            await jobs.retry_later(session, job.id, self.worker_id, delay, error)
        self.services.metrics.jobs.labels(job.kind, "retry").inc()

    async def _exhausted(self, job: ClaimedJob, handler: JobHandler, error: str) -> None:
        sf = self.services.session_factory
        async with sf.begin() as session:
            await jobs.fail(session, job.id, self.worker_id, error)
        self.services.metrics.jobs.labels(job.kind, "failed").inc()
        self.services.metrics.errors.labels(f"job:{job.kind}").inc()
        log.error("job %s (%s) failed for good: %s", job.id, job.kind, error)
        if handler.on_exhausted is not None:
            try:
                await handler.on_exhausted(job)
            except Exception:
                log.exception("on_exhausted of job %s (%s) failed", job.id, job.kind)
                self.services.metrics.errors.labels(f"job_exhausted:{job.kind}").inc()

    async def run_until_idle(self, *, max_jobs: int = 10_000) -> int:
        """Run due jobs one after another until none is due (tests, `worker --once`)."""
        ran = 0
        while ran < max_jobs and await self.run_one():
            ran += 1
        return ran

    async def recover(self) -> int:
        """Requeue jobs whose worker died holding them."""
        async with self.services.session_factory.begin() as session:
            return await jobs.recover_expired(session)

    # --- the loop -----------------------------------------------------------------------

    def _database_state(self, error: BaseException | None) -> None:
        """Say once that the database went away, and once that it is back."""
        down = error is not None and is_database_down(error)
        if down and not self._database_down:
            log.warning("job workers: the database is unreachable (%s); backing off", error)
        elif not down and self._database_down:
            log.info("job workers: the database is reachable again")
        self._database_down = down

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                ran = await self.run_one()
            except Exception as exc:
                self._database_state(exc)
                if not self._database_down:
                    log.exception("worker loop error")
                self.services.metrics.errors.labels("worker").inc()
                failures += 1
                # Back off (up to 30 s) while something is wrong, instead of spinning.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(30.0, 0.5 * 2 ** min(failures, 6))):
                        await self._stopping.wait()
                continue
            if failures or self._database_down:
                self._database_state(None)
            failures = 0
            if ran:
                continue
            self._wake.clear()
            if self._stopping.is_set():  # stop() may have set _wake just before the clear
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()

    async def _janitor(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.recover():
                    self._wake.set()
            except Exception as exc:
                if not is_database_down(exc):
                    log.exception("job recovery failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.janitor_s):
                    await self._stopping.wait()

    async def _listen(self) -> None:
        """LISTEN for enqueue notifications so idle workers react at once (reconnecting)."""
        while not self._stopping.is_set():
            await self._listen_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._stopping.wait()

    async def _listen_once(self) -> None:
        try:
            async with self.services.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None

                def on_notify(*_: object) -> None:
                    self._wake.set()

                await driver.add_listener(jobs.NOTIFY_CHANNEL, on_notify)
                self.listening.set()
                try:
                    await self._stopping.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(jobs.NOTIFY_CHANNEL, on_notify)
        except Exception as exc:
            self.listening.clear()
            log.debug("job notifications unavailable for now (%s); polling", exc)

    def start(self) -> None:
        """Start the workers as background tasks of the running loop."""
        if not self.handlers:
            log.info("no job handlers registered; workers not started")
            return
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._janitor()))
        self._tasks.append(asyncio.create_task(self._listen()))
        log.info("%d job workers started (%s)", self.concurrency, self.worker_id)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Finish running jobs (up to timeout), take no new ones, and stop."""
        self._stopping.set()
        self._wake.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []
