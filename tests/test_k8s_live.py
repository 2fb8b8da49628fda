"""The operator against a live Kubernetes API server (whatever KUBECONFIG points at).

Installs the CRD (server-side apply; it is left installed, since deleting a CRD deletes
every DriftMonitor of the cluster), runs the operator in-process with kopf's KopfRunner
for one fresh namespace, and checks what it writes, that the API server refuses invalid
specs (the CRD's CEL rules), and the clean-up on delete. Needs no kubelet: no pod is
ever waited for. The drift service is a stand-in on 127.0.0.1, which the in-process
operator reaches through the DriftMonitor's `serviceUrl`.

Skipped, with the reason, when no cluster answers. See docs/operator.md for kind, k3d
and minikube.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2
import msgspec
import numpy as np
import pytest
import yaml
from aiohttp import web
from kopf.testing import KopfRunner
from lightkube import ApiError, Client, ConfigError, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret
from lightkube.resources.events_v1 import Event
from lightkube.types import PatchType

from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.report import assess, drift_report
from driftline.core.window import WindowTotals
from driftline.operator.operator import DriftMonitorOperator, build_registry, operator_settings
from driftline.operator.settings import ControllerSettings

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "manifests" / "crd" / "driftmonitors.yaml"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"
ROWS = json.loads((ROOT / "examples" / "baseline_data.json").read_text())[:1000]
DriftMonitor = create_namespaced_resource(
    "driftline.io", "v1alpha1", "DriftMonitor", "driftmonitors"
)
TIMEOUT = 60.0  # seconds any one reconciliation may take to show
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def connect() -> Client:
    """A client for the configured cluster, or a skip saying why there is none."""
    try:
        config = KubeConfig.from_env()
    except ConfigError as exc:
        reason = f"no Kubernetes cluster configured (KUBECONFIG, ~/.kube/config, in-cluster): {exc}"
        print(f"\n[k8s] skipped: {reason}")
        pytest.skip(reason)
    client = Client(config=config, timeout=httpx2.Timeout(5.0))
    try:
        client.get(Namespace, "default")
    except ApiError:
        pass  # it answered (perhaps forbidden): a server is there
    except Exception as exc:  # connection refused, DNS, TLS, timeout: no cluster
        current = config.get()
        where = current.cluster.server if current else "the configured cluster"
        reason = f"Kubernetes API at {where} does not answer: {exc}"
        print(f"\n[k8s] skipped: {reason}")
        pytest.skip(reason)
    return client


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
    """Poll the cluster until `probe` returns something, or fail saying what never came."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (ApiError, KeyError, TypeError) as exc:
            found, last = None, exc
        if found is not None:
            return found
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


def condition(monitor: Any, kind: str) -> dict[str, Any] | None:
    entries: list[dict[str, Any]] = (monitor.get("status") or {}).get("conditions", [])
    return next((entry for entry in entries if entry["type"] == kind), None)


def loaded_monitor(config_map: ConfigMap, key: str) -> Monitor:
    config = decode_monitor_config(json.loads((config_map.data or {})[key]), key)
    return build_monitor(config, MonitorDefaults(), base_dir=Path("/nonexistent"), source=key)


def drifted_report(monitor: Monitor) -> bytes:
    """A real DriftReport of a window with every event in each feature's first bin."""
    vector = np.zeros(monitor.layout.width)
    vector[0] = 1000
    for slots in monitor.layout.features.values():
        vector[slots.first_bin] = 1000
    totals = WindowTotals(vector=vector, start=time.time() - 3600, now=time.time())
    return msgspec.json.encode(drift_report(assess(monitor, totals), totals))


