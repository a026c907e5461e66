"""Agent activity (agent_* messages): the side-API's hot path, group-committed.

An agent reports every thought and tool call, often from many connections at once. Each
such post is still written atomically with its notifications, but posts that arrive while
a write is under way are written together in the next transaction: one round of statements
and one commit for the whole group, as PostgreSQL itself does with concurrent commits. A
post waits for at most the write before its own (and a short gathering pause under load);
alone, it is written at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select

from bot import events
from bot.api.models import MessageBody
from bot.services import Services
from storage.errors import NotFoundError
from storage.models import FeatureRequest, MessageSource, MessageType, RequestMessage
from storage.repositories.request_messages import SYSTEM_ACTOR

log = logging.getLogger(__name__)

MAX_GROUP = 256
# Under load (the last group had company), the writer waits this long for more posts to
# join: a few milliseconds of latency buy far fewer statements per message. A lone post
# is written at once.
GATHER_S = 0.003


@dataclass
class _Post:
    request_id: str
    body: MessageBody
    done: asyncio.Future[RequestMessage]


class ActivityWriter:
    """Writes agent_* messages in groups; one writer at a time keeps lock order simple."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._queue: list[_Post] = []
        self._writer: asyncio.Task[None] | None = None
        self._under_load = False

    async def add(self, request_id: str, body: MessageBody) -> RequestMessage:
        """Record one agent message (and notify) once its group has committed."""
        done: asyncio.Future[RequestMessage] = asyncio.get_running_loop().create_future()
        self._queue.append(_Post(request_id, body, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._queue:
            if self._under_load:
                await asyncio.sleep(GATHER_S)
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            self._under_load = len(group) > 1
            try:
                await self._write(group)
            except Exception as exc:
                for post in group:
                    if not post.done.done():
                        post.done.set_exception(exc)

    async def _write(self, group: list[_Post]) -> None:
        ids = sorted({p.request_id for p in group})
        async with self.services.session_factory.begin() as session:
            found = {
                row.request_id: row
                for row in await session.scalars(
                    select(FeatureRequest).where(FeatureRequest.request_id.in_(ids))
                )
            }
            written: list[tuple[_Post, RequestMessage]] = []
            for post in group:
                if post.request_id not in found:
                    post.done.set_exception(NotFoundError(f"request {post.request_id} not found"))
                    continue
                metadata = post.body.metadata.to_json_dict() if post.body.metadata else None
                row = RequestMessage(
                    request_id=post.request_id,
                    type=MessageType(post.body.type),
                    source=MessageSource.SYSTEM,
                    content=post.body.content,
                    actor_id=SYSTEM_ACTOR[0],
                    actor_name=SYSTEM_ACTOR[1],
                    metadata_=metadata or None,
                )
                session.add(row)
                written.append((post, row))
            await session.flush()
            latest: dict[str, RequestMessage] = {}
            for post, row in written:
                latest[post.request_id] = row
            # In request order, so concurrent writers always take their locks in one order.
            for request_id in sorted(latest):
                await events.request_changed(
                    self.services, session, found[request_id], message=latest[request_id]
                )
        for post, row in written:
            if not post.done.done():
                post.done.set_result(row)

    async def close(self) -> None:
        """Let the group being written finish."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


def activity_writer(services: Services) -> ActivityWriter:
    """This process's writer (made on first use)."""
    writer = services.extras.get("api_activity_writer")
    if not isinstance(writer, ActivityWriter):
        writer = ActivityWriter(services)
        services.extras["api_activity_writer"] = writer
    return writer
