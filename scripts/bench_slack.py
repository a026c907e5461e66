"""Benchmark: signed `/clarity` commands from 50 concurrent senders; ack latency, throughput.

Against a server you run (its SLACK_SIGNING_SECRET must match)::

    python scripts/bench_slack.py --url http://127.0.0.1:3000/slack/events \
        --secret "$SLACK_SIGNING_SECRET"

Or let the script start everything (`clarity serve` in a subprocess, its job workers on, a
stub Slack Web API and a stub runner in this process, an embedded PostgreSQL unless
--database-url names a migrated database)::

    python scripts/bench_slack.py --spawn

It prints the ack latency percentiles (time until the HTTP answer Slack waits for, limit
3,000 ms) and throughput, then waits until /metrics shows every command recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]


def signed_command(
    secret: str, text: str, n: int, response_url: str
) -> tuple[bytes, dict[str, str]]:
    """A slash command body and its Slack v0 signature headers."""
    body = urlencode(
        {
            "team_id": "T0BENCH",
            "team_domain": "bench",
            "channel_id": f"C0BENCH{n % 10}",
            "channel_name": "bench",
            "user_id": f"U0BENCH{n % 50}",
            "user_name": f"bench{n % 50}",
            "command": "/clarity",
            "text": text,
            "api_app_id": "A0BENCH",
            "response_url": response_url,
            "trigger_id": f"{n}.{secrets.token_hex(8)}",
        }
    )
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }
    return body.encode(), headers


async def load(
    url: str, secret: str, *, senders: int, total: int, response_url: str, text: str
) -> tuple[list[float], int, float]:
    """Send `total` commands from `senders` concurrent senders; (latencies s, errors, wall s)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def sender() -> None:
            nonlocal errors
            for n in counter:
                body, headers = signed_command(secret, text.format(n=n), n, response_url)
                started = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        wall = time.perf_counter() - started
    return latencies, errors, wall


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


async def recorded(metrics_url: str) -> int:
    """Requests created from Slack so far, per the server's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as resp:
        text = await resp.text()
    match = re.search(r'clarity_requests_created_total\{origin="slack"\} ([0-9.e+]+)', text)
    return int(float(match.group(1))) if match else 0


# --- --spawn: stub Slack and runner, `clarity serve` in a subprocess ---------------------


async def _stub(request: web.Request) -> web.Response:
    method = request.match_info.get("method", "")
    await request.read()
    if method == "auth.test":
        return web.json_response(
            {"ok": True, "team_id": "T0BENCH", "user_id": "U0BOT", "bot_id": "B0BOT"}
        )
    if method == "chat.postMessage":
        return web.json_response({"ok": True, "channel": "C0BENCH", "ts": f"{time.time():.6f}"})
    return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def stub_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/api/{method}", _stub)
    app.router.add_post("/runner", _stub)
    app.router.add_post("/response", _stub)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    stub: str, database_url: str | None, port: int, secret: str, workers: bool
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m bot serve` with stubbed Slack and runner; its log goes to a temp folder."""
    data_dir = tempfile.mkdtemp(prefix="clarity-bench-")
    # As root the embedded PostgreSQL runs as its own system user, which must pass through.
    Path(data_dir).chmod(0o711)
    env = {
        **os.environ,
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_BOT_TOKEN": "xoxb-bench-token-000000000",
        "SLACK_API_URL": f"{stub}/api/",
        "RUNNER_URL": f"{stub}/runner",
        "CLARITY_API_TOKEN": secrets.token_hex(16),
        "CLARITY_DATA_DIR": data_dir,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHONPATH": str(ROOT),
        "CLARITY_RUN_WORKERS": "true" if workers else "false",
    }
    env.pop("SLACK_APP_TOKEN", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
    with (Path(data_dir) / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=data_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return proc, data_dir


@contextlib.asynccontextmanager
async def spawned_server(
    stub: str, database_url: str | None, workers: bool
) -> AsyncIterator[tuple[str, str]]:
    """`clarity serve` on a free port; yields (events URL, signing secret)."""
    port = free_port()
    secret = secrets.token_hex(16)
    proc, data_dir = start_server(stub, database_url, port, secret, workers)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited; see {data_dir}/server.log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become healthy in 120 s")
                await asyncio.sleep(0.25)
        yield f"{base}/slack/events", secret
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"server log: {data_dir}/server.log (exit code {proc.returncode})")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the server's /slack/events URL")
    parser.add_argument("--secret", default=os.environ.get("SLACK_SIGNING_SECRET"))
    parser.add_argument("--spawn", action="store_true", help="start clarity serve and stubs")
    parser.add_argument("--database-url", help="with --spawn: a migrated database to use")
    parser.add_argument(
        "--no-workers",
        action="store_true",
        help="with --spawn: serve without in-process job workers (as beside `clarity worker`)",
    )
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--text",
        default="acme/bench benchmark request {n}",
        help="command text ({n} is the command's number); e.g. 'help' measures the ack alone",
    )
    args = parser.parse_args()

    async with contextlib.AsyncExitStack() as stack:
        if args.spawn:
            stub = await stack.enter_async_context(stub_server())
            url, secret = await stack.enter_async_context(
                spawned_server(stub, args.database_url, not args.no_workers)
            )
            response_url = f"{stub}/response"
        else:
            if not args.url or not args.secret:
                parser.error("give --url and --secret (or SLACK_SIGNING_SECRET), or --spawn")
            url, secret, response_url = args.url, args.secret, "https://hooks.slack.com/none"
        metrics_url = url.rsplit("/slack/events", 1)[0] + "/metrics"
        before = await recorded(metrics_url)

        await load(
            url,
            secret,
            senders=args.senders,
            total=args.warmup,
            response_url=response_url,
            text=args.text,
        )
        latencies, errors, wall = await load(
            url,
            secret,
            senders=args.senders,
            total=args.requests,
            response_url=response_url,
            text=args.text,
        )
        # Filing commands are recorded by job workers; without them only the ack is measured.
        files = ("{n}" in args.text or "/" in args.text.split(" ")[0]) and not args.no_workers
        expected = before + (args.warmup + args.requests if files else 0)
        started = time.perf_counter()
        # Polling another process's /metrics: there is nothing local to wait on.
        while await recorded(metrics_url) < expected and time.perf_counter() - started < 300:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        drained = time.perf_counter() - started
        count = await recorded(metrics_url) - before
        ms = [v * 1000 for v in latencies]
        print(f"senders            {args.senders}")
        print(f"commands           {args.requests} (+{args.warmup} warm-up), errors {errors}")
        print(
            f"ack latency ms     p50 {percentile(ms, 50):.1f}  p90 {percentile(ms, 90):.1f}  "
            f"p99 {percentile(ms, 99):.1f}  max {max(ms):.1f}  mean {statistics.fmean(ms):.1f}"
        )
        print(f"throughput         {args.requests / wall:.0f} commands/s ({wall:.2f} s)")
        if files:
            print(
                f"recorded           {count} of {args.warmup + args.requests} requests, "
                f"the last {drained:.1f} s after the last ack"
            )
        print(f"cpu cores          {os.cpu_count()}")
        return 0 if errors == 0 and count == expected - before else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
