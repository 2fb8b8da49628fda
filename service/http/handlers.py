"""HTTP handlers: decode the request, call the engine (or the alert log), encode the answer.

Handlers are thin: the engine counts and reports, this module turns its results and
refusals into answers and problem documents, with the field path of every bad value.
The route table (driftline.http.routes) lists them.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import numpy as np
from aiohttp import web

from driftline import __version__
from driftline.alerts.payloads import alert_from
from driftline.alerts.store import AlertRecord
from driftline.core.compare import COMPARE_METRICS, default_metric, metric_problem
from driftline.core.history import MAX_POINTS, default_step, history_csv
from driftline.core.idempotency import (
    KeyConflictError,
    RequestKey,
    key_problem,
    request_key,
)
from driftline.core.inference import (
    InferenceError,
    InferenceRequest,
    InferenceResponse,
    Inputs,
    input_size,
    request_inputs,
    response_predictions,
)
from driftline.core.monitor import MONITOR_NAME, Monitor
from driftline.core.prediction import is_prediction_column
from driftline.core.report import Assessment
from driftline.core.scopes import Scope, ScopeKind
from driftline.core.timestamps import isoformat, parse_isoformat
from driftline.core.window import Vector
from driftline.engine.admission import Event, Label, RejectedEventError, Rejection
from driftline.engine.facade import (
    HISTORY_OFF,
    DriftEngine,
    IngestResult,
    LabelsOffError,
    NoDefaultMonitorError,
    prediction_ignored,
)
from driftline.engine.inference import Parked
from driftline.engine.registry import UnknownMonitorError
from driftline.http.cloudevents import STRUCTURED, read_cloudevent
from driftline.http.codec import (
    JSON_TYPES,
    MSGPACK_TYPES,
    NDJSON_TYPES,
    TOO_DEEP,
    check_content_type,
    decode_body,
    encode,
    read_body,
)
from driftline.http.keys import ALERTS, DRAINING, ENGINE, INFERENCES, SETTINGS, TELEMETRY
from driftline.http.problems import FieldError, ProblemError, field_error
from driftline.http.rejections import MONITOR
from driftline.http.schemas import (
    AckConflict,
    AcknowledgementView,
    AckRequest,
    AlertHistory,
    AlertView,
    BatchRequest,
    BatchResponse,
    ColumnsRequest,
    DeliveryView,
    HealthResponse,
    HistoryResponse,
    InferenceAccepted,
    InferencePair,
    LabelsResponse,
    MonitorDetail,
    MonitorList,
    MonitorSummary,
    PolicyView,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    StoreStatus,
)
from driftline.reporting import render_html

T = TypeVar("T")
_Item = TypeVar("_Item", Event, Label)

IDEMPOTENCY_KEY = "Idempotency-Key"
# On the answer to a request whose key was seen before: nothing was counted this time.
REPLAYED = "Idempotent-Replayed"


def _engine(request: web.Request) -> DriftEngine:
    return request.app[ENGINE]


def _monitor(request: web.Request, name: str | None) -> Monitor:
    """The monitor a request names (or the default); noted on the request for its metrics."""
    engine = _engine(request)
    try:
        monitor = engine.monitor(name)
    except UnknownMonitorError:
        known = ", ".join(m.name for m in engine.monitors()) or "(none loaded)"
        raise ProblemError(
            404,
            "unknown-monitor",
            f"monitor {name!r} is not loaded; loaded: {known}",
            [FieldError("monitor", f"unknown monitor {name!r}; allowed: {known}")],
        ) from None
    except NoDefaultMonitorError as exc:
        raise ProblemError(
            422, "monitor-required", str(exc), [FieldError("monitor", "required: " + str(exc))]
        ) from None
    request[MONITOR] = monitor.name
    return monitor


def prediction_response(
    assessment: Assessment, warnings: list[str], made_id: str | None = None
) -> PredictResponse:
    """The answer to a predict: the verdict that covers the event, warnings, the made id."""
    return PredictResponse(
        timestamp=assessment.evaluated_at,
        monitor=assessment.monitor.name,
        warnings=warnings,
        id=made_id,
        **assessment.verdict_fields(),
    )


# ------------------------------------------------------------------- field paths


def event_path(rejection: Rejection, prefix: str = "") -> str:
    """Where a rejected event's bad field sits in a request whose event is at `prefix`.

    `features.age`, `timestamp`; in a batch `events[3].features.age` (prefix `events[3].`).
    """
    path = prefix + rejection.field
    return path if rejection.feature is None else f"{path}.{rejection.feature}"


def column_path(rejection: Rejection) -> str:
    """Where a rejection sits in a columns request: `columns.age[3]`, `prediction[3]`, `columns`."""
    if rejection.field == "timestamp":
        return "timestamp"
    if rejection.field == "prediction":
        return f"prediction[{rejection.index}]"
    if rejection.feature is None:
        return "columns"  # too many features: too many columns
    return f"columns.{rejection.feature}[{rejection.index}]"


def _refused(rejection: Rejection, path: str) -> ProblemError:
    """The problem for a request whose only event (or shared field) cannot be counted."""
    status = 400 if rejection.reason == "future_timestamp" else 422
    return ProblemError(
        status,
        rejection.reason.replace("_", "-"),
        f"{path}: {rejection.message}",
        [FieldError(path, rejection.message, rejection.reason)],
        counted=True,  # the engine counted the event it refused
    )


def _request_key(
    request: web.Request, content: bytes, event_id: str | None = None
) -> tuple[RequestKey | None, str]:
    """The request's idempotency key (the header's, else the event's id) and where it came from."""
    raw = request.headers.get(IDEMPOTENCY_KEY)
    if raw is None:
        if event_id is None:
            return None, IDEMPOTENCY_KEY
        return request_key("event", event_id, content), "id"
    problem = key_problem(raw)
    if problem is not None:
        raise ProblemError(
            422,
            "invalid-idempotency-key",
            f"{IDEMPOTENCY_KEY}: {problem}",
            [FieldError(IDEMPOTENCY_KEY, problem)],
        )
    return request_key("request", raw, content), IDEMPOTENCY_KEY


