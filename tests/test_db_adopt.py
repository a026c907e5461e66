"""`clarity db adopt`: the TypeScript worker's drizzle-kit database, taken over in place.

The database is built from drizzle-kit's DDL for the ADR's schema and filled as the worker
filled it, secrets in the ADR's encrypt() format (the DESIGN.md test vector among them).
"""

from __future__ import annotations

import json

import asyncpg
from sqlalchemy.engine import make_url

from storage import catalog
from storage.crypto import Cipher
from storage.dbops import adopt as adopt_op
from storage.dbops import check as check_op
from storage.engine import create_engine, create_session_factory
from storage.migrate import head_revision
from storage.models import RequestStatus
from storage.repositories import (
    AppConfigRepository,
    FeatureRequestRepository,
    RequestMessagesRepository,
)
from tests.dbops_fixtures import (
    drizzle_db,
    empty_db,
    error_line,
    execute,
    fetch,
    fetchval,
    run_cli,
)
from tests.pg import run_async

__all__ = ["drizzle_db", "empty_db"]  # fixtures used by name

KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
# DESIGN.md's vector: what the TypeScript worker's encrypt() stored for this bot token.
STORED_BOT_TOKEN = (
    "cafebabefacedbaddecaf888:"
    "f2ccd8448719237a346229a45669ec4c790db43eb47c0448fc39dc61cd2370dac92e624e2e4e91"
)
WORKER_TABLES = {
    "app_config": "id",
    "feature_requests": "id",
    "request_messages": "id",
    "drizzle.__drizzle_migrations": "id",
}


async def _fill_like_the_worker(url: str) -> None:
    cipher = Cipher.from_env_value(KEY)
    configs = {
        "github": {
            "appId": "123456",
            "privateKeyEncrypted": cipher.encrypt("-----BEGIN RSA PRIVATE KEY-----\nabc\n"),
            "webhookSecretEncrypted": cipher.encrypt("webhook-secret"),
            "installationId": "987",
            "ownerLogin": "acme",
            "ownerType": "Organization",
            "ownerId": 42,
            "permissions": {"issues": "write", "pull_requests": "write"},
            "events": ["issues", "pull_request"],
            "repositories": [{"id": 1, "name": "app", "fullName": "acme/app"}],
            "webhookCount": 12,
            "installationToken": cipher.encrypt("ghs_cached_token"),
            "tokenExpiresAt": "2026-11-22T12:00:00.000Z",
        },
        "claude": {"apiKeyEncrypted": cipher.encrypt("sk-ant-api03-key")},
        "slack": {
            "signingSecretEncrypted": cipher.encrypt("slack-signing-secret"),
            "botTokenEncrypted": STORED_BOT_TOKEN,
            "setupAt": "2026-01-01T00:00:00.000Z",
        },
    }
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO drizzle.__drizzle_migrations (hash, created_at)"
            " VALUES ('9d1c0e5f', 1732000000000), ('4be2a1c7', 1733000000000)"
        )
        for config_type, config in configs.items():
            await conn.execute(
                "INSERT INTO app_config (type, config) VALUES ($1, $2::jsonb)",
                config_type,
                json.dumps(config),
            )
        # Every status the worker knew, GitHub and Slack origins, PR and cost fields.
        await conn.execute(
            "INSERT INTO feature_requests (request_id, origin, repo, title, description,"
            " status, slack_channel_id, slack_thread_ts, issue_id, issue_number, issue_labels,"
            " repository_name, pr_url, pr_number, cost_usd, duration_ms, created_at)"
            " SELECT 'req-' || i, (ARRAY['slack', 'github_issue']::request_origin[])[1 + i % 2],"
            " 'acme/app', 'Title ' || i, 'Do thing ' || i,"
            " (enum_range(NULL::request_status))[1 + i % 7], 'C01', '1700000000.' || i,"
            " CASE WHEN i % 2 = 1 THEN 1000 + i END, i, '[\"clarity\"]', 'acme/app',"
            " 'https://github.com/acme/app/pull/' || i, i, i * 3, i * 1000,"
            " timestamp '2026-01-01 12:00' + i * interval '1 hour'"
            " FROM generate_series(1, 30) i"
        )
        await conn.execute(
            "INSERT INTO request_messages (request_id, type, source, content, actor_id,"
            " metadata, created_at)"
            " SELECT 'req-' || (1 + i % 30), (enum_range(NULL::message_type))[1 + i % 17],"
            " 'slack', 'message ' || i, 'U01',"
            " jsonb_build_object('turnNumber', i, 'toolName', 'Read', 'futureKey', 'kept'),"
            " timestamp '2026-01-02' + i * interval '1 minute' FROM generate_series(1, 120) i"
        )
    finally:
        await conn.close()


async def _fingerprints(url: str) -> dict[str, tuple[int, str]]:
    out = {}
    for table, key in WORKER_TABLES.items():
        rows = await fetch(
            url,
            f"SELECT count(*) AS n, md5(string_agg(t::text, '|' ORDER BY {key})) AS h"
            f" FROM {table} t",
        )
        out[table] = (rows[0]["n"], rows[0]["h"])
    return out


