"""A Docker engine for the tests: the machine's own if one answers, else one we start.

`dockerd --storage-driver=vfs` works in any root file system (no overlay mounts needed), which
is what CI's machines have. A daemon the tests started is stopped when they end; one that was
already running is left alone.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SOCKET = "/var/run/docker.sock"
ROOT = Path(__file__).resolve().parents[2]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(self._path)
        self.sock = sock


def engine_answers(path: str = SOCKET) -> bool:
    """The engine at `path` answers GET /_ping."""
    if not os.path.exists(path):
        return False
    conn = _UnixHTTPConnection(path)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def why_no_docker() -> str | None:
    """Why Docker tests cannot run here, or None when they can."""
    if engine_answers():
        return None
    if os.geteuid() != 0:
        return "needs root to start dockerd (no Docker engine answers at /var/run/docker.sock)"
    if not shutil.which("dockerd"):
        return "dockerd is not installed (apt-get install docker.io)"
    return None


@contextlib.contextmanager
def docker_engine(timeout_s: float = 90.0) -> Iterator[str]:
    """Yield the engine's URL, starting `dockerd --storage-driver=vfs` when none answers."""
    if engine_answers():
        yield f"unix://{SOCKET}"
        return
    log_file = Path(tempfile.gettempdir()) / "clarity-tests-dockerd.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            ["dockerd", "--storage-driver=vfs", "--host", f"unix://{SOCKET}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not engine_answers():
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}; see {log_file}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer in {timeout_s:.0f} s; see {log_file}")
            time.sleep(0.2)
        yield f"unix://{SOCKET}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_images(*targets: str) -> None:
    """scripts/build-images for `targets` (cached: an existing base is not made again)."""
    subprocess.run([str(ROOT / "scripts" / "build-images"), *targets], check=True, cwd=ROOT)


def _build_command() -> tuple[list[str], dict[str, str]]:
    # As scripts/build-images: BuildKit where a client has it (buildx, or a client before 23.0
    # with it built in), else the classic builder.
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        return ["docker", "build"], {"DOCKER_BUILDKIT": "1"}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        client = Path(folder, "docker")
        if not os.access(client, os.X_OK):
            continue
        version = subprocess.run(
            [str(client), "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
            return [str(client), "build"], {"DOCKER_BUILDKIT": "1"}
    return ["docker", "build"], {"DOCKER_BUILDKIT": "0"}


def docker_build(tag: str, dockerfile: str) -> None:
    """Build a small image from Dockerfile text with no context."""
    command, env = _build_command()
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Dockerfile").write_text(dockerfile)
        subprocess.run(
            [*command, "--quiet", "-t", tag, ctx],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
