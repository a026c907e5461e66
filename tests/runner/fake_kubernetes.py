"""A fake Kubernetes API server at the network edge: aiohttp on 127.0.0.1.

It serves the few routes the `kubernetes` runner backend calls — Jobs (create, get, list,
delete), Secrets (create) and pods (list by label) — and answers as the API server does: 201
with the stored object, 409 AlreadyExists and 404 NotFound as `Status` objects, 401 without the
bearer token, 422 Invalid for a body that does not match the API's schema.

Every request body is checked against the Kubernetes JSON schema of CLUSTER_VERSION (bundled
with the kubernetes-validate package, offline, strict: unknown fields are errors), and so is
every object the fake itself answers with, so a test that passes has sent what a real cluster
accepts and read what a real cluster returns.

Creating a Job plays its controller's first step: a Pending pod from the Job's template. A test
then scripts what happens to it (`running`, `succeeded`, `failed`, `oom_killed`,
`image_pull_backoff`, `deadline_exceeded`, `pending_since`).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import referencing
from aiohttp import web

CLUSTER_VERSION = "1.33"
TOKEN = "fake-cluster-token"


# Kinds whose schema file is named for the meta group (`status-meta-v1.json`).
META_KINDS = {"Status", "DeleteOptions"}


@functools.cache
def _validator(filename: str) -> jsonschema.Draft202012Validator:
    folder = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{CLUSTER_VERSION}.0-local-strict"
    )
    schema = json.loads((folder / filename).read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry: referencing.Registry[Any] = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_file(obj: dict[str, Any]) -> str:
    """The bundled schema of an object: `job-batch-v1.json`, `secret-v1.json`, ..."""
    kind = obj["kind"]
    if kind in META_KINDS:
        return f"{kind.lower()}-meta-v1.json"
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    return f"{kind.lower()}-{group_version}.json"


def check(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `obj` matches the API's schema (strict)."""
    _validator(schema_file(obj)).validate(obj)


def timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    check(body)
    return web.json_response(body, status=code)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeKubernetes:
    """The cluster's state and the HTTP app that serves it."""

    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    # Bodies the fake refused as invalid: a test asserts this stays empty.
    invalid: list[str] = field(default_factory=list)
    url: str = ""
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        jobs = "/apis/batch/v1/namespaces/{ns}/jobs"
        app.router.add_post(jobs, self.create_job)
        app.router.add_get(jobs, self.list_jobs)
        app.router.add_get(jobs + "/{name}", self.get_job)
        app.router.add_delete(jobs + "/{name}", self.delete_job)
        app.router.add_post("/api/v1/namespaces/{ns}/secrets", self.create_secret)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.calls.append(Call(request.method, request.path, dict(request.query), body))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _meta(self, obj: dict[str, Any], ns: str) -> None:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._versions))
        meta["creationTimestamp"] = timestamp(datetime.now(UTC))

    async def _body(self, request: web.Request, kind: str) -> dict[str, Any] | web.Response:
        body = await request.json()
        if body.get("kind") != kind:
            return status(400, "BadRequest", f"expected kind {kind}, got {body.get('kind')}")
        try:
            check(body)
        except jsonschema.ValidationError as err:
            self.invalid.append(f"{kind}: {err.message} at {list(err.path)}")
            return status(422, "Invalid", f"{kind} is invalid: {err.message}")
        if body["metadata"].get("namespace", request.match_info["ns"]) != request.match_info["ns"]:
            return status(400, "BadRequest", "the namespace of the object does not match")
        return dict(body)

    # -- Jobs --------------------------------------------------------------------------

    async def create_job(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await self._body(request, "Job")
        if isinstance(body, web.Response):
            return body
        name = body["metadata"]["name"]
        if (ns, name) in self.jobs:
            return status(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                name=name,
                group="batch",
                kind="jobs",
            )
        job = copy.deepcopy(body)
        self._meta(job, ns)
        job["status"] = {}
        self._answer_check(job)
        self.jobs[(ns, name)] = job
        self._create_pod(job)
        return web.json_response(job, status=201)

    async def get_job(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        job = self.jobs.get((ns, name))
        if job is None:
            return self._not_found("jobs", "batch", name)
        return web.json_response(self._answer_check(job))

    async def list_jobs(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        items = [j for (n, _), j in self.jobs.items() if n == ns and _selects(selector, j)]
        body = {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items}
        return web.json_response(self._answer_check(body))

    async def delete_job(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        raw = await request.read()
        options = json.loads(raw) if raw else {}
        try:
            # The DeleteOptions schema, with the kind the API server defaults.
            check({"apiVersion": "v1", "kind": "DeleteOptions", **options})
        except jsonschema.ValidationError as err:
            self.invalid.append(f"DeleteOptions: {err.message}")
            return status(422, "Invalid", err.message)
        job = self.jobs.pop((ns, name), None)
        if job is None:
            return self._not_found("jobs", "batch", name)
        # The garbage collector: the Job's pods, and what names the Job as its owner.
        uid = job["metadata"]["uid"]
        for key, pod in list(self.pods.items()):
            if pod["metadata"]["labels"].get("job-name") == name and key[0] == ns:
                del self.pods[key]
        for key, secret in list(self.secrets.items()):
            owners = secret["metadata"].get("ownerReferences", [])
            if any(o["uid"] == uid for o in owners):
                del self.secrets[key]
        done = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": "batch", "kind": "jobs", "uid": uid},
        }
        check(done)
        return web.json_response(done)

    def _not_found(self, kind: str, group: str, name: str) -> web.Response:
        prefix = f"{kind}.{group}" if group else kind
        return status(404, "NotFound", f'{prefix} "{name}" not found', name=name, kind=kind)

    # -- Secrets and pods ----------------------------------------------------------------

    async def create_secret(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await self._body(request, "Secret")
        if isinstance(body, web.Response):
            return body
        name = body["metadata"]["name"]
        if (ns, name) in self.secrets:
            return status(
                409, "AlreadyExists", f'secrets "{name}" already exists', name=name, kind="secrets"
            )
        secret = copy.deepcopy(body)
        self._meta(secret, ns)
        # The API server folds stringData into data (base64); the fake keeps it readable.
        self.secrets[(ns, name)] = secret
        return web.json_response(secret, status=201)

    async def list_pods(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        selector = request.query.get("labelSelector", "")
        items = [p for (n, _), p in self.pods.items() if n == ns and _selects(selector, p)]
        body = {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        return web.json_response(self._answer_check(body))

    def _answer_check(self, obj: dict[str, Any]) -> dict[str, Any]:
        # The fake's own answers must be what a real API server could say.
        for item in obj.get("items", [obj]):
            check(item)
        return obj

    def _create_pod(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        template = copy.deepcopy(job["spec"]["template"])
        labels = {
            **template["metadata"].get("labels", {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": job["metadata"]["uid"],
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{uuid.uuid4().hex[:5]}",
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        self._meta(pod, job["metadata"]["namespace"])
        check(pod)
        self.pods[(job["metadata"]["namespace"], pod["metadata"]["name"])] = pod

    # -- what happens to a Job's pod (scripted by tests) ----------------------------------

    def job(self, name: str, ns: str = "clarity") -> dict[str, Any]:
        return self.jobs[(ns, name)]

    def pod_of(self, name: str, ns: str = "clarity") -> dict[str, Any]:
        (pod,) = [
            p
            for (n, _), p in self.pods.items()
            if n == ns and p["metadata"]["labels"]["job-name"] == name
        ]
        return pod

    def _container(self, pod: dict[str, Any], state: dict[str, Any], ready: bool) -> None:
        container = pod["spec"]["containers"][0]
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "" if "waiting" in state else f"{container['image']}@sha256:{'0' * 64}",
                "ready": ready,
                "restartCount": 0,
                "started": "running" in state,
                "state": state,
            }
        ]
        check(pod)

    def pending_since(self, name: str, ago: timedelta, message: str) -> None:
        pod = self.pod_of(name)
        pod["metadata"]["creationTimestamp"] = timestamp(datetime.now(UTC) - ago)
        pod["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        }
        check(pod)

    def running(self, name: str) -> None:
        pod = self.pod_of(name)
        pod["status"] = {"phase": "Running", "startTime": timestamp(datetime.now(UTC))}
        self._container(pod, {"running": {"startedAt": timestamp(datetime.now(UTC))}}, True)
        self.job(name)["status"] = {"active": 1, "startTime": timestamp(datetime.now(UTC))}
        check(self.job(name))

    def waiting(self, name: str, reason: str, message: str, ago: timedelta = timedelta(0)) -> None:
        """The agent container waits to start, for `reason`, since `ago`."""
        pod = self.pod_of(name)
        pod["metadata"]["creationTimestamp"] = timestamp(datetime.now(UTC) - ago)
        pod["status"] = {"phase": "Pending"}
        self._container(pod, {"waiting": {"reason": reason, "message": message}}, False)

    def image_pull_backoff(self, name: str) -> None:
        image = self.pod_of(name)["spec"]["containers"][0]["image"]
        self.waiting(name, "ImagePullBackOff", f'Back-off pulling image "{image}"')

    def _ended(self, name: str, exit_code: int, reason: str) -> None:
        pod = self.pod_of(name)
        now = timestamp(datetime.now(UTC))
        pod["status"] = {"phase": "Succeeded" if exit_code == 0 else "Failed", "startTime": now}
        self._container(
            pod,
            {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": now,
                    "finishedAt": now,
                }
            },
            False,
        )

    def _job_condition(self, name: str, kind: str, reason: str, message: str) -> None:
        now = timestamp(datetime.now(UTC))
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        conditions = [
            {
                "type": t,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
            for t in (target, kind)
        ]
        job_status: dict[str, Any] = {"startTime": now, "conditions": conditions}
        if kind == "Complete":
            job_status.update(succeeded=1, completionTime=now)
        else:
            job_status.update(failed=1)
        self.job(name)["status"] = job_status
        check(self.job(name))

    def succeeded(self, name: str) -> None:
        self._ended(name, 0, "Completed")
        self._job_condition(
            name, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
        )

    def failed(self, name: str, exit_code: int) -> None:
        self._ended(name, exit_code, "Error")
        self._job_condition(
            name, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )

    def oom_killed(self, name: str) -> None:
        self._ended(name, 137, "OOMKilled")
        self._job_condition(
            name, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )

    def deadline_exceeded(self, name: str) -> None:
        # The controller kills the pod (SIGTERM, grace, SIGKILL) and marks the Job.
        self._ended(name, 143, "Error")
        self._job_condition(
            name, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
        )


def _selects(selector: str, obj: dict[str, Any]) -> bool:
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True
