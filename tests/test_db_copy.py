"""`clarity db copy` and `clarity db drop-legacy`: seed 001's phases 2 to 6 as commands.

The copy is checked independently of its own verification: each table's rows, in primary
key order, are hashed with md5(string_agg(row text)) on both sides.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from storage.dbops import copy as copy_op
from storage.dbops.connection import DbOpsError
from tests.dbops_fixtures import (
    REPO_ROOT,
    cli_command,
    cli_env,
    drizzle_db,
    empty_db,
    error_line,
    execute,
    fetch,
    fetchval,
    run_cli,
    second_empty_db,
)
from tests.pg import run_async

__all__ = ["drizzle_db", "empty_db", "second_empty_db"]  # fixtures used by name

CLARITY_TABLES = copy_op.clarity_tables()
KEYS = {
    "clarity_inbound_deliveries": "source, delivery_id",
    "clarity_channel_settings": "channel_id",
    "clarity_web_sessions": "token_hash",
    "clarity_login_tokens": "token_hash",
    "clarity_artifact_chunks": "artifact_id, seq",
}
MB = 1024 * 1024

# Run a command as a child and report its peak memory (Linux: ru_maxrss in KiB).
MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""

FILL = [
    "INSERT INTO app_config (type, config) VALUES"
    ' (\'github\', \'{"appId": "1", "privateKeyEncrypted": "00:00"}\'),'
    " ('claude', '{\"apiKeyEncrypted\": \"00:00\"}'), ('slack', '{}')",
    "INSERT INTO feature_requests (request_id, origin, repo, description, status, issue_id,"
    " issue_labels, cost_usd, created_at)"
    " SELECT 'req-' || i, 'slack', 'acme/app', 'request ' || i,"
    " (enum_range(NULL::request_status))[1 + i % 8], CASE WHEN i % 3 = 0 THEN i END,"
    " jsonb_build_array('label', i), i % 500, timestamp '2026-01-01' + i * interval '1 minute'"
    " FROM generate_series(1, 10000) i",
    # 384 bytes of content each: 38 MB of messages, so holding them all would show.
    "INSERT INTO request_messages (request_id, type, source, content, metadata, created_at)"
    " SELECT 'req-' || (1 + i % 10000), (enum_range(NULL::message_type))[1 + i % 17],"
    " 'system', repeat(md5(i::text), 12), jsonb_build_object('turnNumber', i, 'ok', true),"
    " timestamp '2026-01-02' + i * interval '1 second' FROM generate_series(1, 100000) i",
    # Gaps in the ids: a copy must keep ids, not renumber rows.
    "DELETE FROM request_messages WHERE id % 97 = 0",
    "INSERT INTO clarity_jobs (kind, payload, request_id, dedupe_key)"
    " SELECT 'dispatch', jsonb_build_object('n', i), 'req-' || i, 'key-' || i"
    " FROM generate_series(1, 200) i",
    "INSERT INTO clarity_slack_posts (request_id, purpose, channel_id, ts)"
    " SELECT 'req-' || i, 'root', 'C1', '1700000000.' || i FROM generate_series(1, 50) i",
    "INSERT INTO clarity_channel_settings (channel_id, default_repo)"
    " SELECT 'C' || i, 'acme/app' FROM generate_series(1, 5) i",
    "INSERT INTO clarity_inbound_deliveries (source, delivery_id)"
    " SELECT (ARRAY['slack', 'github'])[1 + i % 2], 'd-' || i FROM generate_series(1, 40) i",
]


def _measured(*args: str) -> tuple[dict[str, Any], int]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *cli_command(*args)],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(done.stdout)
    return report, int(report["peak"])


async def _fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Per table: row count and md5 of every row's text in primary-key order."""
    out = {}
    for table in CLARITY_TABLES:
        key = KEYS.get(table, "id")
        rows = await fetch(
            url,
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), ''))"
            f" AS h FROM {table} t",
        )
        out[table] = (rows[0]["n"], rows[0]["h"])
    return out