async def _read_back(url: str) -> None:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session:
            configs = AppConfigRepository(session, Cipher.from_env_value(KEY))
            slack = await configs.get_slack_config()
            github = await configs.get_github_config()
            claude = await configs.get_claude_config()
            assert slack is not None and github is not None and claude is not None
            assert slack.bot_token == "xoxb-clarity-test-token"
            assert slack.signing_secret == "slack-signing-secret"
            assert github.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
            assert github.webhook_secret == "webhook-secret"
            assert github.installation_token == "ghs_cached_token"
            assert claude.api_key == "sk-ant-api03-key"

            requests = FeatureRequestRepository(session)
            request = await requests.get("req-7")
            assert (request.status, request.pr_number, request.cost_usd) == (
                RequestStatus.PENDING,
                7,
                21,
            )
            found = await requests.find_by_slack_thread("C01", "1700000000.7")
            assert found is not None and found.request_id == "req-7"
            assert await requests.find_by_issue_id(1007) is not None

            thread = await RequestMessagesRepository(session).get_thread("req-7")
            assert len(thread) == 4
    finally:
        await engine.dispose()


def test_adopt_adds_what_is_missing_and_changes_no_row(db_url: str, drizzle_db: str) -> None:
    run_async(lambda: _fill_like_the_worker(drizzle_db))
    before = run_async(lambda: _fingerprints(drizzle_db))

    result = run_cli("db", "adopt", "--yes", "--database-url", drizzle_db)

    assert result.returncode == 0, result.stderr
    for line in (
        "  add value 'cancelled' to enum request_status",
        "  create index feature_requests_status_idx",
        "  create index request_messages_request_created_idx",
        "  create table clarity_jobs",
        "stamped revision 0001",
    ):
        assert line in result.stdout.splitlines(), result.stdout
    assert run_async(lambda: _fingerprints(drizzle_db)) == before

    # The schema is now exactly what our migrations build (db_url is a migrated database).
    ours = run_async(lambda: catalog.snapshot_url(db_url))
    adopted = run_async(lambda: catalog.snapshot_url(drizzle_db))
    assert catalog.diff(ours, adopted, column_order=True) == []
    assert run_async(lambda: check_op.check(make_url(drizzle_db), "test", say=lambda _: None)) == []

    run_async(lambda: _read_back(drizzle_db))
    # `cancelled` is usable now that the adoption committed.
    run_async(lambda: execute(drizzle_db, "UPDATE feature_requests SET status = 'cancelled'"))

    again: list[str] = []
    assert not run_async(
        lambda: adopt_op.adopt(
            make_url(drizzle_db), "test", confirm=lambda _: True, say=again.append
        )
    )
    assert again == [
        f"already managed by Clarity's migrations ({head_revision()}); use `clarity db migrate`"
    ]


def test_adopt_refuses_what_it_cannot_reconcile_and_changes_nothing(drizzle_db: str) -> None:
    run_async(
        lambda: execute(
            drizzle_db,
            "ALTER TABLE feature_requests ALTER COLUMN repo TYPE varchar(200)",
            "CREATE INDEX feature_requests_repo_idx ON feature_requests (repo)",
        )
    )
    before = run_async(lambda: catalog.snapshot_url(drizzle_db))

    result = run_cli("db", "adopt", "--yes", "--database-url", drizzle_db)

    assert result.returncode == 1
    assert "  column feature_requests.repo: type character varying(200), expected text" in (
        result.stdout.splitlines()
    )
    assert "  index feature_requests_repo_idx: extra" in result.stdout.splitlines()
    assert error_line(result) == (
        "clarity: error: cannot adopt: 2 difference(s) from Clarity's initial schema that"
        " adopting would not fix (listed above); nothing was changed"
    )
    assert catalog.diff(before, run_async(lambda: catalog.snapshot_url(drizzle_db))) == []


def test_adopt_adds_a_column_an_older_worker_lacked(drizzle_db: str) -> None:
    # An older worker's schema: no web UI columns yet, so no rows hold them.
    run_async(
        lambda: execute(
            drizzle_db,
            "ALTER TABLE feature_requests DROP COLUMN web_user_id, DROP COLUMN web_user_email",
            "INSERT INTO feature_requests (request_id, origin, repo, description)"
            " VALUES ('req-old', 'slack', 'acme/app', 'old row')",
        )
    )
    said: list[str] = []

    adopted = run_async(
        lambda: adopt_op.adopt(
            make_url(drizzle_db), "test", confirm=lambda _: True, say=said.append
        )
    )

    assert adopted
    assert "  add column feature_requests.web_user_email" in said
    assert run_async(lambda: check_op.check(make_url(drizzle_db), "test", say=said.append)) == []
    assert run_async(lambda: fetchval(drizzle_db, "SELECT count(*) FROM feature_requests")) == 1
