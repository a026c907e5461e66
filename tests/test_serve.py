"""`clarity serve` as a user runs it: embedded database, /healthz, clean SIGTERM, clear errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import build_app
from bot.server import build_web_app
from bot.services import Services
from bot.settings import Settings
from storage.engine import create_engine, create_session_factory
from tests.pg import PgServer, make_server_dir

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GITHUB_"))}
    for key in ("DATABASE_URL", "MASTER_DATABASE_URL", "ENCRYPTION_KEY", "CLARITY_API_TOKEN"):
        env.pop(key, None)
    env.update(extra)
    return env


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"serve exited early:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                return sock.recv(4096).decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not answer in time")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_server_dir()
    yield path / "data"
    subprocess.run(["rm", "-rf", str(path)], check=False)


def _serve(port: int, data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--port", str(port)],
        cwd=ROOT,
        env=_env(CLARITY_DATA_DIR=str(data_dir), HOST="127.0.0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_with_nothing_configured(data_dir: Path) -> None:
    """Embedded PostgreSQL comes up migrated, /healthz is healthy, SIGTERM exits 0; twice."""
    for run in range(2):
        port = _free_port()
        proc = _serve(port, data_dir)
        try:
            answer = _wait_healthy(port, proc)
            assert "200 OK" in answer and '{"status": "healthy"}' in answer
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "embedded PostgreSQL at 127.0.0.1:" in out
        assert str(data_dir / "pgdata") in out
        assert ("migrating the embedded database: 0001" in out) is (
            run == 0
        )  # the second run reuses it
        assert "Clarity stopped" in out
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    assert (data_dir / "encryption.key").stat().st_mode & 0o077 == 0


def test_serve_refuses_an_unmigrated_database(pg_server: PgServer, admin_url: str) -> None:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute("DROP DATABASE IF EXISTS serve_unmigrated")
            await conn.execute("CREATE DATABASE serve_unmigrated")
        finally:
            await conn.close()

    asyncio.run(create())
    url = pg_server.url("serve_unmigrated")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", str(_free_port())],
        cwd=ROOT,
        env=_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clarity: error: database ")
    assert "run `clarity db migrate` first" in last
    assert pg_server.password not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:p@localhost/db", "unsupported database URL scheme"),
        ("postgresql://u:secretpw@127.0.0.1:1/db", "cannot connect to"),
    ],
)
def test_serve_bad_database_url_is_one_line(url: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=ROOT,
        env=_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clarity: error:") and expected in lines[0]
    assert "secretpw" not in result.stderr


async def test_healthz_503_when_database_is_down() -> None:
    engine = create_engine(f"postgresql://u:p@127.0.0.1:{_free_port()}/db")
    services = Services(
        settings=Settings(_env_file=None),
        engine=engine,
        session_factory=create_session_factory(engine),
    )
    app = build_web_app(build_app(services.settings, services=services), run_workers=False)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/healthz")
        assert response.status == 503
        assert (await response.json())["status"] == "unhealthy"
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert "clarity_errors_total" in await metrics.text()


async def test_healthz_and_metrics_on_live_database(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    services = Services(settings=settings, engine=engine, session_factory=session_factory)
    app = build_web_app(build_app(settings, services=services), run_workers=False)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/healthz")
        assert response.status == 200
        assert await response.json() == {"status": "healthy"}
        text = await (await client.get("/metrics")).text()
        assert (
            'clarity_http_request_duration_seconds_count{route="/healthz",status="200"} 1.0' in text
        )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("clarity: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_and_listening_is_never_claimed(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bot", "serve", "--port", str(port), "--no-workers"],
            cwd=ROOT,
            env=_env(DATABASE_URL=db_url, HOST="127.0.0.1"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    line = _one_error_line(result)
    assert line.startswith(f"clarity: error: cannot listen on 127.0.0.1:{port}:"), line
    assert "listening" not in result.stderr.lower().replace(line.lower(), "")


@pytest.mark.parametrize(
    ("name", "value"), [("PORT", "abc"), ("CLARITY_WORKERS", "many"), ("CLARITY_RUN_WORKERS", "2")]
)
def test_a_bad_setting_is_one_line_naming_it(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=ROOT,
        env=_env(**{name: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert _one_error_line(result).startswith(f"clarity: error: invalid setting {name}: ")
    assert "pydantic" not in result.stderr


def test_an_unreachable_database_reads_the_same_from_every_command() -> None:
    url = f"postgresql://u:secretpw@127.0.0.1:{_free_port()}/db"
    lines = []
    for args in (["serve"], ["config", "show"], ["db", "check"]):
        result = subprocess.run(
            [sys.executable, "-m", "bot", *args],
            cwd=ROOT,
            env=_env(DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, args
        lines.append(_one_error_line(result))
    for line in lines:
        assert "cannot connect to PostgreSQL at 127.0.0.1:" in line, line
        assert "postgresql+asyncpg" not in line and "secretpw" not in line


def test_config_commands_use_the_embedded_database_of_serve_and_stop_it(data_dir: Path) -> None:
    env = _env(CLARITY_DATA_DIR=str(data_dir))
    stored = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "config",
            "set",
            "claude",
            "--api-key",
            "sk-ant-test-0123456789",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stored.returncode == 0, stored.stderr
    # The PostgreSQL it started is stopped again.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    shown = subprocess.run(
        [sys.executable, "-m", "bot", "config", "show", "claude"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Same data folder and the same generated key: what was stored reads back (masked).
    assert shown.returncode == 0, shown.stderr
    assert '"apiKeyEncrypted": "sk-a' in shown.stdout and "0123456789" not in shown.stdout
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    assert (data_dir / "encryption.key").exists()


async def test_the_simulator_is_off_unless_asked_for(
    engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    from bot.settings import with_simulator

    for on in (False, True):
        settings = Settings(_env_file=None, clarity_simulator=on)  # type: ignore[call-arg]
        if on:
            settings = with_simulator(settings)
        services = Services(settings=settings, engine=engine, session_factory=session_factory)
        app = build_web_app(build_app(settings, services=services), run_workers=False)
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/_sim/")
            assert page.status == (200 if on else 404)
            api = await client.post("/_sim/api/auth.test")
            assert api.status == (200 if on else 404)
            if on:
                assert (await api.json())["error"] == "not_authed"
