"""What a DriftMonitor renders to: monitor config, baseline, alerts, autoscaler (no cluster).

Every rendered monitor config is checked with the service's own decoder and builder,
every autoscaler against the Kubernetes 1.28 schema.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import numpy as np
import pytest
import yaml

from driftline.client.baseline import build_baseline
from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import NumericProfile, build_profile, encode_profile, rows_to_columns
from driftline.core.receivers import ReceiverFile
from driftline.operator.kube import KeyedObject
from driftline.operator.render import (
    CONFIG_MAP_LIMIT,
    InvalidInputError,
    MissingInputError,
    ServiceMonitor,
    alert_secret_names,
    encode_monitor_config,
    render_alerts,
    render_autoscaler,
    render_monitor_config,
    resolve_baseline,
    service_traffic,
    serving_monitors,
    size_autoscaler,
)
from driftline.operator.settings import ControllerSettings
from driftline.operator.spec import MonitorSpec, TrafficSpec, parse_spec, service_url

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"
ROWS: list[dict[str, Any]] = json.loads((ROOT / "examples" / "baseline_data.json").read_text())[
    :400
]
SETTINGS = ControllerSettings()


def fixture_spec(**changes: Any) -> MonitorSpec:
    (monitor,) = [d for d in yaml.safe_load_all(FIXTURE.read_text()) if d["kind"] == "DriftMonitor"]
    raw = copy.deepcopy(monitor["spec"])
    raw.update(changes)
    return parse_spec(raw)


def baseline_map(data: bytes, key: str = "baseline_data.json") -> KeyedObject:
    return KeyedObject("7", {key: data})


def alert_secret(**values: str) -> KeyedObject:
    defaults = {
        "webhook-url": "https://hooks.example.com/driftline\n",
        "webhook-signing-key": "s3cr3t\n",
        "slack-url": "https://hooks.slack.com/services/T/B/X",
    }
    defaults.update(values)
    return KeyedObject("3", {k: v.encode() for k, v in defaults.items()})


def service_monitor(config: dict[str, Any]) -> Monitor:
    """Load a rendered config the way the service does (round-tripped through JSON)."""
    document = msgspec.json.decode(encode_monitor_config(config))
    parsed = decode_monitor_config(document, "test")
    return build_monitor(parsed, MonitorDefaults(), base_dir=Path("/nonexistent"), source="test")


# ---------------------------------------------------------------------------- baseline


def test_raw_json_records_become_a_profile_with_the_spec_types_and_bins() -> None:
    spec = fixture_spec(baseline={"configMapKeyRef": {"name": "b", "key": "rows.json"}, "bins": 5})
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode(), "rows.json"))
    assert profile.rows == len(ROWS)
    expected = build_profile(rows_to_columns(ROWS), kinds={"num_products": "numeric"}, bins=5)
    assert profile == expected
    assert profile.features["income"].bins == 5  # spec.baseline.bins quantile bins


def test_json_columns_and_csv_give_the_same_profile_as_records() -> None:
    spec = fixture_spec(baseline={"configMapKeyRef": {"name": "b", "key": "rows.csv"}})
    names = list(ROWS[0])
    lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in ROWS]
    from_csv = resolve_baseline(spec, baseline_map("\n".join(lines).encode(), "rows.csv"))
    spec_json = fixture_spec(baseline={"configMapKeyRef": {"name": "b", "key": "cols.json"}})
    columns = {n: [r[n] for r in ROWS] for n in names}
    from_columns = resolve_baseline(
        spec_json, baseline_map(json.dumps(columns).encode(), "cols.json")
    )
    records = resolve_baseline(fixture_spec(), baseline_map(json.dumps(ROWS).encode()))
    assert from_columns == records
    assert from_csv.features.keys() == records.features.keys()
    assert from_csv.features["region"] == records.features["region"]
    assert from_csv.features["age"] == records.features["age"]


def test_saved_profile_in_the_config_map_is_used_as_is() -> None:
    profile = build_profile(rows_to_columns(ROWS), bins=4)
    resolved = resolve_baseline(fixture_spec(), baseline_map(encode_profile(profile)))
    assert resolved == profile
    assert resolved.content_hash == profile.content_hash


def test_inline_profile_needs_no_config_map() -> None:
    profile = build_profile(rows_to_columns(ROWS))
    spec = fixture_spec(baseline={"profile": msgspec.to_builtins(profile)})
    assert resolve_baseline(spec, None) == profile


@pytest.mark.parametrize(
    ("config_map", "message"),
    [
        (None, "baseline ConfigMap 'credit-risk-baseline' not found"),
        (baseline_map(b"[]", "other.json"), "has no key 'baseline_data.json'"),
    ],
)
def test_missing_baseline_is_a_missing_input(config_map: KeyedObject | None, message: str) -> None:
    with pytest.raises(MissingInputError, match=re.escape(message)):
        resolve_baseline(fixture_spec(), config_map)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "no rows"),
        (b"\xff\xfe", "not UTF-8"),
        (json.dumps({"kind": "driftline.baseline-profile/v1", "rows": 1}).encode(), "features"),
    ],
)
def test_unusable_baseline_data_is_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        resolve_baseline(fixture_spec(), baseline_map(data))


# ---------------------------------------------------------------------- monitor config


def test_rendered_config_is_the_services_schema_and_loads_in_the_service() -> None:
    spec = fixture_spec(
        alpha=0.01,
        bonferroni=True,
        minDriftedFeatures=2,
        alertHoldSeconds=30,
        alertCooldownSeconds=60,
        modelVersions=["v1.2.0"],
    )
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert set(config) == {
        "name",
        "model",
        "baseline",
        "features",
        "warning_threshold",
        "critical_threshold",
        "alpha",
        "bonferroni",
        "min_samples",
        "min_drifted_features",
        "window_seconds",
        "bucket_seconds",
        "reference",
        "bins",
        "top_k",
        "alert_hold_seconds",
        "alert_cooldown_seconds",
        "model_versions",
    }
    assert config["features"] == {
        "num_products": {"type": "numeric"},
        "credit_score": {"warning_threshold": 0.15, "critical_threshold": 0.4},
    }
    monitor = service_monitor(config)
    assert monitor.name == "credit-risk"
    assert monitor.model == "credit-risk-xgb"
    assert monitor.profile == profile  # inline: the service needs no baseline file
    assert monitor.policy.alpha == 0.01
    assert monitor.policy.bonferroni is True
    assert monitor.policy.min_drifted_features == 2
    assert monitor.policy.alert_hold_seconds == 30
    assert monitor.model_versions == ("v1.2.0",)
    assert monitor.policy.alert_cooldown_seconds == 60
    assert monitor.policy.thresholds_for("credit_score").critical == 0.4
    assert monitor.policy.thresholds_for("age").warning == 0.2
    assert (monitor.window.window_seconds, monitor.window.bucket_seconds) == (3600, 60)
    assert config["reference"] == {"kind": "baseline"}


def test_declared_versions_and_segments_reach_the_service() -> None:
    spec = fixture_spec(modelVersions=["v1", "v2"], segments={"by": "channel", "top": 2})
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["segments"] == {"by": "channel", "top": 2}
    monitor = service_monitor(config)
    assert monitor.scopes.blocks == 5
    assert monitor.scopes.versions == ("v1", "v2")
    channels = Counter(row["channel"] for row in ROWS)
    assert monitor.scopes.segments == tuple(c for c, _ in channels.most_common(2))
    assert monitor.window.width == monitor.layout.width * 5


def test_a_period_reference_reaches_the_service() -> None:
    spec = fixture_spec(reference={"kind": "period", "periodSeconds": 86400})
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["reference"] == {"kind": "period", "period_seconds": 86400}
    monitor = service_monitor(config)
    assert (monitor.choice.reference, monitor.choice.offset_seconds) == ("period", 86400)
    assert monitor.window.window_seconds == 86400 + 3600  # the store keeps both windows


def test_a_window_of_events_reaches_the_service() -> None:
    spec = fixture_spec(windowEvents=500)
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["window_events"] == 500
    assert service_monitor(config).choice.window_events == 500


def test_tests_notices_multiple_testing_and_quality_reach_the_service() -> None:
    spec = fixture_spec(
        test="hellinger",
        multipleTesting="holm",
        thresholds={"warning": 0.2, "critical": 0.5, "notice": 0.05},
        features=[
            {"name": "age", "test": "ks"},
            {"name": "income", "test": "wasserstein", "noticeThreshold": 0.2},
        ],
        quality={"newCategories": {"warning": 0.01, "critical": 0.1}},
    )
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert (config["test"], config["multiple_testing"], config["notice_threshold"]) == (
        "hellinger",
        "holm",
        0.05,
    )
    assert config["features"]["age"] == {"test": "ks"}
    assert config["quality"] == {"new_categories": {"warning": 0.01, "critical": 0.1}}
    policy = service_monitor(config).policy
    assert policy.multiple_testing == "holm"
    assert (policy.tests["age"], policy.tests["income"], policy.tests["channel"]) == (
        "ks",
        "wasserstein",
        "hellinger",
    )
    assert policy.thresholds_for("income").notice == 0.2
    assert policy.quality.new_categories.warning == 0.01
    assert policy.quality.missing == MonitorDefaults().quality.missing
    # The older switch still works.
    assert (
        service_monitor(
            render_monitor_config("m", fixture_spec(bonferroni=True), profile)
        ).policy.multiple_testing
        == "bonferroni"
    )


def test_cooldown_is_left_to_the_service_default_when_unset() -> None:
    spec = fixture_spec()
    profile = resolve_baseline(spec, baseline_map(json.dumps(ROWS).encode()))
    config = render_monitor_config("m", spec, profile)
    assert "alert_cooldown_seconds" not in config and "alert_hold_seconds" not in config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": [{"name": "salary"}]}, "features.salary: not a feature of the baseline"),
        ({"windowSeconds": 100, "bucketSeconds": 60}, "whole number of buckets"),
        (
            {"features": [{"name": "age", "warningThreshold": 0.6}]},
            "features.age.critical_threshold: must be greater than warning_threshold",
        ),
    ],
)
def test_a_config_the_service_refuses_is_invalid_with_its_message(
    changes: dict[str, Any], message: str
) -> None:
    spec = fixture_spec(**changes)
    profile = resolve_baseline(
        fixture_spec(), baseline_map(json.dumps(ROWS).encode())
    )  # the baseline itself is fine
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        encode_monitor_config(render_monitor_config("credit-risk", spec, profile))


def test_type_override_against_a_saved_profile_is_refused() -> None:
    profile = build_profile(rows_to_columns(ROWS))
    spec = fixture_spec(
        baseline={"profile": msgspec.to_builtins(profile)},
        features=[{"name": "region", "type": "numeric"}],
    )
    with pytest.raises(InvalidInputError, match=re.escape("features.region.type")):
        encode_monitor_config(render_monitor_config("m", spec, resolve_baseline(spec, None)))


def test_a_config_larger_than_a_config_map_is_refused() -> None:
    many = [{"city": f"city-{i % 999}-{'x' * 250}"} for i in range(6000)]
    spec = fixture_spec(
        features=[], baseline={"configMapKeyRef": {"name": "b", "key": "r.json"}, "topK": 1000}
    )
    profile = resolve_baseline(spec, baseline_map(json.dumps(many).encode(), "r.json"))
    config = render_monitor_config("big", spec, profile)
    assert len(msgspec.json.encode(config)) > CONFIG_MAP_LIMIT / 5  # large, but under the limit
    encode_monitor_config(config)
    huge = copy.deepcopy(config)
    huge["model"] = "m" * CONFIG_MAP_LIMIT
    with pytest.raises(InvalidInputError, match="more than a ConfigMap holds"):
        encode_monitor_config(huge)


def test_service_url_defaults_to_the_service_dns_name() -> None:
    assert service_url("driftline", "ml") == "http://driftline.ml.svc:8080"
    assert service_url("driftline", "ml", "http://127.0.0.1:9000/") == "http://127.0.0.1:9000"


# ------------------------------------------------------------------------------ alerts


def test_alerts_resolve_urls_and_keys_from_secrets() -> None:
    spec = fixture_spec()
    assert alert_secret_names(spec) == ["credit-risk-alerts"]
    document = render_alerts(spec, {"credit-risk-alerts": alert_secret()})
    assert document == {
        "receivers": [
            {
                "name": "on-call-webhook",
                "type": "webhook",
                "url": "https://hooks.example.com/driftline",
                "signing_secret": "s3cr3t",
                "min_severity": "warning",
            },
            {
                "name": "ml-team-slack",
                "type": "slack",
                "url": "https://hooks.slack.com/services/T/B/X",
                "min_severity": "critical",
            },
        ]
    }
    # Exactly the service's alerts file format.
    parsed = msgspec.json.decode(msgspec.json.encode(document), type=ReceiverFile)
    assert [r.name for r in parsed.receivers] == ["on-call-webhook", "ml-team-slack"]


def test_no_alerts_is_an_empty_receiver_list() -> None:
    assert render_alerts(fixture_spec(alerts=[]), {}) == {"receivers": []}


def test_missing_secrets_and_keys_are_all_named() -> None:
    spec = fixture_spec()
    with pytest.raises(MissingInputError) as missing:
        render_alerts(spec, {"credit-risk-alerts": None})
    assert "Secret 'credit-risk-alerts' (URL of alert 'on-call-webhook') not found" in str(
        missing.value
    )
    assert "ml-team-slack" in str(missing.value)
    partial = KeyedObject("1", {"slack-url": b"https://x"})
    with pytest.raises(MissingInputError, match="has no key 'webhook-url'"):
        render_alerts(spec, {"credit-risk-alerts": partial})


def test_a_url_that_is_not_http_is_invalid_and_never_echoed() -> None:
    secret = alert_secret(**{"webhook-url": "javascript:alert(1)"})
    with pytest.raises(InvalidInputError) as invalid:
        render_alerts(fixture_spec(), {"credit-risk-alerts": secret})
    assert "must start with http:// or https://" in str(invalid.value)
    assert "javascript" not in str(invalid.value)


# -------------------------------------------------------------------------- autoscaler


def traffic(expected: float, peak: float | None = None) -> TrafficSpec:
    return TrafficSpec(expected_events_per_second=expected, peak_events_per_second=peak)


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ([], (2, 2)),  # no declared traffic: the floor
        ([traffic(3000, 9000)], (2, 5)),  # ceil(1.5) = 2, ceil(4.5) = 5
        ([traffic(3000, 9000), traffic(2000, 3000)], (3, 6)),  # sums: 5000 / 12000
        ([traffic(4000)], (2, 2)),  # peak defaults to expected
        ([traffic(4001)], (3, 3)),  # just over two replicas' worth
        ([traffic(100_000, 200_000)], (20, 20)),  # the cap
        ([traffic(30_000, 200_000)], (15, 20)),
    ],
)
def test_autoscaler_bounds_come_from_summed_traffic(
    rates: list[TrafficSpec], expected: tuple[int, int]
) -> None:
    size = size_autoscaler(rates, SETTINGS)
    assert (size.min_replicas, size.max_replicas) == expected
    assert size.expected_events_per_second == sum(r.expected_events_per_second for r in rates)


def test_autoscaler_rounding_ignores_float_noise() -> None:
    settings = ControllerSettings(replica_capacity=0.3, min_replicas=1, max_replicas=10)
    # 0.1 + 0.2 = 0.30000000000000004: one replica, not two.
    size = size_autoscaler([traffic(0.1), traffic(0.2)], settings)
    assert (size.min_replicas, size.max_replicas) == (1, 1)


def test_autoscaler_settings_bound_the_replicas() -> None:
    settings = ControllerSettings(replica_capacity=100, min_replicas=4, max_replicas=6)
    assert size_autoscaler([traffic(50, 60)], settings).min_replicas == 4
    size = size_autoscaler([traffic(550, 5000)], settings)
    assert (size.min_replicas, size.max_replicas) == (6, 6)


def raw_monitor(name: str, service: str | None, expected: float, **metadata: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"traffic": {"expectedEventsPerSecond": expected}}
    if service is not None:
        spec["service"] = service
    return {"metadata": {"name": name, "namespace": "ml", **metadata}, "spec": spec}


def index_of(monitors: list[dict[str, Any]]) -> dict[tuple[str, str], list[ServiceMonitor]]:
    """What kopf's traffic index holds for these monitors."""
    index: dict[tuple[str, str], list[ServiceMonitor]] = {}
    for monitor in monitors:
        for key, entry in service_traffic(monitor).items():
            index.setdefault(key, []).append(entry)
    return index


