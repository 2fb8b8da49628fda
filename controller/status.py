"""A DriftMonitor's status: conditions, the drift service's verdict, and severity-change Events.

Plain functions of plain data. Conditions follow the Kubernetes convention (type, status,
reason, message, observedGeneration, lastTransitionTime); the transition time moves only
when the status does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from driftline.core.severity import SEVERITY_RANK

from .drift_service import DriftSummary, ServiceFailure
from .spec import API_GROUP, API_VERSION, KIND

ConditionStatus = Literal["True", "False", "Unknown"]
READY = "Ready"
CONFIG_RENDERED = "ConfigRendered"
AUTOSCALING_READY = "AutoscalingReady"
ALERTS_READY = "AlertsReady"
# What the reconcile decides; Ready sums them up with the drift service's answer.
RECONCILED_CONDITIONS = (CONFIG_RENDERED, ALERTS_READY, AUTOSCALING_READY)
# Ready reasons that come from asking the drift service (the rest from reconciling).
SERVICE_REASONS = frozenset(
    {"Monitoring", "ServiceUnreachable", "MonitorNotLoaded", "ServiceError", "ServiceUrlRefused"}
)
EVENT_REASON = "SeverityChanged"
REPORTING_CONTROLLER = "driftline.io/controller"
EVENT_NOTE_LIMIT = 1024  # events.k8s.io/v1 refuses longer notes
# The status shows the verdict at the precision a person reads it: every write is an
# etcd write and a watch event for every client, so noise below this is not written.
SCORE_DECIMALS = 2
EVENTS_SIGNIFICANT_DIGITS = 2


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition as decided now; timestamps are added when it is written."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp as Kubernetes writes them (second precision, `Z`)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition_entries(
    conditions: Iterable[Condition],
    previous: Sequence[Mapping[str, Any]],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Conditions as status entries; lastTransitionTime is kept while the status holds."""
    before = {c.get("type"): c for c in previous}
    entries: list[dict[str, Any]] = []
    for condition in conditions:
        old = before.get(condition.type)
        since = rfc3339(now)
        if old is not None and old.get("status") == condition.status:
            since = old.get("lastTransitionTime") or since
        entries.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": generation,
                "lastTransitionTime": since,
            }
        )
    return entries


