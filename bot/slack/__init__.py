"""Slack: `/clarity`, request threads, buttons, App Home, and the jobs that keep Slack current."""

from __future__ import annotations

from aiohttp import web

from bot.slack import buttons, commands, interactions, threads
from bot.slack.app import EVENTS_PATH, SlackServer
from bot.slack.feature import SlackFeature
from bot.slack.filing import FILE_JOB, file_job_exhausted, run_file_job
from bot.slack.notify import SlackNotifier
from bot.workers import JobHandler
from storage.jobs import ClaimedJob

SLACK_SERVER_KEY = web.AppKey("slack_server", SlackServer)


def setup(app: web.Application, slack: SlackFeature) -> None:
    """Mount POST /slack/events and start Bolt (or Socket Mode) with the server."""
    server = SlackServer(slack)
    app[SLACK_SERVER_KEY] = server
    app.router.add_post(EVENTS_PATH, server.handle)

    async def on_startup(_: web.Application) -> None:
        await server.start()

    async def on_shutdown(_: web.Application) -> None:
        await server.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)


def job_handlers(slack: SlackFeature, notifier: SlackNotifier) -> dict[str, JobHandler]:
    """Filing accepted requests, accepted interactions, and the notification jobs."""
    routes = {**threads.ROUTES, **buttons.ROUTES, **commands.ROUTES}

    async def file(job: ClaimedJob) -> None:
        await run_file_job(slack, job)

    async def file_failed(job: ClaimedJob) -> None:
        await file_job_exhausted(slack, job)

    return {
        FILE_JOB: JobHandler(run=file, on_exhausted=file_failed, timeout_s=30),
        interactions.INTERACTION_JOB: interactions.job_handler(slack, routes),
        **notifier.job_handlers(),
    }