def _reused(field: str, exc: KeyConflictError) -> ProblemError:
    """The problem for a key already recorded with another request."""
    return ProblemError(
        422, "idempotency-key-reused", f"{field}: {exc}", [FieldError(field, str(exc))]
    )


def _replayed_headers(replayed: bool) -> dict[str, str] | None:
    return {REPLAYED: "true"} if replayed else None


@functools.lru_cache(maxsize=64)
def _plain_prediction(assessment: Assessment) -> bytes:
    # Every request a flush answers without warnings gets the same bytes: encode once.
    return msgspec.json.encode(prediction_response(assessment, []))


# ------------------------------------------------------------------------- handlers


async def predict(request: web.Request) -> web.Response:
    """Count one prediction's features and answer with the monitor's drift verdict."""
    check_content_type(request, JSON_TYPES)
    raw = await read_body(request)
    body = decode_body(raw, PredictRequest)
    engine = _engine(request)
    monitor = _monitor(request, body.monitor)
    key, key_field = _request_key(request, raw, body.id)
    try:
        prediction = await engine.predict(monitor, body, key)
    except RejectedEventError as exc:
        raise _refused(exc.rejection, event_path(exc.rejection)) from None
    except KeyConflictError as exc:
        raise _reused(key_field, exc) from None
    headers = _replayed_headers(prediction.replayed)
    if prediction.warnings or prediction.made_id is not None:
        response = encode(
            prediction_response(prediction.assessment, prediction.warnings, prediction.made_id)
        )
        if headers:
            response.headers.update(headers)
        return response
    return web.Response(
        body=_plain_prediction(prediction.assessment),
        content_type="application/json",
        headers=headers,
    )


def _split_events(body: bytes, ndjson: bool) -> tuple[list[bytes] | list[msgspec.Raw], str | None]:
    """A batch's events, each undecoded, and the monitor the body names."""
    if ndjson:
        return [line for line in body.splitlines() if line.strip()], None
    if body.lstrip()[:1] == b"[":
        return decode_body(body, list[msgspec.Raw]), None
    batch = decode_body(body, BatchRequest[msgspec.Raw])
    return batch.events, batch.monitor


def _whole(body: bytes, schema: type[T], objects: int) -> T | None:
    """A JSON batch decoded in one pass, or None when an item needs its own error.

    One pass over the body costs less than one per item; a batch holding a bad item (or
    a bad body) goes item by item, which names each problem. So does a body with more
    than `objects` braces: a batch past its limit would be decoded whole before the
    limit refuses it, and its raw items weigh less than decoded ones.
    """
    if body.count(b"{") > objects:
        return None
    try:
        return msgspec.json.decode(body, type=schema)
    except (msgspec.DecodeError, RecursionError):
        return None


def _all_events(body: bytes, limit: int) -> tuple[list[Event], str | None] | None:
    """Every event of a JSON batch (an array, or `{events, monitor}`) in one pass, or None.

    A valid event is an object holding an object of features: two braces at least.
    """
    if body.lstrip()[:1] == b"[":
        events = _whole(body, list[Event], 2 * limit)
        return None if events is None else (events, None)
    batch = _whole(body, BatchRequest[Event], 2 * limit + 1)
    return None if batch is None else (batch.events, batch.monitor)


