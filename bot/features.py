"""Where the feature modules are gathered: their job handlers (routes: bot.server)."""

from __future__ import annotations

from bot.services import Services
from bot.workers import JobHandler


def job_handlers(services: Services) -> dict[str, JobHandler]:
    """Every job kind this process can run."""
    from bot import api, github, slack

    registry: dict[str, JobHandler] = {}
    for module in (slack, api, github):
        registry.update(module.job_handlers(services))
    return registry


def install_features(services: Services) -> None:
    """Make the feature modules' job handlers known to the workers."""
    services.extras["job_providers"] = [job_handlers]
