"""Admission: whether an event may be counted at all, before its values are binned.

An event is refused when it carries more features than the limits allow, has a
timestamp without a time zone, or lies further in the future than allowed; its
prediction, for a monitor that declares one, becomes the prediction's reserved columns
here (driftline.core.prediction). Its values are checked later, by binning
(driftline.core.binning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from driftline.core.binning import EventError
from driftline.core.idempotency import MAX_KEY_LENGTH
from driftline.core.limits import Limits, ModelVersion
from driftline.core.prediction import (
    RESERVED_MARK,
    Decoder,
    PredictionError,
    is_prediction_column,
)

EventId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description=(
            "The prediction's own id. POST /monitor/predict counts an "
            "event sent again with the same id once within the idempotency horizon (a batch "
            "has its Idempotency-Key for that); delayed labels are joined to predictions by it"
        ),
    ),
]


class Event(msgspec.Struct, frozen=True):
    """One prediction's inputs and, optionally, the prediction, as the model server sends them.

    Unknown top-level fields are ignored: model servers send more.
    """

    features: dict[str, Any]
    model_version: ModelVersion | None = None
    timestamp: datetime | None = None
    id: EventId | None = None
    prediction: Any = None


class Label(msgspec.Struct, frozen=True):
    """A delayed label: the id of the prediction it belongs to, and the true outcome.

    `label` is a declared class (for a score: 1/0 or true/false) or, for a regression,
    a number. Unknown fields are ignored, as an event's are.
    """

    id: EventId
    label: Any


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was not counted: the event field at fault and what is wrong.

    `field` is the event's `features`, `timestamp` or `prediction`; `feature` names the
    feature whose value was refused (reason `invalid_value`). The HTTP layer turns them
    into the field's path in the request.
    """

    index: int  # the event's position in what was submitted
    field: Literal["features", "timestamp", "prediction"]
    # invalid_value | too_many_features | no_known_features | invalid_timestamp |
    # future_timestamp | invalid_prediction | reserved_feature
    reason: str
    message: str
    feature: str | None = None


class RejectedEventError(Exception):
    """A single event (or a request's shared field) that cannot be counted."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.reason}: {rejection.message}")
        self.rejection = rejection


def invalid_value(index: int, error: EventError) -> Rejection:
    """The rejection of an event whose feature value (or prediction) binning refused."""
    if is_prediction_column(error.feature):
        return invalid_prediction(index, error.message)
    return Rejection(index, "features", "invalid_value", error.message, error.feature)


def invalid_prediction(index: int, message: str) -> Rejection:
    """The rejection of an event whose prediction does not fit the monitor's declaration."""
    return Rejection(index, "prediction", "invalid_prediction", message)


def with_prediction(
    index: int, decoder: Decoder, features: dict[str, Any], prediction: Any
) -> dict[str, Any] | Rejection:
    """The event's features and its prediction's reserved columns, or why it is refused."""
    names = decoder.names
    for name in names:
        if name in features:
            return Rejection(
                index,
                "features",
                "reserved_feature",
                f"names starting with {RESERVED_MARK} are reserved; send the model's "
                "output in the event's `prediction`",
                name,
            )
    try:
        values = decoder.values(prediction)
    except PredictionError as exc:
        return invalid_prediction(index, str(exc))
    merged = features.copy()
    for name, value in zip(names, values, strict=True):
        merged[name] = value
    return merged


def unjoined(rows: int, predictions: Sequence[Any] | None) -> str | None:
    """Why a response's predictions cannot be joined to its request's rows, or None.

    A response with another number of rows than its request cannot be joined: its
    predictions are left out (the rows are counted) and this warning says why.
    """
    if predictions is None or len(predictions) == rows:
        return None
    return f"the response has {len(predictions)} rows, its request {rows}: predictions not counted"


def inference_events(
    rows: Sequence[dict[str, Any]],
    predictions: Sequence[Any] | None,
    timestamp: datetime | None,
    model_version: str | None,
) -> list[Event]:
    """One event per request row, with the response's prediction for that row (joined)."""
    if predictions is None:
        return [Event(row, model_version, timestamp) for row in rows]
    return [
        Event(row, model_version, timestamp, prediction=p)
        for row, p in zip(rows, predictions, strict=True)
    ]


def admit(
    index: int, feature_count: int, timestamp: datetime | None, now: float, limits: Limits
) -> float | Rejection:
    """The event's timestamp (the server's `now` when absent), or why it is refused."""
    if feature_count > limits.max_features:
        return Rejection(
            index,
            "features",
            "too_many_features",
            f"expected at most {limits.max_features} features, got {feature_count}",
        )
    if timestamp is None:
        return now
    if timestamp.tzinfo is None:
        return Rejection(
            index,
            "timestamp",
            "invalid_timestamp",
            "expected an RFC 3339 timestamp with a time zone (e.g. 2025-05-29T10:30:00Z)",
        )
    moment = timestamp.timestamp()
    if moment > now + limits.max_future_seconds:
        return Rejection(
            index,
            "timestamp",
            "future_timestamp",
            f"is {moment - now:.0f} s in the future; at most "
            f"{limits.max_future_seconds:.0f} s allowed",
        )
    return moment
