"""Benchmark of runs in containers (`docker`) beside the `local` backend (not a test).

    .venv/bin/python scripts/bench_sandbox.py [--runs 5] [--concurrent 10]

Needs root, a Docker engine at /var/run/docker.sock and the agent image
(`scripts/build-images agent`, tag clarity-agent:latest or CLARITY_AGENT_IMAGE). Everything
on this machine: a throwaway embedded PostgreSQL, the real server and job workers, the fake
Slack and GitHub, the real agent program running the fake Claude's `edit` scenario, the
remote served over git's smart HTTP on 127.0.0.1 (containers use the host's network).

1. Latency (`docker`): `--runs` runs one after another; container start (the engine's
   State.StartedAt) → the agent's first event stored, p50/p95; and dispatch (the run's start
   in clarity_runs, before the container is created) → first event.
2. Load: `--concurrent` runs filed at once, with the cap at `--concurrent`, on `docker` and
   then on `local`: wall time from filing to every run finished, and the host's peak memory
   in use (MemTotal - MemAvailable, sampled every 100 ms) above what it was before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiodocker  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402

from bot.runner.docker import work_volume_name  # noqa: E402
from tests.pg import build_template, fresh_database, session_server  # noqa: E402
from tests.runner.git_http import GitHttpServer  # noqa: E402
from tests.runner.local_support import REPO, Loop, free_port, running_loop  # noqa: E402

IMAGE = os.environ.get("CLARITY_AGENT_IMAGE", "clarity-agent:latest")
DOCKER_CLI = (
    "env -u CLAUDE_CODE_FAKE_LOG PYTHONPATH=/opt/clarity "
    "python3 -m agent.fake_claude --scenario edit"
)
LOCAL_CLI = "clarity-fake-claude --scenario edit"
STEP_S = 0.2


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def memory_in_use() -> int:
    """Bytes of the host's memory in use: MemTotal - MemAvailable."""
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) * 1024
    return fields["MemTotal"] - fields["MemAvailable"]


class Peak:
    """The most memory in use while it samples."""

    def __init__(self) -> None:
        self.base = memory_in_use()
        self.peak = self.base
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, memory_in_use())
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> int:
        """Peak above the base, in bytes."""
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.peak - self.base


async def _serve_git(loop: Loop, port: int) -> GitHttpServer:
    server = GitHttpServer(loop.base / "git", loop.github)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    server._server = TestServer(app, host="127.0.0.1", port=port)
    await server._server.start_server()
    return server


async def _first_event(loop: Loop, request_id: str) -> Any:
    found = [m for m in await loop.messages(request_id) if m.type.value.startswith("agent_")]
    return found[0] if found else None


async def _started_at(docker: aiodocker.Docker, request_id: str) -> dt.datetime | None:
    for container in await docker.containers.list(
        all=True, filters=json.dumps({"label": [f"clarity.request={request_id}"]})
    ):
        info = await container.show()
        text = str(info["State"]["StartedAt"])
        if text.startswith("0001"):
            return None
        # RFC 3339 with nanoseconds: keep microseconds.
        head, _, frac = text.rstrip("Z").partition(".")
        return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    return None


async def _cleanup(docker: aiodocker.Docker, ids: list[str]) -> None:
    for rid in ids:
        for container in await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"clarity.request={rid}"]})
        ):
            await container.delete(force=True)
        volume = aiodocker.volumes.DockerVolume(docker, work_volume_name(rid))  # type: ignore[no-untyped-call]
        with contextlib.suppress(aiodocker.exceptions.DockerError):
            await volume.delete()  # type: ignore[no-untyped-call]


async def _finished(loop: Loop, ids: list[str]) -> bool:
    for rid in ids:
        runs = await loop.runs(rid)
        if not runs or runs[-1].finished_at is None:
            return False
    return True


