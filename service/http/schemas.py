"""Request and response bodies of the HTTP API: the contract (the original API's shapes kept)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from driftline.alerts.payloads import Alert
from driftline.alerts.store import Acknowledgement, DeliveryState
from driftline.core.history import HistoryPoint
from driftline.core.inference import InferenceRequest, InferenceResponse
from driftline.core.limits import ModelVersion
from driftline.core.performance import Performance
from driftline.core.policy import MultipleTesting, QualityPolicy, TestName
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import BaselineProfile
from driftline.core.report import DriftSummary
from driftline.core.severity import Severity
from driftline.core.timestamps import isoformat
from driftline.engine.admission import Event
from driftline.http.problems import FieldError, ProblemDocument

Item = TypeVar("Item")


class PredictRequest(Event, frozen=True):
    """`POST /monitor/predict`: one prediction's features, to the default or named monitor.

    `prediction` is watched when the monitor declares its kind (docs/predictions.md).
    Unknown top-level fields are ignored: model servers send more.
    """

    monitor: str | None = None


class PredictResponse(DriftSummary, frozen=True, omit_defaults=True):
    """The original API's answer (the verdict and a timestamp), plus the monitor and warnings.

    `id`: the id the service gave an event sent without one to a monitor that takes
    labels (post its label under it); absent otherwise.
    """

    timestamp: str
    monitor: str
    warnings: list[str]
    id: str | None = None


class BatchRequest(msgspec.Struct, Generic[Item], frozen=True):
    """`POST /monitor/batch`: several events (or send a bare JSON array of events).

    `BatchRequest[Event]` decodes in one pass a batch whose every event decodes;
    `BatchRequest[msgspec.Raw]` keeps each event undecoded, to give each its own error.
    """

    events: list[Item]
    monitor: str | None = None


class ColumnsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/monitors/{name}/columns`: a batch as one value list per feature.

    Every list has one value per event (null where missing); the events share the
    timestamp (the server's when absent) and model version. A numeric column may also be
    packed: little-endian float64 bytes, NaN where missing (a msgpack bin, or base64 in
    JSON), which costs nothing to parse.
    """

    columns: dict[str, list[Any] | bytes]
    timestamp: datetime | None = None
    model_version: ModelVersion | None = None
    # One prediction per event, as an event's `prediction`; packed float64s for a
    # regression or score prediction.
    prediction: list[Any] | bytes | None = None


class BatchResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a batch did: accepted, late (acknowledged, older than the window), rejected."""

    monitor: str
    accepted: int
    late: int
    rejected: int
    errors: list[FieldError]
    warnings: list[str]
    drift: DriftSummary | None
    timestamp: str
    # A monitor that takes labels: per event its id (the service's where none was
    # sent), null for a refused one.
    ids: list[str | None] | None = None


class LabelsResponse(msgspec.Struct, frozen=True):
    """What a batch of labels did: every label is in exactly one count (docs/labels.md).

    `counted` joined its prediction and counted into that prediction's bucket; `late`
    joined, but that bucket has left the window; `unmatched`: no prediction waits under
    its id; `duplicate`: its prediction was labelled before (or the id repeats in the
    batch); `after_horizon`: later than `labels.horizon_seconds` after its prediction;
    `unsampled`: its id was not sampled (`labels.sample_rate`); `rejected`: a bad item,
    named in `errors`.
    """

    monitor: str
    received: int
    counted: int
    late: int
    unmatched: int
    duplicate: int
    after_horizon: int
    unsampled: int
    rejected: int
    errors: list[FieldError]
    performance: Performance | None
    timestamp: str


class InferencePair(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/monitors/{name}/inferences`: one inference's request and response bodies.

    V2 (Open Inference Protocol) or V1, as the model server received and answered them;
    `response` may be left out (then no prediction). The rows share the timestamp (the
    server's when absent) and the response's `model_version`.
    """

    request: InferenceRequest
    response: InferenceResponse | None = None
    timestamp: datetime | None = None


class InferenceAccepted(msgspec.Struct, frozen=True):
    """A logged half not counted now: `pending` its other half (`expires_in` s), or `ignored`."""

    monitor: str
    id: str
    status: Literal["pending", "ignored"]
    rows: int
    expires_in: float | None
    warnings: list[str]


class StoreStatus(msgspec.Struct, frozen=True):
    """The window store as health sees it.

    `persistence`: what survives a restart of the store: `aof` (Redis append-only file,
    `appendfsync` says how often it reaches the disk), `none` (in memory only: Redis
    without an AOF, or the embedded store) or `unknown` (Redis refuses CONFIG, or is down).
    `unreachable_monitors`: loaded monitors whose windows cannot be reached (on Redis
    Cluster, those on a master that is down).
    """

    kind: str
    status: str
    persistence: str = "unknown"
    appendfsync: str | None = None
    unreachable_monitors: list[str] = []


