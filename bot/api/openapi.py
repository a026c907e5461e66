"""The OpenAPI 3.1 document of the side-API, generated from the route table and its models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot.api.models import ErrorOut
from bot.api.routes import Binary, Route

_ERRORS = {
    400: "The body is not JSON",
    401: "Missing, invalid or expired token, or a job token used outside its request",
    404: "Unknown request",
    409: "The request lifecycle forbids this change",
    413: "Body larger than the limit",
    422: "A field is invalid; error.details names each one",
    503: "The database cannot be reached (code unavailable), or, for /config routes, the "
    "credential is not configured (not_configured) or GitHub did not issue a token",
}

# PostgreSQL text and jsonb cannot hold NUL: every string the API takes refuses it (422).
NO_NUL = "^[^\\u0000]*$"


# Free-form JSON an input may carry (extra metadata keys, tool input): any JSON value whose
# strings and keys hold no NUL.
JSON_VALUE = "JsonValue"
_JSON_VALUE_SCHEMA = {
    "description": "Any JSON value; strings and object keys may not contain NUL",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": f"#/components/schemas/{JSON_VALUE}"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": f"#/components/schemas/{JSON_VALUE}"},
        },
    ],
}


def _refuse_nul(node: Any, defs: dict[str, Any], seen: set[str]) -> None:
    """Declare, on every free-form string an input takes, that NUL characters are refused."""
    if isinstance(node, dict):
        if node.get("additionalProperties") not in (None, False):
            node["propertyNames"] = {"pattern": NO_NUL}
            if node.get("additionalProperties") in (True, {}):
                node["additionalProperties"] = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
        if node.get("type") == "array" and node.get("items") in (None, {}):
            node["items"] = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
        if node.get("type") == "string" and not {"format", "enum", "const"} & node.keys():
            if "pattern" not in node:
                node["pattern"] = NO_NUL
            elif node["pattern"] != NO_NUL:
                node["allOf"] = [{"pattern": NO_NUL}]
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in defs and name not in seen:
                seen.add(name)
                _refuse_nul(defs[name], defs, seen)
        for value in node.values():
            _refuse_nul(value, defs, seen)
    elif isinstance(node, list):
        for value in node:
            _refuse_nul(value, defs, seen)


def _parameters(route: Route) -> list[dict[str, Any]]:
    integers = {name: (low, high) for name, low, high in route.int_params}
    out = []
    for name in re.findall(r"{(\w+)}", route.path):
        schema: dict[str, Any] = {"type": "string"}
        if name in integers:
            low, high = integers[name]
            schema = {"type": "integer", "minimum": low, "maximum": high}
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.upload is not None:
        out += [
            {
                "name": h.name,
                "in": "header",
                "required": True,
                "description": h.description,
                "schema": h.schema(),
            }
            for h in route.upload.headers
        ]
    return out


def _binary_content(binary: Binary) -> dict[str, Any]:
    """Bytes of the given media types (OpenAPI 3.1: contentMediaType, no JSON schema)."""
    return {
        media: {"schema": {"type": "string", "contentMediaType": media}}
        for media in binary.media_types
    }


def _success(route: Route, ref: Any) -> dict[str, Any]:
    """The documented success answer of a route."""
    description = (route.answer.__doc__ if route.answer is not None else None) or "OK"
    answer: dict[str, Any] = {"description": description}
    if route.download is not None:
        answer["description"] = route.download.description
        answer["content"] = _binary_content(route.download)
        answer["headers"] = {
            h.name: {"description": h.description, "required": True, "schema": h.schema()}
            for h in route.download.headers
        }
    elif route.answer is not None:
        answer["content"] = {"application/json": {"schema": ref(route.answer, "serialization")}}
    elif route.status == 204:
        answer["description"] = "Saved"
    return answer


def build_document(routes: list[Route], *, version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document: schemas from model_json_schema, paths from the route table."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    for route in routes:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.query is not None:
            wanted.append((route.query, "validation"))
        if route.answer is not None:
            wanted.append((route.answer, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, schema = models_json_schema(unique, ref_template="#/components/schemas/{model}")

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    error = {"application/json": {"schema": ref(ErrorOut, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        takes = route.body is not None or route.upload is not None
        operation: dict[str, Any] = {
            "operationId": route.fn.__name__.lstrip("_"),
            "summary": route.summary,
            "responses": {
                str(route.status): _success(route, ref),
                **{
                    str(code): {"description": text, "content": error}
                    for code, text in _ERRORS.items()
                    if (
                        takes
                        or code not in (400, 413, 422)
                        or ((route.query is not None or route.int_params) and code == 422)
                    )
                    and ("{requestId}" in route.path or code not in (404, 409))
                },
            },
        }
        if route.description:
            operation["description"] = route.description
        parameters = _parameters(route)
        if route.query is not None:
            query_schema = schema["$defs"][route.query.__name__]
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in query_schema.get("required", []),
                        "schema": prop,
                    }
                )
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        elif route.upload is not None:
            operation["requestBody"] = {
                "required": True,
                "description": route.upload.description,
                "content": _binary_content(route.upload),
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1 document"},
                "401": {"description": _ERRORS[401], "content": error},
            },
        }
    }
    defs = schema.get("$defs", {})
    inputs = {m.__name__ for r in routes for m in (r.body, r.query) if m is not None}
    defs[JSON_VALUE] = _JSON_VALUE_SCHEMA
    seen: set[str] = set()
    for name in sorted(inputs):
        seen.add(name)
        _refuse_nul(defs[name], defs, seen)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clarity side-API",
            "version": version,
            "description": (
                "What agent containers call. JSON with camelCase keys. Every route needs "
                "`Authorization: Bearer <CLARITY_API_TOKEN>` or the job token sent with "
                "each dispatch (scoped to its request, expiring). Costs are US dollars on "
                "the wire and cents in the database."
            ),
        },
        "servers": [{"url": "/api"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
