"""`clarity db adopt`: take over a database the TypeScript worker created with drizzle-kit.

The reference is our initial migration itself: inside a savepoint, revision 0001 runs into
a scratch schema, we read that schema's catalog and roll the savepoint back. The live
public schema is compared with it; what is missing (an enum value, an index, a table, a
nullable column, a constraint) is created from the reference catalog, anything else that
differs stops the adoption before a single change. Then the result is compared again,
Alembic is stamped at 0001 in the same transaction, and later migrations run as usual.
Rows are never touched.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alembic import command
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage import catalog
from storage.dbops.connection import DbOpsError, connect, quote_ident, quote_literal
from storage.dbops.copy import ADR_TABLES
from storage.dbops.migrate_cmd import current_revision, upgrade_locked
from storage.engine import create_engine
from storage.migrate import MIGRATION_LOCK_KEY, alembic_config

BASE_REVISION = "0001"
LOCK_TIMEOUT = "10s"
# Left alone when present: drizzle-kit's bookkeeping, if an old version kept it in public.
IGNORED_TABLES = frozenset({"__drizzle_migrations"})


@dataclass
class Reconciliation:
    """What adopting needs: statements to run, and differences we refuse to paper over."""

    statements: list[tuple[str, str]] = field(default_factory=list)  # (description, SQL)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _run_alembic(connection: Connection, fn: str, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    getattr(command, fn)(cfg, revision)


async def reference_catalog(conn: AsyncConnection, raw: Any) -> catalog.Catalog:
    """The public schema revision 0001 creates, read from a scratch schema then rolled back."""
    schema = f"clarity_adopt_{secrets.token_hex(4)}"
    nested = await conn.begin_nested()
    try:
        await conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        # Alone on the search_path, the scratch schema receives every unqualified object.
        await conn.exec_driver_sql(f"SET LOCAL search_path = {schema}")
        await conn.run_sync(_run_alembic, "upgrade", BASE_REVISION)
        reference = await catalog.snapshot(raw, schema)
    finally:
        await nested.rollback()
    await conn.exec_driver_sql("SET LOCAL search_path = public")
    return catalog.Catalog(
        schema="public",
        enums=reference.enums,
        tables=reference.tables,
        sequences=reference.sequences,
    ).without_tables({"alembic_version"})


def _column_sql(column: catalog.Column, sequence: catalog.Sequence | None) -> str:
    parts = [quote_ident(column.name), column.type]
    if column.identity and sequence is not None:
        parts.append(
            f"GENERATED {column.identity.upper()} AS IDENTITY (SEQUENCE NAME"
            f" {quote_ident(sequence.name)} START WITH {sequence.start}"
            f" INCREMENT BY {sequence.increment} MINVALUE {sequence.minimum}"
            f" MAXVALUE {sequence.maximum} CACHE {sequence.cache}"
            f"{' CYCLE' if sequence.cycle else ''})"
        )
    if column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    if column.generated is not None:
        parts.append(f"GENERATED ALWAYS AS ({column.generated}) STORED")
    if column.not_null:
        parts.append("NOT NULL")
    return " ".join(parts)


def _owned_sequence(ref: catalog.Catalog, table: str, column: str) -> catalog.Sequence | None:
    return next((s for s in ref.sequences.values() if s.owned_by == (table, column)), None)


def _create_table(ref: catalog.Catalog, table: catalog.Table) -> tuple[str, list[tuple[str, str]]]:
    """CREATE TABLE with its inline constraints; its indexes and foreign keys come after."""
    lines = [_column_sql(c, _owned_sequence(ref, table.name, c.name)) for c in table.columns]
    later = []
    for con in table.constraints.values():
        if con.kind == "foreign key":
            later.append((f"add foreign key {con.name}", _add_constraint(table.name, con)))
        else:
            lines.append(f"CONSTRAINT {quote_ident(con.name)} {con.definition}")
    later += [(f"create index {idx.name}", idx.definition) for idx in table.indexes.values()]
    body = ",\n  ".join(lines)
    return f"CREATE TABLE public.{quote_ident(table.name)} (\n  {body}\n)", later


def _add_constraint(table: str, con: catalog.Constraint) -> str:
    return (
        f"ALTER TABLE public.{quote_ident(table)}"
        f" ADD CONSTRAINT {quote_ident(con.name)} {con.definition}"
    )


def _enum_value_sql(name: str, values: tuple[str, ...], existing: list[str], value: str) -> str:
    """ADD VALUE in the reference's position: after its predecessor, else before the first."""
    index = values.index(value)
    before = [v for v in values[:index] if v in existing]
    after = [v for v in values[index + 1 :] if v in existing]
    where = (
        f" AFTER {quote_literal(before[-1])}"
        if before
        else (f" BEFORE {quote_literal(after[0])}" if after else "")
    )
    return f"ALTER TYPE public.{quote_ident(name)} ADD VALUE {quote_literal(value)}{where}"


