"""Choosing the runner backend (CLARITY_RUNNER) and what the control plane asks of any backend
beyond bot.runner.base: whose sandboxes it may judge, and how a cancel reaches it.

`local` and `http` are in this package; `docker` and `kubernetes` live in
bot/runner/docker.py and bot/runner/kubernetes.py where the build has them — a build without
one says so plainly instead of failing at the first run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bot.runner.base import RunnerBackend
from bot.runner.http import HttpBackend
from bot.runner.local import LocalBackend
from bot.settings import Settings

BACKENDS = ("local", "docker", "kubernetes", "http")


class RunnerNotAvailableError(ValueError):
    """CLARITY_RUNNER names a backend this build of Clarity does not have, or cannot use."""


def _module_backend(name: str, class_name: str, settings: Settings) -> RunnerBackend:
    try:
        module = importlib.import_module(f"bot.runner.{name}")
    except ModuleNotFoundError as exc:
        # Only the backend's own module (or what it needs) missing means "not in this build".
        raise RunnerNotAvailableError(
            f"CLARITY_RUNNER={name} is not available in this build of Clarity "
            f"({exc.name} is not installed); use CLARITY_RUNNER=local or http"
        ) from exc
    if not settings.clarity_agent_image:
        raise RunnerNotAvailableError(
            f"CLARITY_RUNNER={name} needs CLARITY_AGENT_IMAGE (the agent's container image)"
        )
    image = settings.clarity_agent_image
    backend: RunnerBackend
    if name == "docker":
        backend = module.DockerBackend(
            image=image,
            docker_url=settings.docker_host,
            network=settings.clarity_docker_network,
            limits=module.DockerLimits(
                cpus=settings.clarity_docker_cpus,
                memory=settings.clarity_docker_memory,
                pids=settings.clarity_docker_pids,
            ),
        )
    else:
        backend = module.KubernetesBackend(
            image=image,
            namespace=settings.clarity_k8s_namespace,
            api_url=settings.clarity_k8s_api_url,
            token=settings.secret("clarity_k8s_token"),
            ca_cert=settings.clarity_k8s_ca_cert,
            resources=module.KubernetesResources(
                cpu_request=settings.clarity_k8s_cpu_request,
                cpu_limit=settings.clarity_k8s_cpu_limit,
                memory=settings.clarity_k8s_memory,
            ),
            ttl_after_finished_s=settings.clarity_k8s_job_ttl_s,
            pending_timeout_s=settings.clarity_k8s_pending_timeout_s,
            service_account=settings.clarity_k8s_service_account,
        )
    assert class_name == type(backend).__name__
    return backend


def make_backend(
    settings: Settings,
    *,
    http_session: Callable[[], aiohttp.ClientSession],
    runs_dir: Path,
) -> RunnerBackend:
    """The backend CLARITY_RUNNER names (default: http with RUNNER_URL, else local)."""
    name = settings.runner_backend()
    if name == "http":
        return HttpBackend(url=settings.runner_url, session=http_session)
    if name == "local":
        return LocalBackend(runs_dir=runs_dir)
    if name == "docker":
        return _module_backend("docker", "DockerBackend", settings)
    if name == "kubernetes":
        return _module_backend("kubernetes", "KubernetesBackend", settings)
    raise RunnerNotAvailableError(f"CLARITY_RUNNER must be one of {', '.join(BACKENDS)}")


def scope(backend: RunnerBackend) -> str | None:
    """The machine a backend's sandboxes belong to (`local`), None when any replica can see
    every sandbox (a Docker daemon or cluster everyone shares, an outside runner)."""
    value = getattr(backend, "scope", None)
    return value if isinstance(value, str) and value else None


def owns(backend: RunnerBackend, sandbox_id: str) -> bool:
    """Whether this process may observe, cancel and reap the sandbox."""
    check = getattr(backend, "owns", None)
    return bool(check(sandbox_id)) if callable(check) else True


def delivers_cancel(backend: RunnerBackend) -> bool:
    """Whether a cancel is a job delivered with `start` (an outside runner) rather than
    the backend stopping the sandbox itself."""
    return bool(getattr(backend, "delivers_cancel", False))


def configured(backend: RunnerBackend) -> bool:
    """Whether the backend has somewhere to send runs (http: RUNNER_URL)."""
    return bool(getattr(backend, "configured", True))
