"""Every legal status change works; every illegal one raises and writes nothing."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.errors import IllegalTransitionError
from storage.lifecycle import can_transition, legal_transitions
from storage.models import RequestOrigin, RequestStatus
from storage.repositories import FeatureRequestRepository

S = RequestStatus


def test_lifecycle_matches_design() -> None:
    legal = set(legal_transitions())
    expected_forward = {
        (S.PENDING, S.ISSUE_CREATED),
        (S.PENDING, S.PROCESSING),
        (S.ISSUE_CREATED, S.PROCESSING),
        (S.PROCESSING, S.AWAITING_CLARIFICATION),
        (S.AWAITING_CLARIFICATION, S.PROCESSING),
        (S.PROCESSING, S.PR_CREATED),
        (S.PR_CREATED, S.COMPLETED),
        (S.PR_CREATED, S.PROCESSING),
        (S.ERROR, S.PROCESSING),
    }
    assert expected_forward <= legal
    for status in S:
        final = status in (S.COMPLETED, S.CANCELLED)
        assert ((status, S.ERROR) in legal) is not final
        assert ((status, S.CANCELLED) in legal) is not final
    assert not any(a in (S.COMPLETED, S.CANCELLED) for a, _ in legal)
    assert (S.PENDING, S.COMPLETED) not in legal
    assert (S.PROCESSING, S.ISSUE_CREATED) not in legal


async def _at_status(factory: async_sessionmaker[AsyncSession], request_id: str, status: S) -> None:
    async with factory.begin() as session:
        repo = FeatureRequestRepository(session)
        row = await repo.create(
            request_id=request_id, origin=RequestOrigin.SLACK, repo="o/r", description="d"
        )
        row.status = status  # arrange the starting point directly
        await session.flush()


async def test_every_transition(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """All 64 (from, to) pairs through the repository, each on its own request."""
    for current, new in itertools.product(S, S):
        rid = f"{current.value}-{new.value}"
        await _at_status(session_factory, rid, current)
        if can_transition(current, new):
            async with session_factory.begin() as session:
                row = await FeatureRequestRepository(session).update_status(rid, new, pr_number=7)
            assert row.status == new
            async with session_factory() as session:
                stored = await FeatureRequestRepository(session).get(rid)
                assert (stored.status, stored.pr_number) == (new, 7), rid
        else:
            with pytest.raises(IllegalTransitionError) as info:
                async with session_factory.begin() as session:
                    await FeatureRequestRepository(session).update_status(rid, new, pr_number=7)
            assert info.value.from_status == current.value
            async with session_factory() as session:
                stored = await FeatureRequestRepository(session).get(rid)
                assert (stored.status, stored.pr_number) == (current, None), rid
