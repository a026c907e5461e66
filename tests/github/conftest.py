"""Fixtures of the GitHub tests: a served app with the fake runner and fake GitHub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.harness import Harness, running_clarity


@pytest.fixture
async def harness(db_url: str) -> AsyncIterator[Harness]:
    async with running_clarity(db_url) as h:
        yield h
