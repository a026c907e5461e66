"""DockerBackend against a real Docker engine: the sandbox's limits, the job document, cancel,
idempotent start, and containers left behind by a worker that died.

A container's command is a small Python script that reports to an HTTP server this test runs on
127.0.0.1 (the side-API's stand-in), reached through host networking.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import pytest
from aiodocker.exceptions import DockerError

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.runner.docker import DockerBackend, DockerLimits, parse_size, work_volume_name
from bot.runner.errors import SandboxStartError
from tests.runner.reports import Reports

pytestmark = pytest.mark.docker

# Runs in the container: `python3 -c SCRIPT <report url> <mode>`.
SCRIPT = r"""
import json, os, signal, sys, time, urllib.request
url, mode = sys.argv[1], sys.argv[2]

def post(kind, **data):
    body = json.dumps({"kind": kind, **data}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()

def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "ok"
    except OSError as e:
        return e.strerror

if mode == "report":
    lines = open("/proc/self/status").read().splitlines()
    status = dict(l.split(":", 1) for l in lines if ":" in l)
    seen = os.path.exists("/work/marker")
    open("/work/marker", "w").write(os.environ["CLARITY_JOB"])
    post("report", uid=os.getuid(), gid=os.getgid(), env=dict(os.environ),
         job=json.loads(os.environ["CLARITY_JOB"]), cwd=os.getcwd(), seen_marker=seen,
         work=can_write("/work/probe"), tmp=can_write("/tmp/probe"), root=can_write("/etc/probe"),
         cap_eff=status["CapEff"].strip(), no_new_privs=status["NoNewPrivs"].strip())
elif mode == "linger":
    signal.signal(signal.SIGTERM, lambda *_: post("sigterm"))
    post("ready")
    while True:
        time.sleep(1)
elif mode == "oom":
    post("ready")
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
"""


class Runs:
    """Makes RunSpecs with fresh request ids and removes everything they left at the end."""

    def __init__(self, reports: Reports) -> None:
        self.reports = reports
        self.request_ids: list[str] = []

    def spec(self, *, request_id: str | None = None, attempt: int = 1) -> RunSpec:
        request_id = request_id or str(uuid.uuid4())
        if request_id not in self.request_ids:
            self.request_ids.append(request_id)
        return RunSpec(
            request_id=request_id,
            attempt=attempt,
            kind="initial",
            job={
                "requestId": request_id,
                "attempt": attempt,
                "kind": "initial",
                "repo": "acme/web",
                "apiUrl": "http://127.0.0.1:3000/api",
                "apiToken": "job-token-" + request_id[:8],
                "conversation": [{"type": "initial_request", "content": 'make it "fast" ✓'}],
            },
            env={
                "LANG": "C.UTF-8",
                "PATH": "/root/.pyenv/shims:/usr/bin",
                "HOME": "/root",
                "GIT_AUTHOR_NAME": "Clarity",
                "CLARITY_BUDGET_USD": "10",
            },
            timeout_s=600,
        )

    def command(self, mode: str, request_id: str) -> list[str]:
        return ["python3", "-c", SCRIPT, f"{self.reports.url}/{request_id}", mode]


@pytest.fixture
async def runs(reports: Reports, docker: aiodocker.Docker) -> AsyncIterator[Runs]:
    made = Runs(reports)
    try:
        yield made
    finally:
        for request_id in made.request_ids:
            for c in await docker.containers.list(
                all=True, filters=json.dumps({"label": [f"clarity.request={request_id}"]})
            ):
                await c.delete(force=True)
            try:
                await aiodocker.volumes.DockerVolume(docker, work_volume_name(request_id)).delete()  # type: ignore[no-untyped-call]
            except DockerError as err:
                if err.status != 404:
                    raise


def backend_for(
    runs: Runs, mode: str, request_id: str, image: str, url: str, **kwargs: Any
) -> DockerBackend:
    return DockerBackend(
        image=image,
        docker_url=url,
        network="host",
        command=runs.command(mode, request_id),
        **kwargs,
    )


async def wait_finished(backend: DockerBackend, sandbox_id: str) -> SandboxStatus:
    async with asyncio.timeout(120):
        while True:
            status = await backend.observe(sandbox_id)
            if status.finished:
                return status
            await asyncio.sleep(0.2)


async def test_a_run_is_a_locked_down_container_that_gets_the_job(
    runs: Runs, runner_image: str, docker_url: str, docker: aiodocker.Docker
) -> None:
    spec = runs.spec()
    backend = backend_for(
        runs,
        "report",
        spec.request_id,
        runner_image,
        docker_url,
        limits=DockerLimits(cpus=0.5, memory="256m", pids=128),
    )
    try:
        sandbox_id = await backend.start(spec)
        report = await runs.reports.wait_for("report", spec.request_id)

        assert report["job"] == dict(spec.job)
        assert (report["uid"], report["gid"]) == (1000, 1000)
        assert report["cap_eff"] == "0000000000000000"
        assert report["no_new_privs"] == "1"
        assert (report["work"], report["tmp"]) == ("ok", "ok")
        assert report["root"] == "Read-only file system"
        env = report["env"]
        assert env["CLARITY_WORK_DIR"] == "/work/repo"
        assert env["HOME"] == "/work"
        assert env["GIT_AUTHOR_NAME"] == "Clarity"
        # The worker's PATH stays outside; the image's applies.
        assert "/root/.pyenv" not in env["PATH"]
        assert report["cwd"] == "/work"

        info = await (await docker.containers.get(sandbox_id)).show()
        assert info["Name"] == f"/{spec.name}"
        assert info["Config"]["User"] == "1000:1000"
        assert info["Config"]["Labels"]["clarity.run"] == "1"
        assert info["Config"]["Labels"]["clarity.request"] == spec.request_id
        assert info["Config"]["Labels"]["clarity.attempt"] == "1"
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["Memory"] == 256 * 1024**2
        assert host["PidsLimit"] == 128
        assert host["NanoCpus"] == 500_000_000
        assert host["NetworkMode"] == "host"
        assert "/tmp" in host["Tmpfs"]  # noqa: S108 (the container's)
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/work"]["Name"] == work_volume_name(spec.request_id)

        assert await wait_finished(backend, sandbox_id) == SandboxStatus(
            SandboxState.EXITED, exit_code=0
        )
        await backend.reap(sandbox_id)
        assert (await backend.observe(sandbox_id)).state is SandboxState.GONE

        # The next run of the request finds the work volume as the last one left it.
        second = runs.spec(request_id=spec.request_id, attempt=2)
        runs.reports.received.clear()
        second_id = await backend.start(second)
        assert (await runs.reports.wait_for("report", spec.request_id))["seen_marker"] is True
        await wait_finished(backend, second_id)
        await backend.reap(second_id)

        # A final request's volume can go; it was kept until asked.
        assert await backend.drop_work_volume(spec.request_id) is True
        with pytest.raises(DockerError) as missing:
            await docker.volumes.get(work_volume_name(spec.request_id))  # type: ignore[no-untyped-call]
        assert missing.value.status == 404
    finally:
        await backend.close()


async def test_starting_the_same_attempt_again_is_a_no_op(
    runs: Runs, runner_image: str, docker_url: str, docker: aiodocker.Docker
) -> None:
    spec = runs.spec()
    backend = backend_for(runs, "linger", spec.request_id, runner_image, docker_url)
    other_replica = backend_for(runs, "linger", spec.request_id, runner_image, docker_url)
    try:
        ids = await asyncio.gather(backend.start(spec), other_replica.start(spec))
        again = await backend.start(spec)
        assert ids[0] == ids[1] == again
        await runs.reports.wait_for("ready", spec.request_id)
        found = await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"clarity.request={spec.request_id}"]})
        )
        assert [c.id for c in found] == [again]
        # A volume in use is not dropped.
        assert await backend.drop_work_volume(spec.request_id) is False
    finally:
        await backend.close()
        await other_replica.close()


async def test_cancel_stops_and_removes_within_15_seconds(
    runs: Runs, runner_image: str, docker_url: str
) -> None:
    spec = runs.spec()
    backend = backend_for(runs, "linger", spec.request_id, runner_image, docker_url)
    try:
        sandbox_id = await backend.start(spec)
        await runs.reports.wait_for("ready", spec.request_id)
        assert (await backend.observe(sandbox_id)).state is SandboxState.RUNNING

        started = time.monotonic()
        # The script ignores SIGTERM (it only reports it): the kill after the grace ends it.
        await backend.cancel(sandbox_id, grace_s=2)
        elapsed = time.monotonic() - started

        await runs.reports.wait_for("sigterm", spec.request_id, within_s=5)
        assert elapsed < 15
        assert (await backend.observe(sandbox_id)).state is SandboxState.GONE
        assert sandbox_id not in await backend.sandboxes()
        # Unknown ids are ignored.
        await backend.cancel(sandbox_id)
        await backend.reap(sandbox_id)
    finally:
        await backend.close()


async def test_a_container_left_by_a_dead_worker_is_found_and_reaped(
    runs: Runs, runner_image: str, docker_url: str
) -> None:
    spec = runs.spec()
    dead_worker = backend_for(runs, "linger", spec.request_id, runner_image, docker_url)
    sandbox_id = await dead_worker.start(spec)
    await dead_worker.close()
    await runs.reports.wait_for("ready", spec.request_id)

    survivor = DockerBackend(image=runner_image, docker_url=docker_url)
    try:
        assert sandbox_id in await survivor.sandboxes()
        assert (await survivor.observe(sandbox_id)).state is SandboxState.RUNNING
        await survivor.reap(sandbox_id)
        assert sandbox_id not in await survivor.sandboxes()
        assert (await survivor.observe(sandbox_id)).state is SandboxState.GONE
    finally:
        await survivor.close()


async def test_out_of_memory_is_a_failure_with_a_reason(
    runs: Runs, runner_image: str, docker_url: str
) -> None:
    spec = runs.spec()
    backend = backend_for(
        runs,
        "oom",
        spec.request_id,
        runner_image,
        docker_url,
        limits=DockerLimits(memory="64m", tmp_size="8m"),
    )
    try:
        sandbox_id = await backend.start(spec)
        status = await wait_finished(backend, sandbox_id)
        assert status.state is SandboxState.FAILED
        assert status.reason == "ran out of memory (limit 64m) and was killed"
        await backend.reap(sandbox_id)
    finally:
        await backend.close()


async def test_a_missing_image_is_a_start_error_that_names_it(runs: Runs, docker_url: str) -> None:
    spec = runs.spec()
    backend = DockerBackend(image="clarity-no-such-image:never", docker_url=docker_url, pull=False)
    try:
        with pytest.raises(SandboxStartError, match="clarity-no-such-image:never"):
            await backend.start(spec)
        assert (await backend.observe("no-such-container")).state is SandboxState.GONE
    finally:
        await backend.close()


# -- without an engine ---------------------------------------------------------------------


def test_sizes() -> None:
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1GiB") == 1024**3
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_a_run_past_its_time_limit_is_a_failure() -> None:
    backend = DockerBackend(image="x", docker_url="unix:///nowhere")
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    info = {
        "State": {"Status": "running", "StartedAt": "2025-01-02T03:04:05.123456789Z"},
        "Config": {"Labels": {"clarity.timeout-s": "60"}},
    }
    assert backend.status_of(info, now=started + timedelta(seconds=30)).state is (
        SandboxState.RUNNING
    )
    late = backend.status_of(info, now=started + timedelta(seconds=61))
    assert late == SandboxStatus(SandboxState.FAILED, reason="ran longer than its limit of 60 s")


def test_the_sandbox_environment_holds_the_job_and_in_container_paths() -> None:
    backend = DockerBackend(image="clarity-agent:latest", docker_url="unix:///nowhere")
    spec = RunSpec(
        request_id="R1", attempt=3, kind="retry", job={"requestId": "R1"}, env={"PATH": "/x"}
    )
    config = backend.container_config(spec)
    env = dict(e.split("=", 1) for e in config["Env"])
    assert json.loads(env["CLARITY_JOB"]) == {"requestId": "R1"}
    assert env["CLARITY_WORK_DIR"] == "/work/repo"
    assert "PATH" not in env
    assert config["Cmd"] == ["python3", "-m", "agent", "run"]
    assert config["HostConfig"]["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert config["HostConfig"]["Mounts"][0]["Source"] == "clarity-work-r1"
