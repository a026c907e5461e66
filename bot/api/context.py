"""What the side-API's routes need, made once at wiring (bot.app)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.api.activity import ActivityWriter
from bot.api.credentials import Credentials
from bot.requests.actions import RequestLifecycle
from bot.services import Services


@dataclass(frozen=True)
class ApiContext:
    """The side-API's dependencies."""

    services: Services
    lifecycle: RequestLifecycle
    activity: ActivityWriter
    credentials: Credentials
