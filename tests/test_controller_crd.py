"""The DriftMonitor CRD: a valid Kubernetes 1.28 object, its schema, defaults, columns and rules.

The schema checks use JSON Schema draft 4 (what openAPIV3Schema's boolean
exclusiveMinimum means), made strict the way the API server's field validation is:
unknown fields are errors. CEL rules need an API server; tests/test_k8s_live.py proves
the server refuses what they forbid, this file proves each rule is there.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml

from driftline.core.policy import DEFAULTS
from driftline.operator.spec import MonitorSpec, parse_spec
from driftline.operator.status import REPORT_FIELDS

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "manifests" / "crd" / "driftmonitors.yaml"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    found: dict[str, Any] = version
    return found


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = version_of(crd)["schema"]["openAPIV3Schema"]
    return schema


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Objects with properties refuse unknown fields unless they preserve them."""
    schema = dict(schema)
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: absent fields with a default get it."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def fixture_monitor() -> dict[str, Any]:
    (monitor,) = [d for d in yaml.safe_load_all(FIXTURE.read_text()) if d["kind"] == "DriftMonitor"]
    found: dict[str, Any] = monitor
    return found


def errors_of(monitor: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(strict(schema_of(load_crd())))
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(monitor)]


def all_rules(schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """Every CEL rule of the schema, with the path of the field it sits on."""
    rules = [(r["rule"], path or ".") for r in schema.get("x-kubernetes-validations", [])]
    for name, prop in schema.get("properties", {}).items():
        rules += all_rules(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        rules += all_rules(schema["items"], f"{path}[]")
    return rules


# ------------------------------------------------------------------------ the object


def test_crd_is_a_valid_kubernetes_1_28_object() -> None:
    crd = load_crd()
    kubernetes_validate.validate(crd, "1.28", strict=True)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "driftmonitors.driftline.io"
    spec = crd["spec"]
    assert spec["group"] == "driftline.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "DriftMonitor"
    assert spec["names"]["plural"] == "driftmonitors"
    assert spec["names"]["shortNames"] == ["dm"]
    version = version_of(crd)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_uses_nothing_newer_than_1_28() -> None:
    # messageExpression, reason, fieldPath and optionalOldSelf arrived or changed after
    # the rules themselves; the CRD sticks to rule + message.
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for rule in value.get("x-kubernetes-validations", []):
                assert set(rule) == {"rule", "message"}, rule
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(schema_of(load_crd()))


def test_printer_columns_show_model_severity_score_events_ready_age() -> None:
    columns = version_of(load_crd())["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Model", "string", ".spec.model"),
        ("Severity", "string", ".status.severity"),
        ("Score", "number", ".status.driftScore"),
        ("Events", "integer", ".status.windowEvents"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_cel_rules_cover_what_a_plain_schema_cannot_say() -> None:
    rules = all_rules(schema_of(load_crd()))
    expected = [
        ("size(self.metadata.name) <= 63", "."),
        ("self.windowSeconds % self.bucketSeconds == 0", ".spec"),
        ("self.critical > self.warning", ".spec.thresholds"),
        ("!has(self.notice) || self.notice <= self.warning", ".spec.thresholds"),
        ("has(self.configMapKeyRef) != has(self.profile)", ".spec.baseline"),
        ("self == oldSelf", ".spec.service"),
        ("!has(self.signingSecretRef) || self.type == 'webhook'", ".spec.alerts[]"),
        ("self.critical > self.warning", ".spec.quality.missing"),
        ("self.critical > self.warning", ".spec.quality.range"),
        ("self.critical > self.warning", ".spec.quality.newCategories"),
    ]
    for rule, path in expected:
        assert (rule, path) in rules, f"missing rule {rule!r} on {path}"
    peak = [r for r, p in rules if p == ".spec.traffic"]
    assert peak and "self.peakEventsPerSecond >= self.expectedEventsPerSecond" in peak[0]
    features = [r for r, p in rules if p == ".spec" and "features" in r]
    assert features and "self.thresholds.critical" in features[0]
    alias = [r for r, p in rules if p == ".spec" and "multipleTesting" in r]
    assert alias and "self.bonferroni" in alias[0]


def test_status_schema_holds_conditions_as_a_map_keyed_by_type() -> None:
    status = schema_of(load_crd())["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]["properties"]
    assert set(item) == {
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    }
    assert set(item["type"]["enum"]) == {
        "Ready",
        "ConfigRendered",
        "AutoscalingReady",
        "AlertsReady",
    }
    # Exactly what the operator writes: nothing the schema would prune, nothing stale.
    assert set(status) == {"observedGeneration", "conditions", "inputRevisions", *REPORT_FIELDS}


# ------------------------------------------------------------------------- the schema


def test_fixture_monitor_is_valid() -> None:
    assert errors_of(fixture_monitor()) == []


CRD_POLICY = {
    "alpha": "alpha",
    "bonferroni": "bonferroni",
    "windowSeconds": "window_seconds",
    "bucketSeconds": "bucket_seconds",
    "minSamples": "min_samples",
    "minDriftedFeatures": "min_drifted_features",
}


def test_defaults_of_the_crd_are_the_defaults_of_the_spec_struct() -> None:
    minimal = {"model": "m", "baseline": {"configMapKeyRef": {"name": "b", "key": "rows.json"}}}
    spec_schema = schema_of(load_crd())["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, copy.deepcopy(minimal))
    # One source for the policy defaults: the service's, which the CRD repeats.
    assert defaulted["thresholds"] == {
        "warning": DEFAULTS.warning_threshold,
        "critical": DEFAULTS.critical_threshold,
    }
    assert {key: defaulted[key] for key in CRD_POLICY} == {
        key: getattr(DEFAULTS, field) for key, field in CRD_POLICY.items()
    }
    assert defaulted["baseline"]["bins"] == DEFAULTS.bins
    assert defaulted["baseline"]["topK"] == DEFAULTS.top_k
    assert defaulted["traffic"] == {"expectedEventsPerSecond": 0}
    assert defaulted["reference"] == {"kind": DEFAULTS.reference.kind}
    assert DEFAULTS.reference.period_seconds is None
    assert "windowEvents" not in defaulted and DEFAULTS.window_events is None
    assert defaulted["service"] == "driftline"
    assert parse_spec(defaulted) == parse_spec(minimal)
    # Every field with a CRD default is a field of the struct.
    assert set(defaulted) <= {f for f in MonitorSpec.__struct_encode_fields__}


def test_labels_defaults_of_the_crd_are_the_service_defaults() -> None:
    """An empty `labels` takes the service's horizon, sample rate, threshold and drops."""
    with_labels = {
        "model": "m",
        "baseline": {"configMapKeyRef": {"name": "b", "key": "rows.json"}},
        "prediction": {"kind": "score"},
        "labels": {},
    }
    spec_schema = schema_of(load_crd())["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, copy.deepcopy(with_labels))
    parsed = parse_spec(defaulted).labels
    assert parsed is not None
    assert msgspec.structs.asdict(parsed) == msgspec.structs.asdict(DEFAULTS.labels)
    assert parse_spec(with_labels) == parse_spec(defaulted)


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (lambda s: s.pop("model"), "spec", "'model' is a required property"),
        (lambda s: s.pop("baseline"), "spec", "'baseline' is a required property"),
        (lambda s: s.update(alpha=1), "spec.alpha", "greater than or equal to the maximum"),
        (lambda s: s.update(alpha=0), "spec.alpha", "less than or equal to the minimum"),
        (lambda s: s.update(windowSeconds=0), "spec.windowSeconds", "less than the minimum"),
        (lambda s: s.update(minSamples=0), "spec.minSamples", "less than the minimum"),
        (lambda s: s.update(service="Not_A_Name"), "spec.service", "does not match"),
        (lambda s: s.update(serviceUrl="ftp://example"), "spec.serviceUrl", "does not match"),
        (lambda s: s["thresholds"].update(warning=0), "spec.thresholds.warning", "minimum"),
        (lambda s: s["features"][0].update(type="text"), "spec.features.0.type", "is not one of"),
        (lambda s: s["alerts"][0].update(type="email"), "spec.alerts.0.type", "is not one of"),
        (
            lambda s: s["alerts"][0].update(minSeverity="info"),
            "spec.alerts.0.minSeverity",
            "one of",
        ),
        (lambda s: s["alerts"][0].pop("urlSecretRef"), "spec.alerts.0", "'urlSecretRef' is a"),
        (
            lambda s: s["traffic"].update(expectedEventsPerSecond=-1),
            "spec.traffic.expectedEventsPerSecond",
            "less than the minimum",
        ),
        # An unknown field (a typo) is an error, as kubectl's strict field validation has it.
        (lambda s: s.update(windowSize=60), "spec", "'windowSize' was unexpected"),
        (
            lambda s: s["baseline"]["configMapKeyRef"].pop("key"),
            "spec.baseline.configMapKeyRef",
            "'key' is a required property",
        ),
    ],
)
def test_schema_refuses_bad_specs(change: Any, path: str, fragment: str) -> None:
    monitor = fixture_monitor()
    change(monitor["spec"])
    errors = errors_of(monitor)
    assert any(e.startswith(f"{path}: ") and fragment in e for e in errors), errors


def test_inline_profile_keeps_any_fields() -> None:
    monitor = fixture_monitor()
    monitor["spec"]["baseline"] = {"profile": {"kind": "driftline.baseline-profile/v1", "x": [1]}}
    assert errors_of(monitor) == []


def undescribed(schema: dict[str, Any], path: str = "") -> list[str]:
    found = [] if "description" in schema else [path or "."]
    for name, prop in (schema.get("properties") or {}).items():
        found += undescribed(prop, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            found += undescribed(schema[key], path + suffix)
    return found


def test_kubectl_explain_has_a_description_for_every_field() -> None:
    schema = schema_of(load_crd())
    # apiVersion, kind and metadata are described by the API server itself.
    assert undescribed(schema) == [".apiVersion", ".kind", ".metadata"]
