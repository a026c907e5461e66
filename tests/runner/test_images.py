"""The images scripts/build-images makes: the agent's runs under DockerBackend's lockdown with
its tools in place, and Clarity's holds exactly the locked Python packages."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiodocker.exceptions import DockerError

from bot.runner.base import RunSpec, SandboxState
from bot.runner.docker import DockerBackend, work_volume_name
from tests.runner.dockerd import build_images
from tests.runner.reports import Reports

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
AGENT_IMAGE = "clarity-agent:latest"
CLARITY_IMAGE = "clarity:latest"

# Runs in the agent image as DockerBackend starts it: reports the tools it finds.
PROBE = r"""
import json, os, subprocess, sys, urllib.request
def out(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return (p.returncode, (p.stdout or p.stderr).strip())
facts = {
    "kind": "tools",
    "claude": out("claude", "--version"),
    "git": out("git", "--version"),
    "node": out("node", "--version"),
    "agent": out("python3", "-c", "import agent, os; print(os.path.dirname(agent.__file__))"),
    "uid": os.getuid(),
    "work_owner": os.stat("/work").st_uid,
}
req = urllib.request.Request(sys.argv[1], data=json.dumps(facts).encode(),
                             headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=10).read()
"""


@pytest.fixture(scope="session")
def agent_image(docker_url: str) -> str:
    if not (ROOT / "agent").is_dir():
        pytest.skip("agent/ (the agent program) is not in this checkout yet")
    build_images("agent")
    return AGENT_IMAGE


@pytest.fixture(scope="session")
def clarity_image(docker_url: str) -> str:
    build_images("clarity")
    return CLARITY_IMAGE


async def test_the_agent_image_runs_locked_down_with_its_tools(
    agent_image: str, docker_url: str, reports: Reports, docker: aiodocker.Docker
) -> None:
    request_id = str(uuid.uuid4())
    spec = RunSpec(request_id=request_id, attempt=1, kind="initial", job={"requestId": request_id})
    backend = DockerBackend(
        image=agent_image,
        docker_url=docker_url,
        network="host",
        command=["python3", "-c", PROBE, f"{reports.url}/{request_id}"],
    )
    try:
        sandbox_id = await backend.start(spec)
        facts = await reports.wait_for("tools", request_id)
        assert facts["claude"][0] == 0 and "Claude Code" in facts["claude"][1]
        assert facts["git"][0] == 0
        assert facts["node"][0] == 0
        assert facts["agent"] == [0, "/opt/clarity/agent"]
        # The work volume takes the image's /work, which belongs to the agent.
        assert facts["uid"] == facts["work_owner"] == 1000
        async with asyncio.timeout(60):
            while True:
                status = await backend.observe(sandbox_id)
                if status.finished:
                    break
                await asyncio.sleep(0.2)
        assert status.state is SandboxState.EXITED and status.exit_code == 0
    finally:
        for c in await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"clarity.request={request_id}"]})
        ):
            await c.delete(force=True)
        try:
            await aiodocker.volumes.DockerVolume(docker, work_volume_name(request_id)).delete()  # type: ignore[no-untyped-call]
        except DockerError as err:
            if err.status != 404:
                raise
        await backend.close()


# Runs in the clarity image, read-only and offline: everything the tests below look at, in one
# container (each container start copies the image with the vfs storage driver).
CLARITY_FACTS = r"""
import json, os, subprocess
def out(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return [p.returncode, p.stdout + p.stderr]
print(json.dumps({
    "uid": os.getuid(),
    "help": out("clarity", "--help"),
    "imports": out("python", "-c", "import bot.runner.docker, bot.runner.kubernetes"),
    "packages": json.loads(out("pip", "list", "--format=json")[1]),
}))
"""


@pytest.fixture(scope="module")
def clarity_facts(clarity_image: str) -> dict[str, Any]:
    docker_run = ["docker", "run", "--rm", "--read-only", "--network", "none"]
    shown = subprocess.run(
        [*docker_run, "--tmpfs", "/tmp", clarity_image, "python", "-c", CLARITY_FACTS],  # noqa: S108
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    facts: dict[str, Any] = json.loads(shown)
    return facts


def test_the_clarity_image_serves_as_a_non_root_user(clarity_facts: dict[str, Any]) -> None:
    assert clarity_facts["uid"] == 10001
    assert clarity_facts["help"][0] == 0 and "serve" in clarity_facts["help"][1]
    assert clarity_facts["imports"] == [0, ""]


def test_the_clarity_image_holds_exactly_the_locked_packages(
    clarity_facts: dict[str, Any],
) -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", lock, re.M))

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    installed = {norm(p["name"]): p["version"] for p in clarity_facts["packages"]}
    for name, version in pins.items():
        assert installed.get(norm(name)) == version, name
    assert installed["clarity"] == "0.1.0"
