"""`clarity db copy`: every Clarity table from one database to another, ids kept, verified.

Seed 001's phases 2 to 4 (pg_dump, import, sequence reset, count check) as one command:

- the source is only read, in one REPEATABLE READ READ ONLY transaction, so the copy and its
  verification see one consistent snapshot even while the application keeps writing;
- the target is written in one transaction, committed only after its row counts and
  checksums equal the source's, so a failed copy leaves nothing behind;
- rows move in keyset-paginated batches (ORDER BY primary key, WHERE key > last), fetched
  from the source and written with binary COPY, so memory stays flat whatever the size.
  COPY writes GENERATED ALWAYS identity columns as given, so ids are kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from sqlalchemy.engine import URL

from storage import catalog
from storage.dbops.connection import DbOpsError, connect, quote_ident, same_database
from storage.dbops.migrate_cmd import current_revision, upgrade_locked
from storage.migrate import head_revision
from storage.models import Base

ADR_TABLES = ("app_config", "feature_requests", "request_messages")
DEFAULT_BATCH_SIZE = 5000


def clarity_tables() -> list[str]:
    """Every table of the models, parents before children (foreign-key order)."""
    return [t.name for t in Base.metadata.sorted_tables]


@dataclass(frozen=True)
class TablePlan:
    """A table to copy or verify: its columns (in source order) and primary key."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


@dataclass(frozen=True)
class Checksum:
    """Row count and an order-independent content hash of one table."""

    rows: int
    digest: int

    @property
    def short(self) -> str:
        """Twelve hex digits to show the operator."""
        return hashlib.md5(
            f"{self.rows}:{self.digest}".encode(), usedforsecurity=False
        ).hexdigest()[:12]


@dataclass(frozen=True)
class TableReport:
    """Source and target side of one table after a copy or a verification."""

    table: str
    source: Checksum
    target: Checksum | None
    copied: int | None = None
    note: str = ""

    @property
    def match(self) -> bool:
        """Counts and checksums are equal."""
        return self.target is not None and self.source == self.target


class Progress:
    """A one-line progress bar on a terminal; one line per table otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.table = ""
        self.total = 0
        self.done = 0
        self.started = 0.0
        self.last_draw = 0.0

    def start(self, table: str, total: int) -> None:
        """Begin a table of `total` rows."""
        self.table, self.total, self.done = table, total, 0
        self.started = self.last_draw = time.monotonic()
        self._draw(force=True)

    def advance(self, rows: int) -> None:
        """Count `rows` more rows as copied."""
        self.done += rows
        self._draw()

    def finish(self) -> None:
        """End the table's line."""
        elapsed = time.monotonic() - self.started
        if self.tty:
            self._draw(force=True)
            self.stream.write("\n")
        else:
            self.stream.write(f"copied {self.table}: {self.done} rows in {elapsed:.1f} s\n")
        self.stream.flush()

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.tty or (not force and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.width * min(fraction, 1.0))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.table:<28} [{bar}] {fraction:4.0%} {self.done}/{self.total}")
        self.stream.flush()


def _cols(columns: Sequence[str]) -> str:
    return ", ".join(quote_ident(c) for c in columns)


async def checksum(conn: Any, plan: TablePlan) -> Checksum:
    """Count and sum of a 64-bit hash of each row's text over `plan.columns`.

    A sum does not depend on row order or physical layout, and the server aggregates it in
    one pass with constant memory. Both connections pin the settings that shape the text
    (DateStyle, TimeZone, …), see connection.STABLE_OUTPUT_SETTINGS.
    """
    row_text = f"ROW({_cols(plan.columns)})::text"
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(('x' || substr(md5({row_text}), 1, 16))"
        f"::bit(64)::bigint::numeric), 0) AS h FROM public.{quote_ident(plan.name)}"
    )
    return Checksum(rows=int(row["n"]), digest=int(row["h"]))


def plans_for(source: catalog.Catalog) -> list[TablePlan]:
    """The Clarity tables the source has, in foreign-key order."""
    plans = []
    for name in clarity_tables():
        table = source.tables.get(name)
        if table is None:
            continue
        key = table.primary_key()
        if not key:
            raise DbOpsError(f"source table {name} has no primary key; cannot copy it in batches")
        plans.append(TablePlan(name, tuple(c.name for c in table.columns), tuple(key)))
    if not plans:
        raise DbOpsError(
            "the source has none of Clarity's tables (" + ", ".join(ADR_TABLES) + ", …)"
        )
    return plans