async def _batch(request: web.Request, monitor_name: str | None, *, path: bool) -> web.Response:
    check_content_type(request, JSON_TYPES + NDJSON_TYPES)
    engine = _engine(request)
    raw = await read_body(request)
    ndjson = request.content_type in NDJSON_TYPES
    limit = request.app[SETTINGS].limits.max_batch_events
    decoded = None if ndjson else _all_events(raw, limit)
    events: list[Event] = []
    items: list[bytes] | list[msgspec.Raw] = []  # the raw events, when not decoded whole
    if decoded is None:
        items, named = _split_events(raw, ndjson)
    else:
        events, named = decoded
    size = len(items) if decoded is None else len(events)
    monitor = _monitor(request, monitor_name if path else named)
    _check_batch_size(size, limit, "events")
    prefix = "" if path else "events"
    if decoded is None:
        events, positions, errors = _decode_items(items, Event, prefix, "invalid_event")
    else:
        positions, errors = list(range(size)), []
    engine.count_invalid(monitor, (error.reason or "invalid_event" for error in errors))
    key, key_field = _request_key(request, raw)
    try:
        result = await engine.ingest(monitor, events, key)
    except KeyConflictError as exc:
        raise _reused(key_field, exc) from None
    errors.extend(
        FieldError(
            event_path(r, f"{prefix}[{positions[r.index]}]."),
            r.message,
            r.reason,
            positions[r.index],
        )
        for r in result.rejected
    )
    errors.sort(key=lambda e: e.index or 0)
    return _counted(result, errors, size)


def _decode_items(
    items: Sequence[bytes | msgspec.Raw], kind: type[_Item], prefix: str, reason: str
) -> tuple[list[_Item], list[int], list[FieldError]]:
    """Decode each item of a batch: the good ones, their positions, an error per bad one."""
    decoded: list[_Item] = []
    positions: list[int] = []
    errors: list[FieldError] = []
    decoder = msgspec.json.Decoder(kind)  # once: decode(type=) looks the type up per call
    for index, item in enumerate(items):
        try:
            decoded.append(decoder.decode(item))
            positions.append(index)
        except msgspec.ValidationError as exc:
            error = field_error(exc, f"{prefix}[{index}]")
            errors.append(FieldError(error.field, error.message, reason, index))
        except (msgspec.DecodeError, RecursionError) as exc:
            why = TOO_DEEP if isinstance(exc, RecursionError) else exc
            errors.append(
                FieldError(f"{prefix}[{index}]", f"not valid JSON: {why}", "malformed_json", index)
            )
    return decoded, positions, errors


def _check_batch_size(size: int, limit: int, field: str, noun: str = "event") -> None:
    if not size:
        raise ProblemError(
            422,
            "empty-batch",
            f"{field}: expected at least 1 {noun}, got none",
            [FieldError(field, f"expected at least 1 {noun}")],
        )
    if size > limit:
        raise ProblemError(
            413,
            f"too-many-{noun}s",
            f"{field}: expected at most {limit} {noun}s per request, got {size}",
            [FieldError(field, f"expected at most {limit} {noun}s")],
        )


def _counted(result: IngestResult, errors: list[FieldError], size: int) -> web.Response:
    """The answer to a batch: what was counted, late and rejected, and the verdict."""
    monitor = result.monitor
    if not result.accepted and not result.late:
        raise ProblemError(
            422,
            "no-valid-events",
            f"none of the {size} events could be counted",
            errors,
            counted=True,  # each refused event was counted
        )
    response = encode(
        BatchResponse(
            monitor=monitor.name,
            accepted=result.accepted,
            late=result.late,
            rejected=len(errors),
            errors=errors,
            warnings=result.warnings,
            drift=result.assessment.summary() if result.assessment else None,
            timestamp=isoformat(time.time()),
            ids=result.ids,
        )
    )
    if result.replayed:
        response.headers[REPLAYED] = "true"
    return response