def invalid_status(generation: int, observed: int) -> dict[str, Any]:
    condition = {
        "type": "ConfigRendered",
        "status": "False",
        "reason": "InvalidConfig",
        "observedGeneration": observed,
    }
    return {"generation": generation, "status": {"conditions": [condition]}}


def test_only_live_rendered_monitors_of_the_service_count() -> None:
    broken = raw_monitor("e", None, 50, generation=2)
    broken["status"] = invalid_status(2, 2)["status"]
    fixed_since = raw_monitor("f", None, 60, generation=3)  # invalid at generation 2 only
    fixed_since["status"] = invalid_status(3, 2)["status"]
    index = index_of(
        [
            raw_monitor("b", None, 10),  # default service
            raw_monitor("a", "driftline", 20),
            raw_monitor("c", "other", 30),
            raw_monitor("d", "driftline", 40, deletionTimestamp="2025-01-01T00:00:00Z"),
            broken,
            fixed_since,
        ]
    )
    assert set(index) == {("ml", "driftline"), ("ml", "other")}
    found = serving_monitors(index[("ml", "driftline")], {})
    assert [m.name for m in found] == ["a", "b", "f"]
    assert [m.traffic.expected_events_per_second for m in found] == [20, 10, 60]
    # What this process decided wins over the status (written a moment later).
    decided = serving_monitors(index[("ml", "driftline")], {"e": True, "a": False})
    assert [m.name for m in decided] == ["b", "e", "f"]


