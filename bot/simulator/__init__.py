"""A Slack workspace double that speaks Slack's wire format.

Used three ways: served at `/_sim/` inside Clarity's server under `clarity demo` or
CLARITY_SIMULATOR=1 (`setup`), as the fake Slack of the test suite, and as a standalone
server on 127.0.0.1 (`SimulatorServer`). See server.py for its routes.
"""

from bot.simulator.server import (
    PREFIX,
    SIMULATOR_KEY,
    Simulator,
    SimulatorServer,
    is_enabled,
    setup,
)
from bot.simulator.webapi import Call
from bot.simulator.workspace import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    DEMO_CHANNEL,
    GENERAL,
    TEAM_ID,
    YOU,
    Workspace,
)

__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_USER_ID",
    "DEMO_CHANNEL",
    "GENERAL",
    "PREFIX",
    "SIMULATOR_KEY",
    "TEAM_ID",
    "YOU",
    "Call",
    "Simulator",
    "SimulatorServer",
    "Workspace",
    "is_enabled",
    "setup",
]
