"""`clarity db check`: the live database against the models and the migration head.

Read-only, so it is fit for CI against a production replica. Alembic's autogenerate
comparison covers tables, columns, types, nullability, defaults, indexes, unique and
foreign-key constraints; it does not look at enum values, so those come from our catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Enum as SAEnum
from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL

from storage import catalog
from storage.dbops.connection import connect
from storage.dbops.migrate_cmd import current_revision
from storage.migrate import head_revision, model_drift, pending_revisions
from storage.models import Base

# Tables that are in a Clarity database on purpose but not in the models.
UNMODELLED_TABLES = frozenset({"alembic_version", "__drizzle_migrations"})


def model_enums(metadata: MetaData = Base.metadata) -> dict[str, tuple[str, ...]]:
    """Every named enum type the models use, with its values in order."""
    out: dict[str, tuple[str, ...]] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, SAEnum) and column.type.name:
                out[column.type.name] = tuple(column.type.enums)
    return out


def _type(value: Any) -> str:
    try:
        return str(value.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    except Exception:  # a reflected type the dialect cannot render: show it as Python sees it
        return repr(value)


def _default(value: Any) -> str:
    if value is None:
        return "none"
    text = getattr(value, "arg", value)
    return str(getattr(text, "text", text))


def format_drift(entry: Any) -> list[str]:
    """Readable lines for one entry of Alembic's compare_metadata output."""
    if isinstance(entry, list):
        return [line for item in entry for line in format_drift(item)]
    op = entry[0]
    if op in ("add_table", "remove_table"):
        state = "missing" if op == "add_table" else "extra"
        return [f"table {entry[1].name}: {state}"]
    if op in ("add_column", "remove_column"):
        state = "missing" if op == "add_column" else "extra"
        return [f"column {entry[2]}.{entry[3].name}: {state}"]
    if op in ("add_index", "remove_index"):
        state = "missing" if op == "add_index" else "extra"
        return [f"index {entry[1].name}: {state}"]
    if op in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        state = "missing" if op.startswith("add") else "extra"
        con = entry[1]
        return [f"constraint {con.name} on {con.table.name}: {state}"]
    if op in ("modify_type", "modify_nullable", "modify_default"):
        _, _, table, column, _, found, wanted = entry
        where = f"column {table}.{column}"
        if op == "modify_type":
            return [f"{where}: type {_type(found)}, expected {_type(wanted)}"]
        if op == "modify_nullable":
            label = {True: "nullable", False: "not null"}
            return [f"{where}: {label[bool(found)]}, expected {label[bool(wanted)]}"]
        return [f"{where}: default {_default(found)}, expected {_default(wanted)}"]
    return [f"{op}: {entry[1:]!r}"]


def _ignored(entry: Any) -> bool:
    return (
        isinstance(entry, tuple)
        and entry[0] == "remove_table"
        and entry[1].name in UNMODELLED_TABLES
    )


async def check(url: URL, label: str, *, say: Callable[[str], None]) -> list[str]:
    """Every difference between the database and the models/head; empty when in step."""
    problems: list[str] = []
    async with connect(url, label, read_only=True) as conn:
        current = await current_revision(conn)
        live = await catalog.snapshot(conn)
    head = head_revision()
    if current is None:
        problems.append(
            "alembic_version: missing (never migrated: run `clarity db migrate`,"
            " or `clarity db adopt` for the TypeScript worker's database)"
        )
    elif current != head:
        try:
            pending = ", ".join(pending_revisions(current))
            problems.append(f"revision {current}: behind head {head} (pending: {pending})")
        except Exception:  # alembic cannot place a revision it does not have
            problems.append(f"revision {current}: not in migrations/versions (head is {head})")

    drift = await model_drift(url.render_as_string(hide_password=False))
    for entry in drift:
        if not _ignored(entry):
            problems.extend(format_drift(entry))

    expected = model_enums()
    present = {name: values for name, values in live.enums.items() if name in expected}
    problems.extend(str(d) for d in catalog.diff_enums(expected, present))

    for line in problems:
        say(line)
    if not problems:
        say(f"database matches the models at head ({head})")
    return problems
