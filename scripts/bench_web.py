#!/usr/bin/env python3
"""Benchmark of the web dashboard, run by hand.

    .venv/bin/python scripts/bench_web.py [--requests 100000] [--activity 5000] [--streams 200]

On a throwaway embedded PostgreSQL (or --admin-url): fills --requests feature requests
(generate_series: 40 repositories, 60 requesters, every status and origin, a year of
dates) and --activity agent messages on one request (three runs; thinking, tool calls and
results, commands with output, file changes with diffs). The dashboard alone is served by a
subprocess; a middleware there measures each handler's time (server time, no network).
Prints:
- list page (100 rows, counts per status): p50/p95 server time over a mix of the first
  page, later pages, each filter and a full-text search;
- request page of the request with --activity messages: p50/p95;
- CPU the server spends holding --streams idle SSE streams for --idle-seconds (30).
Target (issue 12): list page under 150 ms server time with 100,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_TIME = "X-Bench-Server-Ms"
BIG = "req-bench-activity"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server (a subprocess) ----------------------------------------------------------


def serve(port: int, url: str) -> None:
    """The dashboard alone, with a handler-time header; retry/cancel do nothing."""
    from collections.abc import Awaitable, Callable

    from aiohttp import web

    from bot.web import setup
    from storage.engine import create_engine, create_session_factory

    class NoActions:
        async def retry(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
            return "not in the benchmark"

        async def cancel(self, request_id: str, actor_id: str, actor_name: str) -> str | None:
            return "not in the benchmark"

    @web.middleware
    async def timing(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        if not isinstance(response, web.Response):
            return response  # a stream
        response.headers[SERVER_TIME] = f"{(time.perf_counter() - started) * 1000:.3f}"
        return response

    async def make() -> web.Application:
        engine = create_engine(url, pool_size=10, max_overflow=10)
        app = web.Application(middlewares=[timing])
        setup(
            app,
            session_factory=create_session_factory(engine),
            engine=engine,
            actions=NoActions(),
        )

        async def close(_: web.Application) -> None:
            await engine.dispose()

        app.on_cleanup.append(close)
        return app

    web.run_app(make(), host="127.0.0.1", port=port, print=None, shutdown_timeout=2)


# --- filling the database ---------------------------------------------------------------

FILL_REQUESTS = """
INSERT INTO feature_requests (request_id, origin, repo, title, description, status,
    slack_user_id, slack_user_name, slack_channel_id, slack_thread_ts, issue_author,
    issue_number, cost_usd, duration_ms, pr_url, pr_number, created_at, updated_at)
SELECT 'req-' || lpad(i::text, 7, '0'),
       CASE WHEN i % 9 = 0 THEN 'github_issue' ELSE 'slack' END::request_origin,
       'acme/service-' || (i % 40),
       (ARRAY['Add', 'Fix', 'Remove', 'Speed up', 'Document', 'Refactor', 'Test'])[1 + i % 7]
         || ' ' || (ARRAY['rate limiting', 'the billing export', 'login flow', 'search index',
                          'retry logic', 'CSV import', 'webhooks', 'dark mode', 'caching',
                          'the admin page'])[1 + (i / 7) % 10] || ' #' || i,
       'Please ' || (ARRAY['make', 'check', 'change', 'review'])[1 + i % 4]
         || ' how the service handles ' || (ARRAY['timeouts', 'large files', 'unicode names',
            'concurrent writes', 'expired tokens', 'empty results'])[1 + i % 6]
         || '. Details: ' || md5(i::text),
       (enum_range(NULL::request_status))[1 + (i * 7) % 8],
       CASE WHEN i % 9 = 0 THEN NULL ELSE 'U' || lpad((i % 60)::text, 8, '0') END,
       CASE WHEN i % 9 = 0 THEN NULL ELSE 'Person ' || (i % 60) END,
       CASE WHEN i % 9 = 0 THEN NULL ELSE 'C0BENCH' END,
       CASE WHEN i % 9 = 0 THEN NULL ELSE (1733400000 + i)::text || '.000100' END,
       CASE WHEN i % 9 = 0 THEN 'octo' || (i % 25) END,
       CASE WHEN i % 9 = 0 THEN i END,
       (i * 37) % 900, (i * 7919) % 1800000,
       CASE WHEN i % 3 = 0 THEN 'https://github.com/acme/service/pull/' || i END,
       CASE WHEN i % 3 = 0 THEN i END,
       now() - (i * interval '5 minutes'), now() - (i * interval '5 minutes')
