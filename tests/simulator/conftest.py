"""Simulator fixtures: a standalone simulator on 127.0.0.1 with a clock tests move."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.simulator import SimulatorServer
from tests.simulator.bolt import BOT_TOKEN, SECRET


class Clock:
    """Time for trigger and response_url lifetimes, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[SimulatorServer]:
    """A strict simulator (Slack's rules, no test-suite leniency), no app connected yet."""
    async with SimulatorServer(
        signing_secret=SECRET,
        bot_token=BOT_TOKEN,
        clock=clock,
        ack_timeout_s=3.0,
        retry_delays_s=(0.0, 0.0, 0.0),
    ) as server:
        yield server
