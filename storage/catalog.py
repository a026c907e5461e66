"""A live database's schema read from pg_catalog, and a readable diff between two of them.

Used to prove our migrations build the ADR's schema (plus DESIGN.md's additions), by
`clarity db check` for enum values (which Alembic does not compare) and by `clarity db adopt`
to decide what a drizzle-kit database lacks.

Every name and expression is rendered with the snapshotted schema alone on the search_path,
so two schemas (or two databases) compare equal when they hold the same objects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from storage.engine import asyncpg_dsn

Kind = Literal["missing", "extra", "changed"]
What = Literal["enum", "table", "column", "constraint", "index", "sequence"]

CONSTRAINT_KINDS = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}
IDENTITY_KINDS = {"": "", "a": "always", "d": "by default"}


@dataclass(frozen=True)
class Column:
    """One column as PostgreSQL stores it."""

    name: str
    type: str
    not_null: bool
    default: str | None
    identity: str = ""  # "", "always" or "by default"
    generated: str | None = None  # expression of a STORED generated column


@dataclass(frozen=True)
class Constraint:
    """A table constraint; `definition` is pg_get_constraintdef's text."""

    name: str
    kind: str
    definition: str


@dataclass(frozen=True)
class Index:
    """An index that backs no constraint; `definition` is pg_get_indexdef without schema."""

    name: str
    definition: str


@dataclass(frozen=True)
class Sequence:
    """A sequence, with the column that owns it (identity or serial) if any."""

    name: str
    data_type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    owned_by: tuple[str, str] | None = None  # (table, column)


@dataclass(frozen=True)
class Table:
    """A table with its columns in order, its constraints and its other indexes."""

    name: str
    columns: tuple[Column, ...]
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    indexes: Mapping[str, Index] = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        """The column called `name`, if the table has one."""
        return next((c for c in self.columns if c.name == name), None)

    def identity_columns(self) -> list[str]:
        """Names of the identity columns."""
        return [c.name for c in self.columns if c.identity]

    def primary_key(self) -> list[str]:
        """The primary key's columns in key order (empty when there is none)."""
        for con in self.constraints.values():
            if con.kind == "primary key":
                inner = con.definition[con.definition.index("(") + 1 : con.definition.rindex(")")]
                return [_unquote(part.strip()) for part in inner.split(",")]
        return []


@dataclass(frozen=True)
class Catalog:
    """The objects of one schema: enum types, tables, sequences."""

    schema: str
    enums: Mapping[str, tuple[str, ...]]
    tables: Mapping[str, Table]
    sequences: Mapping[str, Sequence]

    def without_tables(self, names: Iterable[str]) -> Catalog:
        """The same catalog with some tables (and the sequences they own) left out."""
        drop = set(names)
        return Catalog(
            schema=self.schema,
            enums=self.enums,
            tables={n: t for n, t in self.tables.items() if n not in drop},
            sequences={
                n: s
                for n, s in self.sequences.items()
                if not (s.owned_by and s.owned_by[0] in drop)
            },
        )


@dataclass(frozen=True)
class Difference:
    """One way `actual` differs from `expected`, with a readable line."""

    kind: Kind
    what: What
    name: str
    line: str
    table: str | None = None
    value: str | None = None  # the enum value, for missing/extra enum values

    def __str__(self) -> str:
        return self.line


def _unquote(ident: str) -> str:
    if ident.startswith('"') and ident.endswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


_ENUMS = """
SELECT t.typname AS name, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.typnamespace = $1
GROUP BY t.typname
"""

_TABLES = """
SELECT relname AS name FROM pg_class
WHERE relnamespace = $1 AND relkind IN ('r', 'p') AND NOT relispartition
ORDER BY relname
"""

_COLUMNS = """
SELECT c.relname AS table_name, a.attname AS name,
       format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attcollation <> 0 AND a.attcollation <> ty.typcollation
                 THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END AS type,
       a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS expr,
       a.attidentity::text AS identity, a.attgenerated::text AS generated
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname, a.attnum
"""

# contype 'n' (NOT NULL constraints, PostgreSQL 18+) is left out: attnotnull says the same
# thing, and older servers have no such rows.
_CONSTRAINTS = """
SELECT c.relname AS table_name, con.conname AS name, con.contype::text AS kind,
       pg_get_constraintdef(con.oid) AS definition
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
WHERE c.relnamespace = $1 AND con.contype IN ('p', 'u', 'f', 'c', 'x')
ORDER BY c.relname, con.conname
"""

# Indexes that back a constraint are part of that constraint; pg_get_indexdef always
# qualifies the table with its schema, which we strip so two schemas compare equal.
_INDEXES = """
SELECT t.relname AS table_name, i.relname AS name,
       replace(replace(pg_get_indexdef(i.oid),
               ' ON ONLY ' || quote_ident(n.nspname) || '.', ' ON ONLY '),
               ' ON ' || quote_ident(n.nspname) || '.', ' ON ') AS definition
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE t.relnamespace = $1 AND t.relkind IN ('r', 'p') AND NOT t.relispartition
  AND NOT EXISTS (
    SELECT 1 FROM pg_constraint con
    WHERE con.conindid = x.indexrelid AND con.conrelid = x.indrelid
      AND con.contype IN ('p', 'u', 'x'))
ORDER BY t.relname, i.relname
"""