def test_autoscaler_object_is_valid_for_kubernetes_1_28() -> None:
    index = index_of([raw_monitor("a", None, 3000), raw_monitor("b", None, 2500)])
    monitors = serving_monitors(index[("ml", "driftline")], {})
    hpa = render_autoscaler("ml", "driftline", monitors, SETTINGS)
    kubernetes_validate.validate(hpa, "1.28", strict=True)
    assert hpa["metadata"]["name"] == "driftline"
    assert hpa["metadata"]["namespace"] == "ml"
    assert "ownerReferences" not in hpa["metadata"]  # shared by the service's monitors
    assert hpa["metadata"]["annotations"]["driftline.io/monitors"] == "a,b"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "driftline",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_a_declared_prediction_reaches_the_baseline_and_the_service_config() -> None:
    rows = [{**row, "pd": round(0.01 * (row["credit_score"] % 97), 2)} for row in ROWS]
    spec = fixture_spec(prediction={"kind": "score", "columns": ["pd"]})
    profile = resolve_baseline(spec, baseline_map(json.dumps(rows).encode()))
    score = profile.features["@prediction.score"]
    assert isinstance(score, NumericProfile)
    assert score.mean == pytest.approx(float(np.mean([r["pd"] for r in rows])), rel=1e-12)
    assert "pd" not in profile.features
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["prediction"] == {"kind": "score", "column": ["pd"]}
    monitor = service_monitor(config)
    assert monitor.prediction is not None and monitor.prediction.kind == "score"
    assert "@prediction.score" in monitor.layout.features
    # Without a declaration: no `prediction` in the config, the features only.
    plain = render_monitor_config("credit-risk", fixture_spec(), profile)
    assert "prediction" not in plain
    assert "@prediction.score" not in service_monitor(plain).layout.features
    classes = fixture_spec(prediction={"kind": "class", "classes": ["a", "b"], "columns": ["pd"]})
    with pytest.raises(InvalidInputError, match=r"prediction: pd\[0\]: expected one of"):
        resolve_baseline(classes, baseline_map(json.dumps(rows).encode()))


