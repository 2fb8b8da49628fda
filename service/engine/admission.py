"""Admission: whether an event may be counted at all, before its values are binned.

An event is refused when it carries more features than the limits allow, has a
timestamp without a time zone, or lies further in the future than allowed. Its values
are checked later, by binning (driftline.core.binning).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from driftline.core.limits import Limits


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prediction's inputs, as the model server sends them."""

    features: dict[str, Any]
    model_version: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was not counted."""

    index: int
    field: str
    reason: str  # invalid_value | too_many_features | invalid_timestamp | future_timestamp
    message: str


class RejectedEventError(Exception):
    """A single event that cannot be counted."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.field}: {rejection.message}")
        self.rejection = rejection


def admit(index: int, event: Event, path: str, now: float, limits: Limits) -> float | Rejection:
    """The event's timestamp (the server's when absent), or why it is refused."""
    if len(event.features) > limits.max_features:
        return Rejection(
            index,
            f"{path}features",
            "too_many_features",
            f"expected at most {limits.max_features} features, got {len(event.features)}",
        )
    if event.timestamp is None:
        return now
    if event.timestamp.tzinfo is None:
        return Rejection(
            index,
            f"{path}timestamp",
            "invalid_timestamp",
            "expected an RFC 3339 timestamp with a time zone (e.g. 2025-05-29T10:30:00Z)",
        )
    timestamp = event.timestamp.timestamp()
    if timestamp > now + limits.max_future_seconds:
        return Rejection(
            index,
            f"{path}timestamp",
            "future_timestamp",
            f"is {timestamp - now:.0f} s in the future; at most "
            f"{limits.max_future_seconds:.0f} s allowed",
        )
    return timestamp
