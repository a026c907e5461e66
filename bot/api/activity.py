"""Agent activity (agent_* messages): the side-API's hot path, group-committed.

An agent reports every thought and tool call, often from many connections at once. Posts
that arrive while a write is under way are written together by the next one: a single
statement (storage.activity.record_activity) that records the messages and queues each
request's Slack progress update, committed on its own, like PostgreSQL's own group commit.
A post waits for at most the write before its own (and a short gathering pause under
load); alone, it is written at once.

This is the one change that does not go through the lifecycle's publish: what it tells the
destinations is fixed (the coalesced job its subscribers declared, `RequestEvents.
activity_job`; the dashboard's NOTIFY; GitHub never mirrors agent activity), so it is part
of the same statement.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.api.models import MessageBody, MessageOut
from bot.services import Services
from storage.activity import ActivityPost, record_activity
from storage.errors import NotFoundError
from storage.jobs import CoalescedJob
from storage.models import MessageSource, MessageType
from storage.repositories.request_messages import SYSTEM_ACTOR

log = logging.getLogger(__name__)

MAX_GROUP = 256
# A group also stops at this many bytes of posted JSON (one post may be up to the body
# limit), which bounds the statement's parameter and the memory a group holds.
MAX_GROUP_BYTES = 2 * 1024 * 1024
# Under load (the last group had company), the writer waits this long for more posts to
# join: a few milliseconds of latency buy far fewer statements per message. A lone post
# is written at once.
GATHER_S = 0.003


@dataclass
class _Post:
    request_id: str
    body: MessageBody
    size: int
    done: asyncio.Future[MessageOut]


def _take_group(queue: list[_Post]) -> tuple[list[_Post], list[_Post]]:
    """The next group (at least one post) and what is left."""
    count, size = 0, 0
    for post in queue[:MAX_GROUP]:
        if count and size + post.size > MAX_GROUP_BYTES:
            break
        count, size = count + 1, size + post.size
    return queue[:count], queue[count:]


class ActivityWriter:
    """Writes agent_* messages in groups, one group at a time."""

    def __init__(self, services: Services, *, job: CoalescedJob | None) -> None:
        self.services = services
        self.job = job
        self._queue: list[_Post] = []
        self._writer: asyncio.Task[None] | None = None
        self._under_load = False

    async def add(self, request_id: str, body: MessageBody, *, size: int = 0) -> MessageOut:
        """Record one agent message (and notify) once its group has committed.

        `size` is the bytes of JSON the post came as, which groups are limited by.
        """
        done: asyncio.Future[MessageOut] = asyncio.get_running_loop().create_future()
        self._queue.append(_Post(request_id, body, size, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._queue:
            if self._under_load:
                await asyncio.sleep(GATHER_S)
            group, self._queue = _take_group(self._queue)
            self._under_load = len(group) > 1
            try:
                await self._write(group)
            except Exception as exc:
                for post in group:
                    if not post.done.done():
                        post.done.set_exception(exc)

    async def _write(self, group: list[_Post]) -> None:
        posts = [
            ActivityPost(
                p.request_id,
                p.body.type,
                p.body.content,
                p.body.metadata.to_json_dict() if p.body.metadata else None,
            )
            for p in group
        ]
        async with self.services.engine.connect() as conn:
            # One statement, atomic by itself: no BEGIN and COMMIT round trips.
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            recorded = await record_activity(autocommit, posts, actor=SYSTEM_ACTOR, job=self.job)
        for post, stored, written in zip(group, posts, recorded, strict=True):
            if post.done.done():
                continue
            if written is None:
                post.done.set_exception(NotFoundError(f"request {post.request_id} not found"))
                continue
            post.done.set_result(
                MessageOut.model_construct(
                    id=written.id,
                    request_id=post.request_id,
                    type=MessageType(stored.type),
                    source=MessageSource.SYSTEM,
                    content=stored.content,
                    actor_id=SYSTEM_ACTOR[0],
                    actor_name=SYSTEM_ACTOR[1],
                    metadata=stored.metadata,
                    created_at=written.created_at,
                )
            )

    async def close(self) -> None:
        """Let the group being written finish."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
