"""`clarity db check`: silent on a migrated database, and names each kind of drift."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from storage.dbops import check as check_op
from tests.dbops_fixtures import error_line, execute, run_cli
from tests.pg import run_async

ADR_STATUSES = (
    "'pending', 'issue_created', 'processing', 'awaiting_clarification',"
    " 'pr_created', 'completed', 'error'"
)

DRIFTS = {
    "dropped index": (
        ["DROP INDEX feature_requests_status_idx"],
        "index feature_requests_status_idx: missing",
    ),
    "extra column": (
        ["ALTER TABLE feature_requests ADD COLUMN foo integer"],
        "column feature_requests.foo: extra",
    ),
    # PostgreSQL cannot drop an enum value: rebuild the type without `cancelled`.
    "missing enum value": (
        [
            "ALTER TYPE request_status RENAME TO request_status_old",
            f"CREATE TYPE request_status AS ENUM ({ADR_STATUSES})",
            "ALTER TABLE feature_requests ALTER COLUMN status DROP DEFAULT",
            "ALTER TABLE feature_requests ALTER COLUMN status TYPE request_status"
            " USING status::text::request_status",
            "ALTER TABLE feature_requests ALTER COLUMN status SET DEFAULT 'pending'",
            "DROP TYPE request_status_old",
        ],
        "enum request_status: missing value 'cancelled'",
    ),
}


def test_check_passes_on_a_migrated_database(db_url: str) -> None:
    result = run_cli("db", "check", "--database-url", db_url)

    assert result.returncode == 0, result.stderr
    assert "database matches the models at head" in result.stdout


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_check_names_the_drift(db_url: str, drift: str) -> None:
    statements, expected = DRIFTS[drift]
    run_async(lambda: execute(db_url, *statements))
    said: list[str] = []

    problems = run_async(lambda: check_op.check(make_url(db_url), "test", say=said.append))

    assert problems == said == [expected]


def test_check_exits_non_zero_listing_the_drift(db_url: str) -> None:
    statements, expected = DRIFTS["dropped index"]
    run_async(lambda: execute(db_url, *statements))

    result = run_cli("db", "check", "--database-url", db_url)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [expected]
    assert error_line(result) == (
        "clarity: error: database differs from the models: 1 difference(s) above"
    )
