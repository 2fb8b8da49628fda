"""A DriftMonitor's status: conditions, Ready, the verdict fields, severity-change Events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import kubernetes_validate
import pytest

from driftline.operator.drift_service import (
    DriftSummary,
    FeatureVerdict,
    ServiceFailure,
    Severity,
    WindowSummary,
)
from driftline.operator.status import (
    Condition,
    carried_report_status,
    coarse_count,
    condition_entries,
    conditions_from_status,
    ready_condition,
    report_status,
    severity_change,
    severity_event,
    status_holds,
)

NOW = datetime(2025, 5, 29, 10, 30, tzinfo=UTC)
URL = "http://driftline.ml.svc:8080"
ALL_TRUE = [
    Condition("ConfigRendered", "True", "Rendered", "ok"),
    Condition("AlertsReady", "True", "Resolved", "ok"),
    Condition("AutoscalingReady", "True", "Sized", "ok"),
]


def summary(severity: Severity = "warning", score: float = 0.31) -> DriftSummary:
    drifted = severity not in ("none", "notice")
    return DriftSummary(
        severity=severity,
        drift_score=score,
        drifted_features=["age", "income"] if drifted else [],
        window=WindowSummary(events=1234),
        features={
            "age": FeatureVerdict(severity, ["distribution", "range"]),
            "income": FeatureVerdict(
                "warning" if drifted else "none", ["missing"] if drifted else []
            ),
            "region": FeatureVerdict("none"),
        },
    )


# ------------------------------------------------------------------------- conditions


def test_condition_entries_carry_generation_and_keep_transition_time_while_status_holds() -> None:
    earlier = "2025-05-01T00:00:00Z"
    previous = [
        {"type": "ConfigRendered", "status": "True", "lastTransitionTime": earlier},
        {"type": "AlertsReady", "status": "True", "lastTransitionTime": earlier},
    ]
    entries = condition_entries(
        [
            Condition("ConfigRendered", "True", "Rendered", "again"),
            Condition("AlertsReady", "False", "SecretNotFound", "gone"),
            Condition("AutoscalingReady", "True", "Sized", "new"),
        ],
        previous,
        generation=4,
        now=NOW,
    )
    by_type = {e["type"]: e for e in entries}
    assert by_type["ConfigRendered"]["lastTransitionTime"] == earlier
    assert by_type["AlertsReady"]["lastTransitionTime"] == "2025-05-29T10:30:00Z"
    assert by_type["AutoscalingReady"]["lastTransitionTime"] == "2025-05-29T10:30:00Z"
    assert {e["observedGeneration"] for e in entries} == {4}
    assert by_type["AlertsReady"] == {
        "type": "AlertsReady",
        "status": "False",
        "reason": "SecretNotFound",
        "message": "gone",
        "observedGeneration": 4,
        "lastTransitionTime": "2025-05-29T10:30:00Z",
    }


def test_conditions_from_status_need_every_type() -> None:
    entries = [
        {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
        for c in ALL_TRUE
    ]
    types = [c.type for c in ALL_TRUE]
    assert conditions_from_status(entries, types) == ALL_TRUE
    assert conditions_from_status(entries[:2], types) is None


def test_ready_reports_the_first_failing_reconcile_condition() -> None:
    failing = [
        ALL_TRUE[0],
        Condition("AlertsReady", "False", "SecretNotFound", "Secret 'x' not found"),
    ]
    ready = ready_condition([*failing, ALL_TRUE[2]], summary(), service_url=URL)
    assert ready == Condition(
        "Ready", "False", "SecretNotFound", "AlertsReady: Secret 'x' not found"
    )


def test_ready_is_true_when_the_service_reports_for_the_monitor() -> None:
    ready = ready_condition(ALL_TRUE, summary("critical"), service_url=URL)
    assert ready.status == "True"
    assert ready.reason == "Monitoring"
    # The same words every refresh: a message that changed with the window would be a
    # status write every time.
    assert ready.message == f"the drift service at {URL} reports on it"


def test_ready_says_the_service_is_unreachable() -> None:
    failure = ServiceFailure("ServiceUnreachable", f"drift service at {URL} unreachable: refused")
    ready = ready_condition(ALL_TRUE, failure, service_url=URL)
    assert (ready.status, ready.reason) == ("False", "ServiceUnreachable")
    assert "unreachable" in ready.message


def test_ready_before_any_report_waits_or_keeps_what_the_service_said() -> None:
    waiting = ready_condition(ALL_TRUE, None, service_url=URL)
    assert (waiting.status, waiting.reason) == ("Unknown", "AwaitingReport")
    said = {"type": "Ready", "status": "True", "reason": "Monitoring", "message": "fine"}
    kept = ready_condition(ALL_TRUE, None, service_url=URL, previous_ready=said)
    assert kept == Condition("Ready", "True", "Monitoring", "fine")
    # A Ready that came from a reconcile failure is not kept once the reconcile is fine.
    stale = {"type": "Ready", "status": "False", "reason": "SecretNotFound", "message": "x"}
    assert ready_condition(ALL_TRUE, None, service_url=URL, previous_ready=stale) == waiting
    assert ready_condition(None, summary(), service_url=URL).reason == "Reconciling"


# ------------------------------------------------------------------------------ report


def test_report_status_fields_are_what_a_person_reads() -> None:
    assert report_status(summary("critical", 8.51488596382021)) == {
        "severity": "critical",
        "driftScore": 8.51,
        "driftedFeatures": ["age", "income"],
        "featureReasons": [
            {"feature": "age", "severity": "critical", "reasons": ["distribution", "range"]},
            {"feature": "income", "severity": "warning", "reasons": ["missing"]},
        ],
        "windowEvents": 1200,
    }
    # A notice names its features too, while no drift is called.
    notice = report_status(summary("notice"))
    assert notice["driftedFeatures"] == []
    assert notice["featureReasons"] == [
        {"feature": "age", "severity": "notice", "reasons": ["distribution", "range"]}
    ]
    assert "driftScore" not in report_status(summary("critical", float("inf")))


@pytest.mark.parametrize(
    ("events", "shown"),
    [(0, 0), (7, 7), (99, 99), (100, 100), (1234, 1200), (1250, 1200), (56789, 57000)],
)
def test_window_events_are_shown_to_two_significant_digits(events: int, shown: int) -> None:
    assert coarse_count(events) == shown


def test_status_holds_when_every_desired_field_is_shown() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Monitoring", "message": "m"}
    other = {"type": "ConfigRendered", "status": "True", "reason": "Rendered", "message": "x"}
    current = {"severity": "none", "windowEvents": 0, "conditions": [other, ready]}
    assert status_holds(current, {"severity": "none", "conditions": [ready]})
    assert not status_holds(current, {"severity": "warning", "conditions": [ready]})
    assert not status_holds(current, {"conditions": [{**ready, "message": "n"}]})
    assert not status_holds(current, {"driftedFeatures": []})  # absent is not empty


def test_carried_report_status_keeps_only_verdict_fields() -> None:
    status = {"severity": "warning", "windowEvents": 5, "conditions": [], "observedGeneration": 2}
    assert carried_report_status(status) == {"severity": "warning", "windowEvents": 5}


@pytest.mark.parametrize(
    ("previous", "current", "event_type"),
    [
        (None, "none", None),  # first report, nothing to tell
        ("none", "none", None),
        ("warning", "warning", None),
        (None, "warning", "Warning"),
        ("none", "critical", "Warning"),
        ("warning", "critical", "Warning"),
        ("critical", "warning", "Normal"),
        ("warning", "none", "Normal"),
        ("none", "notice", "Normal"),  # informational: no Warning event
        ("notice", "warning", "Warning"),
        ("warning", "notice", "Normal"),
    ],
)
def test_severity_change_decides_the_event(
    previous: str | None, current: str, event_type: str | None
) -> None:
    change = severity_change(previous, current)
    assert (change.event_type if change else None) == event_type


def test_severity_event_is_a_valid_events_v1_object() -> None:
    monitor = {"metadata": {"name": "credit-risk", "namespace": "ml", "uid": "u-1"}}
    change = severity_change("warning", "critical")
    assert change is not None
    event = severity_event(monitor, change, summary("critical", 0.7312), now=NOW, instance="pod-1")
    kubernetes_validate.validate(event, "1.28", strict=True)
    assert event["reason"] == "SeverityChanged"
    assert event["type"] == "Warning"
    assert event["regarding"]["kind"] == "DriftMonitor"
    assert event["regarding"]["uid"] == "u-1"
    assert event["note"].startswith("severity warning -> critical: drift score 0.7312")
    assert "age, income" in event["note"]
    assert event["eventTime"] == "2025-05-29T10:30:00.000000Z"
    # The API server validates a name prefix as a name: it must not end in ".".
    assert event["metadata"]["generateName"] == "credit-risk-"


def test_severity_event_note_fits_the_api_limit() -> None:
    monitor = {"metadata": {"name": "m", "namespace": "ml"}}
    long = DriftSummary("critical", 1.0, [f"feature_{i:04d}" for i in range(500)], WindowSummary(1))
    change = severity_change("none", "critical")
    assert change is not None
    event = severity_event(monitor, change, long, now=NOW, instance="p")
    assert len(event["note"]) == 1024
    assert event["note"].endswith("...")


def test_timestamps_are_utc_seconds() -> None:
    entries = condition_entries(
        [Condition("Ready", "True", "Monitoring", "")],
        [],
        generation=1,
        now=NOW + timedelta(microseconds=999_999),
    )
    assert entries[0]["lastTransitionTime"] == "2025-05-29T10:30:00Z"
