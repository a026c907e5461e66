"""What agent runs hand back (session transcripts, git bundles), stored in chunks.

`store` takes an upload as an async stream of bytes and writes it chunk by chunk inside the
caller's transaction, checking the size as it goes: nothing is held whole in memory, and an
upload over its limit (or one that breaks off) leaves nothing behind. `chunks` reads one
back in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, StorageError, translate
from storage.models import Artifact, ArtifactChunk

SESSION = "session"
BUNDLE = "bundle"
CHUNK_BYTES = 512 * 1024


class ArtifactTooLargeError(StorageError):
    """The upload is larger than its limit (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact's identity and what is known of its content."""

    id: int
    request_id: str
    kind: str
    attempt: int
    label: str | None
    size: int
    sha256: str


def _stored(row: Artifact) -> StoredArtifact:
    return StoredArtifact(
        row.id, row.request_id, row.kind, row.attempt, row.label, row.size, row.sha256
    )


async def store(
    session: AsyncSession,
    *,
    request_id: str,
    kind: str,
    attempt: int,
    label: str | None,
    data: AsyncIterable[bytes],
    limit: int,
) -> StoredArtifact:
    """Replace the (request, kind, attempt) artifact with the streamed `data`."""
    digest = hashlib.sha256()
    size = 0
    seq = 0
    pending = bytearray()
    try:
        await session.execute(
            delete(Artifact).where(
                Artifact.request_id == request_id,
                Artifact.kind == kind,
                Artifact.attempt == attempt,
            )
        )
        artifact_id = await session.scalar(
            insert(Artifact)
            .values(
                request_id=request_id, kind=kind, attempt=attempt, label=label, size=0, sha256=""
            )
            .returning(Artifact.id)
        )

        async def flush(piece: bytes) -> None:
            nonlocal seq
            await session.execute(
                insert(ArtifactChunk).values(artifact_id=artifact_id, seq=seq, data=piece)
            )
            seq += 1

        async for chunk in data:
            size += len(chunk)
            if size > limit:
                raise ArtifactTooLargeError(limit)
            digest.update(chunk)
            pending += chunk
            while len(pending) >= CHUNK_BYTES:
                await flush(bytes(pending[:CHUNK_BYTES]))
                del pending[:CHUNK_BYTES]
        if pending:
            await flush(bytes(pending))
        await session.execute(
            update(Artifact)
            .where(Artifact.id == artifact_id)
            .values(size=size, sha256=digest.hexdigest())
        )
    except DB_ERRORS as exc:
        raise translate(exc, InsertError, f"storing a {kind}") from exc
    assert artifact_id is not None
    return StoredArtifact(artifact_id, request_id, kind, attempt, label, size, digest.hexdigest())


async def find(
    session: AsyncSession, request_id: str, kind: str, attempt: int = 0
) -> StoredArtifact | None:
    """The (request, kind, attempt) artifact, if one was stored."""
    try:
        row = await session.scalar(
            select(Artifact).where(
                Artifact.request_id == request_id,
                Artifact.kind == kind,
                Artifact.attempt == attempt,
            )
        )
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, f"reading a {kind}") from exc
    return None if row is None else _stored(row)


async def chunks(session: AsyncSession, artifact_id: int) -> AsyncIterator[bytes]:
    """The artifact's bytes, chunk by chunk, in order (a few chunks in memory at a time)."""
    seq = 0
    while True:
        try:
            rows = (
                await session.execute(
                    select(ArtifactChunk.seq, ArtifactChunk.data)
                    .where(ArtifactChunk.artifact_id == artifact_id, ArtifactChunk.seq >= seq)
                    .order_by(ArtifactChunk.seq)
                    .limit(8)
                )
            ).all()
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading an artifact") from exc
        if not rows:
            return
        for number, data in rows:
            yield bytes(data)
            seq = number + 1
