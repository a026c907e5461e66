#!/usr/bin/env python3
"""Benchmark of the side-API against the floor of this stack, run by hand.

    .venv/bin/python scripts/bench_api.py [--requests 20000] [--messages 100000]

What it does, on a throwaway embedded PostgreSQL (or --admin-url):
1. Starts `clarity serve` as a subprocess (workers on), with a fake Slack Web API and a
   fake runner served by this script, and files Slack requests with signed /clarity commands.
2. Throughput and latency: --requests agent messages posted to the side-API at
   --connections (32) concurrent connections with the job tokens the runner received, and
   the same load against the floor: a bare aiohttp handler doing one asyncpg INSERT per
   request (also a subprocess, same database, same table).
3. Slack calls: 1,000 agent events for one request, spread over --slack-seconds (10), then
   every job drained: how many Slack Web API calls that request's thread received.
4. Memory: agent messages posted until --messages in total, jobs drained, then the
   server's resident set size.
Targets (issue 5): throughput >= half the floor's, p99 < 50 ms, <= 30 Slack calls per
1,000 events, RSS < 250 MB after 100,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_TOKEN = "bench-api-token-" + uuid.uuid4().hex
SIGNING_SECRET = "bench-signing-secret-" + uuid.uuid4().hex
BOT_TOKEN = "xoxb-bench-" + uuid.uuid4().hex
ENCRYPTION_KEY = os.urandom(32).hex()
REPO = "acme/web"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the floor: one asyncpg INSERT per request -----------------------------------------


def run_floor_server(port: int, dsn: str, request_id: str) -> None:
    """A bare aiohttp handler: parse the JSON body, INSERT one row, answer 201."""

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20)
        sql = (
            "INSERT INTO request_messages (request_id, type, source, content, metadata) "
            "VALUES ($1, $2, 'system', $3, $4::jsonb) RETURNING id"
        )

        async def handle(request: web.Request) -> web.Response:
            body = await request.json()
            row_id = await pool.fetchval(
                sql, request_id, body["type"], body["content"], json.dumps(body.get("metadata"))
            )
            return web.json_response({"id": row_id}, status=201)

        app = web.Application()
        app.router.add_post("/floor", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- fakes served by this script --------------------------------------------------------


class FakeSlack:
    """Answers the Web API methods Clarity calls; counts calls per channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._ts = 1_700_000_000

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        raw = await request.text()
        if raw:
            if request.content_type == "application/json":
                params.update(json.loads(raw))
            else:
                from urllib.parse import parse_qsl

                params.update(dict(parse_qsl(raw)))
        self.calls.append((method, str(params.get("channel", ""))))
        self._ts += 1
        answers: dict[str, dict[str, Any]] = {
            "chat.postMessage": {"ts": f"{self._ts}.000100", "channel": params.get("channel")},
            "chat.update": {"ts": params.get("ts"), "channel": params.get("channel")},
            "auth.test": {"user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1", "user": "clarity"},
            "users.info": {"user": {"id": params.get("user"), "name": "bench"}},
            "conversations.info": {"channel": {"id": params.get("channel"), "name": "bench"}},
        }
        return web.json_response({"ok": True, **answers.get(method, {})})

    def count(self, channel: str) -> int:
        return sum(1 for _, c in self.calls if c == channel)