def _compatibility_problems(
    plans: list[TablePlan], source: catalog.Catalog, target: catalog.Catalog
) -> list[str]:
    """Why rows of the source could not land in the target unchanged, if they couldn't."""
    problems = []
    for plan in plans:
        table = target.tables.get(plan.name)
        if table is None:
            problems.append(f"table {plan.name}: not in the target")
            continue
        for column in plan.columns:
            if table.column(column) is None:
                problems.append(f"column {plan.name}.{column}: not in the target")
        for target_column in table.columns:
            needs_value = (
                target_column.not_null
                and target_column.default is None
                and not target_column.identity
                and target_column.generated is None
            )
            if target_column.name not in plan.columns and needs_value:
                problems.append(
                    f"column {plan.name}.{target_column.name}: required, not in the source"
                )
    for d in catalog.diff_enums(target.enums, source.enums):
        if d.kind == "extra" and d.value is not None:
            problems.append(f"enum {d.name}: source has value {d.value!r}, the target does not")
    return problems


async def _compare(
    source_conn: Any, target_conn: Any, plans: list[TablePlan], copied: dict[str, int]
) -> list[TableReport]:
    target = await catalog.snapshot(target_conn)
    reports = []
    for plan in plans:
        table = target.tables.get(plan.name)
        lacking = [c for c in plan.columns if table is None or table.column(c) is None]
        if table is None or lacking:
            note = "missing in target" if table is None else f"target lacks {', '.join(lacking)}"
            reports.append(
                TableReport(plan.name, await checksum(source_conn, plan), None, note=note)
            )
            continue
        # Two servers, two connections: hash both sides at once.
        src, tgt = await asyncio.gather(checksum(source_conn, plan), checksum(target_conn, plan))
        reports.append(TableReport(plan.name, src, tgt, copied=copied.get(plan.name)))
    return reports


def format_reports(reports: list[TableReport]) -> list[str]:
    """The verification table the operator reads."""
    lines = [f"{'table':<28} {'source rows':>12} {'target rows':>12}  {'checksum':<12}  match"]
    for r in reports:
        target_rows = str(r.target.rows) if r.target else "-"
        status = "yes" if r.match else ("NO" + (f" ({r.note})" if r.note else ""))
        lines.append(
            f"{r.table:<28} {r.source.rows:>12} {target_rows:>12}  {r.source.short:<12}  {status}"
        )
    return lines


async def _copy_table(
    source_conn: Any, target_conn: Any, plan: TablePlan, batch_size: int, progress: Progress
) -> int:
    columns = _cols(plan.columns)
    order = _cols(plan.key)
    positions = [plan.columns.index(k) for k in plan.key]
    placeholders = ", ".join(f"${i + 2}" for i in range(len(plan.key)))
    table = f"public.{quote_ident(plan.name)}"
    first = f"SELECT {columns} FROM {table} ORDER BY {order} LIMIT $1"
    after = (
        f"SELECT {columns} FROM {table} WHERE ({order}) > ({placeholders})"
        f" ORDER BY {order} LIMIT $1"
    )
    total = int(await source_conn.fetchval(f"SELECT count(*) FROM {table}"))
    progress.start(plan.name, total)
    copied = 0
    last: list[Any] | None = None
    while True:
        if last is None:
            rows = await source_conn.fetch(first, batch_size)
        else:
            rows = await source_conn.fetch(after, batch_size, *last)
        if not rows:
            break
        await target_conn.copy_records_to_table(
            plan.name, records=rows, columns=list(plan.columns), schema_name="public"
        )
        copied += len(rows)
        progress.advance(len(rows))
        last = [rows[-1][i] for i in positions]
        if len(rows) < batch_size:
            break
    progress.finish()
    return copied


