"""Artifacts (sessions, bundles) stored in chunks on real PostgreSQL."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import artifacts
from storage.models import ArtifactChunk, RequestOrigin
from storage.repositories import FeatureRequestRepository

Factory = async_sessionmaker[AsyncSession]


async def _request(factory: Factory) -> str:
    async with factory.begin() as session:
        row = await FeatureRequestRepository(session).create(
            request_id="req_artifacts", origin=RequestOrigin.WEB, repo="a/b", description="x"
        )
    return row.request_id


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_store_and_read_back_in_order(session_factory: Factory) -> None:
    rid = await _request(session_factory)
    data = os.urandom(3 * artifacts.CHUNK_BYTES + 12345)
    async with session_factory.begin() as session:
        stored = await artifacts.store(
            session,
            request_id=rid,
            kind=artifacts.BUNDLE,
            attempt=2,
            label="completed",
            data=_pieces(data, 70_000),
            limit=10 * 1024 * 1024,
        )
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    async with session_factory() as session:
        found = await artifacts.find(session, rid, artifacts.BUNDLE, 2)
        assert found == stored
        back = b"".join([c async for c in artifacts.chunks(session, stored.id)])
        count = await session.scalar(select(func.count()).select_from(ArtifactChunk))
    assert back == data
    assert count == 4


async def test_too_large_leaves_nothing_and_a_new_upload_replaces_the_old(
    session_factory: Factory,
) -> None:
    rid = await _request(session_factory)
    with pytest.raises(artifacts.ArtifactTooLargeError):
        async with session_factory.begin() as session:
            await artifacts.store(
                session,
                request_id=rid,
                kind=artifacts.SESSION,
                attempt=0,
                label="s1",
                data=_pieces(b"x" * 5000, 1000),
                limit=4096,
            )
    async with session_factory() as session:
        assert await artifacts.find(session, rid, artifacts.SESSION) is None
    for label, payload in (("s1", b"first"), ("s2", b"second")):
        async with session_factory.begin() as session:
            await artifacts.store(
                session,
                request_id=rid,
                kind=artifacts.SESSION,
                attempt=0,
                label=label,
                data=_pieces(payload, 3),
                limit=4096,
            )
    async with session_factory() as session:
        found = await artifacts.find(session, rid, artifacts.SESSION)
        assert found is not None and found.label == "s2"
        assert b"".join([c async for c in artifacts.chunks(session, found.id)]) == b"second"