class DriftServiceStandIn:
    """The drift service's drift report and window deletion, on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.reports: dict[str, bytes] = {}
        self.forgotten: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _drift(self, request: web.Request) -> web.Response:
        report = self.reports.get(request.match_info["name"])
        if report is None:
            return web.json_response({"detail": "not loaded"}, status=404)
        return web.Response(body=report, content_type="application/json")

    async def _forget(self, request: web.Request) -> web.Response:
        self.forgotten.append(request.match_info["name"])
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/monitors/{name}/drift", self._drift)
        app.router.add_delete("/v1/monitors/{name}/window", self._forget)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> DriftServiceStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def fixture_objects(namespace: str) -> tuple[Secret, dict[str, Any]]:
    docs = {d["kind"]: d for d in yaml.safe_load_all(FIXTURE.read_text())}
    secret = cast(Secret, Secret.from_dict(docs["Secret"]))
    assert secret.metadata is not None
    secret.metadata.namespace = namespace
    monitor = docs["DriftMonitor"]
    monitor["metadata"]["namespace"] = namespace
    return secret, monitor


def baseline_config_map(namespace: str, rows: list[dict[str, Any]]) -> ConfigMap:
    return cast(
        ConfigMap,
        ConfigMap.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "credit-risk-baseline", "namespace": namespace},
                "data": {"baseline_data.json": json.dumps(rows)},
            }
        ),
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster() -> Client:
    return connect()


@pytest.fixture(scope="module")
def crd(cluster: Client) -> None:
    document = yaml.safe_load(CRD_PATH.read_text())
    crd = cast(CustomResourceDefinition, CustomResourceDefinition.from_dict(document))
    cluster.apply(crd, field_manager="driftline-tests", force=True)

    def established() -> bool | None:
        found = cluster.get(CustomResourceDefinition, document["metadata"]["name"])
        conditions = found.status.conditions if found.status else None
        ok = any(c.type == "Established" and c.status == "True" for c in conditions or [])
        return True if ok else None

    wait_for("the DriftMonitor CRD to be established", established)


@pytest.fixture(scope="module")
def namespace(cluster: Client, crd: None) -> Iterator[str]:
    name = f"driftline-test-{uuid.uuid4().hex[:8]}"
    cluster.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": name}})))
    try:
        yield name
    finally:
        # A monitor whose finalizer the operator did not get to would block the namespace.
        for monitor in cluster.list(DriftMonitor, namespace=name):
            cluster.patch(
                DriftMonitor,
                monitor["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                namespace=name,
                patch_type=PatchType.MERGE,
            )
        cluster.delete(Namespace, name)


@pytest.fixture(scope="module")
def drift_service() -> Iterator[DriftServiceStandIn]:
    with DriftServiceStandIn() as service:
        yield service


@pytest.fixture(scope="module")
def operator(namespace: str, cluster: Client) -> Iterator[KopfRunner]:
    settings = ControllerSettings(namespaces=(namespace,), status_interval=1.0)
    registry = build_registry(DriftMonitorOperator(settings))
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=registry, settings=operator_settings(), timeout=60) as runner:
        yield runner
        # Delete what is left while the operator still runs its finalizer.
        for monitor in cluster.list(DriftMonitor, namespace=namespace):
            cluster.delete(DriftMonitor, monitor["metadata"]["name"], namespace=namespace)
        wait_for(
            "the test's DriftMonitors to be finalized",
            lambda: True if not list(cluster.list(DriftMonitor, namespace=namespace)) else None,
        )


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s.update(thresholds={"warning": 0.5, "critical": 0.5}),
            "critical must be greater",
        ),
        (lambda s: s.update(windowSeconds=100, bucketSeconds=60), "whole number of bucketSeconds"),
        (
            lambda s: s["baseline"].update(profile={"features": {}}),
            "exactly one of configMapKeyRef",
        ),
        (
            lambda s: s.update(traffic={"expectedEventsPerSecond": 10, "peakEventsPerSecond": 5}),
            "peakEventsPerSecond must be at least",
        ),
        (
            lambda s: s["alerts"][1].update(signingSecretRef={"name": "k", "key": "k"}),
            "only used by webhook receivers",
        ),
        (
            lambda s: s["features"].append({"name": "age", "warningThreshold": 0.9}),
            "critical threshold must be greater",
        ),
        (lambda s: s.update(alpha=1.5), "spec.alpha"),
    ],
)
def test_api_server_refuses_invalid_specs(
    cluster: Client, namespace: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    _, monitor = fixture_objects(namespace)
    monitor["metadata"]["name"] = "invalid"
    change(monitor["spec"])
    with pytest.raises(ApiError) as refused:
        cluster.create(DriftMonitor.from_dict(monitor))
    assert refused.value.status.code == 422
    assert message in (refused.value.status.message or "")


def test_api_server_refuses_long_names_and_service_changes(cluster: Client, namespace: str) -> None:
    _, monitor = fixture_objects(namespace)
    long_name = copy.deepcopy(monitor)
    long_name["metadata"]["name"] = "m" * 64
    with pytest.raises(ApiError, match="at most 63 characters"):
        cluster.create(DriftMonitor.from_dict(long_name))
    monitor["metadata"]["name"] = "immutable"
    monitor["spec"]["serviceUrl"] = "http://127.0.0.1:9"  # nothing listens: no side effects
    cluster.create(DriftMonitor.from_dict(monitor))
    try:
        with pytest.raises(ApiError, match="service is immutable"):
            cluster.patch(
                DriftMonitor,
                "immutable",
                {"spec": {"service": "other"}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        created = cluster.get(DriftMonitor, "immutable", namespace=namespace)
        # The API server filled in the CRD's defaults.
        assert created["spec"]["service"] == "driftline"
        assert created["spec"]["alpha"] == 0.05
        assert created["spec"]["alerts"][0]["minSeverity"] == "warning"
    finally:
        cluster.delete(DriftMonitor, "immutable", namespace=namespace)


def test_operator_reconciles_reports_and_cleans_up(
    cluster: Client,
    namespace: str,
    drift_service: DriftServiceStandIn,
    operator: KopfRunner,
) -> None:
    secret, monitor = fixture_objects(namespace)
    monitor["spec"]["serviceUrl"] = drift_service.url
    cluster.create(secret)
    cluster.create(baseline_config_map(namespace, ROWS))
    cluster.create(DriftMonitor.from_dict(monitor))

    def reconciled() -> Any:
        found = cluster.get(DriftMonitor, "credit-risk", namespace=namespace)
        kinds = ("ConfigRendered", "AlertsReady", "AutoscalingReady")
        states = [condition(found, k) for k in kinds]
        return found if all(s and s["status"] == "True" for s in states) else None

    found = wait_for("ConfigRendered, AlertsReady and AutoscalingReady", reconciled)
    assert found["status"]["observedGeneration"] == found["metadata"]["generation"]

    config_map = cluster.get(ConfigMap, "driftline-monitors", namespace=namespace)
    rendered = loaded_monitor(config_map, "credit-risk.json")
    assert rendered.profile.rows == len(ROWS)
    alerts = cluster.get(Secret, "driftline-alerts", namespace=namespace)
    receivers = json.loads(base64.b64decode((alerts.data or {})["credit-risk.json"]))
    assert [r["name"] for r in receivers["receivers"]] == ["on-call-webhook", "ml-team-slack"]
    hpa = cluster.get(HorizontalPodAutoscaler, "driftline", namespace=namespace)
    assert hpa.spec is not None
    assert (hpa.spec.minReplicas, hpa.spec.maxReplicas) == (2, 5)
    assert hpa.spec.scaleTargetRef.name == "driftline"

    # The service has not loaded the monitor yet: Ready says so.
    def ready_reason(reason: str) -> dict[str, Any] | None:
        ready = condition(cluster.get(DriftMonitor, "credit-risk", namespace=namespace), "Ready")
        return ready if ready and ready["reason"] == reason else None

    not_loaded = wait_for("Ready=False MonitorNotLoaded", lambda: ready_reason("MonitorNotLoaded"))
    assert not_loaded["status"] == "False"

    # Once it reports drift: status, Ready, and a SeverityChanged Event.
    drift_service.reports["credit-risk"] = drifted_report(rendered)

    def critical() -> Any:
        found = cluster.get(DriftMonitor, "credit-risk", namespace=namespace)
        ready = condition(found, "Ready")
        ok = found["status"].get("severity") == "critical" and ready and ready["status"] == "True"
        return found if ok else None

    found = wait_for("severity critical and Ready=True", critical)
    assert found["status"]["windowEvents"] == 1000
    assert found["status"]["driftScore"] > 0.5
    assert found["status"]["driftedFeatures"]
    events = wait_for(
        "a SeverityChanged Event",
        lambda: (
            [
                e
                for e in cluster.list(Event, namespace=namespace)
                if e.reason == "SeverityChanged"
                and e.regarding
                and e.regarding.name == "credit-risk"
            ]
            or None
        ),
    )
    assert events[0].type == "Warning"

    # The printer columns, as a person sees them.
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (not on PATH): the live suite reads the columns"
    table = subprocess.run(
        [kubectl, "get", "dm", "credit-risk", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert table[0].split() == ["NAME", "MODEL", "SEVERITY", "SCORE", "EVENTS", "READY", "AGE"]
    name, model, severity, score, window_events, ready = table[1].split()[:6]
    assert (name, model, severity, window_events, ready) == (
        "credit-risk",
        "credit-risk-xgb",
        "critical",
        "1000",
        "True",
    )
    assert float(score) > 0.5

    # A new baseline in the ConfigMap is rendered again.
    cluster.replace(baseline_config_map(namespace, ROWS[:400]))
    wait_for(
        "the monitor config to follow the changed baseline",
        lambda: (
            True
            if loaded_monitor(
                cluster.get(ConfigMap, "driftline-monitors", namespace=namespace),
                "credit-risk.json",
            ).profile.rows
            == 400
            else None
        ),
    )

    # Delete: window dropped, keys removed, the service's last monitor takes the HPA along.
    cluster.delete(DriftMonitor, "credit-risk", namespace=namespace)

    def gone() -> bool | None:
        try:
            cluster.get(DriftMonitor, "credit-risk", namespace=namespace)
        except ApiError as exc:
            return True if exc.status.code == 404 else None
        return None

    wait_for("the DriftMonitor to be finalized and gone", gone)
    assert drift_service.forgotten == ["credit-risk"]
    config_map = cluster.get(ConfigMap, "driftline-monitors", namespace=namespace)
    assert "credit-risk.json" not in (config_map.data or {})
    alerts = cluster.get(Secret, "driftline-alerts", namespace=namespace)
    assert "credit-risk.json" not in (alerts.data or {})
    with pytest.raises(ApiError) as missing:
        cluster.get(HorizontalPodAutoscaler, "driftline", namespace=namespace)
    assert missing.value.status.code == 404