def reconcile(reference: catalog.Catalog, live: catalog.Catalog) -> Reconciliation:
    """Sort the differences into what we create and what we refuse."""
    plan = Reconciliation()
    enums: list[tuple[str, str]] = []
    tables: list[tuple[str, str]] = []
    later: list[tuple[str, str]] = []  # foreign keys and indexes, once every table exists
    existing_values = {name: list(values) for name, values in live.enums.items()}

    for d in catalog.diff(reference, live):
        if d.what == "enum" and d.kind == "missing" and d.value is None:
            values = ", ".join(quote_literal(v) for v in reference.enums[d.name])
            sql = f"CREATE TYPE public.{quote_ident(d.name)} AS ENUM ({values})"
            enums.append((f"create enum {d.name}", sql))
        elif d.what == "enum" and d.kind == "missing" and d.value is not None:
            ordered = reference.enums[d.name]
            sql = _enum_value_sql(d.name, ordered, existing_values[d.name], d.value)
            existing_values[d.name].insert(ordered.index(d.value), d.value)
            enums.append((f"add value {d.value!r} to enum {d.name}", sql))
        elif d.what == "enum" and d.kind == "extra" and d.value is None:
            plan.ignored.append(d.name)  # another application's type
        elif d.what == "table" and d.kind == "missing":
            created, after = _create_table(reference, reference.tables[d.name])
            tables.append((f"create table {d.name}", created))
            later += after
        elif d.what == "table" and d.kind == "extra":
            plan.ignored.append(d.name)  # not ours: never touched
        elif d.what == "sequence" and d.kind == "extra":
            plan.ignored.append(d.name)
        elif d.what == "column" and d.kind == "missing":
            assert d.table is not None
            column = reference.tables[d.table].column(d.name.split(".", 1)[1])
            assert column is not None
            if (column.not_null and column.default is None) or column.identity:
                plan.problems.append(f"{d} (required, and existing rows have no value)")
                continue
            sql = (
                f"ALTER TABLE public.{quote_ident(d.table)} ADD COLUMN {_column_sql(column, None)}"
            )
            tables.append((f"add column {d.name}", sql))
        elif d.what == "constraint" and d.kind == "missing":
            assert d.table is not None
            con = reference.tables[d.table].constraints[d.name]
            later.append((f"add constraint {d.name} on {d.table}", _add_constraint(d.table, con)))
        elif d.what == "index" and d.kind == "missing":
            assert d.table is not None
            index = reference.tables[d.table].indexes[d.name]
            later.append((f"create index {d.name}", index.definition))
        else:
            plan.problems.append(str(d))
    plan.statements = enums + tables + later
    return plan


def _remaining(reference: catalog.Catalog, live: catalog.Catalog) -> list[str]:
    """Differences left after adopting, other than objects that are not ours."""
    return [
        str(d)
        for d in catalog.diff(reference, live)
        if not (d.kind == "extra" and d.what in ("table", "sequence", "enum") and d.value is None)
    ]


async def adopt(
    url: URL,
    label: str,
    *,
    confirm: Callable[[str], bool],
    say: Callable[[str], None],
) -> bool:
    """Bring a drizzle-kit database to our schema and stamp it; False when already ours."""
    async with connect(url, label) as conn:
        if await current_revision(conn) is not None:
            say(
                f"already managed by Clarity's migrations ({await current_revision(conn)});"
                " use `clarity db migrate`"
            )
            return False

    # A string, so create_engine normalizes the driver whatever URL object we were given.
    dsn = url.render_as_string(hide_password=False)
    engine = create_engine(dsn, pool_size=1, max_overflow=0, statement_timeout_ms=None)
    try:
        async with engine.connect() as conn:
            raw: Any = (await conn.get_raw_connection()).driver_connection
            # Same lock as `clarity db migrate`: nobody migrates while we adopt.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await conn.exec_driver_sql("SET LOCAL search_path = public")
            if await current_revision(raw) is not None:
                say("another process adopted or migrated this database meanwhile")
                return False
            live = (await catalog.snapshot(raw)).without_tables(IGNORED_TABLES)
            absent = [t for t in ADR_TABLES if t not in live.tables]
            if len(absent) == len(ADR_TABLES):
                raise DbOpsError(
                    "no TypeScript worker schema here (no app_config, feature_requests or"
                    " request_messages); for a new database run `clarity db migrate`"
                )
            reference = await reference_catalog(conn, raw)
            plan = reconcile(reference, live)
            if plan.ignored:
                say(f"leaving alone objects that are not Clarity's: {', '.join(plan.ignored)}")
            if plan.problems:
                for line in plan.problems:
                    say(f"  {line}")
                raise DbOpsError(
                    f"cannot adopt: {len(plan.problems)} difference(s) from Clarity's initial"
                    " schema that adopting would not fix (listed above); nothing was changed"
                )
            if plan.statements:
                say(f"the database lacks {len(plan.statements)} part(s) of Clarity's schema:")
                for description, _ in plan.statements:
                    say(f"  {description}")
            else:
                say("the schema already matches Clarity's initial schema")
            if not confirm(f"adopt {url.database} (stamping revision {BASE_REVISION})?"):
                raise DbOpsError("not confirmed; nothing was changed")
            for _, sql in plan.statements:
                await raw.execute(sql)
            left = _remaining(
                reference, (await catalog.snapshot(raw)).without_tables(IGNORED_TABLES)
            )
            if left:
                raise DbOpsError(
                    "adopting left differences, so it was rolled back: " + "; ".join(left)
                )
            await conn.run_sync(_run_alembic, "stamp", BASE_REVISION)
            await conn.commit()
    finally:
        await engine.dispose()
    say(f"stamped revision {BASE_REVISION}")
    applied = await upgrade_locked(url)
    if applied:
        say(f"migrated to head: applied {', '.join(applied)}")
    return True
