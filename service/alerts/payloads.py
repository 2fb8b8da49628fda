"""Alert payloads: a severity change as an `Alert`, and the request each receiver type gets.

The outbox stores a snapshot of the assessment that made the change (`snapshot_of`);
`alert_from` turns an outbox entry back into the `Alert` every format is rendered
from: a generic webhook (JSON signed with HMAC-SHA256 over timestamp and body), a
Slack incoming webhook, Alertmanager's v2 alerts API, or a retraining trigger (GitHub
`repository_dispatch`, Argo Events webhook, generic CI; `render_request`).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any, Literal

import msgspec

from driftline.alerts.store import OutboxEntry
from driftline.core.performance import PerformanceCheck
from driftline.core.receivers import Receiver
from driftline.core.report import Assessment, monitor_reasons
from driftline.core.severity import Severity
from driftline.core.timestamps import isoformat, parse_isoformat

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
ALERT_ID_HEADER = "X-Driftline-Alert-Id"
GITHUB_API_VERSION = "2022-11-28"


class DriftedFeature(msgspec.Struct, frozen=True):
    """A feature flagged at the moment of the change, and why."""

    name: str
    score: float
    severity: Severity
    # distribution, missing, range, new_categories: worst first (absent in older alerts)
    reasons: list[str] = []


class AlertWindow(msgspec.Struct, frozen=True):
    """The window the change was seen on."""

    events: int
    start: str
    end: str


class Alert(msgspec.Struct, frozen=True):
    """A monitor's severity change, as every receiver format is derived from it."""

    id: str  # `<monitor>:<sequence>`: stable across retries and replicas, for de-duplication
    monitor: str
    model: str
    severity: Severity
    previous_severity: Severity
    status: Literal["firing", "resolved"]
    drift_score: float
    drifted_features: list[DriftedFeature]
    window: AlertWindow
    started_at: str  # when the monitor left `none` (the episode's start)
    created_at: str  # when the change was decided (Redis clock)
    # Why, for the monitor as a whole: the features' reasons, then `prediction` when the
    # prediction's outputs are flagged, `performance` when the model got worse
    # (driftline.core.report.monitor_reasons); empty in older alerts.
    reasons: list[str] = []
    drifted_prediction: list[DriftedFeature] = []  # flagged outputs: value, score, class...
    # Metrics worse than the baseline's (docs/labels.md): accuracy, roc_auc, mae.
    degraded_performance: dict[str, PerformanceCheck] = {}


class AlertSnapshot(msgspec.Struct, frozen=True):
    """What the report said when the change was decided (stored in the outbox entry)."""

    model: str
    drift_score: float
    drifted_features: list[DriftedFeature]
    window: AlertWindow
    drifted_prediction: list[DriftedFeature] = []  # absent in snapshots of older versions
    degraded_performance: dict[str, PerformanceCheck] = {}


def snapshot_of(assessment: Assessment) -> bytes:
    """The outbox snapshot of an assessment."""
    features = assessment.evaluation.features
    window = assessment.window
    verdict = assessment.evaluation.verdict
    names = assessment.flagged_features()
    outputs = assessment.prediction_outputs()
    flagged = assessment.flagged_outputs()
    return msgspec.json.encode(
        AlertSnapshot(
            model=assessment.monitor.model,
            drift_score=verdict.drift_score,
            drifted_features=[
                DriftedFeature(
                    name,
                    features[name].score,
                    features[name].severity,
                    list(features[name].reasons),
                )
                for name in names
            ],
            window=AlertWindow(window.events, window.start, window.end),
            drifted_prediction=[
                DriftedFeature(
                    name, outputs[name].score, outputs[name].severity, list(outputs[name].reasons)
                )
                for name in flagged
            ],
            degraded_performance=assessment.degraded(),
        )
    )


_SNAPSHOT = msgspec.json.Decoder(AlertSnapshot)


def alert_from(entry: OutboxEntry) -> Alert:
    """The alert every receiver format is rendered from."""
    snapshot = _SNAPSHOT.decode(entry.snapshot)
    return Alert(
        id=f"{entry.monitor}:{entry.seq}",
        monitor=entry.monitor,
        model=snapshot.model,
        severity=entry.severity,
        previous_severity=entry.previous,
        status="resolved" if entry.severity is Severity.NONE else "firing",
        drift_score=snapshot.drift_score,
        drifted_features=snapshot.drifted_features,
        window=snapshot.window,
        started_at=isoformat(entry.started_at),
        created_at=isoformat(entry.at),
        reasons=list(
            monitor_reasons(
                (feature.reasons for feature in snapshot.drifted_features),
                prediction=bool(snapshot.drifted_prediction),
                performance=bool(snapshot.degraded_performance),
            )
        ),
        drifted_prediction=snapshot.drifted_prediction,
        degraded_performance=snapshot.degraded_performance,
    )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _summary(alert: Alert) -> str:
    if alert.status == "resolved":
        return f"Drift resolved on {alert.monitor} (model {alert.model or '-'})"
    return (
        f"{alert.severity.upper()} drift on {alert.monitor} (model {alert.model or '-'}): "
        f"score {alert.drift_score:.3f}, was {alert.previous_severity}"
        + "".join(
            f"; {metric} {c.value:.3f} (baseline {c.baseline:.3f})"
            for metric, c in alert.degraded_performance.items()
        )
    )


