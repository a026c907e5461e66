"""storage.dashboard on a real database: keyset pages, filters, full-text search, counts,
runs of a request, stats."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import dashboard
from storage.dashboard import ListFilters
from storage.models import RequestOrigin, RequestStatus

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


async def _fill(session_factory: async_sessionmaker[AsyncSession], n: int) -> None:
    async with session_factory.begin() as session:
        await session.execute(
            text(
                """
                INSERT INTO feature_requests (request_id, origin, repo, title, description,
                    status, slack_user_id, slack_user_name, issue_author, cost_usd, created_at)
                SELECT 'req-' || i,
                       CASE WHEN i % 5 = 0 THEN 'github_issue' ELSE 'slack' END::request_origin,
                       'acme/repo-' || (i % 3),
                       CASE WHEN i % 10 = 0 THEN 'Add rate limiting' ELSE 'Fix typo ' || i END,
                       CASE WHEN i % 7 = 0 THEN 'The billing exporter crashes' ELSE 'Small' END,
                       (enum_range(NULL::request_status))[1 + i % 8],
                       CASE WHEN i % 5 = 0 THEN NULL ELSE 'U' || (i % 4) END,
                       CASE WHEN i % 5 = 0 THEN NULL ELSE 'User ' || (i % 4) END,
                       CASE WHEN i % 5 = 0 THEN 'octocat' END,
                       i, CAST(:now AS timestamp) - i * interval '1 hour'
                FROM generate_series(1, :n) i
                """
            ),
            {"n": n, "now": NOW.replace(tzinfo=None)},
        )


async def test_pages_are_newest_first_with_a_cursor_and_counts(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await _fill(session_factory, 250)
    seen: list[str] = []
    cursor = None
    async with session_factory() as session:
        for expected in (100, 100, 50):
            page = await dashboard.list_requests(session, ListFilters(), cursor=cursor)
            assert len(page.rows) == expected
            seen += [r.request_id for r in page.rows]
            cursor = page.next_cursor
        assert cursor is None
        assert seen == [f"req-{i}" for i in range(1, 251)]
        assert page.total == 250 and sum(page.counts.values()) == 250
        # A cursor this code did not make is the first page.
        again = await dashboard.list_requests(session, ListFilters(), cursor="garbage")
        assert again.rows[0].request_id == "req-1"


async def test_filters_and_search(session_factory: async_sessionmaker[AsyncSession]) -> None:
    await _fill(session_factory, 250)
    async with session_factory() as session:

        async def ids(**filters: object) -> list[str]:
            page = await dashboard.list_requests(session, ListFilters(**filters))  # type: ignore[arg-type]
            return [r.request_id for r in page.rows]

        errors = await ids(status=RequestStatus.ERROR)
        assert errors and all(int(i[4:]) % 8 == 6 for i in errors)
        assert all(int(i[4:]) % 3 == 1 for i in await ids(repo="acme/repo-1"))
        assert all(int(i[4:]) % 5 == 0 for i in await ids(requester="octocat"))
        assert all(int(i[4:]) % 4 == 2 for i in await ids(requester="U2"))
        assert all(int(i[4:]) % 5 == 0 for i in await ids(origin=RequestOrigin.GITHUB_ISSUE))
        # Full text over title and description, with stemming ("crash" finds "crashes").
        assert sorted(await ids(search="billing crash")) == sorted(
            f"req-{i}" for i in range(1, 251) if i % 7 == 0
        )
        assert len(await ids(search="rate limiting")) == 25
        assert await ids(search='"rate limiting" -billing') == [
            f"req-{i}" for i in range(1, 251) if i % 10 == 0 and i % 7 != 0
        ]
        # Counts per status follow every filter but the status itself.
        page = await dashboard.list_requests(
            session, ListFilters(status=RequestStatus.ERROR, repo="acme/repo-1")
        )
        assert page.total == len([i for i in range(1, 251) if i % 3 == 1])
        assert page.counts[RequestStatus.ERROR] == len(page.rows)


async def test_the_list_uses_the_indexes(session_factory: async_sessionmaker[AsyncSession]) -> None:
    await _fill(session_factory, 2000)
    async with session_factory.begin() as session:
        await session.execute(text("ANALYZE feature_requests"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await session.execute(
                    text(
                        "EXPLAIN SELECT id FROM feature_requests WHERE to_tsvector('english',"
                        " (COALESCE(title, '') || ' ') || description)"
                        " @@ websearch_to_tsquery('english', 'billing')"
                    )
                )
            ).scalars()
        )
        assert "feature_requests_search_idx" in plan


async def test_stats_by_day_outcome_and_time_to_pr(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as session:
        await session.execute(
            text(
                """
                INSERT INTO feature_requests (request_id, origin, repo, description, status,
                    slack_user_id, slack_user_name, cost_usd, pr_url, created_at)
                VALUES
                  ('a', 'slack', 'acme/app', 'a', 'completed', 'U1', 'Ada', 100, 'https://x/1',
                   '2026-12-05 09:00'),
                  ('b', 'slack', 'acme/app', 'b', 'pr_created', 'U1', 'Ada', 50, 'https://x/2',
                   '2026-12-04 09:00'),
                  ('c', 'slack', 'acme/api', 'c', 'error', 'U2', 'Grace', 25, NULL,
                   '2026-12-04 10:00'),
                  ('d', 'slack', 'acme/api', 'd', 'processing', 'U2', 'Grace', NULL, NULL,
                   '2026-11-01 10:00')
                """
            )
        )
        await session.execute(
            text(
                """
                INSERT INTO request_messages (request_id, type, source, content, created_at)
                VALUES ('a', 'pr_created', 'system', 'PR', '2026-12-05 09:10'),
                       ('b', 'pr_created', 'system', 'PR', '2026-12-04 09:30')
                """
            )
        )
    async with session_factory() as session:
        stats = await dashboard.stats(session, 7, now=NOW)
    assert [d.day.isoformat() for d in stats.per_day][-2:] == ["2026-12-04", "2026-12-05"]
    assert len(stats.per_day) == 7
    assert stats.per_day[-1].outcomes == {"pr": 1, "failed": 0, "cancelled": 0, "open": 0}
    assert stats.per_day[-2].outcomes == {"pr": 1, "failed": 1, "cancelled": 0, "open": 0}
    assert stats.total() == 3 and stats.cost_cents == 175
    assert stats.success_rate == 2 / 3
    assert stats.median_to_pr_ms == 20 * 60 * 1000  # 10 and 30 minutes
    assert stats.p90_to_pr_ms == 28 * 60 * 1000  # interpolated: 10 + 0.9 * 20 minutes
    assert [(r.key, r.count) for r in stats.top_repos] == [("acme/app", 2), ("acme/api", 1)]
    assert [(r.label, r.count) for r in stats.top_requesters] == [("Ada", 2), ("Grace", 1)]


async def test_a_requests_activity_is_grouped_by_run(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_factory.begin() as session:
        for statement in (
            "INSERT INTO feature_requests (request_id, origin, repo, description, status)"
            " VALUES ('r', 'slack', 'acme/app', 'd', 'processing')",
            "INSERT INTO clarity_runs (request_id, attempt, kind, state, cost_cents, created_at)"
            " VALUES ('r', 1, 'initial', 'failed', 40, '2026-12-05 10:00'),"
            " ('r', 2, 'cancel', 'succeeded', NULL, '2026-12-05 10:30'),"
            " ('r', 3, 'retry', 'running', NULL, '2026-12-05 11:00')",
            "INSERT INTO request_messages (request_id, type, source, content, metadata, created_at)"
            " VALUES ('r', 'initial_request', 'slack', 'd', NULL, '2026-12-05 09:59'),"
            " ('r', 'agent_thinking', 'system', 'one', NULL, '2026-12-05 10:01'),"
            " ('r', 'agent_terminal', 'system', 'ls', '{\"exitCode\": 0}', '2026-12-05 10:02'),"
            " ('r', 'error', 'system', 'boom', '{\"durationMs\": 90000}', '2026-12-05 10:03'),"
            " ('r', 'retry', 'slack', 'again', NULL, '2026-12-05 10:59'),"
            " ('r', 'agent_tool_call', 'system', 'Read', NULL, '2026-12-05 11:01'),"
            " ('r', 'agent_thinking', 'system', 'two', NULL, '2026-12-05 11:02')",
        ):
            await session.execute(text(statement))
    async with session_factory() as session:
        page = await dashboard.request_page(session, "r")
        assert page is not None
        assert [e.content for e in page.conversation] == ["d", "boom", "again"]
        first, second = page.runs
        assert (first.number, first.kind, first.running) == (1, "initial", False)
        assert [e.content for e in first.entries] == ["one", "ls"]
        assert (first.steps, first.commands, first.cost_cents) == (2, 1, 40)
        assert first.duration_ms == 90_000  # reported by the error
        # The cancel dispatch is not a run: the retry is the second one shown, as in Slack.
        assert (second.number, second.kind, second.running) == (2, "retry", True)
        assert (second.steps, second.tool_calls) == (2, 1)
        assert second.duration_ms == 60_000  # first to last step

        # Only what is newer than a message id, with the totals of the whole run.
        newer = await dashboard.request_page(session, "r", after_id=page.last_message_id - 1)
        assert newer is not None
        assert [[e.content for e in run.entries] for run in newer.runs] == [[], ["two"]]
        assert newer.runs[1].steps == 2 and newer.last_message_id == page.last_message_id
