"""Agent activity in bulk: many agent_* messages and their coalesced jobs in one statement.

The side-API's hot path. An agent reports every thought and tool call; a group of such
reports is written by one constant statement (compiled and prepared once), which inserts
the messages, takes each request's barrier lock shared, queues its coalesced job (a queued
one absorbs it) and sends the NOTIFY, atomically and in one round trip.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Text, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.errors import DB_ERRORS, InsertError, translate
from storage.jobs import BARRIER_SUFFIX, CoalescedJob, queue_jobs_sql
from storage.models import AGENT_MESSAGE_TYPES, JOB_MAX_ATTEMPTS, MessageSource, UTCDateTime
from storage.request_events import REQUEST_EVENTS_CHANNEL

_AGENT_TYPES = frozenset(t.value for t in AGENT_MESSAGE_TYPES)


@dataclass(frozen=True)
class ActivityPost:
    """One agent_* message to record; metadata already in its stored (camelCase) form."""

    request_id: str
    type: str
    content: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class RecordedMessage:
    """What the database assigned to a recorded post (created_at aware, in UTC)."""

    id: int
    created_at: dt.datetime


# Rows arrive as one JSON array (text, so no driver codec is involved) and are inserted in
# its order `n`, so identity values ascend with `n`. The barrier locks are taken row by row
# as the job INSERT reads them, in request order, before each job's conflict check; the
# jobs go only to requests with a Slack channel. `notified` is joined so that it runs;
# `announced` is one row, joined as such: PostgreSQL drops a LEFT JOIN to a subquery whose
# columns are unused (join removal), and with it the NOTIFY the dashboard lives on.
_RECORD = (
    text(
        """
    WITH posts AS (
        SELECT * FROM jsonb_to_recordset(CAST(:rows AS text)::jsonb)
            AS p(n int, request_id text, type text, content text, metadata jsonb)
    ), found AS (
        SELECT request_id, slack_channel_id IS NOT NULL AS in_slack
        FROM feature_requests
        WHERE request_id IN (SELECT request_id FROM posts)
    ), inserted AS (
        INSERT INTO request_messages
            (request_id, type, source, content, actor_id, actor_name, metadata)
        SELECT p.request_id, p.type::message_type, CAST(:source AS message_source),
               p.content, CAST(:actor_id AS text), CAST(:actor_name AS text), p.metadata
        FROM posts p JOIN found f ON f.request_id = p.request_id
        ORDER BY p.n
        RETURNING id, request_id, created_at
    ), announced AS (
        SELECT count(pg_notify(CAST(:events AS text), f.request_id)) AS sent FROM found f
    ), barrier AS (
        SELECT s.request_id,
               pg_advisory_xact_lock_shared(
                   hashtext(CAST(:prefix AS text) || s.request_id || CAST(:suffix AS text)))
        FROM (SELECT request_id FROM found WHERE in_slack AND CAST(:kind AS text) <> ''
              ORDER BY request_id) s
    ),"""
        + queue_jobs_sql(
            """SELECT 0 AS n, CAST(:kind AS text) AS kind,
                   jsonb_build_object('requestId', b.request_id) AS payload,
                   b.request_id, CAST(:prefix AS text) || b.request_id AS dedupe_key,
                   CAST(:delay_s AS float8) AS delay_s, CAST(:max_attempts AS int) AS max_attempts
            FROM barrier b"""
        )
        + """
    SELECT i.id, i.request_id, i.created_at
    FROM inserted i
    LEFT JOIN notified ON true
    CROSS JOIN announced
    ORDER BY i.id
    """
    )
    .bindparams(
        bindparam("source", MessageSource.SYSTEM.value),
        bindparam("events", REQUEST_EVENTS_CHANNEL),
    )
    .columns(id=Integer, request_id=Text, created_at=UTCDateTime)
)


async def record_activity(
    conn: AsyncConnection,
    posts: Sequence[ActivityPost],
    *,
    actor: tuple[str, str],
    job: CoalescedJob | None,
) -> list[RecordedMessage | None]:
    """Record `posts`, announce their requests, and queue `job` (if any) for each of their
    requests that has a Slack channel.

    One statement, atomic by itself (run it in autocommit or inside a transaction). The
    answer is in the order of `posts`: None for a post whose request does not exist.
    """
    rows: list[dict[str, Any]] = []
    for n, post in enumerate(posts):
        if post.type not in _AGENT_TYPES:
            raise ValueError(f"{post.type} is not agent activity")
        rows.append(
            {
                "n": n,
                "request_id": post.request_id,
                "type": post.type,
                "content": post.content,
                "metadata": post.metadata or None,
            }
        )
    if not rows:
        return []
    params: dict[str, Any] = {
        "rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":")),
        "actor_id": actor[0],
        "actor_name": actor[1],
        "kind": job.kind if job else "",
        "prefix": job.key_prefix if job else "",
        "suffix": BARRIER_SUFFIX,
        "delay_s": float(job.delay_s) if job else 0.0,
        "max_attempts": (job.max_attempts if job else None) or JOB_MAX_ATTEMPTS,
    }
    try:
        recorded = (await conn.execute(_RECORD, params)).all()
    except DB_ERRORS as exc:
        raise translate(exc, InsertError, f"recording {len(rows)} agent messages") from exc
    # Identity values ascend in `n` order, so each request's ids, ascending, are its posts'.
    by_request: dict[str, list[RecordedMessage]] = {}
    for row_id, request_id, created_at in recorded:
        by_request.setdefault(request_id, []).append(RecordedMessage(row_id, created_at))
    cursors = {request_id: iter(found) for request_id, found in by_request.items()}
    return [
        next(cursors[post.request_id]) if post.request_id in cursors else None for post in posts
    ]