def _listed(features: list[DriftedFeature]) -> str:
    return ", ".join(
        f"{f.name} {f.score:.3f} ({f.severity}{': ' + ', '.join(f.reasons) if f.reasons else ''})"
        for f in features
    )


def alertmanager_alerts(
    alert: Alert, firing_ttl: float, floor: Severity = Severity.WARNING
) -> list[dict[str, Any]]:
    """Alertmanager v2 alerts for a change: resolve the old severity, fire the new one.

    Alertmanager identifies an alert by its labels, so a change of severity is the end
    of one alert (endsAt now) and the start of another. A firing alert carries
    endsAt = now + firing_ttl: without it Alertmanager would resolve it after its
    resolve_timeout, while driftline only speaks again on the next change. Severities
    below `floor` (the receiver's minimum) are neither fired nor resolved: the receiver
    does not hear the change that would end them.
    """
    now = parse_isoformat(alert.created_at)
    base = {"alertname": "DriftlineDrift", "monitor": alert.monitor, "model": alert.model}
    annotations = {
        "summary": _summary(alert),
        "description": f"drifted features: {_listed(alert.drifted_features) or 'none'}"
        + (
            f"; prediction: {_listed(alert.drifted_prediction)}" if alert.drifted_prediction else ""
        ),
        "alert_id": alert.id,
        "drift_score": f"{alert.drift_score:.6g}",
    }
    lowest = max(floor.rank, Severity.NOTICE.rank)  # `none` is never an alert of its own
    alerts: list[dict[str, Any]] = []
    if alert.previous_severity.rank >= lowest:
        alerts.append(
            {
                "labels": {**base, "severity": str(alert.previous_severity)},
                "annotations": annotations,
                "startsAt": alert.started_at,
                "endsAt": isoformat(now),
            }
        )
    if alert.severity.rank >= lowest:
        alerts.append(
            {
                "labels": {**base, "severity": str(alert.severity)},
                "annotations": annotations,
                "startsAt": alert.created_at,
                "endsAt": isoformat(now + timedelta(seconds=firing_ttl)),
            }
        )
    return alerts


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message a person can read at a glance."""
    icon = {
        "critical": ":red_circle:",
        "warning": ":large_orange_circle:",
        "notice": ":large_blue_circle:",
    }.get(str(alert.severity), ":large_green_circle:")
    lines = [f"{icon} *{_summary(alert)}*"]
    if alert.drifted_features:
        lines.append(f"Drifted features: {_listed(alert.drifted_features)}")
    if alert.drifted_prediction:
        lines.append(f"Prediction drift: {_listed(alert.drifted_prediction)}")
    lines.append(
        f"Window: {alert.window.events} events, {alert.window.start} to {alert.window.end}"
    )
    lines.append(f"Alert id: `{alert.id}`")
    return {"text": "\n".join(lines)}


def retraining_trigger(alert: Alert) -> dict[str, Any]:
    """Why a retraining pipeline runs: the reasons, what drifted, on which window.

    Ten top-level fields, GitHub's limit for a repository_dispatch `client_payload`.
    """
    return {
        "alert_id": alert.id,
        "monitor": alert.monitor,
        "model": alert.model,
        "severity": str(alert.severity),
        "reasons": alert.reasons,
        "drifted_features": [f.name for f in alert.drifted_features],
        "drifted_prediction": [f.name for f in alert.drifted_prediction],
        "drift_score": alert.drift_score,
        "window": msgspec.to_builtins(alert.window),
        "created_at": alert.created_at,
    }


def render_request(
    receiver: Receiver, alert: Alert, *, now: float, firing_ttl: float
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the POST that tells `receiver` about `alert`."""
    headers = {"Content-Type": "application/json", ALERT_ID_HEADER: alert.id}
    if receiver.token:
        headers["Authorization"] = f"Bearer {receiver.token}"
    if receiver.type == "github":
        # POST /repos/{owner}/{repo}/dispatches: the URL names the repository.
        headers["Accept"] = "application/vnd.github+json"
        headers["X-GitHub-Api-Version"] = GITHUB_API_VERSION
        document = {"event_type": receiver.event_type, "client_payload": retraining_trigger(alert)}
        return receiver.url, msgspec.json.encode(document), headers
    if receiver.type == "argo":
        return receiver.url, msgspec.json.encode(retraining_trigger(alert)), headers
    if receiver.type == "slack":
        return receiver.url, msgspec.json.encode(slack_message(alert)), headers
    if receiver.type == "alertmanager":
        url = receiver.url.rstrip("/") + "/api/v2/alerts"
        floor = Severity(receiver.min_severity)
        return url, msgspec.json.encode(alertmanager_alerts(alert, firing_ttl, floor)), headers
    # webhook: the whole alert; ci: the trigger. Both timestamped and signed.
    body = msgspec.json.encode(retraining_trigger(alert) if receiver.type == "ci" else alert)
    timestamp = str(int(now))
    headers[TIMESTAMP_HEADER] = timestamp
    if receiver.signing_secret:
        headers[SIGNATURE_HEADER] = sign(receiver.signing_secret, timestamp, body)
    return receiver.url, body, headers
