"""Keeping Clarity's own tables small: finished jobs, old delivery ids, ended sign-ins.

A `maintenance` job runs every hour (at most one is ever queued, whichever replica asks)
and deletes finished jobs and remembered inbound deliveries past their retention. Both
retentions default to 7 days: longer than Slack's retries (minutes) and GitHub's manual
redelivery window (3 days), so a redelivery still finds its id. It also deletes the
dashboard's sign-in tokens and web sessions that expired more than a day ago.
"""

from __future__ import annotations

import datetime as dt
import logging

from bot.services import Services
from bot.workers import JobHandler
from storage import jobs
from storage.deliveries import prune_deliveries
from storage.jobs import ClaimedJob
from storage.repositories.web_sessions import WebSessionRepository

log = logging.getLogger(__name__)

MAINTENANCE_JOB = "maintenance"
PERIOD = dt.timedelta(hours=1)


class Maintenance:
    """The pruning job."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def schedule(self, *, delay: dt.timedelta = PERIOD) -> None:
        """Queue the next run (a queued one absorbs this)."""
        async with self.services.session_factory.begin() as session:
            await jobs.enqueue(
                session, MAINTENANCE_JOB, {}, dedupe_key=MAINTENANCE_JOB, delay=delay
            )

    async def prune(self) -> tuple[int, int]:
        """Delete what is past its retention; (jobs, deliveries) deleted.

        Expired sign-in tokens and web sessions go too (not counted)."""
        settings = self.services.settings
        async with self.services.session_factory.begin() as session:
            pruned_jobs = await jobs.prune_finished(
                session, dt.timedelta(seconds=settings.clarity_job_retention_s)
            )
            pruned_deliveries = await prune_deliveries(
                session, dt.timedelta(seconds=settings.clarity_delivery_retention_s)
            )
            await WebSessionRepository(session).purge_expired()
        if pruned_jobs or pruned_deliveries:
            log.info(
                "pruned %d finished job(s) and %d delivery id(s)", pruned_jobs, pruned_deliveries
            )
        return pruned_jobs, pruned_deliveries

    async def run(self, job: ClaimedJob) -> None:
        """The `maintenance` job: prune, then queue the next one."""
        await self.prune()
        await self.schedule()

    def job_handlers(self) -> dict[str, JobHandler]:
        """The maintenance job kind."""
        return {MAINTENANCE_JOB: JobHandler(run=self.run, timeout_s=120)}
