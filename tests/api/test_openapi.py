"""GET /api/openapi.json: generated from the models, complete, camelCase."""

from __future__ import annotations

from typing import Any

from fakes.harness import Harness

from bot.api.models import CreateRequestBody, StatusUpdateBody
from bot.api.openapi import NO_NUL, build_document
from bot.api.routes import ROUTES


async def test_document_lists_every_route_with_its_schemas(harness: Harness) -> None:
    status, doc = await harness.api("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "/api"}]
    assert set(doc["paths"]) == {
        "/requests",
        "/requests/{requestId}",
        "/requests/{requestId}/status",
        "/requests/{requestId}/messages",
        "/config/github",
        "/config/claude",
        "/requests/{requestId}/git-credentials",
        "/requests/{requestId}/agent-session",
        "/requests/{requestId}/runs/{attempt}/bundle",
        "/openapi.json",
    }
    assert set(doc["paths"]["/requests/{requestId}"]) == {"get"}
    patch = doc["paths"]["/requests/{requestId}/status"]["patch"]
    assert {"200", "401", "404", "409", "413", "422"} <= set(patch["responses"])
    schemas = doc["components"]["schemas"]
    body = schemas["StatusUpdateBody"]
    assert set(body["properties"]) == {
        "status",
        "prUrl",
        "prNumber",
        "prBranchName",
        "costUsd",
        "durationMs",
        "errorCode",
        "errorMessage",
    }
    assert "dollars" in body["properties"]["costUsd"]["description"]
    assert schemas["CreateRequestBody"]["required"] == ["repo", "description"]
    assert "requestId" in schemas["RequestOut"]["properties"]

    # Every $ref resolves inside the document.
    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def _without_nul(node: Any) -> Any:
    """A schema without the document's NUL declarations."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if (key == "pattern" and value == NO_NUL) or key == "propertyNames":
                continue
            if key == "allOf" and value == [{"pattern": NO_NUL}]:
                continue
            out[key] = _without_nul(value)
        return out
    if isinstance(node, list):
        return [_without_nul(v) for v in node]
    return node


def test_document_follows_the_models() -> None:
    doc = build_document(ROUTES)
    schemas = doc["components"]["schemas"]
    own = CreateRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = own.pop("$defs")
    # The document adds one thing to the models: strings an input takes refuse NUL.
    assert schemas["CreateRequestBody"]["properties"]["title"]["anyOf"][0]["pattern"] == NO_NUL
    assert _without_nul(schemas["CreateRequestBody"]) == own
    assert all(schemas[name] == schema for name, schema in defs.items())
    assert set(schemas["StatusUpdateBody"]["properties"]) == set(
        StatusUpdateBody.model_json_schema(by_alias=True)["properties"]
    )


def test_errors_the_routes_answer_are_documented() -> None:
    doc = build_document(ROUTES)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert "401" in codes, (method, path)
            if path != "/openapi.json":
                assert "503" in codes, (method, path)
    assert {"400", "413", "422"} <= set(doc["paths"]["/requests"]["post"]["responses"])
    assert "422" in doc["paths"]["/requests"]["get"]["responses"]
    options = doc["components"]["schemas"]["MessageMetadataIn"]["properties"]["options"]
    assert options["anyOf"][0]["maxItems"] == 10
    assert options["anyOf"][0]["items"]["maxLength"] == 200
