"""Benchmark of runs on the `local` backend (not a test).

    .venv/bin/python scripts/bench_runner.py [--runs 30] [--concurrent 20] [--events 200]

Everything on this machine: a throwaway embedded PostgreSQL (or TEST_DATABASE_URL, a role
that may create databases), the real server and job workers, the fake Slack, and the real
agent program (`python -m agent run`, as the clarity-agent user when root) driving a
stand-in Claude Code that writes stream-json events as fast as asked, then one file.

1. Latency: `--runs` runs one after another; time from dispatch (the run's start in
   clarity_runs) to the agent's first event stored, p50/p99 (and from the request's filing).
2. Load: `--concurrent` runs at once, each of `--events` events: every event stored, in
   order, nothing lost; Slack progress calls per run (coalesced, at most one per second per
   request); freshness = an event's emission → the first progress update that counts it,
   p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import select  # noqa: E402

from storage.models import SlackPost  # noqa: E402
from tests.pg import build_template, fresh_database, session_server  # noqa: E402
from tests.runner.local_support import REPO, Loop, running_loop  # noqa: E402

# A stand-in for Claude Code: init, N assistant events (each saying when it was written, on
# the machine's monotonic clock), one file written, a successful result.
EMITTER = textwrap.dedent(
    """
    import json, os, sys, time, uuid
    args = sys.argv[1:]
    n = int(args[args.index("--events") + 1])
    pause = float(args[args.index("--pause") + 1])
    sys.stdin.read()
    sid = str(uuid.uuid4())
    def emit(event):
        sys.stdout.write(json.dumps(event) + "\\n")
        sys.stdout.flush()
    emit({"type": "system", "subtype": "init", "session_id": sid, "cwd": os.getcwd(),
          "tools": [], "model": "bench"})
    for i in range(1, n + 1):
        text = "step %d at %.6f" % (i, time.monotonic())
        emit({"type": "assistant", "session_id": sid, "parent_tool_use_id": None,
              "message": {"id": "msg_%d" % i, "role": "assistant",
                          "content": [{"type": "text", "text": text}]}})
        if pause:
            time.sleep(pause)
    with open("bench.txt", "w") as f:
        f.write("done\\n")
    emit({"type": "result", "subtype": "success", "is_error": False, "result": "Bench run",
          "session_id": sid, "total_cost_usd": 0.01, "duration_ms": 1000, "num_turns": n})
    """
)
STEP = re.compile(r"step (\d+) at ([0-9.]+)")
PROGRESS = re.compile(r"^(?:Working|Run finished): (\d+) steps?")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


async def agent_messages(loop: Loop, request_id: str) -> list[Any]:
    return [m for m in await loop.messages(request_id) if m.type.value.startswith("agent_")]


async def latency(db_url: str, runs: int, folder: Path) -> dict[str, list[float]]:
    """Runs one after another: dispatch → first event."""
    cli = f"python3 {folder / 'emitter.py'} --events 3 --pause 0"
    out: dict[str, list[float]] = {"dispatch": [], "filed": []}
    async with running_loop(db_url, cli=cli, workers=2, progress_interval_s=1.0) as loop:
        for n in range(runs):
            request = await loop.file(f"{REPO} bench run {n}")
            rid = request.request_id

            async def first(rid: str = rid) -> Any:
                found = await agent_messages(loop, rid)
                return found[0] if found else None

            event = await loop.wait_for(first, f"run {n}'s first event", timeout_s=120)
            run = await loop.run(rid, 1)
            assert run.started_at is not None
            out["dispatch"].append(seconds(run.started_at, event.created_at))
            out["filed"].append(seconds(request.created_at, event.created_at))
            await loop.wait_for(lambda rid=rid: loop.bundle(rid, 1), "the bundle", 120)
        await loop.wait_for(loop.all_reaped, "every run reaped", 120)
    return out


async def load(db_url: str, concurrent: int, events: int, pause: float, folder: Path) -> None:
    cli = f"python3 {folder / 'emitter.py'} --events {events} --pause {pause}"
    async with running_loop(
        db_url,
        cli=cli,
        workers=2,
        progress_interval_s=1.0,
        clarity_max_concurrent_runs=concurrent,
        github_app_id=None,  # no tracking issues: progress counts only the agent's events
    ) as loop:
        started = time.monotonic()
        for n in range(concurrent):
            sent = await loop.sender.command(f"{REPO} bench load {n}")
            assert sent.status == 200
        filed = await loop.wait_for(lambda: _all_filed(loop, concurrent), "the filings")
        ids = [r.request_id for r in filed]

        async def all_stored() -> bool:
            for rid in ids:
                if len(await agent_messages(loop, rid)) < events + 1:
                    return False
                if await loop.bundle(rid, 1) is None:
                    return False
            return True

        await loop.wait_for(all_stored, "every event stored", timeout_s=900)
        elapsed = time.monotonic() - started
        await loop.wait_for(loop.all_reaped, "every run reaped", 120)
        await asyncio.sleep(2.5)  # the last coalesced progress edits
        await loop.wait_for(lambda: _progress_done(loop), "progress jobs", 60)

        lost = 0
        out_of_order = 0
        fresh: list[float] = []
        slack_calls: list[int] = []
        calls = loop.slack.calls()
        for rid in ids:
            row = await loop.request(rid)
            messages = [
                m for m in await agent_messages(loop, rid) if m.type.value == "agent_thinking"
            ]
            steps = [STEP.match(m.content) for m in messages]
            numbers = [int(s.group(1)) for s in steps if s]
            lost += events - len(set(numbers))
            out_of_order += int(numbers != sorted(numbers))
            emitted = {int(s.group(1)): float(s.group(2)) for s in steps if s}
            updates = _progress_calls(calls, row.slack_thread_ts, await _progress_ts(loop, rid))
            slack_calls.append(len(updates))
            for step, at in emitted.items():
                shown = next((t for t, count in updates if count >= step), None)
                if shown is not None:
                    fresh.append(shown - at)
        print(f"\n{concurrent} concurrent runs of {events} events ({pause * 1000:.0f} ms apart), "
              f"{os.cpu_count()} cores, wall {elapsed:.1f} s")  # fmt: skip
        print(f"  events stored: {concurrent * events - lost}/{concurrent * events} "
              f"(lost {lost}, runs out of order {out_of_order})")  # fmt: skip
        print(f"  Slack progress calls per run: min {min(slack_calls)}, "
              f"median {statistics.median(slack_calls):.0f}, max {max(slack_calls)} "
              f"(for {events + 1} agent messages each)")  # fmt: skip
        print(f"  freshness (event → progress update): p50 {pct(fresh, 50) * 1000:.0f} ms, "
              f"p95 {pct(fresh, 95) * 1000:.0f} ms over {len(fresh)} events")  # fmt: skip


def _progress_calls(
    calls: list[Any], thread_ts: str | None, progress_ts: set[str]
) -> list[tuple[float, int]]:
    """(time, steps shown) of every post and edit of one request's progress message."""
    out: list[tuple[float, int]] = []
    for call in calls:
        match = PROGRESS.match(str(call.get("text")))
        if match is None:
            continue
        posted = call.method == "chat.postMessage" and call.get("thread_ts") == thread_ts
        edited = call.method == "chat.update" and str(call.get("ts")) in progress_ts
        if posted or edited:
            out.append((call.at, int(match.group(1))))
    return sorted(out)