async def monitor_labels(request: web.Request) -> web.Response:
    """Join delayed labels (a JSON array or NDJSON of {id, label}) to their predictions."""
    check_content_type(request, JSON_TYPES + NDJSON_TYPES)
    engine = _engine(request)
    raw = await read_body(request)
    monitor = _monitor(request, request.match_info["name"])
    ndjson = request.content_type in NDJSON_TYPES
    limit = request.app[SETTINGS].limits.max_batch_events
    decoded = None if ndjson else _whole(raw, list[Label], limit)  # a label: one object
    items: list[bytes] | list[msgspec.Raw] = []  # the raw labels, when not decoded whole
    if ndjson:
        items = [line for line in raw.splitlines() if line.strip()]
    elif decoded is None:
        items = decode_body(raw, list[msgspec.Raw])
    size = len(items) if decoded is None else len(decoded)
    _check_batch_size(size, limit, "body", "label")
    if decoded is None:
        labels, positions, errors = _decode_items(items, Label, "", "invalid_label")
    else:
        labels, positions, errors = decoded, list(range(size)), []
    try:
        result = await engine.labels(monitor, labels)
    except LabelsOffError as exc:
        raise ProblemError(
            422, "labels-not-taken", str(exc), [FieldError("name", str(exc))]
        ) from None
    errors.extend(
        FieldError(f"[{positions[r.index]}].label", r.message, "invalid_label", positions[r.index])
        for r in result.rejected
    )
    errors.sort(key=lambda e: e.index or 0)
    return encode(
        LabelsResponse(
            monitor=monitor.name,
            received=size,
            counted=result.counted,
            late=result.late,
            unmatched=result.unmatched,
            duplicate=result.duplicate,
            after_horizon=result.after_horizon,
            unsampled=result.unsampled,
            rejected=len(errors),
            errors=errors,
            performance=result.assessment.performance if result.assessment else None,
            timestamp=isoformat(time.time()),
        )
    )


async def batch(request: web.Request) -> web.Response:
    """Count a batch of events for the default monitor or the body's `monitor`."""
    return await _batch(request, None, path=False)


async def monitor_events(request: web.Request) -> web.Response:
    """Count a JSON array or NDJSON stream of events for the monitor in the path."""
    return await _batch(request, request.match_info["name"], path=True)


# ------------------------------------------------------------------- inferences

# The CloudEvent types of KServe's InferenceService logger (pkg/logger in KServe).
CE_REQUEST = "org.kubeflow.serving.inference.request"
CE_RESPONSE = "org.kubeflow.serving.inference.response"


def _payload(data: bytes, schema: type[T], prefix: str) -> T:
    """An inference body decoded, its bad fields named under `prefix` (where it sits)."""
    try:
        return decode_body(data, schema)
    except ProblemError as exc:
        if not prefix:
            raise
        errors = [FieldError(prefix + e.field, e.message, e.reason, e.index) for e in exc.errors]
        raise ProblemError(
            exc.status, exc.slug, f"{errors[0].field}: {errors[0].message}", errors
        ) from None


def _fitted(decode: Callable[[], T], prefix: str) -> T:
    """What `decode` reads from an inference body; a 422 naming the field when it does not fit."""
    try:
        return decode()
    except InferenceError as exc:
        field = prefix + exc.field
        raise ProblemError(
            422,
            "inference-mismatch",
            f"{field}: {exc.message}",
            [FieldError(field, exc.message, "inference_mismatch")],
        ) from None


def _inputs(monitor: Monitor, payload: InferenceRequest, prefix: str, limit: int) -> Inputs:
    features = monitor.layout.features
    inputs = _fitted(lambda: request_inputs(monitor.inference, features, payload), prefix)
    field = "inputs" if payload.inputs is not None else "instances"
    _check_batch_size(input_size(inputs), limit, prefix + field)
    return inputs


def _row_errors(result: IngestResult) -> list[FieldError]:
    return [
        FieldError(event_path(r, f"rows[{r.index}]."), r.message, r.reason, r.index)
        for r in result.rejected
    ]


async def monitor_cloudevents(request: web.Request) -> web.Response:
    """Count KServe's logged inferences: each request's rows with its response's predictions.

    Request and response arrive as two CloudEvents with one id; the first waits (202)
    for the second, which is answered with what the pair counted.
    """
    check_content_type(request, (*JSON_TYPES, STRUCTURED))
    monitor = _monitor(request, request.match_info["name"])
    raw = await read_body(request)
    event = read_cloudevent(request, raw)
    prefix = event.data_path
    pairing = request.app[INFERENCES]
    if event.type == CE_REQUEST:
        payload = _payload(event.data, InferenceRequest, prefix)
        inputs = _inputs(monitor, payload, prefix, request.app[SETTINGS].limits.max_batch_events)
        moment = event.time or datetime.fromtimestamp(time.time(), UTC)
        outcome = await pairing.request(monitor, event.id, inputs, moment, len(raw))
    elif event.type == CE_RESPONSE:
        answer = _payload(event.data, InferenceResponse, prefix)
        if monitor.prediction is None:
            ignored = InferenceAccepted(
                monitor.name, event.id, "ignored", 0, None, [prediction_ignored(monitor)]
            )
            return encode(ignored, 202)
        spec, declared = monitor.inference, monitor.prediction
        predictions = _fitted(lambda: response_predictions(spec, declared, answer), prefix)
        outcome = await pairing.response(
            monitor, event.id, predictions, answer.model_version, len(raw)
        )
    else:
        field = "type" if prefix else "ce-type"
        message = f"expected {CE_REQUEST} or {CE_RESPONSE}, got {event.type!r}"
        raise ProblemError(
            422, "unsupported-cloudevent-type", f"{field}: {message}", [FieldError(field, message)]
        )
    if isinstance(outcome, Parked):
        pending = InferenceAccepted(
            monitor.name, event.id, "pending", outcome.rows, outcome.expires_in, []
        )
        return encode(pending, 202)
    errors = _row_errors(outcome)
    return _counted(outcome, errors, outcome.accepted + outcome.late + len(errors))


