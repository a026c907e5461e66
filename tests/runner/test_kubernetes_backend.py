"""KubernetesBackend against a fake Kubernetes API server that checks every body against the
API's schema (tests/runner/fake_kubernetes.py) and plays what happens to a Job's pod."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.runner.errors import SandboxStartError
from bot.runner.kubernetes import KubernetesBackend, KubernetesResources
from tests.runner.fake_kubernetes import TOKEN, FakeKubernetes, check

NS = "clarity"


@pytest.fixture
async def cluster() -> AsyncIterator[FakeKubernetes]:
    fake = FakeKubernetes()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
    assert fake.invalid == [], "the backend sent objects the API would refuse"


@pytest.fixture
async def backend(cluster: FakeKubernetes) -> AsyncIterator[KubernetesBackend]:
    made = make_backend(cluster)
    try:
        yield made
    finally:
        await made.close()


def make_backend(cluster: FakeKubernetes, **kwargs: Any) -> KubernetesBackend:
    options: dict[str, Any] = {
        "image": "registry.example.com/clarity-agent:1.2.3",
        "api_url": cluster.url,
        "token": TOKEN,
        "namespace": NS,
    }
    options.update(kwargs)
    return KubernetesBackend(**options)


def run_spec(request_id: str = "2f1c9a7e-0b7d-4c55-9d0e-8a4f4e3b2a10", attempt: int = 1) -> RunSpec:
    return RunSpec(
        request_id=request_id,
        attempt=attempt,
        kind="initial",
        job={
            "requestId": request_id,
            "attempt": attempt,
            "kind": "initial",
            "repo": "acme/web",
            "apiUrl": "https://clarity.example.com/api",
            "apiToken": "job-token-secret",
        },
        env={
            "LANG": "C.UTF-8",
            "PATH": "/home/worker/.venv/bin:/usr/bin",
            "HOME": "/home/worker",
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "CLARITY_BUDGET_USD": "10",
        },
        timeout_s=600,
    )


async def test_start_creates_a_locked_down_job_then_its_secret(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    spec = run_spec()
    assert await backend.start(spec) == spec.name

    writes = [(c.method, c.path) for c in cluster.calls if c.method == "POST"]
    assert writes == [
        ("POST", f"/apis/batch/v1/namespaces/{NS}/jobs"),
        ("POST", f"/api/v1/namespaces/{NS}/secrets"),
    ]
    job = cluster.job(spec.name)
    assert job["metadata"]["labels"] == spec.labels
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    template = job["spec"]["template"]
    assert template["metadata"]["labels"] == spec.labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    assert container["command"] == [
        "python3",
        "-m",
        "agent",
        "run",
        "--job",
        "/var/run/clarity/job.json",
    ]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/work": "work", "/tmp": "tmp", "/var/run/clarity": "job"}  # noqa: S108
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["work"] and "emptyDir" in volumes["tmp"]
    assert volumes["job"]["secret"]["secretName"] == spec.name
    env = {e["name"]: e.get("value") or e["valueFrom"] for e in container["env"]}
    assert env["CLARITY_WORK_DIR"] == "/work/repo"
    assert env["HOME"] == "/work"
    assert env["ANTHROPIC_API_KEY"] == {
        "secretKeyRef": {"name": spec.name, "key": "ANTHROPIC_API_KEY"}
    }
    assert "PATH" not in env and "CLARITY_JOB" not in env
    # The job document (with its token) and the Anthropic key are in the Secret only.
    assert "job-token-secret" not in json.dumps(job)
    assert "sk-ant-test" not in json.dumps(job)

    secret = cluster.secrets[(NS, spec.name)]
    assert json.loads(secret["stringData"]["job.json"]) == dict(spec.job)
    assert secret["stringData"]["ANTHROPIC_API_KEY"] == "sk-ant-test"
    assert set(secret["stringData"]) == {"job.json", "ANTHROPIC_API_KEY"}
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Job",
        spec.name,
        job["metadata"]["uid"],
    )
    assert secret["metadata"]["labels"] == spec.labels


async def test_a_second_start_finds_the_job_and_creates_nothing(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    spec = run_spec()
    first = await backend.start(spec)
    other_replica = make_backend(cluster)
    try:
        assert await other_replica.start(spec) == first
    finally:
        await other_replica.close()
    assert len(cluster.jobs) == 1 and len(cluster.secrets) == 1
    assert len(cluster.pods) == 1


async def test_a_job_whose_secret_was_not_made_gets_it_on_the_next_start(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    spec = run_spec()
    await backend.start(spec)
    # As if the worker died between the two creates.
    del cluster.secrets[(NS, spec.name)]
    await backend.start(spec)
    secret = cluster.secrets[(NS, spec.name)]
    assert (
        secret["metadata"]["ownerReferences"][0]["uid"] == cluster.job(spec.name)["metadata"]["uid"]
    )


async def test_observe_follows_the_pod_from_pending_to_exit(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    spec = run_spec()
    name = await backend.start(spec)
    assert await backend.observe(name) == SandboxStatus(SandboxState.PENDING)
    cluster.running(name)
    assert await backend.observe(name) == SandboxStatus(SandboxState.RUNNING)
    cluster.succeeded(name)
    assert await backend.observe(name) == SandboxStatus(SandboxState.EXITED, exit_code=0)

    failing = run_spec(attempt=2)
    name = await backend.start(failing)
    cluster.running(name)
    cluster.failed(name, exit_code=3)
    assert await backend.observe(name) == SandboxStatus(SandboxState.EXITED, exit_code=3)


async def test_sandbox_failures_come_with_a_reason_a_person_understands(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    pull = await backend.start(run_spec(attempt=1))
    cluster.image_pull_backoff(pull)
    status = await backend.observe(pull)
    assert status.state is SandboxState.FAILED
    assert status.reason == (
        "could not pull the image registry.example.com/clarity-agent:1.2.3: "
        'Back-off pulling image "registry.example.com/clarity-agent:1.2.3"'
    )

    oom = await backend.start(run_spec(attempt=2))
    cluster.running(oom)
    cluster.oom_killed(oom)
    assert await backend.observe(oom) == SandboxStatus(
        SandboxState.FAILED, exit_code=137, reason="ran out of memory (limit 2Gi) and was killed"
    )

    late = await backend.start(run_spec(attempt=3))
    cluster.running(late)
    cluster.deadline_exceeded(late)
    assert await backend.observe(late) == SandboxStatus(
        SandboxState.FAILED,
        exit_code=143,
        reason="ran longer than its limit of 600 s and was stopped",
    )

    # The kubelet retries a missing Secret: only waiting too long for it is a failure.
    unready = await backend.start(run_spec(attempt=5))
    missing = 'secret "x" not found'
    cluster.waiting(unready, "CreateContainerConfigError", missing)
    assert await backend.observe(unready) == SandboxStatus(SandboxState.PENDING)
    cluster.waiting(unready, "CreateContainerConfigError", missing, ago=timedelta(seconds=301))
    assert await backend.observe(unready) == SandboxStatus(
        SandboxState.FAILED, reason=f"could not start: {missing}"
    )

    stuck = await backend.start(run_spec(attempt=4))
    full = "0/3 nodes are available: 3 Insufficient memory."
    cluster.pending_since(stuck, timedelta(seconds=60), full)
    assert await backend.observe(stuck) == SandboxStatus(SandboxState.PENDING)
    cluster.pending_since(stuck, timedelta(seconds=301), full)
    assert await backend.observe(stuck) == SandboxStatus(
        SandboxState.FAILED, reason=f"still waiting to start after 300 s: {full}"
    )


async def test_cancel_deletes_the_job_in_the_foreground(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    spec = run_spec()
    name = await backend.start(spec)
    cluster.running(name)
    await backend.cancel(name, grace_s=10)

    (delete,) = [c for c in cluster.calls if c.method == "DELETE"]
    assert delete.path == f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
    assert delete.body == {"propagationPolicy": "Foreground", "gracePeriodSeconds": 10}
    assert await backend.observe(name) == SandboxStatus(SandboxState.GONE)
    # The Secret went with its owner; the pod with its Job.
    assert cluster.secrets == {} and cluster.pods == {}
    # Unknown names are ignored.
    await backend.cancel(name)
    await backend.reap(name)


async def test_jobs_left_by_a_dead_worker_are_found_and_reaped(
    cluster: FakeKubernetes, backend: KubernetesBackend
) -> None:
    dead_worker = make_backend(cluster)
    left = await dead_worker.start(run_spec(attempt=7))
    await dead_worker.close()

    assert await backend.sandboxes() == [left]
    assert any(
        c.query.get("labelSelector") == "clarity.run=1" for c in cluster.calls if c.method == "GET"
    )
    cluster.running(left)
    cluster.succeeded(left)
    await backend.reap(left)
    assert await backend.sandboxes() == []


async def test_a_refused_start_is_an_error_that_says_why(cluster: FakeKubernetes) -> None:
    wrong_token = make_backend(cluster, token="not-the-token")
    try:
        with pytest.raises(SandboxStartError, match=r"\(401\): Unauthorized"):
            await wrong_token.start(run_spec())
    finally:
        await wrong_token.close()
    assert cluster.jobs == {}


def test_resources_and_names_are_settings(cluster: FakeKubernetes) -> None:
    backend = make_backend(
        cluster,
        resources=KubernetesResources(cpu_request="500m", cpu_limit="2", memory="4Gi"),
        ttl_after_finished_s=60,
        service_account="clarity-agent",
    )
    job = backend.job_manifest(run_spec())
    check(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "clarity-agent"


def test_the_schema_check_is_strict() -> None:
    # So that the fake's acceptance means something: a misspelt field is refused.
    job = KubernetesBackend(image="x", api_url="http://127.0.0.1:1", namespace=NS).job_manifest(
        run_spec()
    )
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(jsonschema.ValidationError):
        check(job)
