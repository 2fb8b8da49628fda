"""Alert receivers: who hears about a monitor's severity changes, and in which format.

Receivers come from the alerts directory (the operator's `<service>-alerts` Secret,
mounted): one `<monitor>.json` per monitor, `{"receivers": [...]}`. Each receiver is a
generic webhook (JSON signed with HMAC-SHA256 over timestamp and body), a Slack
incoming webhook, or Alertmanager's v2 alerts API. URLs and keys are secrets: they are
never logged, and receivers are named in logs and metrics by their `name` only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from driftline.core.receivers import Receiver
from driftline.core.severity import Severity
from driftline.core.timestamps import isoformat, parse_isoformat

SIGNATURE_HEADER = "X-Driftline-Signature"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"
ALERT_ID_HEADER = "X-Driftline-Alert-Id"


# Cloud metadata services outside the link-local ranges: AWS's IPv6 instance metadata
# endpoint (in fd00::/8, unique-local) and Alibaba Cloud's (in the shared 100.64/10).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200")
)


def refused_address(text: str) -> str | None:
    """The address, when it is link-local or a cloud metadata service's; else None."""
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 reaches 169.254.169.254
    if address.is_link_local or address in METADATA_ADDRESSES:
        return str(address)
    return None


def link_local_target(url: str) -> str | None:
    """The link-local or cloud-metadata address a URL resolves to, if any."""
    try:
        host = urlsplit(url).hostname or ""
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # unresolvable: the POST will fail and be retried like any outage
    except ValueError:
        return None  # not a valid host (bad IDNA label, bad IP literal): the POST refuses it
    for info in infos:
        refused = refused_address(str(info[4][0]))
        if refused is not None:
            return refused
    return None


class VettingResolver(AbstractResolver):
    """Resolves host names like `inner`, leaving out link-local and metadata addresses.

    `link_local_target` checks a URL before the POST; this checks the addresses the
    connection then uses, so a name that resolves differently the second time (DNS
    rebinding) cannot reach a metadata service either.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host` that may be connected to; OSError when none may."""
        kept = [
            r
            for r in await self._inner.resolve(host, port, family)
            if not refused_address(r["host"])
        ]
        if not kept:
            raise OSError(f"refused: {host} resolves only to link-local or metadata addresses")
        return kept

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()


# ------------------------------------------------------------------- payloads


class DriftedFeature(msgspec.Struct, frozen=True):
    """A feature flagged at the moment of the change."""

    name: str
    score: float
    severity: Severity


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
    )


def _features_text(alert: Alert) -> str:
    return ", ".join(f"{f.name} {f.score:.3f} ({f.severity})" for f in alert.drifted_features)


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
        "description": f"drifted features: {_features_text(alert) or 'none'}",
        "alert_id": alert.id,
        "drift_score": f"{alert.drift_score:.6g}",
    }
    lowest = max(floor.rank, Severity.WARNING.rank)  # `none` is never an alert of its own
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
    icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(
        str(alert.severity), ":large_green_circle:"
    )
    lines = [f"{icon} *{_summary(alert)}*"]
    if alert.drifted_features:
        lines.append(f"Drifted features: {_features_text(alert)}")
    lines.append(
        f"Window: {alert.window.events} events, {alert.window.start} to {alert.window.end}"
    )
    lines.append(f"Alert id: `{alert.id}`")
    return {"text": "\n".join(lines)}


def render_request(
    receiver: Receiver, alert: Alert, *, now: float, firing_ttl: float
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of the POST that tells `receiver` about `alert`."""
    headers = {"Content-Type": "application/json", ALERT_ID_HEADER: alert.id}
    if receiver.type == "slack":
        return receiver.url, msgspec.json.encode(slack_message(alert)), headers
    if receiver.type == "alertmanager":
        url = receiver.url.rstrip("/") + "/api/v2/alerts"
        floor = Severity(receiver.min_severity)
        return url, msgspec.json.encode(alertmanager_alerts(alert, firing_ttl, floor)), headers
    body = msgspec.json.encode(alert)
    timestamp = str(int(now))
    headers[TIMESTAMP_HEADER] = timestamp
    if receiver.signing_secret:
        headers[SIGNATURE_HEADER] = sign(receiver.signing_secret, timestamp, body)
    return receiver.url, body, headers
