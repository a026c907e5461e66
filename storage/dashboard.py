"""The web dashboard's reads: the request list, one request with its runs, and the stats.

Selectors only: every query the dashboard makes is here, and bot/web renders what they
return. The list is keyset-paginated on (created_at, id), newest first; each filter has an
index ending in those columns (migration 0003), and search uses the GIN full-text index.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    desc,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import DB_ERRORS, QueryError, translate
from storage.models import (
    AGENT_MESSAGE_TYPES,
    SEARCH_CONFIG,
    FeatureRequest,
    MessageSource,
    MessageType,
    RequestMessage,
    RequestOrigin,
    RequestStatus,
    utcnow,
)
from storage.models import Run as RunRow

PAGE_SIZE = 100
# Counting every match of a broad search costs a full-text recheck per row, so searches
# count up to this many (the page says "1,000+").
SEARCH_COUNT_LIMIT = 1000
LIVE_RUN_STATES = frozenset({"queued", "starting", "running"})
MAX_SEARCH_LENGTH = 200

FR = FeatureRequest
# The same expression as the GIN index feature_requests_search_idx.
SEARCH_DOCUMENT: ColumnElement[Any] = literal_column(
    f"to_tsvector('{SEARCH_CONFIG}'::regconfig,"
    " (COALESCE(feature_requests.title, ''::text) || ' '::text)"
    " || feature_requests.description)"
)


def requester_key() -> ColumnElement[str]:
    """Who filed a request: the Slack user id, else the GitHub issue's author."""
    return func.coalesce(FR.slack_user_id, FR.issue_author)


_AGENT_TYPES = sorted(AGENT_MESSAGE_TYPES)


# --- the list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilters:
    """What the list is narrowed to; None means any."""

    status: RequestStatus | None = None
    repo: str | None = None
    requester: str | None = None  # a Slack user id or a GitHub login
    origin: RequestOrigin | None = None
    search: str | None = None

    def without_status(self) -> ListFilters:
        return ListFilters(None, self.repo, self.requester, self.origin, self.search)


@dataclass(frozen=True)
class ListRow:
    """One request as the list shows it."""

    id: int
    request_id: str
    title: str
    repo: str
    status: RequestStatus
    origin: RequestOrigin
    requester_key: str | None
    requester_name: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    cost_cents: int | None
    duration_ms: int | None
    pr_url: str | None
    pr_number: int | None


@dataclass(frozen=True)
class ListPage:
    rows: list[ListRow]
    next_cursor: str | None
    counts: dict[RequestStatus, int]
    counts_capped: bool = False  # a search with more matches than SEARCH_COUNT_LIMIT

    @property
    def total(self) -> int:
        """Requests matching the filters other than status."""
        return sum(self.counts.values())


def encode_cursor(created_at: dt.datetime, row_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int] | None:
    """The cursor's position, or None for one this code did not make."""
    try:
        created, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return dt.datetime.fromisoformat(created), int(row_id)
    except (ValueError, TypeError):
        return None


