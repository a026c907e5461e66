"""CLARITY_RUNNER=docker|kubernetes: the backend is built from the settings that name it."""

from __future__ import annotations

import aiohttp

from bot.runner.docker import DockerBackend
from bot.runner.factory import make_backend
from bot.runner.kubernetes import KubernetesBackend
from bot.settings import Settings


def _session() -> aiohttp.ClientSession:
    raise AssertionError("not used by these backends")


def test_docker_backend_from_settings(tmp_path: object) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        clarity_runner="docker",
        clarity_agent_image="clarity-agent:test",
        docker_host="unix:///run/test-docker.sock",
        clarity_docker_network="host",
        clarity_docker_cpus=2.5,
        clarity_docker_memory="3g",
        clarity_docker_pids=300,
    )
    backend = make_backend(settings, http_session=_session, runs_dir=tmp_path)  # type: ignore[arg-type]
    assert isinstance(backend, DockerBackend)
    assert (backend.image, backend.docker_url, backend.network) == (
        "clarity-agent:test",
        "unix:///run/test-docker.sock",
        "host",
    )
    assert (backend.limits.cpus, backend.limits.memory, backend.limits.pids) == (2.5, "3g", 300)


def test_kubernetes_backend_from_settings(tmp_path: object) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        clarity_runner="kubernetes",
        clarity_agent_image="registry.example.com/clarity-agent:1",
        clarity_k8s_namespace="agents",
        clarity_k8s_api_url="https://127.0.0.1:6443",
        clarity_k8s_token="k8s-token-for-tests-0123",
        clarity_k8s_memory="4Gi",
        clarity_k8s_pending_timeout_s=120,
    )
    backend = make_backend(settings, http_session=_session, runs_dir=tmp_path)  # type: ignore[arg-type]
    assert isinstance(backend, KubernetesBackend)
    assert backend.image == "registry.example.com/clarity-agent:1"
    assert backend.api_url == "https://127.0.0.1:6443"
    assert "k8s-token-for-tests-0123" in settings.known_secrets()