_SEQUENCES = """
SELECT c.relname AS name, format_type(s.seqtypid, NULL) AS data_type,
       s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS minimum,
       s.seqmax AS maximum, s.seqcache AS cache, s.seqcycle AS cycle,
       t.relname AS owner_table, a.attname AS owner_column
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE c.relnamespace = $1
ORDER BY c.relname
"""


async def snapshot(conn: Any, schema: str = "public") -> Catalog:
    """Read one schema's enums, tables, constraints, indexes and sequences (asyncpg)."""
    async with conn.transaction():
        previous = await conn.fetchval("SELECT current_setting('search_path')")
        # Names render unqualified only when their schema is alone on the search_path.
        await conn.execute("SELECT set_config('search_path', quote_ident($1), true)", schema)
        try:
            ns = await conn.fetchval("SELECT oid FROM pg_namespace WHERE nspname = $1", schema)
            if ns is None:
                return Catalog(schema=schema, enums={}, tables={}, sequences={})
            enum_rows = await conn.fetch(_ENUMS, ns)
            table_rows = await conn.fetch(_TABLES, ns)
            column_rows = await conn.fetch(_COLUMNS, ns)
            constraint_rows = await conn.fetch(_CONSTRAINTS, ns)
            index_rows = await conn.fetch(_INDEXES, ns)
            sequence_rows = await conn.fetch(_SEQUENCES, ns)
        finally:
            await conn.execute("SELECT set_config('search_path', $1, true)", previous)

    enums = {str(r["name"]): tuple(str(v) for v in r["labels"]) for r in enum_rows}

    columns: dict[str, list[Column]] = {}
    for r in column_rows:
        generated = str(r["generated"] or "")
        expr = None if r["expr"] is None else str(r["expr"])
        columns.setdefault(str(r["table_name"]), []).append(
            Column(
                name=str(r["name"]),
                type=str(r["type"]),
                not_null=bool(r["not_null"]),
                default=None if generated else expr,
                identity=IDENTITY_KINDS.get(str(r["identity"] or ""), str(r["identity"])),
                generated=expr if generated else None,
            )
        )
    constraints: dict[str, dict[str, Constraint]] = {}
    for r in constraint_rows:
        constraints.setdefault(str(r["table_name"]), {})[str(r["name"])] = Constraint(
            name=str(r["name"]),
            kind=CONSTRAINT_KINDS[str(r["kind"])],
            definition=str(r["definition"]),
        )
    indexes: dict[str, dict[str, Index]] = {}
    for r in index_rows:
        indexes.setdefault(str(r["table_name"]), {})[str(r["name"])] = Index(
            name=str(r["name"]), definition=str(r["definition"])
        )
    tables = {
        name: Table(
            name=name,
            columns=tuple(columns.get(name, ())),
            constraints=constraints.get(name, {}),
            indexes=indexes.get(name, {}),
        )
        for name in (str(r["name"]) for r in table_rows)
    }
    sequences = {
        str(r["name"]): Sequence(
            name=str(r["name"]),
            data_type=str(r["data_type"]),
            start=int(r["start"]),
            increment=int(r["increment"]),
            minimum=int(r["minimum"]),
            maximum=int(r["maximum"]),
            cache=int(r["cache"]),
            cycle=bool(r["cycle"]),
            owned_by=(str(r["owner_table"]), str(r["owner_column"]))
            if r["owner_table"] is not None
            else None,
        )
        for r in sequence_rows
    }
    return Catalog(schema=schema, enums=enums, tables=tables, sequences=sequences)


