"""Status, conditions, severity Events, input tracking, settings and the CLI (no cluster)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import kubernetes_validate
import pytest

from driftline.cli import parser
from driftline.operator.drift_service import DriftSummary, ServiceFailure, Severity, WindowSummary
from driftline.operator.inputs import (
    INPUT_CHANGED_ANNOTATION,
    InputUse,
    freshest_uses,
    monitor_inputs,
    monitors_to_refresh,
    referenced_inputs,
)
from driftline.operator.operator import SpecDigestDiffBaseStorage, operator_settings
from driftline.operator.settings import ControllerSettingsError, load_controller_settings
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
    return DriftSummary(
        severity=severity,
        drift_score=score,
        drifted_features=["age", "income"] if severity != "none" else [],
        window=WindowSummary(events=1234),
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
        "windowEvents": 1200,
    }
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


# ------------------------------------------------------------------------------ inputs


def monitor(status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "credit-risk", "namespace": "ml", **metadata},
        "spec": {
            "baseline": {"configMapKeyRef": {"name": "rows", "key": "r.json"}},
            "alerts": [
                {"name": "a", "urlSecretRef": {"name": "hooks", "key": "url"}},
                {
                    "name": "b",
                    "urlSecretRef": {"name": "hooks", "key": "url2"},
                    "signingSecretRef": {"name": "keys", "key": "k"},
                },
            ],
        },
        "status": status or {},
    }


def test_referenced_inputs_are_listed_once() -> None:
    assert referenced_inputs(monitor()["spec"]) == [
        ("ConfigMap", "rows"),
        ("Secret", "hooks"),
        ("Secret", "keys"),
    ]
    assert referenced_inputs({"baseline": {"profile": {}}}) == []


def test_monitor_inputs_carry_the_revision_last_read() -> None:
    entries = monitor_inputs(
        monitor({"inputRevisions": {"ConfigMap/rows": "41", "Secret/hooks": ""}})
    )
    assert entries == {
        ("ConfigMap", "ml", "rows"): InputUse("credit-risk", "41"),
        ("Secret", "ml", "hooks"): InputUse("credit-risk", ""),
        ("Secret", "ml", "keys"): InputUse("credit-risk", None),
    }
    assert monitor_inputs(monitor(deletionTimestamp="2025-01-01T00:00:00Z")) == {}


def test_monitors_are_refreshed_only_when_they_read_another_revision() -> None:
    uses = [InputUse("a", "41"), InputUse("b", "40"), InputUse("c", None), InputUse("d", "")]
    # "c" has not been reconciled yet: its first reconcile reads the input anyway.
    assert monitors_to_refresh(uses, "41") == ["b", "d"]
    assert monitors_to_refresh(uses, "") == ["a", "b"]  # deleted: "d" saw it absent


def test_a_read_this_process_just_made_counts_before_the_status_shows_it() -> None:
    uses = [InputUse("a", None), InputUse("b", "40"), InputUse("c", None)]
    # "a" has just read the ConfigMap as absent; its status does not say so yet.
    reads = {"a": {"ConfigMap/rows": ""}, "b": {"Secret/rows": "7"}}
    fresh = freshest_uses(uses, reads, "ConfigMap", "rows")
    assert fresh == [InputUse("a", ""), InputUse("b", "40"), InputUse("c", None)]
    # The ConfigMap is created: "a" must read it again; "c" will on its first reconcile.
    assert monitors_to_refresh(fresh, "41") == ["a", "b"]


# ----------------------------------------------------------------------- kopf settings


def test_kopf_keeps_a_digest_of_the_spec_not_the_spec() -> None:
    storage = SpecDigestDiffBaseStorage(prefix="driftline.io", key="last-handled-configuration")
    big = {"baseline": {"profile": {"features": {"x": list(range(50_000))}}}, "model": "m"}
    body = kopf.Body({"metadata": {"name": "m", "annotations": {"a": "1"}}, "spec": big})
    essence = storage.build(body=body)
    assert set(essence["spec"]) == {"sha256"}
    assert essence["metadata"]["annotations"] == {"a": "1"}
    changed = kopf.Body({"metadata": {"name": "m"}, "spec": {**big, "model": "n"}})
    assert storage.build(body=changed)["spec"] != essence["spec"]
    same = kopf.Body({"metadata": {"name": "m"}, "spec": dict(reversed(big.items()))})
    assert storage.build(body=same)["spec"] == essence["spec"]


def kopf_essence(settings: kopf.OperatorSettings, raw: dict[str, Any]) -> Any:
    """What kopf compares to decide an update happened (as kopf's processing does)."""
    body = kopf.Body(raw)
    essence = settings.persistence.diffbase_storage.build(body=body)
    return settings.persistence.progress_storage.clear(essence=essence)


def test_an_input_change_annotation_is_an_update_for_kopf_but_its_own_are_not() -> None:
    settings = operator_settings()
    raw: dict[str, Any] = {"metadata": {"name": "m", "annotations": {}}, "spec": {"model": "x"}}
    before = kopf_essence(settings, raw)
    progress = copy.deepcopy(raw)
    progress["metadata"]["annotations"]["kopf.driftline.io/reconcile"] = '{"retries": 1}'
    assert kopf_essence(settings, progress) == before
    touched = copy.deepcopy(raw)
    touched["metadata"]["annotations"][INPUT_CHANGED_ANNOTATION] = "ConfigMap/rows@42"
    assert kopf_essence(settings, touched) != before


def test_kopf_settings_use_driftline_names_and_standalone_mode() -> None:
    settings = operator_settings()
    assert settings.persistence.finalizer == "driftline.io/finalizer"
    assert settings.peering.standalone is True
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)


