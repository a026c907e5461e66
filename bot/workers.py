"""Job workers: claim due jobs from PostgreSQL, run their handler, retry with backoff.

A handler is a plain async function of (services, job). It raises RetryLater to be run
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
from storage.jobs import ClaimedJob

log = logging.getLogger(__name__)

JobFn = Callable[[Services, ClaimedJob], Awaitable[None]]


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


def job_registry(services: Services) -> dict[str, JobHandler]:
    """Every job kind's handler, gathered from the feature modules."""
    registry: dict[str, JobHandler] = {}
    for provider in services.extras.get("job_providers", []):
        registry.update(provider(services))
    return registry


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
    ) -> None:
        self.services = services
        self.handlers = handlers
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.backoff = backoff or Backoff()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
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
            job = await jobs.claim(
                session,
                self.worker_id,
                lease=dt.timedelta(seconds=max(h.timeout_s for h in self.handlers.values()) + 30)
                if self.handlers
                else dt.timedelta(seconds=90),
                kinds=handler_kinds,
            )
        if job is None:
            return False
        await self._execute(job)
        return True

    async def _execute(self, job: ClaimedJob) -> None:
        handler = self.handlers[job.kind]
        metrics = self.services.metrics
        sf = self.services.session_factory
        try:
            async with asyncio.timeout(handler.timeout_s):
                await handler.run(self.services, job)
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
                await handler.on_exhausted(self.services, job)
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

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.run_one():
                    continue
            except Exception:
                log.exception("worker loop error")
                self.services.metrics.errors.labels("worker").inc()
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
            except Exception:
                log.exception("job recovery failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await self._stopping.wait()

    async def _listen(self) -> None:
        """LISTEN for enqueue notifications so idle workers react at once."""
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
        except Exception:
            log.warning("job notifications unavailable; polling only", exc_info=True)

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
