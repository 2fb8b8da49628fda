"""The route table, the single list of endpoints, and the OpenAPI document made from it.

The app registers ROUTES; `openapi_document` describes each of them from the msgspec
schemas of its request and response, so the two never disagree: per route its body's
media types, its success status and media type, its query parameters, the token scope
it needs, and the problems it can answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from driftline import __version__
from driftline.core.compare import COMPARE_METRICS, Comparison
from driftline.core.history import MAX_POINTS
from driftline.core.idempotency import KEY_PATTERN, MAX_KEY_LENGTH
from driftline.core.report import DriftReport
from driftline.engine.admission import Event, Label
from driftline.http import handlers
from driftline.http.auth import Access
from driftline.http.cloudevents import STRUCTURED
from driftline.http.codec import encode
from driftline.http.problems import PROBLEM_CONTENT_TYPE, ProblemDocument
from driftline.http.schemas import (
    AckConflict,
    AckRequest,
    AlertHistory,
    AlertView,
    BatchRequest,
    BatchResponse,
    ColumnsRequest,
    HealthResponse,
    HistoryResponse,
    InferenceAccepted,
    InferencePair,
    LabelsResponse,
    MonitorDetail,
    MonitorList,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
# Problems every route that reads a body can answer: malformed, too slow, too large,
# of a media type (or Content-Encoding) it does not take, of the wrong shape.
BODY_ERRORS = (400, 408, 413, 415, 422)


@dataclass(frozen=True, slots=True)
class Query:
    """An optional query parameter."""

    name: str
    description: str
    schema: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: what the app registers and what OpenAPI documents."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    access: Access  # the token scope it needs (driftline.http.auth)
    request: Any = None  # the body's type; None: no body
    request_types: tuple[str, ...] = (JSON,)
    request_required: bool = True
    response: Any = None  # the success body's type; None: no body
    status: int = 200
    response_type: str = JSON
    response_alternates: tuple[str, ...] = ()  # other media types of the success, as text
    errors: tuple[int, ...] = ()  # problem documents it can answer
    other: tuple[tuple[int, Any], ...] = ()  # non-problem answers besides the success
    query: tuple[Query, ...] = ()
    idempotent: bool = False  # takes an Idempotency-Key header


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return encode(openapi_document(ROUTES))


MONITOR_QUERY = Query(
    "monitor",
    "The monitor to report on (default: the service's default monitor)",
    {"type": "string"},
)
LIMIT_QUERY = Query(
    "limit", "How many alerts, newest first", {"type": "integer", "minimum": 1, "maximum": 1000}
)

SCOPE_QUERY = (
    Query(
        "model_version",
        "Report on this declared model version's window (docs/versions.md)",
        {"type": "string"},
    ),
    Query("segment", "Report on this declared segment's window", {"type": "string"}),
)
COMPARE_QUERY = (
    Query("a", "The current model version (champion), declared", {"type": "string"}),
    Query("b", "The candidate model version (challenger), declared", {"type": "string"}),
    Query(
        "margin",
        "How much better (or worse) B must be, in the metric's unit (default 0)",
        {"type": "string", "pattern": "^[0-9]{1,12}([.][0-9]{1,12})?$"},
    ),
    Query(
        "metric",
        "The metric deciding the verdict (default: roc_auc with scores, accuracy, mae)",
        {"type": "string", "enum": list(COMPARE_METRICS)},
    ),
)
HISTORY_QUERY = (
    Query(
        "from",
        "Start: RFC 3339 with a zone, or epoch seconds (default: `to` minus the horizon)",
        {"type": "string"},
    ),
    Query("to", "End, like `from` (default: now)", {"type": "string"}),
    Query(
        "step",
        "Seconds per point, a multiple of the monitor's bucket (default: the finest step "
        f"that keeps {MAX_POINTS} points or fewer); each point is the last verdict of its step",
        {"type": "integer", "minimum": 1},
    ),
    Query(
        "format",
        "json or csv (default: CSV when Accept prefers text/csv, else JSON)",
        {"type": "string", "enum": ["json", "csv"]},
    ),
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/monitor/predict",
        handlers.predict,
        "Count one prediction's features; get the drift verdict",
        "ingest",
        PredictRequest,
        response=PredictResponse,
        errors=(*BODY_ERRORS, 404, 503),
        idempotent=True,
    ),
    Route(
        "POST",
        "/monitor/batch",
        handlers.batch,
        "Count a batch of events ({events: [...]} or a bare array of events)",
        "ingest",
        BatchRequest[Event] | list[Event],
        response=BatchResponse,
        errors=(*BODY_ERRORS, 404, 503),
        idempotent=True,
    ),
    Route(
        "GET",
        "/monitor/drift",
        handlers.drift,
        "Drift report of the default monitor (or ?monitor=)",
        "read",
        response=DriftReport,
        errors=(404, 422, 503),
        query=(MONITOR_QUERY,),
    ),
    Route(
        "GET",
        "/monitor/health",
        handlers.health,
        "Liveness and status",
        "probe",
        response=HealthResponse,
    ),
    Route(
        "GET",
        "/monitor/ready",
        handlers.ready,
        "Readiness",
        "probe",
        response=ReadyResponse,
        other=((503, ReadyResponse),),
    ),
    Route(
        "GET",
        "/monitor/metrics",
        handlers.metrics,
        "Prometheus metrics (text exposition)",
        "metrics",
        response=str,
        response_type="text/plain",
    ),
    Route(
        "GET",
        "/v1/monitors",
        handlers.list_monitors,
        "Loaded monitors",
        "read",
        response=MonitorList,
    ),
    Route(
        "GET",
        "/v1/monitors/{name}",
        handlers.get_monitor,
        "A monitor's policy and baseline profile",
        "read",
        response=MonitorDetail,
        errors=(404,),
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/drift",
        handlers.monitor_drift,
        "A monitor's full drift report (of every event, or of a declared model version's "
        "or segment's window)",
        "read",
        response=DriftReport,
        errors=(400, 404, 503),
        query=SCOPE_QUERY,
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/compare",
        handlers.monitor_compare,
        "Champion / challenger: two declared model versions' windows compared "
        "(performance difference with its confidence interval, drift between them, verdict)",
        "read",
        response=Comparison,
        errors=(400, 404, 503),
        query=COMPARE_QUERY,
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/history",
        handlers.monitor_history,
        "A monitor's verdict per bucket (per feature: score, adjusted p-value, severity, "
        "reasons, data-quality rates) over the history horizon; CSV for spreadsheets",
        "read",
        response=HistoryResponse,
        response_alternates=("text/csv",),
        errors=(400, 404, 503),
        query=HISTORY_QUERY,
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/report.html",
        handlers.monitor_report_html,
        "A monitor's drift report as a self-contained HTML page",
        "read",
        errors=(404, 503),
        response_type="text/html",
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/columns",
        handlers.monitor_columns,
        "Count a batch sent as one value list per feature, sharing timestamp and model "
        "version (JSON, or msgpack where a numeric column may be packed float64 bytes)",
        "ingest",
        ColumnsRequest,
        request_types=(JSON, MSGPACK),
        response=BatchResponse,
        errors=(*BODY_ERRORS, 404, 503),
        idempotent=True,
    ),
    Route(
        "DELETE",
        "/v1/monitors/{name}/window",
        handlers.forget_window,
        "Delete a monitor's window data, loaded or not (the operator's finalizer calls it)",
        "admin",
        status=204,
        errors=(422, 503),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/events",
        handlers.monitor_events,
        "Count events: a JSON array, or NDJSON (one event object per line)",
        "ingest",
        list[Event],
        request_types=(JSON, NDJSON),
        response=BatchResponse,
        errors=(*BODY_ERRORS, 404, 503),
        idempotent=True,
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/cloudevents",
        handlers.monitor_cloudevents,
        "Count inferences logged by KServe's InferenceService logger: CloudEvents in binary "
        "mode (ce-* headers, the V1/V2 body as sent to or answered by the model) or structured "
        "mode; a request's rows wait (202) for the response with the same ce-id, whose answer "
        "says what the pair counted (docs/model-servers.md)",
        "ingest",
        dict[str, Any],  # binary mode: a V1/V2 request or response body; structured: an envelope
        request_types=(JSON, STRUCTURED),
        response=BatchResponse,
        errors=(*BODY_ERRORS, 404, 503),
        other=((202, InferenceAccepted),),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/inferences",
        handlers.monitor_inferences,
        "Count one inference sent as the model server's request and response bodies "
        "(Open Inference Protocol V2, or V1), e.g. from Seldon Core v2 or MLServer",
        "ingest",
        InferencePair,
        response=BatchResponse,
        errors=(*BODY_ERRORS, 404, 503),
        idempotent=True,
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/labels",
        handlers.monitor_labels,
        "Join delayed labels ({id, label}: a JSON array, or NDJSON) to their predictions and "
        "count performance into the predictions' buckets; answers a count per outcome",
        "ingest",
        list[Label],
        request_types=(JSON, NDJSON),
        response=LabelsResponse,
        errors=(*BODY_ERRORS, 404, 503),
    ),
    Route(
        "GET",
        "/v1/monitors/{name}/alerts",
        handlers.alert_history,
        "A monitor's alerts, newest first, with delivery state per receiver",
        "read",
        response=AlertHistory,
        errors=(400, 404, 503),
        query=(LIMIT_QUERY,),
    ),
    Route(
        "POST",
        "/v1/monitors/{name}/alerts/{alert_id}/ack",
        handlers.acknowledge_alert,
        "Acknowledge an alert (the body is optional, its Content-Type must be JSON); "
        "the first acknowledgement stays, a second answers 409 with it",
        "admin",
        AckRequest,
        request_required=False,
        response=AlertView,
        errors=(*BODY_ERRORS, 404, 503),
        other=((409, AckConflict),),
    ),
    Route("GET", "/openapi.json", openapi, "This document", "read", response=dict[str, Any]),
)


_PATH_PARAMETER = re.compile(r"{(\w+)}")
# Problems a route answers because of its token scope (and none when no tokens are set).
AUTH_ERRORS = (401, 403)


def _problems(route: Route) -> tuple[int, ...]:
    return tuple(sorted({*route.errors, *AUTH_ERRORS}))


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
    """Describe every route: request body, success and other answers, problems, scope."""
    types: list[Any] = [ProblemDocument]
    for route in routes:
        types.extend(t for t in (route.request, route.response) if t is not None)
        types.extend(t for _, t in route.other)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    problem = {PROBLEM_CONTENT_TYPE: {"schema": by_type[ProblemDocument]}}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        success: dict[str, Any] = {"description": "OK" if route.response else "No Content"}
        if route.response is not None:
            success["content"] = {route.response_type: {"schema": by_type[route.response]}}
            for media in route.response_alternates:
                success["content"][media] = {"schema": {"type": "string"}}
        responses: dict[str, Any] = {str(route.status): success}
        for status, kind in route.other:
            media = PROBLEM_CONTENT_TYPE if issubclass(kind, ProblemDocument) else JSON
            responses[str(status)] = {
                "description": "See summary",
                "content": {media: {"schema": by_type[kind]}},
            }
        for status in _problems(route):
            responses.setdefault(str(status), {"description": "Problem", "content": problem})
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "responses": responses,
            "x-driftline-scope": route.access,
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAMETER.findall(route.path)
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": q.schema,
            }
            for q in route.query
        ]
        if route.idempotent:
            parameters.append(_IDEMPOTENCY_PARAMETER)
            operation["responses"]["200"]["headers"] = _REPLAYED_HEADER
        if parameters:
            operation["parameters"] = parameters
        if route.request is not None:
            schema = by_type[route.request]
            operation["requestBody"] = {
                "required": route.request_required,
                "content": {media: {"schema": schema} for media in route.request_types},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "driftline",
            "version": __version__,
            "description": "Errors are RFC 9457 problem documents. With a tokens file, "
            "each operation needs a bearer token with the scope in x-driftline-scope "
            "(probe and metrics routes are open unless configured otherwise). NDJSON "
            "bodies carry one event object per line.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