async def monitor_inferences(request: web.Request) -> web.Response:
    """Count one inference sent as its request and response bodies (V2 or V1), no CloudEvents."""
    check_content_type(request, JSON_TYPES)
    monitor = _monitor(request, request.match_info["name"])
    raw = await read_body(request)
    body = decode_body(raw, InferencePair)
    limit = request.app[SETTINGS].limits.max_batch_events
    inputs = _inputs(monitor, body.request, "request.", limit)
    answer = body.response
    predictions = None
    warnings: list[str] = []
    if answer is not None:
        spec, declared = monitor.inference, monitor.prediction
        if declared is None:
            warnings.append(prediction_ignored(monitor))
        else:
            predictions = _fitted(lambda: response_predictions(spec, declared, answer), "response.")
    version = answer.model_version if answer is not None else None
    key, key_field = _request_key(request, raw)
    try:
        result = await _engine(request).ingest_inference(
            monitor, inputs, predictions, timestamp=body.timestamp, model_version=version, key=key
        )
    except KeyConflictError as exc:
        raise _reused(key_field, exc) from None
    result.warnings.extend(warnings)
    return _counted(result, _row_errors(result), input_size(inputs))


def _column_problem(name: str, slug: str, message: str) -> ProblemError:
    field = f"columns.{name}"
    return ProblemError(422, slug, f"{field}: {message}", [FieldError(field, message)])


def _unpacked(
    values: list[Any] | bytes, numeric: bool, field: str, what: str
) -> Sequence[Any] | Vector:
    """A column as sent, or a packed numeric column as float64s (`field`: its path)."""
    if not isinstance(values, bytes):
        return values
    message = None
    if not numeric:
        message = f"{what} needs a list of values, not packed numbers"
    elif len(values) % 8:
        message = f"packed numbers need a multiple of 8 bytes (float64), got {len(values)}"
    if message is not None:
        raise ProblemError(
            422, "invalid-column", f"{field}: {message}", [FieldError(field, message)]
        )
    return np.frombuffer(values, dtype="<f8").astype(np.float64, copy=False)


def _is_numeric(monitor: Monitor, name: str) -> bool:
    feature = monitor.layout.features.get(name)
    return feature is None or feature.kind == "numeric"


async def monitor_columns(request: web.Request) -> web.Response:
    """Count a batch sent as one value list per feature (the cheapest way to send many)."""
    check_content_type(request, JSON_TYPES + MSGPACK_TYPES)
    engine = _engine(request)
    monitor = _monitor(request, request.match_info["name"])
    raw = await read_body(request)
    body = decode_body(raw, ColumnsRequest, msgpack=request.content_type in MSGPACK_TYPES)
    columns = {
        name: _unpacked(
            values, _is_numeric(monitor, name), f"columns.{name}", "a categorical feature"
        )
        for name, values in body.columns.items()
    }
    prediction = None
    if body.prediction is not None:
        spec = monitor.prediction
        numeric = spec is None or spec.numeric
        what = f"a {spec.kind} prediction" if spec is not None else "a prediction"
        prediction = _unpacked(body.prediction, numeric, "prediction", what)
    size = len(next(iter(columns.values()), prediction if prediction is not None else ()))
    for name, values in columns.items():
        if len(values) != size:
            first = next(iter(columns))
            message = f"expected {size} values (as many as {first!r} has), got {len(values)}"
            raise _column_problem(name, "ragged-columns", message)
    if prediction is not None and len(prediction) != size:
        message = f"expected {size} predictions (one per event), got {len(prediction)}"
        raise ProblemError(
            422, "ragged-columns", f"prediction: {message}", [FieldError("prediction", message)]
        )
    _check_batch_size(size, request.app[SETTINGS].limits.max_batch_events, "columns")
    key, key_field = _request_key(request, raw)
    try:
        result = await engine.ingest_columns(
            monitor,
            columns,
            size,
            timestamp=body.timestamp,
            model_version=body.model_version,
            key=key,
            prediction=prediction,
        )
    except RejectedEventError as exc:
        raise _refused(exc.rejection, column_path(exc.rejection)) from None
    except KeyConflictError as exc:
        raise _reused(key_field, exc) from None
    errors = [FieldError(column_path(r), r.message, r.reason, r.index) for r in result.rejected]
    return _counted(result, errors, size)