# ---------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    settings = load_controller_settings({})
    assert settings.namespaces == ()
    assert settings.replica_capacity == 2000
    assert (settings.min_replicas, settings.max_replicas) == (2, 20)
    assert settings.cpu_utilization == 70
    assert settings.status_interval == 30


def test_settings_from_environment_and_flags_win() -> None:
    env = {
        "DRIFTLINE_CONTROLLER_NAMESPACES": "ml, fraud",
        "DRIFTLINE_CONTROLLER_REPLICA_CAPACITY": "1500",
        "DRIFTLINE_CONTROLLER_MAX_REPLICAS": "8",
    }
    settings = load_controller_settings(env, max_replicas=12, namespaces=[])
    assert settings.namespaces == ("ml", "fraud")
    assert settings.replica_capacity == 1500
    assert settings.max_replicas == 12


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"DRIFTLINE_CONTROLLER_MIN_REPLICAS": "zero"}, {}, "DRIFTLINE_CONTROLLER_MIN_REPLICAS"),
        (
            {"DRIFTLINE_CONTROLLER_REPLICA_CAPACITY": "-5"},
            {},
            "DRIFTLINE_CONTROLLER_REPLICA_CAPACITY",
        ),
        ({"DRIFTLINE_CONTROLLER_MAX_REPLICAS": "1"}, {}, "DRIFTLINE_CONTROLLER_MAX_REPLICAS"),
        ({}, {"min_replicas": 5, "max_replicas": 3}, "max_replicas: must be at least"),
    ],
)
def test_bad_settings_name_the_variable(
    env: dict[str, str], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ControllerSettingsError, match=message):
        load_controller_settings(env, **overrides)


def test_cli_controller_subcommand_takes_namespaces_and_settings() -> None:
    args = parser().parse_args(
        ["controller", "--namespace", "ml", "--namespace", "fraud", "--replica-capacity", "900"]
    )
    assert args.namespace == ["ml", "fraud"]
    assert args.replica_capacity == 900.0
    assert args.max_replicas is None  # unset flags leave the environment's value
    assert parser().parse_args(["controller"]).namespace == []


def test_cli_controller_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.cli import main

    assert main(["controller", "--min-replicas", "9", "--max-replicas", "3"]) == 2
    assert "invalid controller settings" in capsys.readouterr().err


def test_timestamps_are_utc_seconds() -> None:
    entries = condition_entries(
        [Condition("Ready", "True", "Monitoring", "")],
        [],
        generation=1,
        now=NOW + timedelta(microseconds=999_999),
    )
    assert entries[0]["lastTransitionTime"] == "2025-05-29T10:30:00Z"
