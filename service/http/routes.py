"""The route table, the single list of endpoints, and the OpenAPI document made from it.

The app registers ROUTES; `openapi_document` describes each of them from the msgspec
schemas of its request and response, so the two never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from driftline import __version__
from driftline.core.idempotency import KEY_PATTERN, MAX_KEY_LENGTH
from driftline.core.report import DriftReport
from driftline.engine.admission import Event
from driftline.http import handlers
from driftline.http.codec import encode
from driftline.http.problems import PROBLEM_CONTENT_TYPE, ProblemDocument
from driftline.http.schemas import (
    AckRequest,
    AlertHistory,
    AlertView,
    BatchRequest,
    BatchResponse,
    ColumnsRequest,
    HealthResponse,
    MonitorDetail,
    MonitorList,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: what the app registers and what OpenAPI documents."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    request: type | None = None
    response: type | None = None
    errors: tuple[int, ...] = ()
    content: str = "application/json"
    idempotent: bool = False  # takes an Idempotency-Key


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return encode(openapi_document(ROUTES))


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/monitor/predict",
        handlers.predict,
        "Count one prediction's features; get the drift verdict",
        PredictRequest,
        PredictResponse,
        (400, 404, 413, 415, 422, 503),
        idempotent=True,
    ),
    Route(
        "POST",
        "/monitor/batch",
        handlers.batch,
        "Count a batch of events",
        BatchRequest,
        BatchResponse,
        (400, 404, 413, 415, 422, 503),
        idempotent=True,
    ),
    Route(
        "GET",
        "/monitor/drift",
        handlers.drift,
        "Drift report of the default monitor",
        None,
        DriftReport,
        (404, 422, 503),
    ),
    Route("GET", "/monitor/health", handlers.health, "Liveness and status", None, HealthResponse),
    Route("GET", "/monitor/ready", handlers.ready, "Readiness", None, ReadyResponse, (503,)),
    Route("GET", "/monitor/metrics", handlers.metrics, "Prometheus metrics", content="text/plain"),
    Route("GET", "/v1/monitors", handlers.list_monitors, "Loaded monitors", None, MonitorList),
    Route(
        "GET",
        "/v1/monitors/{name}",
        handlers.get_monitor,
        "A monitor's policy and baseline profile",
        None,
        MonitorDetail,
        (404,),
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/drift",
        handlers.monitor_drift,
        "A monitor's full drift report",
        None,
        DriftReport,
        (404, 503),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/columns",
        handlers.monitor_columns,
        "Count a batch sent as one value list per feature, sharing timestamp and model version",
        ColumnsRequest,
        BatchResponse,
        (400, 404, 413, 415, 422, 503),
        idempotent=True,
    ),
    Route(
        "DELETE",
        "/v1/monitors/{name}/window",
        handlers.forget_window,
        "Delete a monitor's window data (used by the operator's finalizer)",
        errors=(422, 503),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/events",
        handlers.monitor_events,
        "Count events: a JSON array, or NDJSON with Content-Type application/x-ndjson",
        list[Event],
        BatchResponse,
        (400, 404, 413, 415, 422, 503),
        idempotent=True,
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/alerts",
        handlers.alert_history,
        "A monitor's alerts, newest first, with delivery state per receiver (?limit=1..1000)",
        None,
        AlertHistory,
        (404, 422, 503),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/alerts/{alert_id}/ack",
        handlers.acknowledge_alert,
        "Acknowledge an alert (body optional)",
        AckRequest,
        AlertView,
        (400, 404, 422, 503),
    ),
    Route("GET", "/openapi.json", openapi, "This document"),
)


_PATH_PARAMETER = re.compile(r"{(\w+)}")
_IDEMPOTENCY_PARAMETER = {
    "name": handlers.IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": (
        "Printable ASCII. A request sent again with the same key (and the same body) within "
        "the idempotency horizon is answered with the first attempt's counts and not counted "
        "again, whichever replica gets it; the same key with another body is refused (422)."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": KEY_PATTERN,
    },
}
_REPLAYED_HEADER = {
    handlers.REPLAYED: {
        "description": "`true` when the key was seen before: nothing was counted this time",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


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
        if route.idempotent:
            parameters.append(_IDEMPOTENCY_PARAMETER)
            operation["responses"]["200"]["headers"] = _REPLAYED_HEADER
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
