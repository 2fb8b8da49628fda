"""The DriftMonitor CRD on a real API server: it installs, defaults, refuses bad specs, explains.

Everything here is the API server's own doing (structural schema, defaulting, CEL rules,
strict field validation through kubectl); no operator runs.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_support import KubeTarget, wait_for

from driftline.core.policy import MonitorDefaults
from driftline.operator.spec import DEFAULT_SERVICE, parse_spec

pytestmark = pytest.mark.k8s

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"
REFUSED: list[str] = []  # bad specs the API server refused, for the summary line


@pytest.fixture(scope="module")
def namespace(kube: KubeTarget) -> Iterator[str]:
    kube.install_crd()
    name = f"crd-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def valid_monitor(name: str = "valid") -> dict[str, Any]:
    (monitor,) = [d for d in yaml.safe_load_all(FIXTURE.read_text()) if d["kind"] == "DriftMonitor"]
    monitor = copy.deepcopy(monitor)
    monitor["metadata"]["name"] = name
    return dict(monitor)


def apply(kube: KubeTarget, namespace: str, monitor: dict[str, Any], *, check: bool) -> Any:
    return kube.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(monitor), check=check
    )


def spec_change(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["spec"].update(fields)


def pop(*path: str) -> Callable[[dict[str, Any]], None]:
    def change(monitor: dict[str, Any]) -> None:
        node = monitor
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def rename(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["metadata"].update(name=name)


BAD_SPECS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "critical equal to warning",
        spec_change(thresholds={"warning": 0.5, "critical": 0.5}),
        "thresholds.critical must be greater than thresholds.warning",
    ),
    (
        "warning above the defaulted critical",
        spec_change(thresholds={"warning": 0.6}),
        "thresholds.critical must be greater than thresholds.warning",
    ),
    (
        "feature warning above the monitor's critical",
        lambda m: m["spec"]["features"].append({"name": "age", "warningThreshold": 0.9}),
        "each feature's critical threshold must be greater",
    ),
    (
        "bucket that does not divide the window",
        spec_change(windowSeconds=100, bucketSeconds=60),
        "windowSeconds must be a whole number of bucketSeconds",
    ),
    ("zero window", spec_change(windowSeconds=0), "spec.windowSeconds"),
    ("negative bucket", spec_change(bucketSeconds=-60), "spec.bucketSeconds"),
    ("zero minSamples", spec_change(minSamples=0), "spec.minSamples"),
    ("minSamples below a testable window", spec_change(minSamples=9), "spec.minSamples"),
    ("unknown test", spec_change(test="t-test"), '"t-test"'),
    (
        "notice above warning",
        spec_change(thresholds={"warning": 0.2, "critical": 0.5, "notice": 0.3}),
        "thresholds.notice must not exceed thresholds.warning",
    ),
    (
        "bonferroni beside another method",
        spec_change(bonferroni=True, multipleTesting="holm"),
        "bonferroni: true is an alias of multipleTesting: bonferroni",
    ),
    (
        "quality critical below warning",
        spec_change(quality={"missing": {"warning": 0.2, "critical": 0.1}}),
        "quality.missing.critical must be greater than its warning",
    ),
    ("zero minDriftedFeatures", spec_change(minDriftedFeatures=0), "spec.minDriftedFeatures"),
    ("one bin", lambda m: m["spec"]["baseline"].update(bins=1), "spec.baseline.bins"),
    ("topK of zero", lambda m: m["spec"]["baseline"].update(topK=0), "spec.baseline.topK"),
    ("alpha above 1", spec_change(alpha=1.5), "spec.alpha"),
    ("alpha of 0", spec_change(alpha=0), "spec.alpha"),
    ("zero warning threshold", spec_change(thresholds={"warning": 0, "critical": 1}), "warning"),
    (
        "negative traffic",
        spec_change(traffic={"expectedEventsPerSecond": -1}),
        "spec.traffic.expectedEventsPerSecond",
    ),
    (
        "peak below expected",
        spec_change(traffic={"expectedEventsPerSecond": 10, "peakEventsPerSecond": 5}),
        "traffic.peakEventsPerSecond must be at least expectedEventsPerSecond",
    ),
    ("unknown spec field", spec_change(windowSecond=60), 'unknown field "spec.windowSecond"'),
    (
        "unknown alert field",
        lambda m: m["spec"]["alerts"][0].update(url="https://example.com"),
        'unknown field "spec.alerts[0].url"',
    ),
    (
        "baseline with both sources",
        lambda m: m["spec"]["baseline"].update(profile={"features": {}}),
        "baseline needs exactly one of configMapKeyRef or profile",
    ),
    (
        "baseline with no source",
        pop("spec", "baseline", "configMapKeyRef"),
        "baseline needs exactly one of configMapKeyRef or profile",
    ),
    ("no model", pop("spec", "model"), "spec.model: Required value"),
    (
        "signing key on a slack receiver",
        lambda m: m["spec"]["alerts"][1].update(signingSecretRef={"name": "k", "key": "k"}),
        "signingSecretRef is only used by webhook receivers",
    ),
    ("unknown receiver type", lambda m: m["spec"]["alerts"][0].update(type="email"), '"email"'),
    (
        "two receivers of one name",
        lambda m: m["spec"]["alerts"][1].update(name=m["spec"]["alerts"][0]["name"]),
        "Duplicate value",
    ),
    (
        "serviceUrl at an IP address",
        spec_change(serviceUrl="http://169.254.169.254/latest/meta-data"),
        "serviceUrl must name a host, not an IP address",
    ),
    (
        "serviceUrl with user info",
        spec_change(serviceUrl="http://user:pw@driftline.ml.svc:8080"),
        "spec.serviceUrl",
    ),
    ("serviceUrl not http", spec_change(serviceUrl="file:///etc/passwd"), "spec.serviceUrl"),
    ("service not a DNS label", spec_change(service="Drift_Line"), "spec.service"),
    (
        "class prediction without classes",
        spec_change(prediction={"kind": "class"}),
        "class and probabilities predictions need at least 2 classes",
    ),
    (
        "score prediction with classes",
        spec_change(prediction={"kind": "score", "classes": ["a", "b"]}),
        "only class and probabilities predictions have classes",
    ),
    ("unknown prediction kind", spec_change(prediction={"kind": "label"}), '"label"'),
    (
        "period reference without its period",
        spec_change(reference={"kind": "period"}),
        "reference.periodSeconds is required with kind period, and only then",
    ),
    (
        "period on a previous-window reference",
        spec_change(reference={"kind": "previous_window", "periodSeconds": 3600}),
        "reference.periodSeconds is required with kind period, and only then",
    ),
    (
        "period shorter than the window",
        spec_change(reference={"kind": "period", "periodSeconds": 1800}),
        "reference.periodSeconds must be a whole number of bucketSeconds and at",
    ),
    (
        "period not a whole number of buckets",
        spec_change(reference={"kind": "period", "periodSeconds": 86430}),
        "reference.periodSeconds must be a whole number of bucketSeconds and at",
    ),
    ("unknown reference kind", spec_change(reference={"kind": "weekly"}), '"weekly"'),
    (
        "window of events below minSamples",
        spec_change(windowEvents=50),
        "windowEvents must be at least minSamples",
    ),
    (
        "window of events against a rolling reference",
        spec_change(windowEvents=500, reference={"kind": "previous_window"}),
        "a window of windowEvents is compared with the baseline reference only",
    ),
    (
        "nine declared model versions",
        spec_change(modelVersions=[f"v{i}" for i in range(9)]),
        "spec.modelVersions: Too many",
    ),
    ("repeated model version", spec_change(modelVersions=["v1", "v1"]), "spec.modelVersions[1]"),
    ("segments without a feature", spec_change(segments={"top": 3}), "spec.segments.by"),
    ("seventeen segments", spec_change(segments={"by": "region", "top": 17}), "spec.segments.top"),
    ("upper-case name", rename("Credit-Risk"), "RFC 1123"),
    ("name over 63 characters", rename("m" * 64), "metadata.name must be at most 63 characters"),
]


@pytest.mark.parametrize(
    ("change", "message"), [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS]
)
def test_api_server_refuses_a_bad_spec_with_its_reason(
    kube: KubeTarget,
    namespace: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
    request: pytest.FixtureRequest,
) -> None:
    monitor = valid_monitor()
    change(monitor)
    refused = apply(kube, namespace, monitor, check=False)
    assert refused.returncode != 0, f"the API server accepted: {monitor['spec']}"
    assert message in refused.stderr, refused.stderr
    REFUSED.append(request.node.callspec.id)


def test_every_bad_spec_of_the_table_was_refused(kube: KubeTarget, namespace: str) -> None:
    # Runs after the table (file order): the count the closing note reports.
    print(f"\n[k8s] bad specs refused by the API server: {len(REFUSED)} of {len(BAD_SPECS)}")
    assert len(REFUSED) == len(BAD_SPECS)


def test_a_valid_spec_is_stored_with_the_defaults_the_service_uses(
    kube: KubeTarget, namespace: str
) -> None:
    monitor = valid_monitor("defaults")
    monitor["spec"] = {
        "model": "m",
        "baseline": {"configMapKeyRef": {"name": "b", "key": "k"}},
        "alerts": [
            {"name": "hook", "type": "webhook", "urlSecretRef": {"name": "s", "key": "url"}}
        ],
    }
    apply(kube, namespace, monitor, check=True)
    stored = yaml.safe_load(
        kube.kubectl("get", "dm", "defaults", "-n", namespace, "-o", "yaml").stdout
    )["spec"]
    service = MonitorDefaults()
    assert stored["thresholds"] == {
        "warning": service.warning_threshold,
        "critical": service.critical_threshold,
    }
    assert (stored["alpha"], stored["bonferroni"]) == (service.alpha, service.bonferroni)
    assert (stored["windowSeconds"], stored["bucketSeconds"]) == (
        service.window_seconds,
        service.bucket_seconds,
    )
    assert (stored["minSamples"], stored["minDriftedFeatures"]) == (
        service.min_samples,
        service.min_drifted_features,
    )
    assert (stored["baseline"]["bins"], stored["baseline"]["topK"]) == (service.bins, service.top_k)
    assert stored["service"] == DEFAULT_SERVICE
    assert stored["traffic"] == {"expectedEventsPerSecond": 0}
    assert stored["reference"] == {"kind": service.reference.kind}
    assert stored["alerts"][0]["minSeverity"] == "warning"
    assert "serviceUrl" not in stored and "alertCooldownSeconds" not in stored
    assert "alertHoldSeconds" not in stored


def test_a_declared_prediction_is_stored_as_sent(kube: KubeTarget, namespace: str) -> None:
    monitor = valid_monitor("predicts")
    declared = {"kind": "probabilities", "classes": ["churn", "stay"], "columns": ["p"]}
    monitor["spec"]["prediction"] = declared
    apply(kube, namespace, monitor, check=True)
    stored = yaml.safe_load(
        kube.kubectl("get", "dm", "predicts", "-n", namespace, "-o", "yaml").stdout
    )["spec"]
    assert stored["prediction"] == declared
    assert parse_spec(stored).prediction is not None


def test_a_declared_inference_mapping_is_stored_as_sent(kube: KubeTarget, namespace: str) -> None:
    monitor = valid_monitor("reads-tensors")
    declared = {"inputs": {"input-0": ["age", "income"], "mask": []}, "output": "predict"}
    monitor["spec"]["inference"] = declared
    apply(kube, namespace, monitor, check=True)
    stored = yaml.safe_load(
        kube.kubectl("get", "dm", "reads-tensors", "-n", namespace, "-o", "yaml").stdout
    )["spec"]
    assert stored["inference"] == declared  # the map of lists is kept, not pruned
    parsed = parse_spec(stored).inference
    assert parsed is not None and parsed.inputs == declared["inputs"]


def test_service_cannot_change_once_set(kube: KubeTarget, namespace: str) -> None:
    monitor = valid_monitor("immutable")
    apply(kube, namespace, monitor, check=True)
    monitor["spec"]["service"] = "other"
    refused = apply(kube, namespace, monitor, check=False)
    assert refused.returncode != 0
    assert "service is immutable" in refused.stderr


@pytest.mark.parametrize(
    "field",
    [
        "dm.spec",
        "dm.spec.thresholds.warning",
        "dm.spec.thresholds.critical",
        "dm.spec.alerts.urlSecretRef.key",
        "dm.status",
        "dm.status.conditions.reason",
        "dm.status.severity",
        "dm.status.driftScore",
        "dm.status.windowEvents",
        "dm.status.inputRevisions",
    ],
)
def test_kubectl_explain_describes_the_field(kube: KubeTarget, namespace: str, field: str) -> None:
    def explained() -> str | None:
        done = kube.kubectl("explain", field, check=False)
        return done.stdout if done.returncode == 0 else None

    text = wait_for(f"kubectl explain {field}", explained, timeout=30)
    description = text.split("DESCRIPTION:", 1)[1].split("FIELDS:", 1)[0].strip()
    assert description and description != "<empty>", text


def test_a_period_reference_is_stored_as_sent(kube: KubeTarget, namespace: str) -> None:
    monitor = valid_monitor("weekly")
    monitor["spec"]["reference"] = {"kind": "period", "periodSeconds": 604800}
    apply(kube, namespace, monitor, check=True)
    stored = yaml.safe_load(
        kube.kubectl("get", "dm", "weekly", "-n", namespace, "-o", "yaml").stdout
    )["spec"]
    assert stored["reference"] == {"kind": "period", "periodSeconds": 604800}


def test_a_window_of_events_is_stored_as_sent(kube: KubeTarget, namespace: str) -> None:
    monitor = valid_monitor("by-events")
    monitor["spec"]["windowEvents"] = 500
    apply(kube, namespace, monitor, check=True)
    stored = yaml.safe_load(
        kube.kubectl("get", "dm", "by-events", "-n", namespace, "-o", "yaml").stdout
    )["spec"]
    assert (stored["windowEvents"], stored["reference"]) == (500, {"kind": "baseline"})