def _where(filters: ListFilters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.status is not None:
        where.append(FR.status == filters.status)
    if filters.repo:
        where.append(FR.repo == filters.repo)
    if filters.requester:
        where.append(requester_key() == filters.requester)
    if filters.origin is not None:
        where.append(FR.origin == filters.origin)
    if filters.search:
        query = func.websearch_to_tsquery(
            literal_column(f"'{SEARCH_CONFIG}'::regconfig"), filters.search[:MAX_SEARCH_LENGTH]
        )
        where.append(SEARCH_DOCUMENT.op("@@")(query))
    return where


async def list_requests(
    session: AsyncSession,
    filters: ListFilters,
    *,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> ListPage:
    """A page of requests, newest first, with the count per status for these filters."""
    stmt = select(
        FR.id,
        FR.request_id,
        func.coalesce(FR.title, func.left(FR.description, 200)).label("title"),
        FR.repo,
        FR.status,
        FR.origin,
        requester_key().label("requester_key"),
        func.coalesce(FR.slack_user_name, FR.issue_author, FR.slack_user_id).label(
            "requester_name"
        ),
        FR.created_at,
        FR.updated_at,
        FR.cost_usd.label("cost_cents"),
        FR.duration_ms,
        FR.pr_url,
        FR.pr_number,
    ).where(*_where(filters))
    position = decode_cursor(cursor) if cursor else None
    if position is not None:
        created, row_id = position
        stmt = stmt.where(
            or_(FR.created_at < created, and_(FR.created_at == created, FR.id < row_id))
        )
    stmt = stmt.order_by(desc(FR.created_at), desc(FR.id)).limit(limit + 1)
    counted = select(FR.status).where(*_where(filters.without_status()))
    if filters.search:
        counted = counted.limit(SEARCH_COUNT_LIMIT)
    matches = counted.subquery()
    counts_stmt = select(matches.c.status, func.count()).group_by(matches.c.status)
    try:
        rows = [ListRow(**r._asdict()) for r in (await session.execute(stmt)).all()]
        counts = {RequestStatus(s): int(n) for s, n in (await session.execute(counts_stmt)).all()}
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "listing requests for the dashboard") from exc
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    capped = bool(filters.search) and sum(counts.values()) >= SEARCH_COUNT_LIMIT
    return ListPage(rows=rows, next_cursor=next_cursor, counts=counts, counts_capped=capped)


# --- one request ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One message of a request's trail."""

    id: int
    type: MessageType
    source: MessageSource
    content: str
    actor_id: str | None
    actor_name: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime

    @property
    def is_agent(self) -> bool:
        return self.type in AGENT_MESSAGE_TYPES


@dataclass
class Run:
    """One run of the agent: its activity (all, or only what is new) and its totals."""

    number: int
    row: _RunRow | None = None  # its clarity_runs row, when there is one
    entries: list[Entry] = field(default_factory=list)
    steps: int = 0
    tool_calls: int = 0
    files_changed: int = 0
    commands: int = 0
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    reported_cost_cents: int | None = None
    reported_duration_ms: int | None = None
    summary_cost_cents: int | None = None
    summary_duration_ms: int | None = None
    finished: bool = False

    @property
    def kind(self) -> str | None:
        return None if self.row is None else self.row.kind

    @property
    def running(self) -> bool:
        """Still going: by its clarity_runs state, else until it reported or summed up."""
        if self.row is not None:
            return self.row.state in LIVE_RUN_STATES
        return not self.finished

    @property
    def cost_cents(self) -> int | None:
        """The run's recorded cost, else its status reports', else its summary's."""
        if self.row is not None and self.row.cost_cents is not None:
            return self.row.cost_cents
        if self.reported_cost_cents is not None:
            return self.reported_cost_cents
        return self.summary_cost_cents

    @property
    def duration_ms(self) -> int | None:
        """The recorded or reported duration, else the time from its first to its last step."""
        if self.row is not None and self.row.duration_ms is not None:
            return self.row.duration_ms
        if self.reported_duration_ms is not None:
            return self.reported_duration_ms
        if self.summary_duration_ms is not None:
            return self.summary_duration_ms
        if self.first_at is not None and self.last_at is not None:
            return int((self.last_at - self.first_at).total_seconds() * 1000)
        return None


@dataclass(frozen=True)
class RequestPage:
    """A request, its conversation (every non-agent message) and its runs."""

    request: FeatureRequest
    conversation: list[Entry]
    runs: list[Run]
    last_message_id: int
    hidden_steps: int = 0  # older agent steps left out by `latest`


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        return int(float(str(value)))
    except ValueError:
        return None


def _add(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return (total or 0) + value


_ENTRY_COLUMNS = (
    RequestMessage.id,
    RequestMessage.type,
    RequestMessage.source,
    RequestMessage.content,
    RequestMessage.actor_id,
    RequestMessage.actor_name,
    RequestMessage.metadata_,
    RequestMessage.created_at,
)


@dataclass(frozen=True)
class _RunRow:
    created_at: dt.datetime
    attempt: int
    kind: str
    state: str
    cost_cents: int | None
    duration_ms: int | None


async def _run_rows(session: AsyncSession, request_id: str) -> list[_RunRow]:
    # A run is a dispatch other than `cancel` (which only stops one), as Slack counts them.
    rows = await session.execute(
        select(
            RunRow.created_at,
            RunRow.attempt,
            RunRow.kind,
            RunRow.state,
            RunRow.cost_cents,
            RunRow.duration_ms,
        )
        .where(RunRow.request_id == request_id, RunRow.kind != "cancel")
        .order_by(RunRow.attempt)
    )
    return [_RunRow(*row) for row in rows.all()]


async def request_page(
    session: AsyncSession, request_id: str, *, after_id: int = 0, latest: int | None = None
) -> RequestPage | None:
    """A request with its conversation and runs; runs hold only activity newer than
    `after_id`, and at most the `latest` steps (their totals always cover the whole run).
    None when unknown."""
    try:
        request = await session.scalar(select(FR).where(FR.request_id == request_id))
        if request is None:
            return None
        starts = await _run_rows(session, request_id)
        conversation = [
            Entry(i, t, s, c, a, n, m or {}, at)
            for i, t, s, c, a, n, m, at in (
                await session.execute(
                    select(*_ENTRY_COLUMNS)
                    .where(
                        RequestMessage.request_id == request_id,
                        RequestMessage.type.not_in(_AGENT_TYPES),
                    )
                    .order_by(RequestMessage.id)
                )
            ).all()
        ]
        agent = (
            await session.execute(
                select(
                    RequestMessage.id,
                    RequestMessage.type,
                    RequestMessage.created_at,
                    RequestMessage.metadata_["costCents"],
                    RequestMessage.metadata_["durationMs"],
                )
                .where(
                    RequestMessage.request_id == request_id,
                    RequestMessage.type.in_(_AGENT_TYPES),
                )
                .order_by(RequestMessage.id)
            )
        ).all()
        newer = (
            select(*_ENTRY_COLUMNS)
            .where(
                RequestMessage.request_id == request_id,
                RequestMessage.type.in_(_AGENT_TYPES),
                RequestMessage.id > after_id,
            )
            .order_by(RequestMessage.id.desc())
        )
        if latest is not None:
            newer = newer.limit(latest)
        new_entries = [
            Entry(i, t, s, c, a, n, m or {}, at)
            for i, t, s, c, a, n, m, at in reversed((await session.execute(newer)).all())
        ]
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "reading a request for the dashboard") from exc

    start_times = [row.created_at for row in starts]
    runs: dict[int, Run] = {}

    def run_of(at: dt.datetime) -> Run:
        # The latest run created before the message; activity before any run is run 1's.
        number = max(1, bisect.bisect_right(start_times, at))
        if number not in runs:
            row = starts[number - 1] if number <= len(starts) else None
            runs[number] = Run(number=number, row=row)
        return runs[number]

    for _id, type_, at, cost, duration in agent:
        run = run_of(at)
        run.steps += 1
        run.first_at = run.first_at or at
        run.last_at = at
        if type_ == MessageType.AGENT_TOOL_CALL:
            run.tool_calls += 1
        elif type_ == MessageType.AGENT_FILE_CHANGE:
            run.files_changed += 1
        elif type_ == MessageType.AGENT_TERMINAL:
            run.commands += 1
        elif type_ == MessageType.AGENT_SUMMARY:
            run.summary_cost_cents = _add(run.summary_cost_cents, _number(cost))
            run.summary_duration_ms = _add(run.summary_duration_ms, _number(duration))
            run.finished = True
    for entry in conversation:
        cost, duration = (
            _number(entry.metadata.get("costCents")),
            _number(entry.metadata.get("durationMs")),
        )
        if cost is None and duration is None:
            continue
        run = run_of(entry.created_at)
        run.reported_cost_cents = _add(run.reported_cost_cents, cost)
        run.reported_duration_ms = _add(run.reported_duration_ms, duration)
        run.finished = True
    for entry in new_entries:
        run_of(entry.created_at).entries.append(entry)
    last = max([after_id, *(e.id for e in new_entries)])
    # Runs with nothing to show (a report without activity) are left out.
    shown = [runs[n] for n in sorted(runs) if runs[n].steps or runs[n].entries]
    hidden = sum(1 for row in agent if row[0] > after_id) - len(new_entries)
    return RequestPage(
        request=request,
        conversation=conversation,
        runs=shown,
        last_message_id=max(last, *(row[0] for row in agent)) if agent else last,
        hidden_steps=hidden,
    )


# --- stats ------------------------------------------------------------------------------

OUTCOMES = ("pr", "failed", "cancelled", "open")
_OUTCOME = case(
    (FR.status.in_([RequestStatus.PR_CREATED, RequestStatus.COMPLETED]), "pr"),
    (FR.status == RequestStatus.ERROR, "failed"),
    (FR.status == RequestStatus.CANCELLED, "cancelled"),
    else_="open",
)


@dataclass(frozen=True)
class Day:
    day: dt.date
    outcomes: dict[str, int]
    cost_cents: int

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class Ranked:
    key: str
    label: str
    count: int
    cost_cents: int


@dataclass(frozen=True)
class Stats:
    """The last `days` days (UTC), by the day each request was filed."""

    days: int
    per_day: list[Day]
    median_to_pr_ms: float | None
    p90_to_pr_ms: float | None
    top_repos: list[Ranked]
    top_requesters: list[Ranked]

    def total(self, outcome: str | None = None) -> int:
        return sum(d.outcomes[outcome] if outcome else d.total for d in self.per_day)

    @property
    def cost_cents(self) -> int:
        return sum(d.cost_cents for d in self.per_day)

    @property
    def success_rate(self) -> float | None:
        """Share of finished requests that produced a PR (open or merged)."""
        good, done = self.total("pr"), self.total("pr") + self.total("failed")
        done += self.total("cancelled")
        return None if done == 0 else good / done


async def stats(
    session: AsyncSession, days: int, *, now: dt.datetime | None = None, top: int = 8
) -> Stats:
    """Requests per day by outcome, cost per day, time to PR, top repositories and people."""
    today = (now or utcnow()).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    day = func.date_trunc("day", FR.created_at)
    first_pr = (
        select(func.min(RequestMessage.created_at))
        .where(
            RequestMessage.request_id == FR.request_id,
            RequestMessage.type == MessageType.PR_CREATED,
        )
        .scalar_subquery()
    )
    to_pr = (func.extract("epoch", first_pr - FR.created_at) * 1000).label("to_pr")
    try:
        per_day_rows = (
            await session.execute(
                select(day, _OUTCOME, func.count(), func.coalesce(func.sum(FR.cost_usd), 0))
                .where(FR.created_at >= since)
                .group_by(day, _OUTCOME)
            )
        ).all()
        times = select(to_pr).where(FR.created_at >= since, FR.pr_url.is_not(None)).subquery()
        median, p90 = (
            await session.execute(
                select(
                    func.percentile_cont(0.5).within_group(times.c.to_pr),
                    func.percentile_cont(0.9).within_group(times.c.to_pr),
                ).where(times.c.to_pr.is_not(None))
            )
        ).one()
        repos = (
            await session.execute(
                select(FR.repo, func.count(), func.coalesce(func.sum(FR.cost_usd), 0))
                .where(FR.created_at >= since)
                .group_by(FR.repo)
                .order_by(desc(func.count()), FR.repo)
                .limit(top)
            )
        ).all()
        people = (
            await session.execute(
                select(
                    requester_key(),
                    func.max(func.coalesce(FR.slack_user_name, FR.issue_author, FR.slack_user_id)),
                    func.count(),
                    func.coalesce(func.sum(FR.cost_usd), 0),
                )
                .where(FR.created_at >= since, requester_key().is_not(None))
                .group_by(requester_key())
                .order_by(desc(func.count()), requester_key())
                .limit(top)
            )
        ).all()
    except DB_ERRORS as exc:
        raise translate(exc, QueryError, "computing dashboard stats") from exc

    by_day: dict[dt.date, dict[str, int]] = {}
    cost: dict[dt.date, int] = {}
    for when, outcome, count, cents in per_day_rows:
        key = when.date()
        by_day.setdefault(key, dict.fromkeys(OUTCOMES, 0))[outcome] = int(count)
        cost[key] = cost.get(key, 0) + int(cents)
    per_day = [
        Day(d, by_day.get(d, dict.fromkeys(OUTCOMES, 0)), cost.get(d, 0))
        for d in (first + dt.timedelta(days=i) for i in range(days))
    ]
    return Stats(
        days=days,
        per_day=per_day,
        median_to_pr_ms=None if median is None else float(median),
        p90_to_pr_ms=None if p90 is None else float(p90),
        top_repos=[Ranked(r, r, int(n or 0), int(c or 0)) for r, n, c in repos],
        top_requesters=[
            Ranked(k, label or k, int(n or 0), int(c or 0)) for k, label, n, c in people
        ],
    )
