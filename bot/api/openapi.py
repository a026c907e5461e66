"""The OpenAPI 3.1 document of the side-API, generated from the route table and its models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot.api.models import ErrorOut
from bot.api.routes import Route

_ERRORS = {
    400: "The body is not JSON",
    401: "Missing, invalid or expired token, or a job token used outside its request",
    404: "Unknown request",
    409: "The request lifecycle forbids this change",
    413: "Body larger than the limit",
    422: "A field is invalid; error.details names each one",
}


def _parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]


def build_document(routes: list[Route], *, version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI document: schemas from model_json_schema, paths from the route table."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorOut, "serialization")]
    for route in routes:
        if route.body is not None:
            wanted.append((route.body, "validation"))
        if route.query is not None:
            wanted.append((route.query, "validation"))
        wanted.append((route.answer, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, schema = models_json_schema(unique, ref_template="#/components/schemas/{model}")

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    error = {"application/json": {"schema": ref(ErrorOut, "serialization")}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.fn.__name__.lstrip("_"),
            "summary": route.summary,
            "responses": {
                str(route.status): {
                    "description": route.answer.__doc__ or "OK",
                    "content": {"application/json": {"schema": ref(route.answer, "serialization")}},
                },
                **{
                    str(code): {"description": text, "content": error}
                    for code, text in _ERRORS.items()
                    if (
                        route.body is not None
                        or code not in (400, 413, 422)
                        or (route.query is not None and code == 422)
                    )
                    and ("{requestId}" in route.path or code not in (404, 409))
                },
            },
        }
        if route.description:
            operation["description"] = route.description
        parameters = _parameters(route.path)
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
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 document"}},
        }
    }
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
