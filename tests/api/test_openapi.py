"""GET /api/openapi.json: generated from the models, complete, camelCase."""

from __future__ import annotations

from fakes.harness import Harness

from bot.api.models import CreateRequestBody, StatusUpdateBody
from bot.api.openapi import build_document
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


def test_document_follows_the_models() -> None:
    doc = build_document(ROUTES)
    schemas = doc["components"]["schemas"]
    own = CreateRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = own.pop("$defs")
    assert schemas["CreateRequestBody"] == own
    assert all(schemas[name] == schema for name, schema in defs.items())
    assert set(schemas["StatusUpdateBody"]["properties"]) == set(
        StatusUpdateBody.model_json_schema(by_alias=True)["properties"]
    )
