"""SlackPostsRepository: the Slack messages Clarity posted for a request and keeps editing."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, UpdateError, translate
from storage.models import SlackPost, utcnow


class SlackPostsRepository:
    """One row per effect (a post, an edit, a reaction), keyed by (purpose, ref)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_request(self, request_id: str) -> dict[tuple[str, str], SlackPost]:
        """Every post of a request, by (purpose, ref)."""
        try:
            rows = await self.session.scalars(
                select(SlackPost).where(SlackPost.request_id == request_id)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading Slack posts") from exc
        return {(p.purpose, p.ref): p for p in rows}

    async def record(
        self, request_id: str, purpose: str, ref: str, channel_id: str, ts: str
    ) -> SlackPost:
        """Remember one effect."""
        post = SlackPost(
            request_id=request_id, purpose=purpose, ref=ref, channel_id=channel_id, ts=ts
        )
        self.session.add(post)
        try:
            await self.session.flush()
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "recording a Slack post") from exc
        return post

    async def touch(self, post_id: int) -> None:
        """Note that a post was edited just now."""
        try:
            await self.session.execute(
                update(SlackPost).where(SlackPost.id == post_id).values(updated_at=utcnow())
            )
        except DB_ERRORS as exc:
            raise translate(exc, UpdateError, "touching a Slack post") from exc
