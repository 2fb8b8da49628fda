"""Alert payloads: the webhook (signed), Slack and Alertmanager requests of a change."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from support import ALERT_SNAPSHOT as SNAPSHOT

from driftline.alerts.payloads import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertSnapshot,
    AlertWindow,
    alert_from,
    alertmanager_alerts,
    render_request,
)
from driftline.alerts.store import OutboxEntry
from driftline.core.receivers import Receiver
from driftline.core.severity import Severity

NONE, NOTICE = Severity.NONE, Severity.NOTICE
WARNING, CRITICAL = Severity.WARNING, Severity.CRITICAL
MONITOR = "credit-risk"


def make_entry(severity: Severity, previous: Severity, seq: int = 3) -> OutboxEntry:
    at = datetime(2025, 5, 29, 10, 30, 0, 250000, tzinfo=UTC).timestamp()
    return OutboxEntry(MONITOR, f"{seq}-0", seq, severity, previous, at, at - 600, SNAPSHOT)


def test_webhook_payload_is_signed_over_timestamp_and_body() -> None:
    receiver = Receiver("hook", "webhook", "https://h.example/in", signing_secret="s3cret")
    alert = alert_from(make_entry(CRITICAL, WARNING))
    url, body, headers = render_request(receiver, alert, now=1748514600.9, firing_ttl=3600)
    assert url == "https://h.example/in"
    assert headers["Content-Type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == "1748514600"
    expected = hmac.new(b"s3cret", b"1748514600." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers[ALERT_ID_HEADER] == "credit-risk:3"
    payload = json.loads(body)
    assert payload == {
        "id": "credit-risk:3",
        "monitor": MONITOR,
        "model": "credit-risk-xgb",
        "severity": "critical",
        "previous_severity": "warning",
        "status": "firing",
        "drift_score": 0.83,
        "drifted_features": [
            {
                "name": "age",
                "score": 0.83,
                "severity": "critical",
                "reasons": ["distribution", "range"],
            },
            {"name": "income", "score": 0.31, "severity": "warning", "reasons": ["missing"]},
        ],
        "window": {
            "events": 500,
            "start": "2025-05-29T09:30:00.000Z",
            "end": "2025-05-29T10:30:00.000Z",
        },
        "started_at": "2025-05-29T10:20:00.250Z",
        "created_at": "2025-05-29T10:30:00.250Z",
        # The features' reasons, in the order of driftline.core.report.REASONS.
        "reasons": ["distribution", "missing", "range"],
        "drifted_prediction": [],
        "degraded_performance": {},
    }
    # Without a secret: timestamped, unsigned. A different body never has the same MAC.
    unsigned = Receiver("hook", "webhook", "https://h.example/in")
    _, _, headers = render_request(unsigned, alert, now=1.0, firing_ttl=3600)
    assert SIGNATURE_HEADER not in headers and headers[TIMESTAMP_HEADER] == "1"
    resolved = alert_from(make_entry(NONE, CRITICAL))
    _, other, signed = render_request(receiver, resolved, now=1748514600.9, firing_ttl=3600)
    assert json.loads(other)["status"] == "resolved"
    assert signed[SIGNATURE_HEADER] != f"sha256={expected}"


def test_slack_message_is_readable() -> None:
    receiver = Receiver("chat", "slack", "https://hooks.slack.example/services/T/B/X")
    _, body, headers = render_request(
        receiver, alert_from(make_entry(CRITICAL, NONE)), now=0, firing_ttl=60
    )
    assert SIGNATURE_HEADER not in headers
    text = json.loads(body)["text"]
    assert "CRITICAL drift on credit-risk" in text and "credit-risk-xgb" in text
    assert "age 0.830 (critical: distribution, range)" in text
    assert "income 0.310 (warning: missing)" in text
    assert "500 events" in text and "`credit-risk:3`" in text
    _, body, _ = render_request(
        receiver, alert_from(make_entry(NONE, WARNING)), now=0, firing_ttl=60
    )
    assert "Drift resolved on credit-risk" in json.loads(body)["text"]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_alertmanager_alerts_resolve_the_old_severity_and_fire_the_new() -> None:
    receiver = Receiver("am", "alertmanager", "http://am.example:9093/")
    created = parse("2025-05-29T10:30:00.250Z")

    def render(severity: Severity, previous: Severity) -> list[dict[str, Any]]:
        url, body, _ = render_request(
            receiver, alert_from(make_entry(severity, previous)), now=0, firing_ttl=3600
        )
        assert url == "http://am.example:9093/api/v2/alerts"
        alerts: list[dict[str, Any]] = json.loads(body)
        for alert in alerts:
            assert alert["labels"]["alertname"] == "DriftlineDrift"
            assert alert["labels"]["monitor"] == MONITOR
            assert alert["labels"]["model"] == "credit-risk-xgb"
            assert alert["annotations"]["alert_id"] == "credit-risk:3"
            assert "age 0.830" in alert["annotations"]["description"]
        return alerts

    (fired,) = render(WARNING, NONE)
    assert fired["labels"]["severity"] == "warning"
    assert parse(fired["startsAt"]) == created
    assert (parse(fired["endsAt"]) - created).total_seconds() == pytest.approx(3600)

    ended, fired = render(CRITICAL, WARNING)
    assert ended["labels"]["severity"] == "warning" and parse(ended["endsAt"]) == created
    assert fired["labels"]["severity"] == "critical" and parse(fired["endsAt"]) > created

    (ended,) = render(NONE, CRITICAL)
    assert ended["labels"]["severity"] == "critical"
    assert parse(ended["endsAt"]) == created  # resolved as of the change
    assert parse(ended["startsAt"]) < created
    assert "resolved" in ended["annotations"]["summary"]


def test_alertmanager_receiver_never_fires_below_its_minimum() -> None:
    """A critical-only Alertmanager hears critical -> warning, never warning -> none.

    A warning alert fired to it there would stay firing until its endsAt (firing_ttl).
    """
    receiver = Receiver("am", "alertmanager", "http://am:9093", min_severity="critical")
    alert = alert_from(make_entry(WARNING, CRITICAL))
    assert receiver.wants(alert.severity, alert.previous_severity)
    _, body, _ = render_request(receiver, alert, now=0, firing_ttl=3600)
    (ended,) = json.loads(body)
    assert ended["labels"]["severity"] == "critical"
    assert parse(ended["endsAt"]) == parse(alert.created_at)
    # Without a minimum the change still fires the warning.
    both = alertmanager_alerts(alert, 3600)
    assert [a["labels"]["severity"] for a in both] == ["critical", "warning"]


def test_alerts_stored_before_reasons_existed_still_render() -> None:
    old = AlertSnapshot(
        model="m", drift_score=0.4, drifted_features=[], window=AlertWindow(1, "a", "b")
    )
    data = msgspec.json.decode(msgspec.json.encode(old))
    data["drifted_features"] = [{"name": "age", "score": 0.4, "severity": "warning"}]
    entry = dataclasses.replace(make_entry(WARNING, NONE), snapshot=msgspec.json.encode(data))
    (feature,) = alert_from(entry).drifted_features
    assert (feature.name, feature.reasons) == ("age", [])


def test_notice_reaches_only_receivers_that_ask_for_it() -> None:
    default = Receiver("hook", "webhook", "https://h.example/in")
    curious = Receiver("log", "webhook", "https://h.example/in", min_severity="notice")
    assert not default.wants(NOTICE, NONE) and not default.wants(NONE, NOTICE)
    assert curious.wants(NOTICE, NONE) and curious.wants(NONE, NOTICE)
    # A warning that eases to a notice is the end of what the default receiver heard.
    assert default.wants(NOTICE, WARNING)
    am = Receiver("am", "alertmanager", "http://am:9093", min_severity="notice")
    _, body, _ = render_request(am, alert_from(make_entry(NOTICE, NONE)), now=0, firing_ttl=60)
    (fired,) = json.loads(body)
    assert fired["labels"]["severity"] == "notice"
    # The default Alertmanager floor resolves the warning and fires nothing for a notice.
    ended = alertmanager_alerts(alert_from(make_entry(NOTICE, WARNING)), 60)
    assert [a["labels"]["severity"] for a in ended] == ["warning"]
