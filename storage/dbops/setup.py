"""`clarity db setup`: a dedicated database, a read/write group role and a login user.

Seed 001 in one idempotent command, tightened to least privilege: the application reads and
writes rows and uses sequences; it cannot create or drop databases, roles, schemas or
tables, nor alter the tables that migrations (run as the master user) own.

Every step is planned from what the catalog says is already there, so a second run plans
nothing. The password never appears in SQL we send: CREATE/ALTER ROLE get a SCRAM-SHA-256
verifier computed here (as psql's \\password does), so even a server logging DDL never
sees it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from storage.dbops.connection import DbOpsError, connect, explain, quote_ident, quote_literal

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")
# Attributes a role of ours must not have; seed 001 left them at their defaults, we check.
FORBIDDEN_ATTRIBUTES = {
    "rolsuper": "NOSUPERUSER",
    "rolcreatedb": "NOCREATEDB",
    "rolcreaterole": "NOCREATEROLE",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}
# Seed 001 granted these; they reach every table of every database, so we take them back.
BROAD_ROLES = ("pg_read_all_data", "pg_write_all_data")


@dataclass(frozen=True)
class SetupOptions:
    """What `clarity db setup` creates."""

    database: str = "clarity"
    role: str = "clarity_rw"
    user: str = "clarity_user"
    password: str | None = None
    rotate_password: bool = False


@dataclass(frozen=True)
class Step:
    """One change: what it does, the SQL to show, and the SQL to run if that differs."""

    description: str
    sql: str
    run_sql: str | None = None
    sets_password: bool = False

    @property
    def statement(self) -> str:
        """The statement actually sent to the server."""
        return self.run_sql or self.sql


@dataclass
class SetupResult:
    """What setup did (or, dry, would do) and the URL the application should use."""

    steps: list[Step] = field(default_factory=list)
    database_url: str = ""
    password_set: bool = False


# --- password verifier ----------------------------------------------------------------


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep as PostgreSQL applies it; on failure PostgreSQL uses the raw text."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not normalized or any(check(ch) for ch in normalized for check in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            return password
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return password
    return normalized


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL would store for `password`."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac(
        "sha256", saslprep(password).encode("utf-8"), salt, SCRAM_ITERATIONS
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def generate_password() -> str:
    """A strong random password, URL-safe so it needs no escaping in DATABASE_URL."""
    return secrets.token_urlsafe(32)


# --- planning -------------------------------------------------------------------------


async def _role(conn: Any, name: str) -> Any:
    return await conn.fetchrow(
        "SELECT oid, rolcanlogin, rolinherit, rolsuper, rolcreatedb, rolcreaterole,"
        " rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
        name,
    )


async def _is_member(conn: Any, role: str, member: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " WHERE r.rolname = $1 AND u.rolname = $2)",
            role,
            member,
        )
    )


def _attribute_fixes(row: Any) -> list[str]:
    return [fix for column, fix in FORBIDDEN_ATTRIBUTES.items() if row[column]]


async def _plan_roles(conn: Any, opts: SetupOptions, password: str | None) -> list[Step]:
    steps: list[Step] = []
    role, user = quote_ident(opts.role), quote_ident(opts.user)

    rw = await _role(conn, opts.role)
    if rw is None:
        steps.append(Step(f"create group role {opts.role}", f"CREATE ROLE {role} NOLOGIN"))
    else:
        fixes = _attribute_fixes(rw) + (["NOLOGIN"] if rw["rolcanlogin"] else [])
        if fixes:
            steps.append(
                Step(
                    f"make {opts.role} a plain group role ({' '.join(fixes)})",
                    f"ALTER ROLE {role} {' '.join(fixes)}",
                )
            )
        for broad in BROAD_ROLES:
            if await _is_member(conn, broad, opts.role):
                steps.append(
                    Step(
                        f"revoke {broad} from {opts.role} (it reaches every table)",
                        f"REVOKE {broad} FROM {role}",
                    )
                )

    app = await _role(conn, opts.user)
    if app is None:
        assert password is not None
        steps.append(
            Step(
                f"create login user {opts.user} in {opts.role}",
                f"CREATE ROLE {user} LOGIN PASSWORD '***' IN ROLE {role}",
                f"CREATE ROLE {user} LOGIN PASSWORD {quote_literal(scram_verifier(password))}"
                f" IN ROLE {role}",
                sets_password=True,
            )
        )
        return steps
    fixes = _attribute_fixes(app)
    if not app["rolcanlogin"]:
        fixes.append("LOGIN")
    if not app["rolinherit"]:
        fixes.append("INHERIT")
    if fixes:
        steps.append(
            Step(
                f"set {opts.user} to {' '.join(fixes)}",
                f"ALTER ROLE {user} {' '.join(fixes)}",
            )
        )
    if rw is None or not await _is_member(conn, opts.role, opts.user):
        steps.append(
            Step(f"add {opts.user} to {opts.role}", f"GRANT {role} TO {user}"),
        )
    for broad in BROAD_ROLES:
        if await _is_member(conn, broad, opts.user):
            steps.append(Step(f"revoke {broad} from {opts.user}", f"REVOKE {broad} FROM {user}"))
    if password is not None:
        steps.append(
            Step(
                f"set a new password for {opts.user}",
                f"ALTER ROLE {user} PASSWORD '***'",
                f"ALTER ROLE {user} PASSWORD {quote_literal(scram_verifier(password))}",
                sets_password=True,
            )
        )
    return steps


async def _acl(conn: Any, sql: str, *args: Any) -> set[tuple[str, str]]:
    """(grantee, privilege) pairs of an aclexplode query; grantee PUBLIC for oid 0."""
    rows = await conn.fetch(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
        f" AS grantee, a.privilege_type AS privilege FROM ({sql}) s, aclexplode(s.acl) a",
        *args,
    )
    return {(str(r["grantee"]), str(r["privilege"])) for r in rows}


async def _plan_database_acl(conn: Any, opts: SetupOptions, exists: bool) -> list[Step]:
    db, role = quote_ident(opts.database), quote_ident(opts.role)
    if exists:
        acl = await _acl(
            conn,
            "SELECT coalesce(datacl, acldefault('d', datdba)) AS acl"
            " FROM pg_database WHERE datname = $1",
            opts.database,
        )
    else:
        acl = {("PUBLIC", "CONNECT"), ("PUBLIC", "TEMPORARY")}  # a new database's defaults
    steps: list[Step] = []
    if any(grantee == "PUBLIC" for grantee, _ in acl):
        steps.append(
            Step(
                f"revoke PUBLIC's access to database {opts.database}",
                f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
            )
        )
    if not all((opts.role, p) in acl for p in DATABASE_PRIVILEGES):
        steps.append(
            Step(
                f"let {opts.role} connect to {opts.database}",
                f"GRANT {', '.join(DATABASE_PRIVILEGES)} ON DATABASE {db} TO {role}",
            )
        )
    return steps


async def _plan_inside(conn: Any | None, opts: SetupOptions, owner: str) -> list[Step]:
    """Grants inside the database; `conn` None plans for a database not created yet."""
    role = quote_ident(opts.role)
    steps: list[Step] = []

    if conn is None:
        schema_acl: set[tuple[str, str]] = {("PUBLIC", "CREATE"), ("PUBLIC", "USAGE")}
        tables_missing = sequences_missing = True
        default_tables = default_sequences = False
    else:
        schema_acl = await _acl(
            conn,
            "SELECT coalesce(nspacl, acldefault('n', nspowner)) AS acl"
            " FROM pg_namespace WHERE nspname = 'public'",
        )
        tables_missing = await _objects_missing(conn, opts.role, "('r', 'p')", TABLE_PRIVILEGES)
        sequences_missing = await _objects_missing(conn, opts.role, "('S')", SEQUENCE_PRIVILEGES)
        default_tables = await _has_default(conn, owner, opts.role, "r", TABLE_PRIVILEGES)
        default_sequences = await _has_default(conn, owner, opts.role, "S", SEQUENCE_PRIVILEGES)

    if ("PUBLIC", "CREATE") in schema_acl:
        steps.append(
            Step(
                "stop PUBLIC creating objects in schema public",
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            )
        )
    if (opts.role, "CREATE") in schema_acl:
        steps.append(
            Step(
                f"stop {opts.role} creating objects in schema public",
                f"REVOKE CREATE ON SCHEMA public FROM {role}",
            )
        )
    if (opts.role, "USAGE") not in schema_acl:
        steps.append(
            Step(f"let {opts.role} use schema public", f"GRANT USAGE ON SCHEMA public TO {role}")
        )
    table_privs, seq_privs = ", ".join(TABLE_PRIVILEGES), ", ".join(SEQUENCE_PRIVILEGES)
    if tables_missing:
        steps.append(
            Step(
                f"let {opts.role} read and write rows of existing tables",
                f"GRANT {table_privs} ON ALL TABLES IN SCHEMA public TO {role}",
            )
        )
    if sequences_missing:
        steps.append(
            Step(
                f"let {opts.role} use existing sequences",
                f"GRANT {seq_privs} ON ALL SEQUENCES IN SCHEMA public TO {role}",
            )
        )
    if not default_tables:
        steps.append(
            Step(
                f"let {opts.role} read and write rows of tables {owner} creates later",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_ident(owner)} IN SCHEMA public"
                f" GRANT {table_privs} ON TABLES TO {role}",
            )
        )
    if not default_sequences:
        steps.append(
            Step(
                f"let {opts.role} use sequences {owner} creates later",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_ident(owner)} IN SCHEMA public"
                f" GRANT {seq_privs} ON SEQUENCES TO {role}",
            )
        )
    return steps


async def _objects_missing(conn: Any, role: str, kinds: str, privileges: tuple[str, ...]) -> bool:
    """Whether some table/sequence in public lacks one of `privileges` for `role`."""
    granted_all = " AND ".join(
        f"EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault("
        f"CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a"
        f" WHERE a.grantee = r.oid AND a.privilege_type = '{p}')"
        for p in privileges
    )
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_class c, pg_roles r"
            f" WHERE r.rolname = $1 AND c.relkind IN {kinds}"
            " AND c.relnamespace = 'public'::regnamespace"
            f" AND NOT ({granted_all}))",
            role,
        )
    )


async def _has_default(
    conn: Any, owner: str, role: str, objtype: str, privileges: tuple[str, ...]
) -> bool:
    acl = await _acl(
        conn,
        "SELECT d.defaclacl AS acl FROM pg_default_acl d"
        " WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = $1)"
        " AND d.defaclnamespace = 'public'::regnamespace AND d.defaclobjtype::text = $2",
        owner,
        objtype,
    )
    return all((role, p) in acl for p in privileges)


# --- running --------------------------------------------------------------------------


def application_url(master: URL, opts: SetupOptions, password: str | None) -> str:
    """DATABASE_URL for the application: the master's server, our database and user."""
    url = master.set(
        drivername="postgresql",
        username=opts.user,
        password=password if password is not None else "unchanged",
        database=opts.database,
    )
    return url.render_as_string(hide_password=password is None)