FROM generate_series(1, $1) i
"""

FILL_ACTIVITY = """
INSERT INTO request_messages (request_id, type, source, content, actor_id, actor_name,
    metadata, created_at)
SELECT $2, t.type::message_type, 'system', t.content, 'system', 'Clarity AI', t.metadata,
       now() - interval '2 hours' + i * interval '1 second'
FROM generate_series(1, $1) i
CROSS JOIN LATERAL (
  SELECT CASE i % 5
    WHEN 0 THEN 'agent_thinking' WHEN 1 THEN 'agent_tool_call' WHEN 2 THEN 'agent_tool_result'
    WHEN 3 THEN 'agent_terminal' ELSE 'agent_file_change' END AS type,
  CASE i % 5
    WHEN 0 THEN 'Thinking about step ' || i || ': ' || repeat('the tests should cover it. ', 6)
    WHEN 1 THEN 'Calling Read' WHEN 2 THEN 'result' WHEN 3 THEN 'pytest -q tests/test_' || i
    ELSE 'modified src/module_' || i || '.py' END AS content,
  CASE i % 5
    WHEN 1 THEN jsonb_build_object('toolName', 'Read',
                  'toolInput', jsonb_build_object('file_path', 'src/module_' || i || '.py'))
    WHEN 2 THEN jsonb_build_object('toolName', 'Read', 'toolDurationMs', 12,
                  'toolOutput', repeat('line of file content ' || i || E'\n', 20))
    WHEN 3 THEN jsonb_build_object('command', 'pytest -q tests/test_' || i, 'exitCode', i % 2,
                  'stdout', repeat('.', 40) || E'\n1 failed, 40 passed in 0.52s')
    WHEN 4 THEN jsonb_build_object('filePath', 'src/module_' || i || '.py',
                  'fileAction', 'modified',
                  'diffPreview', E'--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,3 @@\n'
                                 || E' def f():\n-    return 1\n+    return 2\n')
    ELSE NULL END AS metadata
) t
"""


async def fill(url: str, requests: int, activity: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute(FILL_REQUESTS, requests)
        await conn.execute(
            "INSERT INTO feature_requests (request_id, origin, repo, title, description,"
            " status, slack_user_id, slack_user_name, created_at)"
            " VALUES ($1, 'slack', 'acme/service-1', 'A request with a long history',"
            " 'Five thousand steps of agent activity', 'processing', 'U00000001',"
            " 'Person 1', now() - interval '3 hours')",
            BIG,
        )
        await conn.execute(
            "INSERT INTO clarity_runs (request_id, attempt, kind, state, cost_cents, created_at)"
            " VALUES ($1, 1, 'initial', 'failed', 120, now() - interval '2 hours 1 minute'),"
            " ($1, 2, 'retry', 'succeeded', 340, now() - interval '1 hour 30 minutes'),"
            " ($1, 3, 'follow_up', 'running', NULL, now() - interval '1 hour')",
            BIG,
        )
        await conn.execute(FILL_ACTIVITY, activity, BIG)
        await conn.execute("ANALYZE")
        print(
            f"filled {requests:,} requests and {activity:,} activity messages"
            f" in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
    finally:
        await conn.close()


async def login_cookie(url: str, base: str) -> dict[str, str]:
    from bot.web import issue_login_link
    from storage.engine import create_engine, create_session_factory

    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with create_session_factory(engine).begin() as session:
            link = await issue_login_link(
                session,
                slack_user_id="U00000001",
                user_name="Bench",
                team_id=None,
                public_url=base,
            )
    finally:
        await engine.dispose()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            base + "/login", data={"token": link.split("token=", 1)[1]}, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303, response.status
        return {"clarity_session": response.cookies["clarity_session"].value}


# --- measuring --------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def timed(http: aiohttp.ClientSession, url: str) -> tuple[float, str]:
    async with http.get(url) as response:
        body = await response.text()
        assert response.status == 200, (url, response.status, body[:200])
        return float(response.headers[SERVER_TIME]), body


async def bench(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    from storage.migrate import upgrade_to_head

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS clarity_bench_web")
        await admin.execute("CREATE DATABASE clarity_bench_web")
    finally:
        await admin.close()
    url = admin_url.rsplit("/", 1)[0] + "/clarity_bench_web"
    upgrade_to_head(url)
    await fill(url, args.requests, args.activity)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(Path(tempfile.gettempdir()) / "bench_web_server.log", "wb")  # noqa: ASYNC230, SIM115
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, __file__, "--serve", str(port), url],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    results: dict[str, Any] = {}
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        cookies = await login_cookie(url, base)
        async with aiohttp.ClientSession(cookies=cookies) as http:
            # The list: the first page, then a mix of later pages, filters and searches.
            _, first = await timed(http, base + "/requests")
            cursor = first.split('rel="next"', 1)[0].rsplit("cursor=", 1)[1].split('"', 1)[0]
            queries = [
                "",
                f"?cursor={cursor}",
                "?status=error",
                "?status=awaiting_clarification",
                "?repo=acme/service-7",
                "?requester=U00000013",
                "?requester=octo3",
                "?origin=github_issue",
                "?q=billing+export",
                "?q=unicode+names&status=completed",
                "?q=%22dark+mode%22+-timeouts",
            ]
            for _ in range(2):  # warm up
                for q in queries:
                    await timed(http, base + "/requests" + q)
            list_times: dict[str, list[float]] = {q: [] for q in queries}
            for _ in range(args.rounds):
                for q in queries:
                    ms, _ = await timed(http, base + "/requests" + q)
                    list_times[q].append(ms)
            every = [t for ts in list_times.values() for t in ts]
            results["list"] = (percentile(every, 0.5), percentile(every, 0.95), len(every))
            results["list_kinds"] = {
                (q or "(first page)"): (percentile(ts, 0.5), percentile(ts, 0.95))
                for q, ts in list_times.items()
            }

            page_times = []
            for i in range(args.rounds + 2):
                ms, body = await timed(http, f"{base}/requests/{BIG}")
                if i >= 2:
                    page_times.append(ms)
            results["request"] = (
                percentile(page_times, 0.5),
                percentile(page_times, 0.95),
                len(body) / 1024 / 1024,
            )
            live_times = []
            for _ in range(args.rounds):
                ms, _ = await timed(http, f"{base}/requests/{BIG}/live?after=999999999")
                live_times.append(ms)
            results["live"] = (percentile(live_times, 0.5), percentile(live_times, 0.95))

        # Idle streams: half on the list, half on requests.
        async with aiohttp.ClientSession(
            cookies=cookies,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        ) as http:
            streams = []
            for i in range(args.streams):
                path = "/events" if i % 2 else f"/events?request=req-{i:07d}"
                response = await http.get(base + path)
                await response.content.readuntil(b"\n\n")
                streams.append(response)
            await asyncio.sleep(1)
            before_cpu, before = cpu_seconds(server.pid), time.perf_counter()
            await asyncio.sleep(args.idle_seconds)
            spent = cpu_seconds(server.pid) - before_cpu
            elapsed = time.perf_counter() - before
            results["idle"] = (len(streams), spent, elapsed, rss_mb(server.pid))
            for response in streams:
                response.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    p50, p95, n = results["list"]
    print(f"list page (100 rows + counts), {args.requests:,} requests, {n} loads:")
    print(f"  server time p50 {p50:.1f} ms, p95 {p95:.1f} ms (target: under 150 ms)")
    for query, (k50, k95) in results["list_kinds"].items():
        print(f"    {query[:40]:<40} p50 {k50:6.1f} ms  p95 {k95:6.1f} ms")
    p50, p95, size = results["request"]
    print(f"request page with {args.activity:,} activity messages ({size:.1f} MB of HTML):")
    print(f"  server time p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    p50, p95 = results["live"]
    print(f"  live update of that page (nothing new): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    streams, spent, elapsed, rss = results["idle"]
    print(f"{streams} idle SSE streams held for {elapsed:.0f} s:")
    print(
        f"  server CPU {spent * 1000:.0f} ms ({spent / elapsed * 100:.2f}% of one core),"
        f" RSS {rss:.0f} MB"
    )


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--activity", type=int, default=5_000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=20, help="loads of each page kind")
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

        folder = Path(tempfile.mkdtemp(prefix="clarity-bench-web-"))
        folder.chmod(0o711)
        postgres = EmbeddedPostgres(folder / "pgdata", fast=True)
        try:
            server = postgres.start()
            results = asyncio.run(bench(args, server.url("postgres")))
        finally:
            postgres.stop()
            shutil.rmtree(folder, ignore_errors=True)
    report(results, args)
    print(json.dumps({k: v for k, v in results.items()}, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
