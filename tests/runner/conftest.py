"""Fixtures of the runner backend tests: a Docker engine and the images, or a fake Kubernetes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiodocker
import pytest
from aiohttp import web

from tests.runner.dockerd import build_images, docker_build, docker_engine, why_no_docker
from tests.runner.reports import Reports

# The test image: the agent's debootstrap base with /work owned by the agent's uid, as the
# agent image has it (a new volume takes the owner of the folder it is mounted on).
TEST_IMAGE = "clarity-runner-test:latest"
TEST_DOCKERFILE = """\
FROM clarity-base:bookworm
RUN mkdir /work && chown 1000:1000 /work
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: needs a Docker engine (started here as root with dockerd if absent)"
    )


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    """The engine's URL; the tests start `dockerd --storage-driver=vfs` when none answers."""
    reason = why_no_docker()
    if reason:
        pytest.skip(reason)
    with docker_engine() as url:
        yield url


@pytest.fixture(scope="session")
def runner_image(docker_url: str) -> str:
    """A small image for backend tests, FROM the base scripts/build-images makes."""
    build_images("base")
    docker_build(TEST_IMAGE, TEST_DOCKERFILE)
    return TEST_IMAGE


@pytest.fixture
async def docker(docker_url: str) -> AsyncIterator[aiodocker.Docker]:
    """An Engine API client of the test's own, to look at what a backend made."""
    client = aiodocker.Docker(url=docker_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def reports() -> AsyncIterator[Reports]:
    """The side-API's stand-in on 127.0.0.1 (containers reach it with host networking)."""
    rec = Reports()
    runner = web.AppRunner(rec.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/report"
    try:
        yield rec
    finally:
        await runner.cleanup()
