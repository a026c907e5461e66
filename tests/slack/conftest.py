"""Slack test fixtures: a FakeSlack server and the real Clarity server wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.slack.fake_slack import FakeSlack
from tests.slack.harness import Clarity, running_clarity


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A recording fake of Slack's Web API on 127.0.0.1."""
    async with FakeSlack() as slack:
        slack.add_user("U0ALICE", "alice")
        slack.add_user("U0BOB", "bob")
        yield slack


@pytest.fixture
async def clarity(db_url: str, fake_slack: FakeSlack) -> AsyncIterator[Clarity]:
    """The real server (bot.server.build_app) on a fresh database, talking to fake_slack."""
    async with running_clarity(db_url, fake_slack) as running:
        yield running
