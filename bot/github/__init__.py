"""GitHub: the App's tokens, webhooks (label trigger, answers, merged PRs), issue mirroring."""

from __future__ import annotations

from aiohttp import web

from bot.services import Services
from bot.workers import JobHandler


def setup(app: web.Application, services: Services) -> None:
    """Add POST /github/webhook."""
    from bot.github import webhooks

    async def receive(request: web.Request) -> web.Response:
        return await webhooks.webhook(services, request)

    app.router.add_post(webhooks.PATH, receive)


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """Comments on issues and tracking issues."""
    from bot.github import notify

    return notify.job_handlers(services)
