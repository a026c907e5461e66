"""The `docker` runner backend: one container per run, over the Docker Engine API.

Each run is a container named `RunSpec.name` from the agent image, labelled with
`RunSpec.labels`, running the agent program as uid 1000 on a read-only root file system with
every capability dropped and no way to gain privileges. Its only writable places are a tmpfs at
/tmp and a volume at /work that belongs to the request, not the run: every run of a request
finds the checkout (CLARITY_WORK_DIR=/work/repo) and the Claude session where the last run left
them. The job document goes in as the environment variable CLARITY_JOB.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiodocker
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.runner.errors import SandboxStartError

log = logging.getLogger(__name__)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
DEFAULT_COMMAND = ("python3", "-m", "agent", "run")
WORK_MOUNT = "/work"
# Paths inside the container; the runner's environment may carry the host's versions of these.
SANDBOX_PATHS = {
    "HOME": WORK_MOUNT,
    "CLARITY_WORK_DIR": f"{WORK_MOUNT}/repo",
    "CLAUDE_CONFIG_DIR": f"{WORK_MOUNT}/.claude",
}
# The image's PATH applies inside; a PATH from the worker's machine means nothing there.
DROPPED_ENV = frozenset({"PATH"})
RUN_LABEL = "clarity.run"
VOLUME_LABEL = "clarity.work"
TIMEOUT_LABEL = "clarity.timeout-s"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes in a Docker-style size: 512m, 2g, 2GiB, 1073741824."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 512m or 2g)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_kmgt".index(unit.lower() or "_"))


@dataclass(frozen=True)
class DockerLimits:
    """What one agent container may use (CLARITY_DOCKER_CPUS, _MEMORY, _PIDS)."""

    cpus: float = 1.0
    memory: str | int = "2g"
    pids: int = 512
    # /tmp is memory: it counts against `memory`.
    tmp_size: str | int = "512m"

    @property
    def memory_bytes(self) -> int:
        """`memory` in bytes."""
        return parse_size(self.memory)


def work_volume_name(request_id: str) -> str:
    """The name of a request's work volume: the same for every run of the request."""
    slug = "".join(c if c.isalnum() else "-" for c in request_id.lower()).strip("-")
    return f"clarity-work-{slug[:60]}"


