"""Slack: `/clarity`, request threads, buttons, App Home, and the jobs that keep Slack current."""

from __future__ import annotations

from aiohttp import web

from bot.services import Services
from bot.slack.app import EVENTS_PATH, SlackServer
from bot.slack.feature import feature
from bot.workers import JobHandler

SLACK_SERVER_KEY = web.AppKey("slack_server", SlackServer)


def setup(app: web.Application, services: Services) -> None:
    """Mount POST /slack/events and start Bolt (or Socket Mode) with the server."""
    server = SlackServer(feature(services))
    app[SLACK_SERVER_KEY] = server
    app.router.add_post(EVENTS_PATH, server.handle)

    async def on_startup(_: web.Application) -> None:
        await server.start()

    async def on_shutdown(_: web.Application) -> None:
        await server.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """Filing accepted requests, accepted interactions, and the notification jobs."""
    from bot.slack import buttons, commands, interactions, threads
    from bot.slack.filing import FILE_JOB, file_job_exhausted, run_file_job
    from bot.slack.notify import job_handlers as notify_handlers

    routes = {**threads.ROUTES, **buttons.ROUTES, **commands.ROUTES}
    return {
        FILE_JOB: JobHandler(run=run_file_job, on_exhausted=file_job_exhausted, timeout_s=30),
        interactions.INTERACTION_JOB: interactions.job_handler(routes),
        **notify_handlers(services),
    }