async def setup(
    master: URL,
    opts: SetupOptions,
    *,
    dry_run: bool = False,
    say: Callable[[str], None],
) -> SetupResult:
    """Plan and (unless dry) apply database, roles and grants; report each change."""
    result = SetupResult()
    async with connect(master, "MASTER_DATABASE_URL") as conn:
        owner = str(await conn.fetchval("SELECT current_user"))
        user_exists = await _role(conn, opts.user) is not None
        password = opts.password
        if password is None and (opts.rotate_password or not user_exists):
            # A dry run shows the statement with *** and never makes up a password.
            password = "***" if dry_run else generate_password()
        cluster = await _plan_roles(conn, opts, password)
        db_exists = bool(
            await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", opts.database)
        )
        if not db_exists:
            cluster.append(
                Step(
                    f"create database {opts.database}",
                    f"CREATE DATABASE {quote_ident(opts.database)}",
                )
            )
        cluster += await _plan_database_acl(conn, opts, db_exists)
        try:
            await _apply(conn, cluster, result, dry_run=dry_run, say=say)
        except Exception as exc:
            if result.password_set:
                raise _lost_password(exc, opts) from exc
            raise

    try:
        if db_exists or not dry_run:
            inside_url = master.set(database=opts.database)
            async with connect(inside_url, "MASTER_DATABASE_URL") as conn:
                inside = await _plan_inside(conn, opts, owner)
                await _apply(conn, inside, result, dry_run=dry_run, say=say)
        else:
            inside = await _plan_inside(None, opts, owner)
            await _apply(None, inside, result, dry_run=True, say=say)
    except Exception as exc:
        if result.password_set:
            raise _lost_password(exc, opts) from exc
        raise

    result.password_set = password is not None and not dry_run
    result.database_url = application_url(master, opts, password if result.password_set else None)
    return result


def _lost_password(exc: Exception, opts: SetupOptions) -> DbOpsError:
    """A failure after the password changed: say so, since it was never shown."""
    message = str(exc) if isinstance(exc, DbOpsError) else explain(exc)
    return DbOpsError(
        f"{message}; {opts.user}'s new password was set but not shown: once this is fixed,"
        " run `clarity db setup --rotate-password`"
    )


async def _apply(
    conn: Any,
    steps: list[Step],
    result: SetupResult,
    *,
    dry_run: bool,
    say: Callable[[str], None],
) -> None:
    for step in steps:
        if dry_run:
            say(f"{step.sql};")
        else:
            # One statement at a time, outside a transaction: CREATE DATABASE needs that.
            await conn.execute(step.statement)
            say(f"  {step.description}")
            result.password_set = result.password_set or step.sets_password
        result.steps.append(step)
