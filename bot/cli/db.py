"""`clarity db …`: argument parsing and output for the database operations.

Handlers are synchronous (`fn(args) -> int`) and run one coroutine each. Every failure
reaches the operator as one `clarity: error: …` line; URLs are shown redacted, and the
only password ever printed is the new one in setup's DATABASE_URL line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL

from bot.cli.errors import CliError, settings_or_fail
from bot.settings import Settings
from storage.dbops import adopt as adopt_op
from storage.dbops import check as check_op
from storage.dbops import copy as copy_op
from storage.dbops import legacy as legacy_op
from storage.dbops import migrate_cmd as migrate_op
from storage.dbops import setup as setup_op
from storage.dbops.connection import DbOpsError, explain, parse_url

T = TypeVar("T")

if TYPE_CHECKING:  # argparse's subparsers type is generic for type checkers only
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def say(line: str) -> None:
    """One line of command output on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _settings() -> Settings:
    return settings_or_fail()


def _resolve(flag: str | None, flag_name: str, *env_names: str) -> tuple[URL, str]:
    """The URL from a flag, else from the first environment variable set; and its label."""
    if flag:
        return _parse(flag, flag_name), flag_name
    settings = _settings()
    for name in env_names:
        value = settings.secret(name.lower())
        if value:
            return _parse(value, name), name
    hint = f" (or pass {flag_name})" if flag_name else ""
    raise CliError(f"no database URL: set {' or '.join(env_names)}{hint}")


def _parse(url: str, label: str) -> URL:
    try:
        return parse_url(url, label)
    except DbOpsError as exc:
        raise CliError(str(exc)) from None


def _run(coro: Callable[[], Awaitable[T]], url: URL | None = None, label: str = "") -> T:
    """Run a coroutine; turn every failure into one CliError line."""

    async def main() -> T:
        return await coro()

    try:
        return asyncio.run(main())
    except DbOpsError as exc:
        raise CliError(str(exc)) from None
    except CliError:
        raise
    except Exception as exc:  # driver, SQLAlchemy and Alembic failures: one line, no secrets
        raise CliError(explain(exc, url, label or None)) from None