class HealthResponse(msgspec.Struct, frozen=True):
    """`GET /monitor/health`: liveness; store trouble shows as `degraded`, still 200."""

    status: str
    baseline_data_loaded: bool
    timestamp: str
    version: str
    monitors: list[str]
    default_monitor: str | None
    store: StoreStatus
    config_errors: dict[str, str]
    ack_mode: str


class ReadyResponse(msgspec.Struct, frozen=True):
    """`GET /monitor/ready`: 200 when the service can take traffic, else 503 with why."""

    status: str
    reasons: list[str]


class DeliveryView(msgspec.Struct, frozen=True):
    """Where one receiver stands with one alert; times in ISO 8601 like every answer."""

    status: str
    attempts: int = 0
    last_error: str | None = None
    updated_at: str | None = None
    delivered_at: str | None = None

    @classmethod
    def of(cls, state: DeliveryState) -> DeliveryView:
        """The view of a stored delivery state."""
        return cls(
            status=state.status,
            attempts=state.attempts,
            last_error=state.last_error,
            updated_at=isoformat(state.updated_at) if state.updated_at else None,
            delivered_at=isoformat(state.delivered_at) if state.delivered_at else None,
        )


class AcknowledgementView(msgspec.Struct, frozen=True):
    """Who acknowledged an alert, and when."""

    by: str
    at: str
    comment: str = ""

    @classmethod
    def of(cls, ack: Acknowledgement) -> AcknowledgementView:
        """The view of a stored acknowledgement."""
        return cls(by=ack.by, at=isoformat(ack.at), comment=ack.comment)


class AlertView(msgspec.Struct, frozen=True):
    """An alert, where each receiver stands with it, and who acknowledged it."""

    alert: Alert
    deliveries: dict[str, DeliveryView]
    acknowledgement: AcknowledgementView | None


class AlertHistory(msgspec.Struct, frozen=True):
    """`GET /v1/monitors/{name}/alerts`: newest first."""

    monitor: str
    severity: Severity  # as last announced
    alerts: list[AlertView]


class HistoryResponse(msgspec.Struct, frozen=True):
    """`GET /v1/monitors/{name}/history`: one point per step, oldest first.

    A step with no record (no assessment closed its buckets: the service was down, or
    the history is younger) has no point.
    """

    monitor: str
    start: str  # the first bucket's start
    end: str  # the last bucket's end
    step: int  # seconds per point, a whole number of buckets
    bucket_seconds: int
    horizon_seconds: int
    features: dict[str, str]  # name -> kind, in layout order
    points: list[HistoryPoint]


class AckRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST .../alerts/{id}/ack` (the body is optional)."""

    by: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "anonymous"
    comment: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class AckConflict(ProblemDocument, frozen=True):
    """409 to a second acknowledgement: the problem, and the alert as first acknowledged."""

    alert: AlertView


class MonitorSummary(msgspec.Struct, frozen=True):
    """One entry of `GET /v1/monitors`."""

    name: str
    model: str
    features: dict[str, str]
    window_seconds: int
    bucket_seconds: int
    layout: str
    source: str
    prediction: PredictionSpec | None = None


class MonitorList(msgspec.Struct, frozen=True):
    """`GET /v1/monitors`."""

    monitors: list[MonitorSummary]
    default_monitor: str | None


class PolicyView(msgspec.Struct, frozen=True):
    """A monitor's resolved policy."""

    warning_threshold: float
    critical_threshold: float
    notice_threshold: float
    feature_thresholds: dict[str, dict[str, float]]
    tests: dict[str, TestName]
    alpha: float
    multiple_testing: MultipleTesting
    bonferroni: bool  # multiple_testing is bonferroni (the older switch)
    min_samples: int
    min_drifted_features: int
    alert_hold_seconds: float
    alert_cooldown_seconds: float
    quality: QualityPolicy


class MonitorDetail(msgspec.Struct, frozen=True):
    """`GET /v1/monitors/{name}`: config and baseline profile."""

    name: str
    model: str
    window_seconds: int
    bucket_seconds: int
    layout: str
    source: str
    policy: PolicyView
    baseline: BaselineProfile
    prediction: PredictionSpec | None = None
    # Declared versions and segments: windows of their own (docs/versions.md).
    model_versions: list[str] = []
    segment_by: str | None = None
    segments: list[str] = []
