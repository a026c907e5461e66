"""The whole loop with the `docker` backend: /clarity → a container of the agent image runs the
agent program with the fake Claude → its bundle comes back → the publish job pushes the
branch to the remote and opens the pull request → the container is reaped.

The real server and workers on PostgreSQL, the fake Slack and GitHub, and the remote served
over git's smart HTTP on 127.0.0.1 (a container cannot see a host file:// path); the
container uses the host's network, so it reaches the side-API and the remote there. Needs
root and a Docker engine (tests/runner/conftest.py starts dockerd when none answers).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import aiodocker
import pytest
from aiodocker.exceptions import DockerError
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.runner.docker import work_volume_name
from storage.models import Run
from tests.runner.dockerd import build_images
from tests.runner.git_http import GitHttpServer
from tests.runner.local_support import REPO, Loop, free_port, git, running_loop

pytestmark = pytest.mark.docker

AGENT_IMAGE = "clarity-agent:latest"
# The agent package is in the image at /opt/clarity; its fake Claude runs from there. The agent
# gives Claude Code an environment of its own making (no PYTHONPATH), hence `env`; the fake's
# start log names a host path the container does not have.
FAKE_CLI = (
    "env -u CLAUDE_CODE_FAKE_LOG PYTHONPATH=/opt/clarity "
    "python3 -m agent.fake_claude --scenario edit"
)


@pytest.fixture(scope="session")
def agent_image(docker_url: str) -> str:
    """The agent image scripts/build-images makes (built once, then cached by Docker)."""
    build_images("agent")
    return AGENT_IMAGE


async def _serve_git(server: GitHttpServer, port: int) -> None:
    """GitHttpServer.start, on a port chosen before the loop (GITHUB_GIT_URL names it)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    server._server = TestServer(app, host="127.0.0.1", port=port)
    await server._server.start_server()


async def _containers(docker: aiodocker.Docker, request_id: str) -> list[Any]:
    found = await docker.containers.list(
        all=True, filters=json.dumps({"label": [f"clarity.request={request_id}"]})
    )
    return list(found)


async def test_the_fake_claude_in_a_container_produces_the_pull_request(
    db_url: str, agent_image: str, docker: aiodocker.Docker
) -> None:
    git_port = free_port()
    async with running_loop(
        db_url,
        cli=FAKE_CLI,
        publish=True,
        clarity_runner="docker",
        clarity_agent_image=agent_image,
        clarity_docker_network="host",
        git_url=f"http://127.0.0.1:{git_port}/",
    ) as loop:
        server = GitHttpServer(loop.base / "git", loop.github)
        await _serve_git(server, git_port)
        rid = ""
        try:
            request = await loop.file(f"{REPO} add a greeting file")
            rid = request.request_id
            try:
                done = await loop.wait_for(
                    lambda: loop.status_is(rid, "pr_created", "failed", "error"),
                    "the pull request",
                    120,
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await _trail(loop, rid, docker)}") from None
            assert done.status.value == "pr_created", await _trail(loop, rid, docker)

            # The run: one container, started once by the docker backend, then reaped.
            run = await loop.wait_for(lambda: _finished(loop, rid), "the run's end", 60)
            assert run.backend == "docker" and run.state == "succeeded", run.error
            assert len(await loop.runs(rid)) == 1
            assert run.sandbox_id is not None
            await loop.wait_for(lambda: _reaped(docker, rid), "the container to be removed", 60)

            # The branch with the agent's commit is on the remote, on top of main.
            refs = git("--git-dir", str(loop.remote), "for-each-ref", "--format=%(refname)")
            (branch,) = [r for r in refs.split() if r.startswith("refs/heads/clarity/")]
            shown = git("--git-dir", str(loop.remote), "show", f"{branch}:hello.txt")
            assert "Hello from Clarity" in shown
            git("--git-dir", str(loop.remote), "merge-base", "--is-ancestor", "main", branch)

            # One pull request, from that branch, on the fake GitHub.
            pulls = [p for (repo, _), p in loop.github.pulls.items() if repo == REPO]
            assert len(pulls) == 1
            assert _head(pulls[0]) == branch.removeprefix("refs/heads/")

            # The agent read over HTTP with a token and the publish job pushed with one.
            services = {(c.service, c.status) for c in server.calls}
            assert ("git-upload-pack", 200) in services
            assert ("git-receive-pack", 200) in services
        finally:
            await server.close()
            if rid:
                for container in await _containers(docker, rid):
                    await container.delete(force=True)
                # The request's work volume outlives its runs (the next run's checkout).
                volume = aiodocker.volumes.DockerVolume(docker, work_volume_name(rid))  # type: ignore[no-untyped-call]
                with contextlib.suppress(DockerError):
                    await volume.delete()  # type: ignore[no-untyped-call]


async def _finished(loop: Loop, request_id: str) -> Run | None:
    (run,) = await loop.runs(request_id)
    return run if run.finished_at is not None else None


async def _reaped(docker: aiodocker.Docker, request_id: str) -> bool:
    return not await _containers(docker, request_id)


def _head(pull: dict[str, Any]) -> str:
    head = pull["head"]
    return str(head["ref"] if isinstance(head, dict) else head)


async def _trail(loop: Loop, request_id: str, docker: aiodocker.Docker) -> str:
    """What happened, for a failure's message: the request's trail, runs, jobs, containers."""
    messages = await loop.messages(request_id)
    runs = await loop.runs(request_id)
    jobs = [
        (j.kind, j.status, j.attempts, j.last_error)
        for kind in ("dispatch", "publish")
        for j in await loop.jobs(kind)
    ]
    logs = []
    for container in await _containers(docker, request_id):
        lines = await container.log(stdout=True, stderr=True)
        logs.append("".join(lines)[-3000:])
    return json.dumps(
        {
            "status": (await loop.request(request_id)).status.value,
            "messages": [(m.type.value, m.content[:300]) for m in messages],
            "runs": [(r.attempt, r.state, r.error) for r in runs],
            "jobs": jobs,
            "containers": logs,
        },
        default=str,
        indent=1,
    )
