"""ChannelSettingsRepository: per-channel defaults (`/clarity repo owner/repo`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, InsertError, QueryError, translate
from storage.models import ChannelSetting, utcnow


class ChannelSettingsRepository:
    """Read and set a channel's default repository."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def default_repo(self, channel_id: str) -> str | None:
        """The channel's default repository (owner/name), if any."""
        try:
            return await self.session.scalar(
                select(ChannelSetting.default_repo).where(ChannelSetting.channel_id == channel_id)
            )
        except DB_ERRORS as exc:
            raise translate(exc, QueryError, "reading channel settings") from exc

    async def set_default_repo(self, channel_id: str, repo: str, user_id: str) -> None:
        """Make `repo` the channel's default repository."""
        stmt = insert(ChannelSetting).values(
            channel_id=channel_id, default_repo=repo, updated_by=user_id
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[ChannelSetting.channel_id],
            set_={"default_repo": repo, "updated_by": user_id, "updated_at": utcnow()},
        )
        try:
            await self.session.execute(stmt)
        except DB_ERRORS as exc:
            raise translate(exc, InsertError, "saving channel settings") from exc