async def latency(db_url: str, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"container": [], "dispatch": []}
    port = free_port()
    docker = aiodocker.Docker()
    ids: list[str] = []
    try:
        async with running_loop(
            db_url,
            cli=DOCKER_CLI,
            step_s=STEP_S,
            clarity_runner="docker",
            clarity_agent_image=IMAGE,
            clarity_docker_network="host",
            git_url=f"http://127.0.0.1:{port}/",
        ) as loop:
            git_server = await _serve_git(loop, port)
            try:
                for n in range(runs):
                    request = await loop.file(f"{REPO} bench container {n}")
                    rid = request.request_id
                    ids.append(rid)
                    started: dt.datetime | None = None
                    deadline = time.monotonic() + 120
                    while True:
                        started = started or await _started_at(docker, rid)
                        event = await _first_event(loop, rid)
                        if event is not None:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"run {n}: no first event in 120 s")
                        await asyncio.sleep(0.05)
                    started = started or await _started_at(docker, rid)
                    run = await loop.run(rid, 1)
                    assert run.started_at is not None
                    if started is not None:
                        out["container"].append((event.created_at - started).total_seconds())
                    out["dispatch"].append((event.created_at - run.started_at).total_seconds())
                    await loop.wait_for(lambda: _finished(loop, ids[-1:]), "the run", 120)
            finally:
                await git_server.close()
    finally:
        await _cleanup(docker, ids)
        await docker.close()
    return out


async def load(db_url: str, backend: str, concurrent: int) -> tuple[float, int]:
    """(wall seconds, peak bytes above the base) for `concurrent` runs filed at once."""
    port = free_port()
    docker = aiodocker.Docker()
    ids: list[str] = []
    settings: dict[str, Any] = {"clarity_max_concurrent_runs": concurrent}
    if backend == "docker":
        settings.update(
            clarity_runner="docker",
            clarity_agent_image=IMAGE,
            clarity_docker_network="host",
            git_url=f"http://127.0.0.1:{port}/",
        )
    try:
        async with running_loop(
            db_url,
            cli=DOCKER_CLI if backend == "docker" else LOCAL_CLI,
            step_s=STEP_S,
            workers=3,
            **settings,
        ) as loop:
            git_server = await _serve_git(loop, port) if backend == "docker" else None
            try:
                peak = Peak()
                peak.start()
                started = time.monotonic()
                for n in range(concurrent):
                    sent = await loop.sender.command(f"{REPO} bench {backend} {n}")
                    assert sent.status == 200
                rows = await loop.wait_for(lambda: _all_filed(loop, concurrent), "the filings", 120)
                ids = [r.request_id for r in rows]
                await loop.wait_for(lambda: _finished(loop, ids), "every run", 600)
                wall = time.monotonic() - started
                grown = await peak.stop()
                states = [(await loop.run(rid, 1)).state for rid in ids]
                if set(states) != {"succeeded"}:
                    print(f"  ({backend}: run states {states})")
            finally:
                if git_server is not None:
                    await git_server.close()
    finally:
        if backend == "docker":
            await _cleanup(docker, ids)
        await docker.close()
    return wall, grown


async def _all_filed(loop: Loop, count: int) -> list[Any] | None:
    rows = await loop.requests()
    return rows if len(rows) >= count else None


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=10)
    args = parser.parse_args()
    with session_server() as server:
        template = build_template(server)
        with fresh_database(server, template=template) as db_url:
            found = asyncio.run(latency(db_url, args.runs))
        c, d = found["container"], found["dispatch"]
        print(f"\n{len(d)} docker runs one after another ({IMAGE}, fake Claude `edit`)")
        print(f"  container start → first event stored: p50 {pct(c, 50) * 1000:.0f} ms, "
              f"p95 {pct(c, 95) * 1000:.0f} ms ({len(c)} seen)")  # fmt: skip
        print(f"  dispatch → first event stored:        p50 {pct(d, 50) * 1000:.0f} ms, "
              f"p95 {pct(d, 95) * 1000:.0f} ms")  # fmt: skip
        print(f"\n{args.concurrent} concurrent runs of the fake `edit` scenario "
              f"({os.cpu_count()} cores)")  # fmt: skip
        for backend in ("docker", "local"):
            with fresh_database(server, template=template) as db_url:
                wall, grown = asyncio.run(load(db_url, backend, args.concurrent))
            print(f"  {backend:<6} wall {wall:.1f} s, host memory peak +{grown / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
