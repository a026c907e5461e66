"""The `kubernetes` runner backend: one Job per run, through the official Kubernetes client.

Each run is a Job named `RunSpec.name` in one namespace: a single pod (backoffLimit 0,
restartPolicy Never) that runs the agent program as uid 1000 with a read-only root file system,
no capabilities, no privilege escalation and the runtime's default seccomp profile, limited in
CPU and memory and in time (activeDeadlineSeconds). Its writable places are emptyDir volumes at
/work and /tmp. The job document is a Secret of the same name, mounted as a file and passed with
`--job`; the Secret is owned by the Job, so deleting the Job (or its TTL) deletes it too.

The client is synchronous: every call runs in a thread (asyncio.to_thread). Objects are sent as
the API's own JSON and answers read as JSON, so what this module writes is what the API server
sees, field for field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import load_incluster_config

from bot.runner.base import RunSpec, SandboxState, SandboxStatus
from bot.runner.errors import SandboxStartError

log = logging.getLogger(__name__)

DEFAULT_COMMAND = ("python3", "-m", "agent", "run")
JOB_DIR = "/var/run/clarity"
JOB_FILE = "job.json"
WORK_MOUNT = "/work"
# Paths inside the pod; the runner's environment may carry the worker machine's versions.
SANDBOX_PATHS = {
    "HOME": WORK_MOUNT,
    "CLARITY_WORK_DIR": f"{WORK_MOUNT}/repo",
    "CLAUDE_CONFIG_DIR": f"{WORK_MOUNT}/.claude",
}
# The image's PATH applies inside; the job document comes as a file, not in the environment.
DROPPED_ENV = frozenset({"PATH", "CLARITY_JOB"})
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
IMAGE_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONTAINER_FAILURES = {"CreateContainerError", "RunContainerError"}
# The kubelet retries it: the run's Secret may simply not exist yet (it is made after the Job).
CONFIG_NOT_READY = "CreateContainerConfigError"
# Environment values that go through the run's Secret rather than the Job's spec, which anyone
# allowed to read Jobs could read.
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")

T = TypeVar("T")


@dataclass(frozen=True)
class KubernetesResources:
    """Requests and limits of the agent's container, and the sizes of its scratch volumes."""

    cpu_request: str = "250m"
    cpu_limit: str = "1"
    # Request = limit for memory: the pod is not the first evicted when the node runs short.
    memory: str = "2Gi"
    work_size: str = "10Gi"
    tmp_size: str = "1Gi"


