"""The deployment files: every Kubernetes manifest matches the API's schema (offline, strict),
the Role grants exactly what the kubernetes backend calls, and the compose file is sound."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from bot.runner.base import RunSpec
from bot.runner.kubernetes import KubernetesBackend
from tests.runner.fake_kubernetes import CLUSTER_VERSION, TOKEN, FakeKubernetes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# What the kubernetes backend needs, and all the Role may grant: (API group, resource, verb).
NEEDED = {
    *(("batch", "jobs", v) for v in ("create", "get", "list", "delete")),
    *(("", "secrets", v) for v in ("create", "get", "delete")),
    *(("", "pods", v) for v in ("get", "list", "watch")),
}
SECRET_SETTINGS = {
    "DATABASE_URL",
    "MASTER_DATABASE_URL",
    "ENCRYPTION_KEY",
    "CLARITY_API_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "GITHUB_PRIVATE_KEY",
    "GITHUB_WEBHOOK_SECRET",
    "ANTHROPIC_API_KEY",
}


def objects() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                found.append((path.name, doc))
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in objects() if doc["kind"] == kind]


@pytest.mark.parametrize(("name", "doc"), objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, CLUSTER_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS} - {"kustomization.yaml"}


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def test_the_role_grants_exactly_what_the_backend_needs() -> None:
    (role,) = of_kind("Role")
    assert of_kind("ClusterRole") == [] and of_kind("ClusterRoleBinding") == []
    granted = rules_of(role)
    assert not any("*" in part for triple in granted for part in triple)
    assert granted == NEEDED
    (binding,) = of_kind("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (deployment,) = of_kind("Deployment")
    (account,) = of_kind("ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    )


@pytest.fixture
async def cluster() -> AsyncIterator[FakeKubernetes]:
    fake = FakeKubernetes()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield fake
    finally:
        await runner.cleanup()


async def test_every_call_the_backend_makes_is_granted(cluster: FakeKubernetes) -> None:
    backend = KubernetesBackend(
        image="clarity-agent:latest", api_url=cluster.url, token=TOKEN, namespace="clarity"
    )
    spec = RunSpec(request_id="r-1", attempt=1, kind="initial", job={"requestId": "r-1"})
    try:
        name = await backend.start(spec)
        await backend.start(spec)
        await backend.observe(name)
        await backend.sandboxes()
        await backend.cancel(name)
        await backend.reap(name)
    finally:
        await backend.close()
    (role,) = of_kind("Role")
    granted = rules_of(role)
    verbs = {"POST": "create", "DELETE": "delete"}
    for call in cluster.calls:
        match = re.match(r"^/apis?/(?:(batch)/)?v1/namespaces/[^/]+/(\w+)(/[^/]+)?$", call.path)
        assert match, call.path
        group, resource, one = match.group(1) or "", match.group(2), match.group(3)
        verb = verbs.get(call.method) or ("get" if one else "list")
        assert (group, resource, verb) in granted, call


def test_the_deployment_runs_replicas_with_health_checks_and_secrets_from_secrets() -> None:
    (deployment,) = of_kind("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    assert env["CLARITY_RUNNER"]["value"] == "kubernetes"
    for name in SECRET_SETTINGS & env.keys():
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert {"DATABASE_URL", "ENCRYPTION_KEY", "CLARITY_API_TOKEN"} <= env.keys()
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False


def test_the_migration_job_migrates_with_the_master_url_from_a_secret() -> None:
    jobs = {j["metadata"]["name"]: j for j in of_kind("Job")}
    (container,) = jobs["clarity-migrate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["clarity", "db", "migrate", "--yes"]
    (env,) = container["env"]
    assert env["name"] == "MASTER_DATABASE_URL" and "secretKeyRef" in env["valueFrom"]


def test_agent_pods_may_reach_dns_clarity_and_https_only() -> None:
    (policy,) = of_kind("NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"clarity.run": "1"}}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"] == []
    ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 3000), ("TCP", 443)}
    # The pods the backend makes are the ones the policy selects.
    job = KubernetesBackend(image="x", api_url="http://127.0.0.1:1", namespace="n").job_manifest(
        RunSpec(request_id="r", attempt=1, kind="initial", job={})
    )
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    # ... and the Clarity pods they may call are the Deployment's.
    (deployment,) = of_kind("Deployment")
    server = policy["spec"]["egress"][1]["to"][0]["podSelector"]["matchLabels"]
    assert server.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_compose_file_runs_postgres_a_migration_and_clarity_on_docker() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "clarity", "agent-image"}
    assert "clarity db migrate --yes" in " ".join(services["migrate"]["command"])
    clarity = services["clarity"]
    assert clarity["command"] == ["clarity", "serve"]
    assert clarity["environment"]["CLARITY_RUNNER"] == "docker"
    assert "/var/run/docker.sock:/var/run/docker.sock" in clarity["volumes"]
    assert clarity["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Agents get the agents' network, which PostgreSQL is not on.
    network = clarity["environment"]["CLARITY_DOCKER_NETWORK"]
    assert compose["networks"]["agents"]["name"] == network
    assert "agents" not in services["postgres"]["networks"]