def test_a_declared_inference_mapping_reaches_the_service_config() -> None:
    profile = resolve_baseline(fixture_spec(), baseline_map(json.dumps(ROWS).encode()))
    features = list(profile.features)
    mapping = {"inputs": {"input-0": features[:2], "mask": []}, "output": "predict"}
    config = render_monitor_config("credit-risk", fixture_spec(inference=mapping), profile)
    assert config["inference"] == mapping  # unset fields left out, not sent as null
    inference = service_monitor(config).inference
    assert (inference.inputs, inference.instances, inference.output) == (
        mapping["inputs"],
        [],
        "predict",
    )
    assert "inference" not in render_monitor_config("credit-risk", fixture_spec(), profile)


def test_declared_labels_reach_the_service_config() -> None:
    rows = [{**row, "pd": round(0.01 * (row["credit_score"] % 97), 2)} for row in ROWS]
    spec = fixture_spec(
        prediction={"kind": "score", "columns": ["pd"]},
        labels={"horizonSeconds": 7200, "sampleRate": 0.25},
    )
    profile = resolve_baseline(spec, baseline_map(json.dumps(rows).encode()))
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["labels"]["horizon_seconds"] == 7200
    monitor = service_monitor(config)
    assert monitor.labels is not None
    assert (monitor.labels.horizon_seconds, monitor.labels.sample_rate) == (7200, 0.25)
    assert monitor.layout.performance is not None
    assert monitor.layout.performance.classes == ("1", "0")


def test_a_baseline_with_performance_carries_it_to_the_service() -> None:
    """A saved profile built with --label keeps its performance counts through the operator."""
    rows = [{**row, "pd": round(0.01 * (row["credit_score"] % 97), 2)} for row in ROWS]
    columns = rows_to_columns(rows)
    columns["defaulted"] = [int(r["credit_score"] % 7 == 0) for r in rows]
    labelled = build_baseline(
        columns, prediction=PredictionSpec("score", column="pd"), label="defaulted"
    )
    assert not isinstance(labelled.performance, msgspec.UnsetType)
    spec = fixture_spec(prediction={"kind": "score", "columns": ["pd"]}, labels={})
    profile = resolve_baseline(spec, baseline_map(encode_profile(labelled)))
    config = render_monitor_config("credit-risk", spec, profile)
    assert config["baseline"]["performance"]["counts"] == labelled.performance.counts
    slots = service_monitor(config).layout.performance
    assert slots is not None and slots.baseline == tuple(labelled.performance.counts)