async def forget_window(request: web.Request) -> web.Response:
    """Delete the window data of the monitor in the path (loaded or not); idempotent."""
    engine = _engine(request)
    name = request.match_info["name"]
    if not re.fullmatch(MONITOR_NAME, name):
        raise ProblemError(
            422,
            "invalid-monitor-name",
            f"monitor: {name!r} is not a valid monitor name",
            [FieldError("monitor", f"must match {MONITOR_NAME}")],
        )
    await engine.forget(name)
    return web.Response(status=204)


class AlreadyAcknowledgedError(ProblemError):
    """409: the alert was acknowledged before; the answer carries the first acknowledgement."""

    def __init__(self, alert_id: str, view: AlertView) -> None:
        first = view.acknowledgement
        assert first is not None
        message = f"already acknowledged by {first.by!r} at {first.at}"
        super().__init__(
            409,
            "already-acknowledged",
            f"alert {alert_id!r}: {message}; the first acknowledgement stays",
            [FieldError("alert_id", message)],
        )
        self.view = view

    def document(self) -> AckConflict:
        """The problem with the alert as first acknowledged."""
        return AckConflict(**msgspec.structs.asdict(super().document()), alert=self.view)


def _alert_view(record: AlertRecord) -> AlertView:
    ack = record.acknowledgement
    return AlertView(
        alert_from(record.entry),
        {name: DeliveryView.of(state) for name, state in record.deliveries.items()},
        AcknowledgementView.of(ack) if ack is not None else None,
    )


