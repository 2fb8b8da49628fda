"""The OpenAPI 3.1 document, generated from the route table and the msgspec schemas."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec

from driftline import __version__
from driftline.problems import PROBLEM_CONTENT_TYPE, ProblemDocument

if TYPE_CHECKING:
    from driftline.api import Route

_PATH_PARAMETER = re.compile(r"{(\w+)}")


@cache
def openapi_document(routes: tuple[Route, ...]) -> dict[str, Any]:
    """Describe every route: request body, success response and problem responses."""
    types: list[Any] = [ProblemDocument]
    for route in routes:
        types.extend(t for t in (route.request, route.response) if t is not None)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    problem = {PROBLEM_CONTENT_TYPE: {"schema": by_type[ProblemDocument]}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        route.content: {"schema": by_type[route.response]}
                        if route.response is not None
                        else {}
                    },
                },
                **{
                    str(status): {"description": "Problem", "content": problem}
                    for status in route.errors
                },
            },
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAMETER.findall(route.path)
        ]
        if parameters:
            operation["parameters"] = parameters
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[route.request]}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "driftline", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