def _confirm(yes: bool, action: str) -> Callable[[str], bool]:
    def confirm(question: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise DbOpsError(f"stdin is not a terminal: pass --yes to {action}")
        sys.stdout.write(f"{question} [y/N] ")
        sys.stdout.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    return confirm


# --- handlers -------------------------------------------------------------------------


def _setup(args: argparse.Namespace) -> int:
    master, label = _resolve(None, "", "MASTER_DATABASE_URL")
    opts = setup_op.SetupOptions(
        database=args.database,
        role=args.role,
        user=args.user,
        password=args.password,
        rotate_password=args.rotate_password,
    )
    if args.dry_run:
        say("-- clarity db setup --dry-run: the SQL it would run (passwords shown as ***)")
    else:
        say(f"setting up database {opts.database} on {master.host or 'localhost'}")
    result = _run(
        lambda: setup_op.setup(master, opts, dry_run=args.dry_run, say=say), master, label
    )
    if args.dry_run:
        return 0
    if not result.steps:
        say("nothing to change: database, roles and grants are already in place")
    if result.password_set:
        # The one place a password is printed: the operator copies it into the app's config.
        say(f"DATABASE_URL={result.database_url}")
    else:
        say(
            f"DATABASE_URL={result.database_url} (password unchanged and not shown;"
            " --rotate-password sets a new one)"
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    url, label = _resolve(
        args.database_url, "--database-url", "MASTER_DATABASE_URL", "DATABASE_URL"
    )
    confirm = _confirm(args.yes, "migrate")
    _run(lambda: migrate_op.migrate(url, label, confirm=confirm, say=say), url, label)
    return 0


def _check(args: argparse.Namespace) -> int:
    url, label = _resolve(
        args.database_url, "--database-url", "DATABASE_URL", "MASTER_DATABASE_URL"
    )
    problems = _run(lambda: check_op.check(url, label, say=say), url, label)
    if problems:
        raise CliError(f"database differs from the models: {len(problems)} difference(s) above")
    return 0


def _copy(args: argparse.Namespace) -> int:
    source = _parse(args.source, "--source")
    target = _parse(args.target, "--target")
    if args.verify_only:
        reports = _run(lambda: copy_op.verify(source, target, say=say))
        bad = [r.table for r in reports if not r.match]
        if bad:
            raise CliError(f"target differs from source: {', '.join(bad)}")
        say("verified: the target holds the same rows as the source")
        return 0
    _run(
        lambda: copy_op.copy(
            source, target, truncate=args.truncate, batch_size=args.batch_size, say=say
        )
    )
    say("copied and verified")
    return 0


def _drop_legacy(args: argparse.Namespace) -> int:
    source = _parse(args.source, "--source")
    target = _parse(args.target, "--target")
    if not args.yes:
        raise CliError("drop-legacy deletes tables from the source: pass --yes to confirm")
    _run(lambda: legacy_op.drop_legacy(source, target, say=say))
    return 0


def _adopt(args: argparse.Namespace) -> int:
    url, label = _resolve(
        args.database_url, "--database-url", "MASTER_DATABASE_URL", "DATABASE_URL"
    )
    confirm = _confirm(args.yes, "adopt")
    _run(lambda: adopt_op.adopt(url, label, confirm=confirm, say=say), url, label)
    return 0


# --- parser ---------------------------------------------------------------------------


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _add(
    sub: SubParsers, name: str, handler: Callable[[argparse.Namespace], int], **kw: Any
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    parser.set_defaults(handler=handler)
    return parser


def register(sub: SubParsers) -> None:
    """Add `clarity db` and its subcommands to the top-level subparsers."""
    db = sub.add_parser(
        "db",
        help="database operations: setup, migrate, check, copy, drop-legacy, adopt",
        description="Operate Clarity's PostgreSQL database. See README, 'Database operations'.",
    )
    commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)

    setup = _add(
        commands,
        "setup",
        _setup,
        help="create the dedicated database, role and application user (least privilege)",
        description=(
            "Connect with MASTER_DATABASE_URL and create, if missing: the database, a NOLOGIN\n"
            "group role with row access (SELECT, INSERT, UPDATE, DELETE; sequences USAGE,\n"
            "SELECT) on every table in schema public, now and later (default privileges for\n"
            "the master user, who runs migrations), and a LOGIN user in that role. Nobody\n"
            "but the master may create objects in the database. Idempotent: a second run\n"
            "says 'nothing to change'. Prints the DATABASE_URL for the application; a new\n"
            "password is printed there once and nowhere else."
        ),
    )
    setup.add_argument("--database", default="clarity", help="database name (default: clarity)")
    setup.add_argument(
        "--role", default="clarity_rw", help="read/write group role (default: clarity_rw)"
    )
    setup.add_argument(
        "--user", default="clarity_user", help="application login user (default: clarity_user)"
    )
    setup.add_argument(
        "--password",
        help="password for a new user, or a new password for an existing one"
        " (default: a generated one for a new user)",
    )
    setup.add_argument(
        "--rotate-password",
        action="store_true",
        help="give the existing user a new generated password",
    )
    setup.add_argument(
        "--dry-run", action="store_true", help="print the SQL it would run and change nothing"
    )

    migrate = _add(
        commands,
        "migrate",
        _migrate,
        help="apply pending migrations (Alembic upgrade to head, under an advisory lock)",
        description=(
            "Upgrade the database to the newest migration. Connects with MASTER_DATABASE_URL,\n"
            "else DATABASE_URL. Lists the pending revisions and asks first; without a terminal\n"
            "--yes is required. An advisory lock lets several replicas run it at once: one\n"
            "migrates, the others wait and find nothing to do. Lock and statement timeouts\n"
            "(CLARITY_MIGRATION_LOCK_TIMEOUT, default 10s; CLARITY_MIGRATION_STATEMENT_TIMEOUT,\n"
            "default 5min) keep a blocked migration from stalling the application."
        ),
    )
    migrate.add_argument("--database-url", help="database to migrate (default: from env)")
    migrate.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    check = _add(
        commands,
        "check",
        _check,
        help="compare the live schema with the models and the migration head",
        description=(
            "Read-only drift check, fit for CI against a replica: tables, columns, types,\n"
            "nullability, defaults, enum values, indexes, constraints, and whether the\n"
            "database is at the migration head. Exits non-zero listing every difference.\n"
            "Connects with --database-url, else DATABASE_URL, else MASTER_DATABASE_URL."
        ),
    )
    check.add_argument("--database-url", help="database to check (default: from env)")

    copy = _add(
        commands,
        "copy",
        _copy,
        help="copy every Clarity table to another database, ids kept, and verify",
        description=(
            "Copy app_config, feature_requests, request_messages and Clarity's own tables\n"
            "from SOURCE to TARGET keeping ids, reset identity sequences to max(id)+1, and\n"
            "verify per-table row counts and content checksums. The target is migrated to\n"
            "head first (use its master URL). The source is only read, in one snapshot; the\n"
            "target is written in one transaction that commits only if verification passes.\n"
            "A source made by the TypeScript worker works too. Refuses a non-empty target\n"
            "unless --truncate."
        ),
    )
    copy.add_argument("--source", required=True, metavar="URL", help="database to copy from")
    copy.add_argument("--target", required=True, metavar="URL", help="database to copy into")
    copy.add_argument(
        "--truncate", action="store_true", help="empty the target's Clarity tables first"
    )
    copy.add_argument(
        "--verify-only", action="store_true", help="only compare counts and checksums"
    )
    copy.add_argument(
        "--batch-size",
        type=_positive,
        default=copy_op.DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per batch (default: {copy_op.DEFAULT_BATCH_SIZE})",
    )

    legacy = _add(
        commands,
        "drop-legacy",
        _drop_legacy,
        help="drop Clarity's tables and types from the old database after a verified copy",
        description=(
            "With the source's Clarity tables locked against writes, verify that TARGET holds\n"
            "exactly their rows, then drop from SOURCE only Clarity's tables, its enum types\n"
            "and drizzle's __drizzle_migrations table. Any other object is left alone; if one\n"
            "depends on ours, nothing is dropped. Refuses unless the copy verifies."
        ),
    )
    legacy.add_argument("--source", required=True, metavar="URL", help="the old database")
    legacy.add_argument("--target", required=True, metavar="URL", help="the verified copy")
    legacy.add_argument("--yes", action="store_true", help="confirm the drop (required)")

    adopt = _add(
        commands,
        "adopt",
        _adopt,
        help="take over a database created by the TypeScript worker (drizzle-kit)",
        description=(
            "Compare the database with Clarity's initial schema, report the differences, add\n"
            "what is missing (the 'cancelled' status, the indexes, Clarity's own tables) and\n"
            "stamp Alembic so later migrations apply normally. Rows are not touched. Refuses,\n"
            "changing nothing, if the schema differs in a way adding objects cannot fix.\n"
            "Connects with --database-url, else MASTER_DATABASE_URL, else DATABASE_URL."
        ),
    )
    adopt.add_argument("--database-url", help="database to adopt (default: from env)")
    adopt.add_argument("--yes", action="store_true", help="do not ask for confirmation")