class FakeRunner:
    """Accepts every job; keeps the job token of each request."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.tokens[body["requestId"]] = body["apiToken"]
        return web.json_response({"accepted": True}, status=202)


async def serve(routes: list[tuple[str, str, Any]]) -> tuple[web.AppRunner, int]:
    app = web.Application(client_max_size=10 * 1024**2)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


# --- load ---------------------------------------------------------------------------------


async def load(
    http: aiohttp.ClientSession,
    count: int,
    connections: int,
    make: Callable[[int], tuple[str, dict[str, str], bytes]],
    *,
    spread_s: float = 0.0,
) -> tuple[float, list[float]]:
    """POST `count` requests over `connections` workers, as fast as they go or evenly over
    `spread_s` seconds; (seconds, latencies in seconds)."""
    latencies: list[float] = []
    next_index = iter(range(count))
    begin = time.monotonic()

    async def worker() -> None:
        for i in next_index:
            if spread_s:
                await asyncio.sleep(max(begin + i * spread_s / count - time.monotonic(), 0))
            url, headers, body = make(i)
            t0 = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started, latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def agent_event(i: int) -> bytes:
    return json.dumps(
        {
            "type": "agent_tool_call",
            "content": f"Read src/module_{i % 97}.py",
            "metadata": {
                "toolName": "Read",
                "toolInput": {"path": f"src/module_{i % 97}.py"},
                "turnNumber": i // 10,
            },
        }
    ).encode()


def spawn(argv: list[str], *, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    """Start a server process; its output goes to a log file in the temp folder."""
    with open(Path(tempfile.gettempdir()) / f"{log}.log", "wb") as out:
        return subprocess.Popen(
            argv, cwd=tempfile.gettempdir(), env=env, stdout=out, stderr=subprocess.STDOUT
        )


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slash_command(text: str, channel: str) -> tuple[bytes, dict[str, str]]:
    body = urlencode(
        {
            "token": "x",
            "team_id": "T1",
            "team_domain": "bench",
            "channel_id": channel,
            "channel_name": channel.lower(),
            "user_id": "U0BENCH",
            "user_name": "bench",
            "command": "/clarity",
            "text": text,
            "api_app_id": "A1",
            "response_url": "",
            "trigger_id": uuid.uuid4().hex,
        }
    )
    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256)
    return body.encode(), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- the run ------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    from storage.engine import asyncpg_dsn
    from storage.migrate import upgrade_to_head

    db_name = f"clarity_bench_{os.getpid()}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    db_url = admin_url.rsplit("/", 1)[0] + "/" + db_name
    await asyncio.to_thread(upgrade_to_head, db_url)
    dsn = asyncpg_dsn(db_url)

    slack, runner = FakeSlack(), FakeRunner()
    fakes, fake_port = await serve(
        [("*", "/slack/api/{method}", slack.handle), ("POST", "/runner", runner.handle)]
    )
    port, floor_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "CLARITY_API_TOKEN": API_TOKEN,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"http://127.0.0.1:{fake_port}/slack/api/",
        "RUNNER_URL": f"http://127.0.0.1:{fake_port}/runner",
        "CLARITY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    for unset in ("SLACK_APP_TOKEN", "GITHUB_APP_ID", "GITHUB_PRIVATE_KEY"):
        env.pop(unset, None)
    server = spawn([sys.executable, "-m", "bot", "serve"], env=env, log="clarity-bench-server")
    floor: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=args.connections + 8)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"{base}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, 60, "clarity serve")
            pg = await asyncpg.connect(dsn)

            async def file(channel: str) -> str:
                body, headers = slash_command(f"{REPO} benchmark request {channel}", channel)
                async with http.post(f"{base}/slack/events", data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()

                async def ready() -> bool:
                    rid = await pg.fetchval(
                        "SELECT request_id FROM feature_requests "
                        "WHERE slack_channel_id = $1 AND slack_thread_ts IS NOT NULL",
                        channel,
                    )
                    return rid is not None and rid in runner.tokens

                await wait_for(ready, 30, f"request in {channel} dispatched")
                return str(
                    await pg.fetchval(
                        "SELECT request_id FROM feature_requests WHERE slack_channel_id = $1",
                        channel,
                    )
                )

            request_ids = [await file(f"CBENCH{i}") for i in range(args.requests_in_flight)]
            floor = spawn(
                [sys.executable, __file__, "--floor-server", str(floor_port), dsn, request_ids[0]],
                env=dict(os.environ),
                log="clarity-bench-floor",
            )

            async def floor_up() -> bool:
                try:
                    async with http.post(
                        f"http://127.0.0.1:{floor_port}/floor", data=agent_event(0)
                    ) as r:
                        return r.status == 201
                except aiohttp.ClientError:
                    return False

            await wait_for(floor_up, 30, "floor server")

            def side_api(i: int) -> tuple[str, dict[str, str], bytes]:
                rid = request_ids[i % len(request_ids)]
                return (
                    f"{base}/api/requests/{rid}/messages",
                    {"Authorization": f"Bearer {runner.tokens[rid]}",
                     "Content-Type": "application/json"},
                    agent_event(i),
                )  # fmt: skip

            def floor_load(i: int) -> tuple[str, dict[str, str], bytes]:
                return (
                    f"http://127.0.0.1:{floor_port}/floor",
                    {"Content-Type": "application/json"},
                    agent_event(i),
                )

            posted = 0
            # Alternating rounds, so a noisy neighbour on the machine hits both alike. Each
            # target has its own client connections, kept alive across its rounds.
            floor_http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.connections)
            )
            side_http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.connections)
            )
            targets = (
                ("floor", floor_load, floor.pid, floor_http),
                ("side-API", side_api, server.pid, side_http),
            )
            per_round = max(args.requests // args.rounds, 1)
            samples: dict[str, list[tuple[float, list[float], float]]] = {}
            for _name, make, _pid, client in targets:
                await load(client, 500, args.connections, make)  # warm-up
            for _ in range(args.rounds):
                for name, make, pid, client in targets:
                    cpu = cpu_seconds(pid)
                    seconds, latencies = await load(client, per_round, args.connections, make)
                    samples.setdefault(name, []).append(
                        (per_round / seconds, latencies, cpu_seconds(pid) - cpu)
                    )
            for name, runs in samples.items():
                latencies = [x for _, lat, _ in runs for x in lat]
                results[name] = {
                    "rps": statistics.median(rps for rps, _, _ in runs),
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p99_ms": percentile(latencies, 99) * 1000,
                    "cpu_ms": sum(c for _, _, c in runs) / len(latencies) * 1000,
                }
            posted += 500 + per_round * args.rounds
            await floor_http.close()
            floor.terminate()

            async def drained() -> bool:
                busy = await pg.fetchval(
                    "SELECT count(*) FROM clarity_jobs WHERE status IN ('queued', 'running') "
                    "AND kind LIKE 'slack%' AND run_at <= timezone('UTC', now()) + interval '2s'"
                )
                return busy == 0

            # 1,000 agent events for one request: Slack calls for its thread.
            channel = "CBENCHSLACK"
            rid = await file(channel)
            await wait_for(drained, 120, "Slack jobs")
            await asyncio.sleep(1.5)
            before = slack.count(channel)
            started = time.monotonic()
            await load(
                http,
                1000,
                args.connections,
                lambda i: (
                    f"{base}/api/requests/{rid}/messages",
                    {
                        "Authorization": f"Bearer {runner.tokens[rid]}",
                        "Content-Type": "application/json",
                    },
                    agent_event(i),
                ),
                spread_s=args.slack_seconds,
            )
            events_s = time.monotonic() - started
            posted += 1000
            await asyncio.sleep(1.5)
            await wait_for(drained, 120, "Slack jobs")
            await asyncio.sleep(1.5)
            await wait_for(drained, 120, "Slack jobs")
            per_method = Counter(m for m, c in slack.calls if c == channel)
            results["slack"] = {
                "calls": slack.count(channel) - before,
                "events_s": events_s,
                "methods": dict(per_method),
            }

            # Memory after --messages in total.
            results["rss_start_mb"] = rss_mb(server.pid)
            remaining = max(args.messages - posted, 0)
            if remaining:
                await load(side_http, remaining, args.connections, side_api)
                posted += remaining
            await wait_for(drained, 300, "Slack jobs")
            results["messages"] = posted
            results["rss_mb"] = rss_mb(server.pid)
            await side_http.close()
            await pg.close()
    finally:
        if floor is not None:
            floor.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        await fakes.cleanup()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    side, floor = results["side-API"], results["floor"]
    ratio = side["rps"] / floor["rps"]
    slack = results["slack"]
    print(f"\nClarity side-API benchmark ({os.cpu_count()} CPUs, {args.connections} connections)")
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'server CPU ms/req':>20}")
    for name in ("floor", "side-API"):
        r = results[name]
        print(
            f"{name:22}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
            f"{r['cpu_ms']:>20.2f}"
        )
    print(
        f"side-API / floor: {ratio:.2f} (target >= 0.50; median of {args.rounds} alternating "
        f"rounds of {args.requests // args.rounds} requests each); p99 target < 50 ms"
    )
    print(
        f"Slack calls for 1,000 agent events: {slack['calls']} (target <= 30; "
        f"events posted in {slack['events_s']:.2f} s; {slack['methods']})"
    )
    print(
        f"server RSS after {results['messages']:,} messages: {results['rss_mb']:.0f} MB "
        f"(at start of that phase {results['rss_start_mb']:.0f} MB; target < 250 MB)"
    )
    ok = ratio >= 0.5 and side["p99_ms"] < 50 and slack["calls"] <= 30 and results["rss_mb"] < 250
    print("all targets met" if ok else "SOME TARGETS MISSED")


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--floor-server":
        run_floor_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--slack-seconds",
        type=float,
        default=10.0,
        help="the 1,000 agent events of the Slack check are spread over this long",
    )
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per target")
    parser.add_argument("--messages", type=int, default=100_000, help="messages before RSS")
    parser.add_argument("--requests-in-flight", type=int, default=8, help="requests posted to")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="embedded server without fsync: measures CPU cost rather than the disk's flushes",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL"),
        help="superuser URL of a PostgreSQL server (default: embedded)",
    )
    args = parser.parse_args()
    if args.admin_url:
        results = asyncio.run(bench(args, args.admin_url))
    else:
        from storage.embedded import EmbeddedPostgres

        folder = Path(tempfile.mkdtemp(prefix="clarity-bench-"))
        folder.chmod(0o711)
        postgres = EmbeddedPostgres(folder / "pgdata", fast=args.fast)
        try:
            server = postgres.start()
            results = asyncio.run(bench(args, server.url("postgres")))
        finally:
            postgres.stop()
            shutil.rmtree(folder, ignore_errors=True)
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