async def _progress_ts(loop: Loop, request_id: str) -> set[str]:
    async with loop.graph.services.session_factory() as session:
        rows = await session.scalars(
            select(SlackPost.ts).where(
                SlackPost.request_id == request_id, SlackPost.purpose == "progress"
            )
        )
        return {str(ts) for ts in rows}


async def _all_filed(loop: Loop, count: int) -> list[Any] | None:
    rows = await loop.requests()
    return rows if len(rows) >= count else None


async def _progress_done(loop: Loop) -> bool:
    return all(j.status != "queued" for j in await loop.jobs("slack.progress"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between events")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="clarity-bench-", dir="/tmp"))
    folder.chmod(0o755)
    (folder / "emitter.py").write_text(EMITTER)
    (folder / "emitter.py").chmod(0o644)
    try:
        with session_server() as server:
            template = build_template(server)
            with fresh_database(server, template=template) as db_url:
                found = asyncio.run(latency(db_url, args.runs, folder))
            d, f = found["dispatch"], found["filed"]
            print(f"\n{len(d)} runs one after another (local backend, agent, stand-in CLI)")
            print(f"  dispatch → first event stored: p50 {pct(d, 50) * 1000:.0f} ms, "
                  f"p99 {pct(d, 99) * 1000:.0f} ms")  # fmt: skip
            print(f"  filed → first event stored:    p50 {pct(f, 50) * 1000:.0f} ms, "
                  f"p99 {pct(f, 99) * 1000:.0f} ms")  # fmt: skip
            with fresh_database(server, template=template) as db_url:
                asyncio.run(load(db_url, args.concurrent, args.events, args.pause, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
