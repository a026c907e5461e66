"""`clarity db migrate`: Alembic upgrade to head under an advisory lock, saying what it did."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from storage.dbops.connection import DbOpsError, connect, shown
from storage.migrate import alembic_config, head_revision, pending_revisions, run_alembic


async def current_revision(conn: Any) -> str | None:
    """The revision in alembic_version, or None when the table is absent or empty."""
    if not await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return None
    value = await conn.fetchval("SELECT version_num FROM public.alembic_version LIMIT 1")
    return None if value is None else str(value)


def describe(revision: str) -> str:
    """`revision  first line of its docstring`."""
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    doc = (script.doc or "").strip().splitlines() if script is not None else []
    return f"{revision}  {doc[0] if doc else ''}".rstrip()


class _AppliedRevisions(logging.Handler):
    """Collects Alembic's "Running upgrade A -> B" lines: what this process itself applied."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.applied: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Running upgrade") and "->" in message:
            self.applied.append(message.split("->", 1)[1].split(",", 1)[0].strip())


@contextmanager
def _recording() -> Iterator[_AppliedRevisions]:
    logger = logging.getLogger("alembic.runtime.migration")
    handler = _AppliedRevisions()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def upgrade_locked(url: URL) -> list[str]:
    """Upgrade to head under the migration lock; the revisions this call applied, in order."""
    with _recording() as recorder:
        await run_alembic(url.render_as_string(hide_password=False), "upgrade", "head", lock=True)
    return recorder.applied


async def migrate(
    url: URL,
    label: str,
    *,
    confirm: Callable[[str], bool],
    say: Callable[[str], None],
) -> list[str]:
    """List pending revisions, ask `confirm`, upgrade; the revisions this process applied."""
    async with connect(url, label) as conn:
        current = await current_revision(conn)
    head = head_revision()
    try:
        pending = pending_revisions(current)
    except Exception as exc:  # alembic raises CommandError/ResolutionError for unknown ids
        raise DbOpsError(
            f"database is at revision {current!r}, which these migrations do not know"
            " (is this an older Clarity?)"
        ) from exc
    if not pending:
        say(f"already at head ({head}); nothing to do")
        return []
    say(f"{len(pending)} pending revision(s) for {shown(url)}:")
    for revision in pending:
        say(f"  {describe(revision)}")
    if not confirm(f"apply {len(pending)} revision(s) to {shown(url)}?"):
        raise DbOpsError("not confirmed; nothing was changed")
    applied = await upgrade_locked(url)
    if applied:
        say(f"migrated to head ({head}): applied {', '.join(applied)}")
    else:
        say(f"nothing to do: another process migrated to head ({head}) meanwhile")
    return applied