async def alert_history(request: web.Request) -> web.Response:
    """The monitor's alerts, newest first, with delivery state per receiver."""
    monitor = _monitor(request, request.match_info["name"])
    raw_limit = request.query.get("limit", "50")
    # Only ASCII digits: str.isdigit() also accepts "²", which int() refuses.
    if not re.fullmatch("[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= 1000:
        raise _query_problem("limit", f"expected an integer from 1 to 1000, got {raw_limit!r}")
    severity, records = await request.app[ALERTS].latest(monitor.name, int(raw_limit))
    return encode(AlertHistory(monitor.name, severity, [_alert_view(r) for r in records]))


async def acknowledge_alert(request: web.Request) -> web.Response:
    """Record that someone has seen an alert (id `<monitor>:<n>` or `<n>`); the first ack stays.

    The body is optional but the Content-Type must be JSON: a cross-site form or a
    no-cors fetch cannot send that without the browser asking first.
    """
    check_content_type(request, ("application/json",))
    monitor = _monitor(request, request.match_info["name"])
    alert_id = request.match_info["alert_id"]
    seq_text = alert_id.removeprefix(f"{monitor.name}:")
    if not re.fullmatch("[0-9]{1,18}", seq_text):
        raise ProblemError(
            404,
            "unknown-alert",
            f"alert {alert_id!r}: not an alert id of {monitor.name}",
            [FieldError("alert_id", f"expected {monitor.name}:<number>")],
        )
    body = await read_body(request)
    ack = decode_body(body, AckRequest) if body.strip() else AckRequest()
    outcome = await request.app[ALERTS].acknowledge(
        monitor.name, int(seq_text), ack.by, ack.comment
    )
    if outcome is None:
        raise ProblemError(
            404,
            "unknown-alert",
            f"alert {alert_id!r} of {monitor.name} is not in its history",
            [FieldError("alert_id", "unknown alert")],
        )
    record, first = outcome
    if not first:
        raise AlreadyAcknowledgedError(alert_id, _alert_view(record))
    return encode(_alert_view(record))


def _query_problem(name: str, message: str) -> ProblemError:
    return ProblemError(400, "invalid-query", f"{name}: {message}", [FieldError(name, message)])


def _moment(request: web.Request, name: str, default: float) -> float:
    """A query parameter that is a moment: RFC 3339 with a zone, or epoch seconds."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        try:
            moment = parse_isoformat(raw)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise _query_problem(
                name,
                f"expected an RFC 3339 timestamp with a zone (2025-05-29T10:30:00Z) or epoch "
                f"seconds, got {raw!r}",
            ) from None
        value = moment.timestamp()
    if not 0 <= value < 1e11:
        raise _query_problem(name, f"expected a moment after 1970, got {raw!r}")
    return value


HISTORY_TYPES = ("application/json", "text/csv")


def _history_format(request: web.Request) -> str:
    """`?format=` (json or csv), else CSV when the Accept header prefers it to JSON."""
    raw = request.query.get("format")
    if raw is not None:
        if raw not in ("json", "csv"):
            raise _query_problem("format", f"expected json or csv, got {raw!r}")
        return raw
    accepted = [part.split(";")[0].strip() for part in request.headers.get("Accept", "").split(",")]
    wanted = [t for t in accepted if t in HISTORY_TYPES]
    return "csv" if wanted and wanted[0] == "text/csv" else "json"


async def monitor_history(request: web.Request) -> web.Response:
    """The monitor's verdict per step between `from` and `to` (JSON, or CSV)."""
    engine = _engine(request)
    monitor = _monitor(request, request.match_info["name"])
    horizon = engine.history_horizon
    if not horizon:
        raise ProblemError(404, "history-off", HISTORY_OFF, [FieldError("history", HISTORY_OFF)])
    output = _history_format(request)
    end = _moment(request, "to", time.time())
    start = _moment(request, "from", end - horizon)
    if start >= end:
        raise _query_problem(
            "from", f"must be before to ({isoformat(end)}), got {isoformat(start)}"
        )
    bucket = monitor.window.bucket_seconds
    raw_step = request.query.get("step")
    if raw_step is None:
        step = default_step(int(end - start), bucket)
    else:
        if not re.fullmatch("[0-9]{1,9}", raw_step) or int(raw_step) % bucket or not int(raw_step):
            raise _query_problem(
                "step",
                f"expected seconds, a positive multiple of the monitor's bucket ({bucket} s), "
                f"got {raw_step!r}",
            )
        step = int(raw_step)
        if (end - start) / step > MAX_POINTS:
            raise _query_problem(
                "step",
                f"{step} s gives more than {MAX_POINTS} points from {isoformat(start)} to "
                f"{isoformat(end)}; use at least {default_step(int(end - start), bucket)} s",
            )
    history = await engine.history(monitor, start, end, step)
    if output == "csv":
        return web.Response(
            text=history_csv(history.points), content_type="text/csv", charset="utf-8"
        )
    return encode(
        HistoryResponse(
            monitor=monitor.name,
            start=isoformat(history.start),
            end=isoformat(history.end),
            step=history.step,
            bucket_seconds=bucket,
            horizon_seconds=horizon,
            features={n: s.kind for n, s in monitor.layout.features.items()},
            points=history.points,
        )
    )


async def drift(request: web.Request) -> web.Response:
    """Full drift report of the default monitor (or `?monitor=`)."""
    engine = _engine(request)
    monitor = _monitor(request, request.query.get("monitor"))
    return encode(await engine.report(monitor))


async def monitor_drift(request: web.Request) -> web.Response:
    """Full drift report of the monitor in the path (`?model_version=`, `?segment=`: theirs)."""
    engine = _engine(request)
    monitor = _monitor(request, request.match_info["name"])
    kinds = [kind for kind in SCOPE_KINDS if kind in request.query]
    if len(kinds) > 1:
        raise _query_problem("segment", "give model_version or segment, not both")
    scope = _scope(monitor, kinds[0], request.query[kinds[0]]) if kinds else None
    return encode(await engine.report(monitor, scope))


SCOPE_KINDS: tuple[ScopeKind, ...] = ("model_version", "segment")


def _scope(monitor: Monitor, kind: ScopeKind, value: str, field: str | None = None) -> Scope:
    """A declared version or segment of the monitor, else a 400 on `field` (default: kind)."""
    scope = monitor.scopes.scope(kind, value)
    if scope is None:
        blocks = monitor.scopes
        declared = blocks.versions if kind == "model_version" else blocks.segments
        noun = "a declared model version" if kind == "model_version" else "a declared segment"
        raise _query_problem(
            field or kind,
            f"{value[:128]!r} is not {noun} of monitor {monitor.name!r}; declared: "
            + (", ".join(declared) or "none (docs/versions.md)"),
        )
    return scope


async def monitor_compare(request: web.Request) -> web.Response:
    """Two declared model versions' windows compared: performance, drift, a verdict."""
    engine = _engine(request)
    monitor = _monitor(request, request.match_info["name"])
    sides = []
    for name in ("a", "b"):
        value = request.query.get(name)
        if value is None:
            raise _query_problem(name, "required: a declared model version")
        sides.append(_scope(monitor, "model_version", value, name))
    if sides[0] == sides[1]:
        raise _query_problem("b", f"must differ from a ({sides[0].value!r})")
    raw = request.query.get("margin", "0")
    margin = _number(raw)
    if margin is None or not 0 <= margin < 1e9:
        raise _query_problem("margin", f"expected a number >= 0, got {raw[:64]!r}")
    metric = default_metric(monitor)
    raw_metric = request.query.get("metric")
    if raw_metric is not None:
        metric = next((m for m in COMPARE_METRICS if m == raw_metric), None)
        if metric is None:
            raise _query_problem(
                "metric",
                f"expected one of {', '.join(COMPARE_METRICS)}, got {raw_metric[:64]!r}",
            )
        problem = metric_problem(monitor, metric)
        if problem is not None:
            raise _query_problem("metric", problem)
    return encode(await engine.compare(monitor, sides[0], sides[1], margin=margin, metric=metric))


def _number(raw: str) -> float | None:
    """A finite decimal number, else None."""
    if not re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,12})?", raw):
        return None
    return float(raw)