async def _reset_sequences(conn: Any, target: catalog.Catalog) -> None:
    """Point every identity sequence past the largest id, so the next insert gets max+1."""
    for name in clarity_tables():
        table = target.tables.get(name)
        if table is None:
            continue
        for column in table.identity_columns():
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence($1, $2),"
                f" coalesce(max({quote_ident(column)}), 1), max({quote_ident(column)}) IS NOT NULL)"
                f" FROM public.{quote_ident(name)}",
                f"public.{quote_ident(name)}",
                column,
            )


async def _prepare_target(conn: Any, url: URL, say: Callable[[str], None]) -> None:
    """Migrate the target to head, unless it is a database we must not touch that way."""
    revision = await current_revision(conn)
    if revision is None:
        present = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relname = ANY($1::text[])",
            list(clarity_tables()),
        )
        if present:
            names = ", ".join(sorted(str(r["relname"]) for r in present))
            raise DbOpsError(
                f"target has Clarity tables ({names}) but no alembic_version: it was made by"
                " the TypeScript worker; run `clarity db adopt` on it first"
            )
    if revision != head_revision():
        say(f"preparing target: migrating to head ({head_revision()})")
        await upgrade_locked(url)


async def copy(
    source_url: URL,
    target_url: URL,
    *,
    truncate: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    say: Callable[[str], None],
    progress: Progress | None = None,
) -> list[TableReport]:
    """Copy every Clarity table the source has into the target and verify it."""
    if same_database(source_url, target_url):
        raise DbOpsError("source and target are the same database")
    if batch_size < 1:
        raise DbOpsError("--batch-size must be at least 1")
    progress = progress or Progress()
    async with (
        connect(source_url, "source", read_only=True, stable_output=True) as src,
        connect(target_url, "target", stable_output=True) as tgt,
    ):
        await _prepare_target(tgt, target_url, say)
        async with src.transaction(isolation="repeatable_read", readonly=True):
            source = await catalog.snapshot(src)
            target = await catalog.snapshot(tgt)
            plans = plans_for(source)
            problems = _compatibility_problems(plans, source, target)
            if problems:
                raise DbOpsError("source rows do not fit the target: " + "; ".join(problems))
            async with tgt.transaction():
                every = [n for n in clarity_tables() if n in target.tables]
                busy = [
                    n
                    for n in every
                    if await tgt.fetchval(f"SELECT EXISTS (SELECT 1 FROM public.{quote_ident(n)})")
                ]
                if busy and not truncate:
                    raise DbOpsError(
                        f"target is not empty (rows in {', '.join(busy)});"
                        " pass --truncate to replace its contents"
                    )
                if busy:
                    tables = ", ".join(f"public.{quote_ident(n)}" for n in every)
                    await tgt.execute(f"TRUNCATE {tables} RESTART IDENTITY")
                    say(f"emptied target tables: {', '.join(every)}")
                copied = {}
                for plan in plans:
                    copied[plan.name] = await _copy_table(src, tgt, plan, batch_size, progress)
                await _reset_sequences(tgt, target)
                reports = await _compare(src, tgt, plans, copied)
                if not all(r.match for r in reports):
                    for line in format_reports(reports):
                        say(line)
                    raise DbOpsError("verification failed; the target was rolled back")
    for line in format_reports(reports):
        say(line)
    return reports


async def verify(
    source_url: URL, target_url: URL, *, say: Callable[[str], None]
) -> list[TableReport]:
    """Compare row counts and checksums of every Clarity table the source has; change nothing."""
    if same_database(source_url, target_url):
        raise DbOpsError("source and target are the same database")
    async with (
        connect(source_url, "source", read_only=True, stable_output=True) as src,
        connect(target_url, "target", read_only=True, stable_output=True) as tgt,
        src.transaction(isolation="repeatable_read", readonly=True),
        tgt.transaction(isolation="repeatable_read", readonly=True),
    ):
        plans = plans_for(await catalog.snapshot(src))
        reports = await _compare(src, tgt, plans, {})
    for line in format_reports(reports):
        say(line)
    return reports


async def compare_locked(
    source_conn: Any, target_url: URL, plans: list[TablePlan]
) -> list[TableReport]:
    """Verification from a source connection the caller holds (and has locked)."""
    async with (
        connect(target_url, "target", read_only=True, stable_output=True) as tgt,
        tgt.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await _compare(source_conn, tgt, plans, {})
