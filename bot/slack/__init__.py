"""Feature package: slack (routes and job handlers are added by its issue)."""

from __future__ import annotations

from aiohttp import web

from bot.services import Services
from bot.workers import JobHandler


def setup(app: web.Application, services: Services) -> None:
    """Add this feature's routes to the server."""


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """This feature's job kinds."""
    return {}
