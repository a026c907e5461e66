"""`clarity db drop-legacy`: seed 001 phase 6, guarded by a verified copy.

Everything happens in one source transaction: Clarity's tables are locked against writes
(SHARE mode: readers carry on), the target is verified against that frozen state, and only
then are the tables, the enum types and drizzle's migration table dropped. Nothing is
dropped with CASCADE, so an object of another application that depends on ours makes the
whole drop fail and roll back instead of taking that object with it.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from storage import catalog
from storage.dbops.check import model_enums
from storage.dbops.connection import DbOpsError, connect, quote_ident, same_database
from storage.dbops.copy import compare_locked, format_reports, plans_for
from storage.migrate import alembic_config

DRIZZLE_TABLE = "__drizzle_migrations"
LOCK_TIMEOUT = "5s"


def _our_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


async def drop_legacy(source_url: URL, target_url: URL, *, say: Callable[[str], None]) -> list[str]:
    """Drop Clarity's objects from the source once the target is a verified copy of it."""
    if same_database(source_url, target_url):
        raise DbOpsError("source and target are the same database")
    dropped: list[str] = []
    async with connect(source_url, "source", stable_output=True) as src, src.transaction():
        # Fail fast rather than queue behind (and block) a live application's writes.
        await src.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        source = await catalog.snapshot(src)
        plans = plans_for(source)
        names = [plan.name for plan in plans]
        await src.execute(
            "LOCK TABLE " + ", ".join(f"public.{quote_ident(n)}" for n in names) + " IN SHARE MODE"
        )
        reports = await compare_locked(src, target_url, plans)
        for line in format_reports(reports):
            say(line)
        bad = [r.table for r in reports if not r.match]
        if bad:
            raise DbOpsError(
                f"target is not a verified copy of the source ({', '.join(bad)} differ);"
                " nothing was dropped"
            )

        for name in reversed(names):  # children before parents: no CASCADE needed
            await src.execute(f"DROP TABLE public.{quote_ident(name)}")
            dropped.append(f"table {name}")
        if "alembic_version" in source.tables:
            rows = await src.fetch("SELECT version_num FROM public.alembic_version")
            versions = {str(r["version_num"]) for r in rows}
            if versions <= _our_revisions():
                await src.execute("DROP TABLE public.alembic_version")
                dropped.append("table alembic_version")
            else:
                say("keeping alembic_version: it holds revisions that are not Clarity's")
        for enum in model_enums():
            if enum in source.enums:
                await src.execute(f"DROP TYPE public.{quote_ident(enum)}")
                dropped.append(f"type {enum}")
        for schema in ("drizzle", "public"):
            exists = await src.fetchval(
                "SELECT to_regclass($1) IS NOT NULL",
                f"{quote_ident(schema)}.{quote_ident(DRIZZLE_TABLE)}",
            )
            if exists:
                await src.execute(f"DROP TABLE {quote_ident(schema)}.{quote_ident(DRIZZLE_TABLE)}")
                dropped.append(f"table {schema}.{DRIZZLE_TABLE}")
        # drizzle's migrator made the drizzle schema for its table alone; drop it if now empty.
        empty_drizzle = await src.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = 'drizzle'"
            " AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)"
            " AND NOT EXISTS (SELECT 1 FROM pg_type t WHERE t.typnamespace = n.oid))"
        )
        if empty_drizzle:
            await src.execute("DROP SCHEMA drizzle")
            dropped.append("schema drizzle")
    for item in dropped:
        say(f"dropped {item}")
    return dropped