class KubernetesBackend:
    """Runs each run as a Kubernetes Job (batch/v1) in one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        image: str,
        namespace: str | None = None,
        api_url: str | None = None,
        token: str | None = None,
        ca_cert: str | None = None,
        verify_tls: bool = True,
        resources: KubernetesResources | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        ttl_after_finished_s: int = 3600,
        pending_timeout_s: int = 300,
        grace_s: int = 10,
        service_account: str | None = None,
        request_timeout_s: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`api_url` unset: the in-cluster configuration (service account token and CA).
        `namespace` unset: the pod's own namespace in a cluster, else "default"."""
        self.image = image
        self.api_url = api_url
        self._token = token
        self.ca_cert = ca_cert
        self.verify_tls = verify_tls
        self.namespace = namespace or _own_namespace()
        self.resources = resources or KubernetesResources()
        self.command = list(command)
        self.ttl_after_finished_s = ttl_after_finished_s
        self.pending_timeout_s = pending_timeout_s
        self.grace_s = grace_s
        self.service_account = service_account
        self.request_timeout_s = request_timeout_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._api: k8s.ApiClient | None = None

    def _client(self) -> k8s.ApiClient:
        if self._api is None:
            config = k8s.Configuration()
            if self.api_url is None:
                load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
            else:
                config.host = self.api_url.rstrip("/")
                config.verify_ssl = self.verify_tls
                config.ssl_ca_cert = self.ca_cert
                if self._token:
                    config.api_key = {"authorization": self._token}
                    config.api_key_prefix = {"authorization": "Bearer"}
            self._api = k8s.ApiClient(config)
        return self._api

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call in a thread; the answer's JSON as dicts."""
        kwargs.setdefault("_request_timeout", self.request_timeout_s)

        def call() -> Any:
            response = fn(*args, _preload_content=False, **kwargs)
            return json.loads(response.data or b"null")

        return await asyncio.to_thread(call)

    def _batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self._client())

    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._client())

    # -- the objects -----------------------------------------------------------------------

    def job_manifest(self, spec: RunSpec) -> dict[str, Any]:
        """The Job of a run, as the API takes it (public for tests and for reading)."""
        env = {k: v for k, v in spec.env.items() if k not in DROPPED_ENV}
        env.update(SANDBOX_PATHS)
        env_list: list[dict[str, Any]] = [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": spec.name, "key": k}}}
            if SECRET_ENV.search(k)
            else {"name": k, "value": v}
            for k, v in sorted(env.items())
        ]
        res = self.resources
        no_privileges = {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            # The agent has no business with the Kubernetes API, nor with other services' env.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": self.grace_s,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "agent",
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": [*self.command, "--job", f"{JOB_DIR}/{JOB_FILE}"],
                    "workingDir": WORK_MOUNT,
                    "env": env_list,
                    "resources": {
                        "requests": {"cpu": res.cpu_request, "memory": res.memory},
                        "limits": {"cpu": res.cpu_limit, "memory": res.memory},
                    },
                    "securityContext": no_privileges,
                    "volumeMounts": [
                        {"name": "work", "mountPath": WORK_MOUNT},
                        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (the pod's own)
                        {"name": "job", "mountPath": JOB_DIR, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "work", "emptyDir": {"sizeLimit": res.work_size}},
                {"name": "tmp", "emptyDir": {"sizeLimit": res.tmp_size}},
                {
                    "name": "job",
                    # Readable by the pod's group (fsGroup 1000) only.
                    "secret": {"secretName": spec.name, "defaultMode": 0o440},
                },
            ],
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": spec.name, "namespace": self.namespace, "labels": spec.labels},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": spec.timeout_s,
                "ttlSecondsAfterFinished": self.ttl_after_finished_s,
                "template": {"metadata": {"labels": spec.labels}, "spec": pod_spec},
            },
        }

    def secret_manifest(self, spec: RunSpec, job: Mapping[str, Any]) -> dict[str, Any]:
        """The Secret holding the job document and the secret environment values (the
        Anthropic key), owned by the run's Job.

        No blockOwnerDeletion: setting it needs `update` on jobs/finalizers where the
        OwnerReferencesPermissionEnforcement admission plugin runs, a right the Role does not
        grant; the garbage collector deletes the Secret with its Job either way."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": spec.name,
                "namespace": self.namespace,
                "labels": spec.labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                    }
                ],
            },
            "stringData": {
                JOB_FILE: json.dumps(dict(spec.job), separators=(",", ":")),
                **{k: v for k, v in spec.env.items() if SECRET_ENV.search(k)},
            },
        }

    # -- start -------------------------------------------------------------------------

    async def start(self, spec: RunSpec) -> str:
        """Create the Job, then its Secret; a second start finds both and creates nothing."""
        batch = self._batch()
        try:
            job = await self._call(
                batch.create_namespaced_job, self.namespace, self.job_manifest(spec)
            )
            log.info("created Job %s/%s for %s", self.namespace, spec.name, spec.request_id)
        except ApiException as err:
            if err.status != 409:
                raise SandboxStartError(_start_error(f"create Job {spec.name}", err)) from err
            job = await self._call(batch.read_namespaced_job, spec.name, self.namespace)
        # The Job exists first so that the Secret can name it as its owner; the pod waits for
        # the Secret before it starts.
        try:
            await self._call(
                self._core().create_namespaced_secret,
                self.namespace,
                self.secret_manifest(spec, job),
            )
        except ApiException as err:
            if err.status != 409:
                raise SandboxStartError(_start_error(f"create Secret {spec.name}", err)) from err
        return spec.name

    # -- watch and stop ----------------------------------------------------------------

    async def observe(self, sandbox_id: str) -> SandboxStatus:
        """The Job's state, and its pod's when the Job does not say yet."""
        try:
            job = await self._call(self._batch().read_namespaced_job, sandbox_id, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return SandboxStatus(SandboxState.GONE)
            raise
        pods = await self._call(
            self._core().list_namespaced_pod,
            self.namespace,
            label_selector=f"job-name={sandbox_id}",
        )
        return self.status_of(job, pods.get("items", []))

    def status_of(self, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> SandboxStatus:
        """A SandboxStatus from a Job and its pods, as the API returns them."""
        if job.get("metadata", {}).get("deletionTimestamp"):
            return SandboxStatus(SandboxState.GONE, reason="being deleted")
        status = job.get("status") or {}
        conditions = {
            c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"
        }
        pod = _newest(pods)
        terminated = _terminated(pod)
        code = terminated.get("exitCode") if terminated else None
        failed = conditions.get("Failed") or conditions.get("FailureTarget")
        if failed and failed.get("reason") == "DeadlineExceeded":
            deadline = job.get("spec", {}).get("activeDeadlineSeconds")
            return SandboxStatus(
                SandboxState.FAILED,
                exit_code=code,
                reason=f"ran longer than its limit of {deadline} s and was stopped",
            )
        if terminated and terminated.get("reason") == "OOMKilled":
            return SandboxStatus(
                SandboxState.FAILED,
                exit_code=code,
                reason=f"ran out of memory (limit {self._memory_limit(job)}) and was killed",
            )
        if conditions.get("Complete") or status.get("succeeded"):
            return SandboxStatus(SandboxState.EXITED, exit_code=0 if code is None else code)
        if failed or status.get("failed"):
            if code is not None:
                return SandboxStatus(SandboxState.EXITED, exit_code=code)
            reason = (failed or {}).get("message") or (failed or {}).get("reason") or "failed"
            return SandboxStatus(SandboxState.FAILED, reason=f"the Job failed: {reason}")
        if terminated:
            # The pod ended; the Job controller has not written it down yet.
            return SandboxStatus(SandboxState.EXITED, exit_code=code)
        return self._live_status(job, pod)

    def _live_status(self, job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> SandboxStatus:
        now = self._clock()
        if pod is None:
            age = _age(job.get("metadata", {}).get("creationTimestamp"), now)
            if age is not None and age > self.pending_timeout_s:
                return SandboxStatus(
                    SandboxState.FAILED,
                    reason=f"no pod was created in {self.pending_timeout_s} s "
                    "(a quota, or an admission policy that refused it?)",
                )
            return SandboxStatus(SandboxState.PENDING)
        waiting = _waiting(pod)
        reason = waiting.get("reason")
        if reason in IMAGE_PULL_FAILURES:
            image = self.image
            detail = waiting.get("message") or reason
            return SandboxStatus(
                SandboxState.FAILED, reason=f"could not pull the image {image}: {detail}"
            )
        if reason == CONFIG_NOT_READY:
            age = _age(pod.get("metadata", {}).get("creationTimestamp"), now)
            if age is None or age <= self.pending_timeout_s:
                return SandboxStatus(SandboxState.PENDING)
        if reason in CONTAINER_FAILURES or reason == CONFIG_NOT_READY:
            detail = waiting.get("message") or reason
            return SandboxStatus(SandboxState.FAILED, reason=f"could not start: {detail}")
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running":
            return SandboxStatus(SandboxState.RUNNING)
        if phase in (None, "Pending", "Unknown"):
            age = _age(pod.get("metadata", {}).get("creationTimestamp"), now)
            if age is not None and age > self.pending_timeout_s:
                return SandboxStatus(
                    SandboxState.FAILED,
                    reason=f"still waiting to start after {self.pending_timeout_s} s: "
                    f"{_pending_why(pod)}",
                )
            return SandboxStatus(SandboxState.PENDING)
        return SandboxStatus(SandboxState.RUNNING)

    def _memory_limit(self, job: Mapping[str, Any]) -> str:
        try:
            containers = job["spec"]["template"]["spec"]["containers"]
            return str(containers[0]["resources"]["limits"]["memory"])
        except (KeyError, IndexError, TypeError):
            return self.resources.memory

    async def cancel(self, sandbox_id: str, *, grace_s: float = 10.0) -> None:
        """Delete the Job and, first, its pods (SIGTERM, grace, SIGKILL). Unknown ids: ignored."""
        await self._delete(sandbox_id, grace_s=grace_s)

    async def reap(self, sandbox_id: str) -> None:
        """Delete what is left of a finished Job: the Job, its pod and its Secret."""
        await self._delete(sandbox_id, grace_s=None)

    async def _delete(self, name: str, *, grace_s: float | None) -> None:
        options: dict[str, Any] = {"propagationPolicy": "Foreground"}
        if grace_s is not None:
            options["gracePeriodSeconds"] = max(int(grace_s), 0)
        try:
            await self._call(
                self._batch().delete_namespaced_job, name, self.namespace, body=options
            )
        except ApiException as err:
            if err.status != 404:
                raise

    async def sandboxes(self) -> list[str]:
        """Names of the namespace's Jobs labelled clarity.run=1."""
        jobs = await self._call(
            self._batch().list_namespaced_job, self.namespace, label_selector="clarity.run=1"
        )
        return [j["metadata"]["name"] for j in jobs.get("items", [])]

    async def close(self) -> None:
        """Close the client's connection pool."""
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.to_thread(api.close)


def _own_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _start_error(what: str, err: ApiException) -> str:
    message = err.reason or ""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        message = json.loads(err.body or "")["message"]
    return f"Kubernetes refused to {what} ({err.status}): {message}"


def _newest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")


def _container_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not pod:
        return {}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "agent":
            return status.get("state") or {}
    return {}


def _terminated(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _container_state(pod).get("terminated") or {}


def _waiting(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return _container_state(pod).get("waiting") or {}


def _pending_why(pod: Mapping[str, Any]) -> str:
    # The scheduler's word (Unschedulable: 0/3 nodes have enough memory), else the phase.
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "False" and condition.get("message"):
            return str(condition["message"])
    waiting = _waiting(pod)
    return str(waiting.get("message") or waiting.get("reason") or "the pod is Pending")


_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _age(timestamp: str | None, now: datetime) -> float | None:
    if not timestamp or not _TIME.match(timestamp):
        return None
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (now - when).total_seconds()