async def _both_fingerprints(
    a: str, b: str
) -> tuple[dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
    first, second = await asyncio.gather(_fingerprints(a), _fingerprints(b))
    return first, second


def test_copy_keeps_ids_verifies_and_stays_flat(db_url: str, second_empty_db: str) -> None:
    source, target = db_url, second_empty_db
    run_async(lambda: execute(source, *FILL))

    _, baseline = _measured("db", "copy", "--help")
    report, peak = _measured(
        "db", "copy", "--source", source, "--target", target, "--batch-size", "2000"
    )

    assert report["returncode"] == 0, report["stderr"]
    table_lines = {line.split()[0]: line for line in report["stdout"].splitlines()}
    for table in CLARITY_TABLES:
        assert table_lines[table].endswith("yes"), report["stdout"]
    assert table_lines["request_messages"].split()[1:3] == ["98970", "98970"]
    # Batches keep memory flat: holding the 38 MB of messages would add far more than this.
    assert peak - baseline < 48 * MB, (peak // MB, baseline // MB)

    before, after = run_async(lambda: _both_fingerprints(source, target))
    assert after == before
    assert before["feature_requests"][0] == 10000 and before["app_config"][0] == 3

    # Identity sequences continue after the largest copied id.
    next_ids = run_async(
        lambda: fetch(
            target,
            "WITH m AS (INSERT INTO request_messages (request_id, type, source, content)"
            " VALUES ('req-1', 'retry', 'slack', 'again') RETURNING id),"
            " j AS (INSERT INTO clarity_jobs (kind, payload) VALUES ('x', '{}') RETURNING id)"
            " SELECT (SELECT id FROM m) AS message, (SELECT id FROM j) AS job",
        )
    )[0]
    max_message = run_async(lambda: fetchval(source, "SELECT max(id) FROM request_messages"))
    assert (next_ids["message"], next_ids["job"]) == (max_message + 1, 201)

    again = run_cli("db", "copy", "--source", source, "--target", target)
    assert again.returncode == 1
    assert error_line(again).startswith("clarity: error: target is not empty (rows in ")
    assert error_line(again).endswith("pass --truncate to replace its contents")

    run_async(
        lambda: execute(
            target,
            "DELETE FROM request_messages WHERE content = 'again'",
            "DELETE FROM clarity_jobs WHERE kind = 'x'",
        )
    )
    verified = run_cli("db", "copy", "--source", source, "--target", target, "--verify-only")
    assert verified.returncode == 0, verified.stderr
    assert "verified: the target holds the same rows as the source" in verified.stdout


async def _fill_drizzle(url: str) -> None:
    await execute(
        url,
        "INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('abc', 1700000000000)",
        "INSERT INTO app_config (type, config) VALUES ('claude', '{\"apiKeyEncrypted\": \"x\"}')",
        "INSERT INTO feature_requests (request_id, origin, repo, description)"
        " SELECT 'req-' || i, 'github_issue', 'acme/app', 'fix ' || i"
        " FROM generate_series(1, 20) i",
        "INSERT INTO request_messages (request_id, type, source, content)"
        " SELECT 'req-' || (1 + i % 20), 'initial_request', 'github', 'text ' || i"
        " FROM generate_series(1, 50) i",
        # Another application's objects in the shared database: never touched.
        "CREATE TABLE other_app (id int PRIMARY KEY, note text)",
        "INSERT INTO other_app VALUES (1, 'keep me')",
    )


def test_copy_from_the_typescript_worker_then_drop_legacy(
    drizzle_db: str, second_empty_db: str
) -> None:
    source, target = drizzle_db, second_empty_db
    run_async(lambda: _fill_drizzle(source))

    copied = run_cli("db", "copy", "--source", source, "--target", target)
    assert copied.returncode == 0, copied.stderr
    assert [line.split()[0] for line in copied.stdout.splitlines() if line.endswith("yes")] == [
        "app_config",
        "feature_requests",
        "request_messages",
    ]
    assert run_async(lambda: fetchval(target, "SELECT version_num FROM alembic_version"))

    unconfirmed = run_cli("db", "drop-legacy", "--source", source, "--target", target)
    assert unconfirmed.returncode == 1
    assert "pass --yes" in error_line(unconfirmed)

    # A target that no longer matches (here: one changed row) is no verified copy.
    run_async(lambda: execute(target, "UPDATE feature_requests SET repo = 'x/y' WHERE id = 7"))
    refused = run_cli("db", "drop-legacy", "--source", source, "--target", target, "--yes")
    assert refused.returncode == 1
    assert error_line(refused) == (
        "clarity: error: target is not a verified copy of the source (feature_requests differ);"
        " nothing was dropped"
    )
    assert run_async(lambda: fetchval(source, "SELECT count(*) FROM feature_requests")) == 20

    run_async(lambda: execute(target, "UPDATE feature_requests SET repo = 'acme/app' WHERE id = 7"))
    dropped = run_cli("db", "drop-legacy", "--source", source, "--target", target, "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped table drizzle.__drizzle_migrations" in dropped.stdout

    left = run_async(
        lambda: fetch(
            source,
            "SELECT n.nspname || '.' || c.relname AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " AND c.relkind IN ('r', 'p', 'S')",
        )
    )
    assert sorted(r["name"] for r in left) == ["public.other_app"]
    types = "SELECT count(*) FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
    assert run_async(lambda: fetchval(source, types)) == 0
    assert run_async(lambda: fetchval(source, "SELECT note FROM other_app")) == "keep me"
    schemas = "SELECT count(*) FROM pg_namespace WHERE nspname = 'drizzle'"
    assert run_async(lambda: fetchval(source, schemas)) == 0


def test_copy_refuses_a_target_made_by_drizzle_kit(db_url: str, drizzle_db: str) -> None:
    with pytest.raises(DbOpsError, match="run `clarity db adopt` on it first"):
        run_async(
            lambda: copy_op.copy(make_url(db_url), make_url(drizzle_db), say=lambda line: None)
        )
