"""GitHub: the App's tokens, webhooks (label trigger, answers, merged PRs), issue mirroring."""

from __future__ import annotations

from aiohttp import web

from bot.github import webhooks
from bot.requests.actions import RequestLifecycle
from bot.services import Services


def setup(app: web.Application, services: Services, lifecycle: RequestLifecycle) -> None:
    """Add POST /github/webhook."""

    async def receive(request: web.Request) -> web.Response:
        return await webhooks.webhook(services, lifecycle, request)

    app.router.add_post(webhooks.PATH, receive)