async def snapshot_url(url: str, schema: str = "public") -> Catalog:
    """Connect to `url`, snapshot one schema, disconnect."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await snapshot(conn, schema)
    finally:
        await conn.close()


def _q(value: str | None) -> str:
    return "none" if value is None else value


def diff_enums(
    expected: Mapping[str, Collection[str]], actual: Mapping[str, Collection[str]]
) -> list[Difference]:
    """Missing and extra enum types, missing and extra values, and values out of order."""
    out: list[Difference] = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            out.append(Difference("missing", "enum", name, f"enum {name}: missing"))
            continue
        if name not in expected:
            out.append(Difference("extra", "enum", name, f"enum {name}: extra"))
            continue
        want, have = list(expected[name]), list(actual[name])
        for value in want:
            if value not in have:
                line = f"enum {name}: missing value {value!r}"
                out.append(Difference("missing", "enum", name, line, value=value))
        for value in have:
            if value not in want:
                line = f"enum {name}: extra value {value!r}"
                out.append(Difference("extra", "enum", name, line, value=value))
        common_want = [v for v in want if v in have]
        common_have = [v for v in have if v in want]
        if common_want != common_have:
            line = (
                f"enum {name}: values in a different order "
                f"({', '.join(common_have)}; expected {', '.join(common_want)})"
            )
            out.append(Difference("changed", "enum", name, line))
    return out


def _diff_columns(expected: Table, actual: Table, *, column_order: bool) -> Iterable[Difference]:
    t = expected.name
    for col in expected.columns:
        have = actual.column(col.name)
        qualified = f"{t}.{col.name}"
        if have is None:
            yield Difference("missing", "column", qualified, f"column {qualified}: missing", t)
            continue
        checks = (
            ("type", col.type, have.type),
            ("not null", str(col.not_null).lower(), str(have.not_null).lower()),
            ("default", _q(col.default), _q(have.default)),
            ("identity", col.identity or "none", have.identity or "none"),
            ("generated", _q(col.generated), _q(have.generated)),
        )
        for attr, want, found in checks:
            if want != found:
                line = f"column {qualified}: {attr} {found}, expected {want}"
                yield Difference("changed", "column", qualified, line, t)
    for col in actual.columns:
        if expected.column(col.name) is None:
            qualified = f"{t}.{col.name}"
            yield Difference("extra", "column", qualified, f"column {qualified}: extra", t)
    if column_order:
        want_order = [c.name for c in expected.columns if actual.column(c.name)]
        found_order = [c.name for c in actual.columns if expected.column(c.name)]
        if want_order != found_order:
            line = f"table {t}: columns in a different order ({', '.join(found_order)})"
            yield Difference("changed", "table", t, line, t)


def _diff_constraints(expected: Table, actual: Table) -> Iterable[Difference]:
    t = expected.name
    for name, con in expected.constraints.items():
        have = actual.constraints.get(name)
        label = f"constraint {name} on {t}"
        if have is None:
            yield Difference("missing", "constraint", name, f"{label}: missing", t)
        elif (have.kind, have.definition) != (con.kind, con.definition):
            line = f"{label}: {have.definition}, expected {con.definition}"
            yield Difference("changed", "constraint", name, line, t)
    for name in actual.constraints.keys() - expected.constraints.keys():
        yield Difference("extra", "constraint", name, f"constraint {name} on {t}: extra", t)


def _diff_indexes(expected: Table, actual: Table) -> Iterable[Difference]:
    t = expected.name
    for name, idx in expected.indexes.items():
        have = actual.indexes.get(name)
        if have is None:
            yield Difference("missing", "index", name, f"index {name}: missing", t)
        elif have.definition != idx.definition:
            line = f"index {name}: {have.definition}, expected {idx.definition}"
            yield Difference("changed", "index", name, line, t)
    for name in sorted(actual.indexes.keys() - expected.indexes.keys()):
        yield Difference("extra", "index", name, f"index {name}: extra", t)


def _diff_sequences(
    expected: Catalog, actual: Catalog, skip_tables: set[str]
) -> Iterable[Difference]:
    def skipped(seq: Sequence) -> bool:
        return seq.owned_by is not None and seq.owned_by[0] in skip_tables

    for name, seq in expected.sequences.items():
        have = actual.sequences.get(name)
        if have is None:
            if not skipped(seq):
                yield Difference("missing", "sequence", name, f"sequence {name}: missing")
            continue
        for attr in ("data_type", "start", "increment", "minimum", "maximum", "cache", "cycle"):
            want, found = getattr(seq, attr), getattr(have, attr)
            if want != found:
                line = f"sequence {name}: {attr} {found}, expected {want}"
                yield Difference("changed", "sequence", name, line)
        if seq.owned_by != have.owned_by:
            own = ".".join(have.owned_by) if have.owned_by else "nothing"
            want_own = ".".join(seq.owned_by) if seq.owned_by else "nothing"
            line = f"sequence {name}: owned by {own}, expected {want_own}"
            yield Difference("changed", "sequence", name, line)
    for name in sorted(actual.sequences.keys() - expected.sequences.keys()):
        if not skipped(actual.sequences[name]):
            yield Difference("extra", "sequence", name, f"sequence {name}: extra")


def diff(expected: Catalog, actual: Catalog, *, column_order: bool = False) -> list[Difference]:
    """How `actual` differs from `expected`; a missing or extra table is one line, not many."""
    out = diff_enums(expected.enums, actual.enums)
    whole: set[str] = set()
    for name in sorted(expected.tables.keys() | actual.tables.keys()):
        if name not in actual.tables:
            out.append(Difference("missing", "table", name, f"table {name}: missing", name))
            whole.add(name)
        elif name not in expected.tables:
            out.append(Difference("extra", "table", name, f"table {name}: extra", name))
            whole.add(name)
        else:
            want, have = expected.tables[name], actual.tables[name]
            out.extend(_diff_columns(want, have, column_order=column_order))
            out.extend(_diff_constraints(want, have))
            out.extend(_diff_indexes(want, have))
    out.extend(_diff_sequences(expected, actual, whole))
    return out
