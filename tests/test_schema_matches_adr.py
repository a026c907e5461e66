"""Our migrations build the ADR's schema, catalog for catalog, plus only DESIGN.md's additions.

One database is built from the DDL drizzle-kit generates for the ADR's schema.ts
(tests/fixtures/drizzle_schema.sql), another by our Alembic migrations; both are read from
pg_catalog (storage/catalog.py) and compared: enum types and value order, tables, columns
in order with types, nullability, defaults and identity, constraints by name and
definition, indexes, sequences.
"""

from __future__ import annotations

from storage import catalog
from storage.migrate import downgrade, model_drift, upgrade_to_head
from tests.dbops_fixtures import drizzle_db, empty_db, fetchval, second_empty_db
from tests.pg import run_async

__all__ = ["drizzle_db", "empty_db", "second_empty_db"]  # fixtures used by name

# DESIGN.md, "Data": what we add to the ADR's schema, and nothing else.
ADR_INDEXES = (
    "feature_requests_slack_thread_idx",
    "feature_requests_issue_repo_idx",
    "feature_requests_status_idx",
    "feature_requests_created_at_idx",
    "request_messages_request_created_idx",
)
# Migration 0003: the indexes the web dashboard's request list needs.
DASHBOARD_INDEXES = (
    "feature_requests_created_id_idx",
    "feature_requests_status_created_idx",
    "feature_requests_repo_created_idx",
    "feature_requests_origin_created_idx",
    "feature_requests_requester_created_idx",
    "feature_requests_search_idx",
)


def snapshot(url: str) -> catalog.Catalog:
    return run_async(lambda: catalog.snapshot_url(url))


def test_drizzle_fixture_is_the_adrs_schema(drizzle_db: str) -> None:
    adr = snapshot(drizzle_db)

    assert sorted(adr.enums) == [
        "config_type",
        "message_source",
        "message_type",
        "request_origin",
        "request_status",
        "task_status",
    ]
    assert len(adr.enums["request_status"]) == 7
    assert len(adr.enums["message_type"]) == 17
    assert {name: len(t.columns) for name, t in adr.tables.items()} == {
        "app_config": 5,
        "feature_requests": 40,
        "request_messages": 9,
    }
    names = {con for t in adr.tables.values() for con in t.constraints}
    assert {
        "app_config_type_unique",
        "feature_requests_request_id_unique",
        "feature_requests_issue_id_unique",
        "request_messages_request_id_feature_requests_request_id_fk",
    } <= names
    assert all(not t.indexes for t in adr.tables.values())


def test_migrated_schema_is_the_adrs_plus_design_additions(
    drizzle_db: str, second_empty_db: str
) -> None:
    upgrade_to_head(second_empty_db)
    adr, ours = snapshot(drizzle_db), snapshot(second_empty_db)

    differences = {str(d) for d in catalog.diff(adr, ours, column_order=True)}

    own_tables = {name for name in ours.tables if name.startswith("clarity_")}
    assert own_tables, "the initial migration adds Clarity's own tables"
    assert differences == {
        "enum request_status: extra value 'cancelled'",
        *(f"index {name}: extra" for name in ADR_INDEXES + DASHBOARD_INDEXES),
        "table alembic_version: extra",
        *(f"table {name}: extra" for name in own_tables),
    }
    # `cancelled` comes last, so the ADR's values keep their order (and sort order).
    assert ours.enums["request_status"] == (*adr.enums["request_status"], "cancelled")


def test_models_and_migrations_do_not_drift(db_url: str) -> None:
    assert run_async(lambda: model_drift(db_url)) == []


def test_initial_migration_downgrades_to_nothing_and_upgrades_again(db_url: str) -> None:
    before = snapshot(db_url)

    downgrade(db_url, "base")
    emptied = snapshot(db_url)
    assert set(emptied.tables) <= {"alembic_version"}
    assert emptied.enums == {}
    assert emptied.sequences == {}
    assert run_async(lambda: fetchval(db_url, "SELECT count(*) FROM alembic_version")) == 0

    upgrade_to_head(db_url)
    assert catalog.diff(before, snapshot(db_url), column_order=True) == []