def status_holds(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether the status already shows every desired field (conditions compared by type).

    Writing what is already there would still be a write: a new resourceVersion, a watch
    event for every client, and with server-side apply a change of field ownership.
    """
    for key, value in desired.items():
        if key != "conditions":
            if current.get(key) != value:
                return False
            continue
        shown = {c.get("type"): c for c in current.get("conditions", []) if isinstance(c, Mapping)}
        if any(shown.get(entry["type"]) != entry for entry in value):
            return False
    return True


def conditions_from_status(
    entries: Sequence[Mapping[str, Any]], types: Iterable[str]
) -> list[Condition] | None:
    """The given conditions from status entries, or None when any is missing."""
    by_type = {e.get("type"): e for e in entries}
    found: list[Condition] = []
    for kind in types:
        entry = by_type.get(kind)
        if entry is None or entry.get("status") not in ("True", "False", "Unknown"):
            return None
        found.append(
            Condition(kind, entry["status"], entry.get("reason", ""), entry.get("message", ""))
        )
    return found


def ready_condition(
    reconciled: Sequence[Condition] | None,
    probe: DriftSummary | ServiceFailure | None,
    *,
    service_url: str,
    previous_ready: Mapping[str, Any] | None = None,
) -> Condition:
    """Ready: every reconciled condition True and the drift service answering for the monitor.

    `probe` is the last answer of the drift service; without one (not asked yet since the
    operator started) a Ready that came from the service is kept rather than reset.
    """
    if reconciled is None:
        return Condition(READY, "Unknown", "Reconciling", "the monitor has not been reconciled yet")
    for condition in reconciled:
        if condition.status != "True":
            return Condition(
                READY, "False", condition.reason, f"{condition.type}: {condition.message}"
            )
    if isinstance(probe, ServiceFailure):
        return Condition(READY, "False", probe.reason, probe.message)
    if isinstance(probe, DriftSummary):
        return Condition(
            READY, "True", "Monitoring", f"the drift service at {service_url} reports on it"
        )
    if previous_ready is not None and previous_ready.get("reason") in SERVICE_REASONS:
        return Condition(
            READY,
            previous_ready.get("status", "Unknown"),
            previous_ready["reason"],
            previous_ready.get("message", ""),
        )
    return Condition(
        READY, "Unknown", "AwaitingReport", f"waiting for a drift report from {service_url}"
    )


def coarse_count(events: int) -> int:
    """An event count to two significant digits (1234 -> 1200); below 100 exact."""
    digits = len(str(abs(events)))
    if digits <= EVENTS_SIGNIFICANT_DIGITS:
        return events
    return int(round(events, EVENTS_SIGNIFICANT_DIGITS - digits))


def report_status(summary: DriftSummary) -> dict[str, Any]:
    """The status fields that show the drift service's latest verdict, as people read them.

    The score is rounded and the event count coarse, so a monitor whose verdict holds
    writes nothing: freshness is in the service's metrics, not in etcd.
    """
    status: dict[str, Any] = {
        "severity": summary.severity,
        "driftedFeatures": list(summary.drifted_features),
        # Every feature with a severity (notices too) and why, as the report orders them.
        "featureReasons": [
            {"feature": name, "severity": feature.severity, "reasons": list(feature.reasons)}
            for name, feature in summary.features.items()
            if feature.severity != "none"
        ],
        "windowEvents": coarse_count(summary.window.events),
    }
    # JSON has no NaN or infinity; a score that is not finite is left out.
    if math.isfinite(summary.drift_score):
        status["driftScore"] = round(summary.drift_score, SCORE_DECIMALS)
    return status


REPORT_FIELDS = ("severity", "driftScore", "driftedFeatures", "featureReasons", "windowEvents")


def carried_report_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict fields already in a status, to re-apply when the service gave none."""
    return {key: status[key] for key in REPORT_FIELDS if key in status}


@dataclass(frozen=True, slots=True)
class SeverityChange:
    """A change of a monitor's severity worth a Kubernetes Event."""

    previous: str | None
    current: str

    @property
    def event_type(self) -> Literal["Normal", "Warning"]:
        """Warning when drift got worse, Normal when it eased, resolved or is a notice."""
        before = SEVERITY_RANK.get(self.previous or "none", 0)
        now = SEVERITY_RANK.get(self.current, 0)
        return "Warning" if now > before and now >= SEVERITY_RANK["warning"] else "Normal"


def severity_change(previous: str | None, current: str) -> SeverityChange | None:
    """The change from the last known severity, or None; first seeing `none` is no change."""
    if previous == current or (previous is None and current == "none"):
        return None
    return SeverityChange(previous, current)


def severity_event(
    monitor: Mapping[str, Any],
    change: SeverityChange,
    summary: DriftSummary,
    *,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about the monitor's severity change."""
    metadata = monitor["metadata"]
    features = ", ".join(summary.drifted_features) or "none"
    note = (
        f"severity {change.previous or 'unknown'} -> {change.current}: drift score "
        f"{summary.drift_score:.4g}, drifted features: {features} "
        f"({summary.window.events} events in the window)"
    )
    if len(note) > EVENT_NOTE_LIMIT:
        note = note[: EVENT_NOTE_LIMIT - 3] + "..."
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # A name prefix must itself be a valid name: it ends in "-", not ".".
        "metadata": {"generateName": f"{metadata['name']}-", "namespace": metadata["namespace"]},
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": "Evaluate",
        "reason": EVENT_REASON,
        "type": change.event_type,
        "note": note,
        "regarding": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid", ""),
        },
    }