async def monitor_report_html(request: web.Request) -> web.Response:
    """The drift report of the monitor in the path as one self-contained HTML page."""
    engine = _engine(request)
    report = await engine.report(_monitor(request, request.match_info["name"]))
    return web.Response(text=render_html(report), content_type="text/html")


def _summary_of(monitor: Monitor) -> MonitorSummary:
    return MonitorSummary(
        name=monitor.name,
        model=monitor.model,
        features={
            n: s.kind for n, s in monitor.layout.features.items() if not is_prediction_column(n)
        },
        window_seconds=monitor.choice.window_seconds,
        bucket_seconds=monitor.window.bucket_seconds,
        layout=monitor.window.layout_id,
        source=monitor.source,
        prediction=monitor.prediction,
    )


async def list_monitors(request: web.Request) -> web.Response:
    """Every loaded monitor."""
    engine = _engine(request)
    return encode(
        MonitorList(
            monitors=[_summary_of(m) for m in engine.monitors()],
            default_monitor=engine.default_monitor,
        )
    )


async def get_monitor(request: web.Request) -> web.Response:
    """One monitor's resolved policy and baseline profile."""
    monitor = _monitor(request, request.match_info["name"])
    policy = monitor.policy
    summary = _summary_of(monitor)
    return encode(
        MonitorDetail(
            name=monitor.name,
            model=monitor.model,
            window_seconds=summary.window_seconds,
            bucket_seconds=summary.bucket_seconds,
            layout=summary.layout,
            source=summary.source,
            policy=PolicyView(
                warning_threshold=policy.thresholds.warning,
                critical_threshold=policy.thresholds.critical,
                notice_threshold=policy.thresholds.notice,
                feature_thresholds={
                    name: {"warning": t.warning, "critical": t.critical, "notice": t.notice}
                    for name, t in policy.feature_thresholds.items()
                },
                tests={
                    name: policy.test_for(name, slots.kind)
                    for name, slots in monitor.layout.features.items()
                },
                alpha=policy.alpha,
                multiple_testing=policy.multiple_testing,
                bonferroni=policy.bonferroni,
                min_samples=policy.min_samples,
                min_drifted_features=policy.min_drifted_features,
                alert_hold_seconds=policy.alert_hold_seconds,
                alert_cooldown_seconds=policy.alert_cooldown_seconds,
                quality=policy.quality,
            ),
            baseline=monitor.profile,
            prediction=monitor.prediction,
            model_versions=list(monitor.scopes.versions),
            segment_by=None
            if monitor.scopes.segment_feature is None
            else monitor.scopes.segment_feature.name,
            segments=list(monitor.scopes.segments),
        )
    )


async def health(request: web.Request) -> web.Response:
    """Liveness: 200 while the process works; Redis trouble shows as `degraded`."""
    engine = _engine(request)
    health = await engine.health()
    persistence = await engine.persistence(reachable=health.store_ok)
    return encode(
        HealthResponse(
            status="healthy" if health.store_ok else "degraded",
            baseline_data_loaded=len(health.monitors) > 0,
            timestamp=isoformat(time.time()),
            version=__version__,
            monitors=health.monitors,
            default_monitor=health.default_monitor,
            store=StoreStatus(
                kind=health.store_kind,
                status="ok" if health.store_ok else "unreachable",
                persistence=persistence.mode,
                appendfsync=persistence.fsync,
                unreachable_monitors=health.unreachable,
            ),
            config_errors=health.config_errors,
            ack_mode=request.app[SETTINGS].ack_mode,
        )
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness: 503 while draining for shutdown, with no monitor, or the store unreachable."""
    health = await _engine(request).health()
    reasons = []
    if request.app[DRAINING].is_set():
        reasons.append("shutting down")
    if not health.monitors:
        reasons.append("no monitor loaded")
    if health.unreachable:
        reasons.append(
            f"{health.store_kind} store unreachable for monitors: {', '.join(health.unreachable)}"
        )
    elif not health.store_ok:
        reasons.append(f"{health.store_kind} store unreachable")
    status = 503 if reasons else 200
    return encode(ReadyResponse("not ready" if reasons else "ready", reasons), status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the service's metrics."""
    body, headers = request.app[TELEMETRY].render(request.headers.getall("Accept", []))
    return web.Response(body=body, headers=headers)