class DockerBackend:
    """Runs each run in its own container through the Docker Engine API (aiodocker)."""

    name = "docker"

    def __init__(
        self,
        *,
        image: str,
        docker_url: str | None = None,
        network: str = "bridge",
        limits: DockerLimits | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        user: str = "1000:1000",
        pull: bool = True,
        create_wait_s: float = 120.0,
        client: aiodocker.Docker | None = None,
    ) -> None:
        """`docker_url` unset: DOCKER_HOST, else the local socket. `network` is a Docker
        network name, or "host" for a side-API that listens on 127.0.0.1 only. A `client`
        given here stays the caller's to close."""
        self.image = image
        self.docker_url = docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        self.network = network
        self.limits = limits or DockerLimits()
        self.command = list(command)
        self.user = user
        self.pull = pull
        self.create_wait_s = create_wait_s
        self._client = client
        self._owns_client = client is None

    def _docker(self) -> aiodocker.Docker:
        # Made on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = aiodocker.Docker(url=self.docker_url)
        return self._client

    # -- start -------------------------------------------------------------------------

    def container_config(self, spec: RunSpec) -> dict[str, Any]:
        """The Engine API's create body for a run (public for tests and for reading)."""
        env = {k: v for k, v in spec.env.items() if k not in DROPPED_ENV}
        env.update(SANDBOX_PATHS)
        env["CLARITY_JOB"] = json.dumps(dict(spec.job), separators=(",", ":"))
        labels = {**spec.labels, TIMEOUT_LABEL: str(spec.timeout_s)}
        limits = self.limits
        memory = limits.memory_bytes
        host_config: dict[str, Any] = {
            "NetworkMode": self.network,
            "NanoCpus": int(limits.cpus * 1e9),
            "Memory": memory,
            # Equal to Memory: no swap, so the limit is the limit.
            "MemorySwap": memory,
            "PidsLimit": limits.pids,
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            # A tiny init as PID 1 passes SIGTERM on to the agent and reaps its children.
            "Init": True,
            "RestartPolicy": {"Name": "no"},
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": work_volume_name(spec.request_id),
                    "Target": WORK_MOUNT,
                    # Labels apply when the first run of the request creates the volume.
                    "VolumeOptions": {
                        "Labels": {VOLUME_LABEL: "1", "clarity.request": spec.request_id}
                    },
                }
            ],
            # The container's own /tmp, in its memory: not a shared host folder.
            "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={parse_size(limits.tmp_size)}"},  # noqa: S108
        }
        if self.network != "host":
            # So a Clarity on the Docker host is reachable as host.docker.internal.
            host_config["ExtraHosts"] = ["host.docker.internal:host-gateway"]
        return {
            "Image": self.image,
            "Cmd": self.command,
            "Env": [f"{k}={v}" for k, v in sorted(env.items())],
            "Labels": labels,
            "User": self.user,
            "WorkingDir": WORK_MOUNT,
            "StopSignal": "SIGTERM",
            "HostConfig": host_config,
        }

    async def start(self, spec: RunSpec) -> str:
        """Create and start the run's container; a second start finds it by name."""
        config = self.container_config(spec)
        container = await self._create_or_find(config, spec.name)
        if isinstance(container, str):
            return container
        try:
            await container.start()
        except DockerError as err:
            await self._remove(container.id)
            raise SandboxStartError(
                f"docker could not start {spec.name} from {self.image}: {err.message}"
            ) from err
        log.info("started container %s (%s) for %s", spec.name, container.id[:12], spec.request_id)
        return container.id

    async def _create_or_find(self, config: Mapping[str, Any], name: str) -> DockerContainer | str:
        """A new container, or the one of this name if it was never started, or the id of one
        that was (started before, maybe by another replica)."""
        deadline = time.monotonic() + self.create_wait_s
        while True:
            try:
                return await self._create(config, name)
            except DockerError as err:
                if err.status != 409:
                    raise SandboxStartError(
                        f"docker could not create {name} from {self.image}: {err.message}"
                    ) from err
            try:
                container = await self._docker().containers.get(name)
                info = await container.show()
            except DockerError as err:
                if err.status != 404:
                    raise
                # Another create holds the name until its copy of the image is made (seconds
                # with the vfs storage driver); if that create fails, the name is free again.
                if time.monotonic() > deadline:
                    raise SandboxStartError(
                        f"docker holds the name {name} but shows no such container"
                    ) from err
                await asyncio.sleep(0.2)
                continue
            if info["State"]["Status"] == "created":
                return container
            return str(info["Id"])

    async def _create(self, config: Mapping[str, Any], name: str) -> DockerContainer:
        docker = self._docker()
        try:
            return await docker.containers.create(config, name=name)
        except DockerError as err:
            if not (err.status == 404 and self.pull and "image" in err.message.lower()):
                raise
        # No such image here: fetch it from its registry once, then create.
        log.info("pulling %s", self.image)
        await docker.images.pull(self.image)
        return await docker.containers.create(config, name=name)

    # -- watch and stop ----------------------------------------------------------------

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        """The container's state from `inspect`."""
        try:
            info = await (await self._docker().containers.get(sandbox_id)).show()
        except DockerError as err:
            if err.status == 404:
                return SandboxStatus(SandboxState.GONE)
            raise
        return self.status_of(info)

    def status_of(self, info: Mapping[str, Any], now: datetime | None = None) -> SandboxStatus:
        """A SandboxStatus from a container's inspect document."""
        state = info["State"]
        status = state.get("Status")
        if status == "created":
            if state.get("Error"):
                return SandboxStatus(SandboxState.FAILED, reason=f"did not start: {state['Error']}")
            return SandboxStatus(SandboxState.PENDING)
        if status in ("running", "paused", "restarting"):
            timeout_s = int(info.get("Config", {}).get("Labels", {}).get(TIMEOUT_LABEL, 0) or 0)
            started = _parse_time(state.get("StartedAt"))
            now = now or datetime.now(UTC)
            if timeout_s and started and (now - started).total_seconds() > timeout_s:
                return SandboxStatus(
                    SandboxState.FAILED, reason=f"ran longer than its limit of {timeout_s} s"
                )
            return SandboxStatus(SandboxState.RUNNING)
        if status in ("exited", "dead"):
            code = state.get("ExitCode")
            if state.get("OOMKilled"):
                memory = info.get("HostConfig", {}).get("Memory") or self.limits.memory_bytes
                return SandboxStatus(
                    SandboxState.FAILED,
                    exit_code=code,
                    reason=f"ran out of memory (limit {_human_size(memory)}) and was killed",
                )
            if state.get("Error"):
                return SandboxStatus(SandboxState.FAILED, exit_code=code, reason=state["Error"])
            return SandboxStatus(SandboxState.EXITED, exit_code=code)
        # "removing", or anything newer than this code.
        return SandboxStatus(SandboxState.GONE, reason=f"container is {status}")

    async def cancel(self, sandbox_id: str, *, grace_s: float = 10.0) -> None:
        """SIGTERM, `grace_s` to finish, SIGKILL; then remove. Unknown ids are ignored."""
        container = self._docker().containers.container(sandbox_id)
        try:
            await container.stop(t=max(math.ceil(grace_s), 0))
        except DockerError as err:
            if err.status == 404:
                return
            # 304: already stopped. Anything else: removal below still ends it.
            if err.status != 304:
                log.warning("stopping %s: %s", sandbox_id[:12], err.message)
        await self._remove(sandbox_id)

    async def reap(self, sandbox_id: str) -> None:
        """Remove the container; the request's work volume stays for its next run."""
        await self._remove(sandbox_id)

    async def _remove(self, sandbox_id: str) -> None:
        try:
            await self._docker().containers.container(sandbox_id).delete(force=True)
        except DockerError as err:
            # 404: gone already; 409: removal already under way.
            if err.status not in (404, 409):
                raise

    async def drop_work_volume(self, request_id: str) -> bool:
        """Delete a final request's work volume; False while a container still uses it."""
        name = work_volume_name(request_id)
        try:
            await self._docker().volumes.get(name)  # type: ignore[no-untyped-call]
            await aiodocker.volumes.DockerVolume(self._docker(), name).delete()  # type: ignore[no-untyped-call]
        except DockerError as err:
            if err.status == 404:
                return True
            if err.status == 409:
                return False
            raise
        return True

    async def sandboxes(self) -> list[str]:
        """Every container labelled clarity.run=1, running or not."""
        containers = await self._docker().containers.list(
            all="true", filters=json.dumps({"label": [f"{RUN_LABEL}=1"]})
        )
        return [c.id for c in containers]

    async def close(self) -> None:
        """Close the Engine API client if this backend made it."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None


def _parse_time(text: str | None) -> datetime | None:
    # Docker writes nanoseconds (2024-01-02T03:04:05.123456789Z); Python takes microseconds.
    if not text or text.startswith("0001-"):
        return None
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    base, fraction, zone = match.groups()
    micro = (fraction or ".0")[:7]
    return datetime.fromisoformat(f"{base}{micro}{'+00:00' if zone == 'Z' else zone}")


def _human_size(n: int) -> str:
    for unit, size in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"
