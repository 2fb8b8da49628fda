"""The kopf handlers end to end, against HTTP stand-ins for Kubernetes and the drift service.

No cluster: `FakeKubeApi` is an aiohttp server on 127.0.0.1 that serves the few REST
endpoints the operator calls (GET, server-side apply, merge patch, DELETE, list, event
POST), with lightkube pointed at it. Its server-side apply keeps field ownership per
manager the way the API server does for the fields involved (map keys, conditions keyed
by type), which is what lets monitors share objects. The drift service stand-in serves
real DriftReports built by the service's own code.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import msgspec
import numpy as np
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from lightkube import AsyncClient, KubeConfig

from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.receivers import ReceiverFile
from driftline.core.report import assess, drift_report
from driftline.core.window import WindowTotals
from driftline.engine.registry import MonitorRegistry
from driftline.operator.inputs import INPUT_CHANGED_ANNOTATION, monitor_inputs
from driftline.operator.kube import KubeApi
from driftline.operator.operator import DriftMonitorOperator
from driftline.operator.settings import ControllerSettings
from driftline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"
ROWS = json.loads((ROOT / "examples" / "baseline_data.json").read_text())[:500]
NS = "ml"
LOG = logging.getLogger("test.controller")
SECRETS = kopf.Resource(group="", version="v1", plural="secrets", kind="Secret", namespaced=True)

# ----------------------------------------------------------- Kubernetes API stand-in

Path_ = tuple[Any, ...]
ObjectKey = tuple[str, str, str, str]  # api base, plural, namespace, name
KINDS = {
    "configmaps": ("v1", "ConfigMap"),
    "secrets": ("v1", "Secret"),
    "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "driftmonitors": ("driftline.io/v1alpha1", "DriftMonitor"),
    "events": ("events.k8s.io/v1", "Event"),
}
IDENTITY = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def leaves(value: dict[str, Any], path: Path_ = ()) -> dict[Path_, Any]:
    """Fields a server-side apply owns: map keys down to leaves, conditions by type."""
    found: dict[Path_, Any] = {}
    for key, item in value.items():
        here = (*path, key)
        if here == ("status", "conditions"):
            for condition in item:
                found[(*here, ("type", condition["type"]))] = condition
        elif isinstance(item, dict) and item:
            found |= leaves(item, here)
        elif here not in IDENTITY:
            found[here] = item
    return found


def set_path(obj: dict[str, Any], path: Path_, value: Any) -> None:
    if isinstance(path[-1], tuple):  # a condition: replace the list item with that type
        *parents, list_name, (_, kind) = path
        for part in parents:
            obj = obj.setdefault(part, {})
        items = [c for c in obj.get(list_name, []) if c["type"] != kind]
        obj[list_name] = [*items, copy.deepcopy(value)]
        return
    *parents, last = path
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = copy.deepcopy(value)


def delete_path(obj: dict[str, Any], path: Path_) -> None:
    *parents, last = path
    if isinstance(last, tuple):
        *parents, list_name = parents
    for part in parents:
        if part not in obj:
            return
        obj = obj[part]
    if isinstance(last, tuple):
        obj[list_name] = [c for c in obj.get(list_name, []) if c["type"] != last[1]]
    else:
        obj.pop(last, None)


def json_response(body: Any, status: int = 200) -> web.Response:
    # Exactly `application/json`, as the API server sends: lightkube matches it verbatim.
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def status_error(code: int, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }
    return json_response(body, status=code)


@dataclass
class FakeKubeApi:
    """Objects by (api base, plural, namespace, name) and who owns which of their fields."""

    objects: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    owners: dict[ObjectKey, dict[str, set[Path_]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    def app(self) -> web.Application:
        app = web.Application()
        base = r"/{base:api/v1|apis/[^/]+/[^/]+}/namespaces/{ns}/{plural}"
        app.router.add_get(base, self.list_objects)
        app.router.add_post(base, self.create)
        app.router.add_get(base + "/{name}", self.get)
        app.router.add_patch(base + "/{name}", self.patch)
        app.router.add_patch(base + "/{name}/{sub}", self.patch)
        app.router.add_delete(base + "/{name}", self.delete)
        return app

    # Test helpers --------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as `kubectl create` would (owned by nobody we track)."""
        plural = next(p for p, (_, kind) in KINDS.items() if kind == obj["kind"])
        base = "api/v1" if obj["apiVersion"] == "v1" else f"apis/{obj['apiVersion']}"
        obj = copy.deepcopy(obj)
        if obj["kind"] == "Secret" and "stringData" in obj:
            obj["data"] = {
                k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()
            }
        metadata = obj["metadata"]
        metadata.setdefault("namespace", NS)
        metadata.setdefault("uid", f"uid-{metadata['name']}")
        metadata.setdefault("generation", 1)
        metadata["resourceVersion"] = str(next(self.versions))
        self.objects[(base, plural, metadata["namespace"], metadata["name"])] = obj
        return obj

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        plural = next(p for p, (_, k) in KINDS.items() if k == kind)
        return next(
            (o for (_, p, _, n), o in self.objects.items() if p == plural and n == name), None
        )

    def stored(self, kind: str, name: str) -> dict[str, Any]:
        found = self.find(kind, name)
        assert found is not None, f"no {kind} {name}"
        return found

    def events(self) -> list[dict[str, Any]]:
        return [o for (_, p, _, _), o in self.objects.items() if p == "events"]

    # Endpoints -----------------------------------------------------------------

    def _key(self, request: web.Request) -> ObjectKey:
        info = request.match_info
        return (info["base"], info["plural"], info["ns"], info["name"])

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, dict(request.query)))

    async def get(self, request: web.Request) -> web.Response:
        self._record(request)
        obj = self.objects.get(self._key(request))
        if obj is None:
            return status_error(404, f"{request.match_info['name']} not found")
        return json_response(obj)

    async def list_objects(self, request: web.Request) -> web.Response:
        self._record(request)
        info = request.match_info
        items = [
            o
            for (b, p, n, _), o in sorted(self.objects.items())
            if (b, p, n) == (info["base"], info["plural"], info["ns"])
        ]
        version, kind = KINDS[info["plural"]]
        return json_response(
            {"apiVersion": version, "kind": f"{kind}List", "metadata": {}, "items": items}
        )

    async def create(self, request: web.Request) -> web.Response:
        self._record(request)
        obj = await request.json()
        metadata = obj["metadata"]
        metadata.setdefault("name", f"{metadata.pop('generateName', 'x')}{next(self.versions)}")
        return json_response(self.put(obj), status=201)

    async def delete(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.objects.pop(self._key(request), None) is None:
            return status_error(404, "not found")
        self.owners.pop(self._key(request), None)
        return json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    async def patch(self, request: web.Request) -> web.Response:
        self._record(request)
        key = self._key(request)
        subresource = request.match_info.get("sub")
        body = await request.json()
        obj = self.objects.get(key)
        content_type = request.headers["Content-Type"]
        if content_type == "application/merge-patch+json":
            if obj is None:
                return status_error(404, "not found")
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations.update(body["metadata"]["annotations"])
        elif content_type == "application/apply-patch+yaml":
            manager = request.query["fieldManager"]
            assert request.query.get("force") == "true", "the operator always forces"
            if obj is None:
                if subresource:
                    return status_error(404, "not found")
                version, kind = KINDS[key[1]]
                obj = {
                    "apiVersion": version,
                    "kind": kind,
                    "metadata": {"name": key[3], "namespace": key[2]},
                }
                self.objects[key] = obj
            self._apply(key, obj, body, manager, subresource)
        else:
            return status_error(415, content_type)
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        return json_response(obj)

    def _apply(
        self,
        key: ObjectKey,
        obj: dict[str, Any],
        applied: dict[str, Any],
        manager: str,
        subresource: str | None,
    ) -> None:
        in_scope: Callable[[Path_], bool] = (
            (lambda p: p[0] == "status") if subresource else (lambda p: p[0] != "status")
        )
        fields = {p: v for p, v in leaves(applied).items() if in_scope(p)}
        owners = self.owners.setdefault(key, {})
        before = owners.get(manager, set())
        live = leaves(obj)
        # Applying a field's current value shares it; forcing another value takes it over.
        taken = {p for p, v in fields.items() if p in live and live[p] != v}
        others: set[Path_] = set()
        for other, owned in owners.items():
            if other != manager:
                owned -= taken
                others |= owned
        for path in before - fields.keys() - others:
            delete_path(obj, path)
        for path, value in fields.items():
            set_path(obj, path, value)
        owners[manager] = set(fields)


# ---------------------------------------------------------------- drift service stand-in


@dataclass
class FakeDriftService:
    """GET /v1/monitors/{name}/drift with real reports; DELETE .../window recorded."""

    reports: dict[str, bytes] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/monitors/{name}/drift", self.drift)
        app.router.add_delete("/v1/monitors/{name}/window", self.forget)
        return app

    async def drift(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.reports:
            problem = {
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": f"no monitor named {name!r}",
            }
            return web.json_response(problem, status=404, content_type="application/problem+json")
        return web.Response(body=self.reports[name], content_type="application/json")

    async def forget(self, request: web.Request) -> web.Response:
        self.forgotten.append(request.match_info["name"])
        return web.Response(status=204)


def window_report(monitor: Monitor, *, drifted: bool) -> bytes:
    """A real DriftReport: the baseline's own counts (no drift), or all in one bin."""
    vector = np.zeros(monitor.layout.width)
    events = monitor.profile.rows
    vector[0] = events
    for slots in monitor.layout.features.values():
        profile = slots.profile
        counts = np.zeros(profile.bins) if drifted else np.asarray(profile.counts, float)
        if drifted:
            counts[0] = events
        vector[slots.first_bin : slots.first_bin + profile.bins] = counts
        vector[slots.missing] = 0 if drifted else profile.missing
    totals = WindowTotals(vector=vector, start=1_748_510_000.0, now=1_748_513_600.0)
    return msgspec.json.encode(drift_report(assess(monitor, totals), totals))


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def kube_api() -> AsyncIterator[tuple[FakeKubeApi, str]]:
    fake = FakeKubeApi()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def drift_service() -> AsyncIterator[tuple[FakeDriftService, str]]:
    fake = FakeDriftService()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def operator(kube_api: tuple[FakeKubeApi, str]) -> AsyncIterator[DriftMonitorOperator]:
    _, url = kube_api
    settings = ControllerSettings(service_timeout=2.0)
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "operator", "user": {"token": "test-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "operator"}}],
            "current-context": "fake",
        }
    )
    op = DriftMonitorOperator(settings, kube_factory=lambda: KubeApi(AsyncClient(config=config)))
    await op.startup(logger=LOG)
    try:
        yield op
    finally:
        await op.cleanup()


def fixture_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in yaml.safe_load_all(FIXTURE.read_text())}
    return docs["Secret"], docs["DriftMonitor"]


def seed(fake: FakeKubeApi, service_url: str, **spec: Any) -> dict[str, Any]:
    """The fixture's Secret, a baseline ConfigMap and the DriftMonitor, as if applied."""
    secret, monitor = fixture_objects()
    fake.put(secret)
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "credit-risk-baseline"},
            "data": {"baseline_data.json": json.dumps(ROWS)},
        }
    )
    monitor["spec"] |= {"serviceUrl": service_url, **spec}
    return fake.put(monitor)


def new_monitor(fake: FakeKubeApi, name: str, service_url: str, **spec: Any) -> dict[str, Any]:
    _, monitor = fixture_objects()
    monitor["metadata"]["name"] = name
    monitor["spec"] |= {"serviceUrl": service_url, **spec}
    return fake.put(monitor)


def current(fake: FakeKubeApi, name: str = "credit-risk") -> kopf.Body:
    found = fake.find("DriftMonitor", name)
    assert found is not None
    return kopf.Body(copy.deepcopy(found))


def conditions(fake: FakeKubeApi, name: str = "credit-risk") -> dict[str, dict[str, Any]]:
    found = fake.find("DriftMonitor", name)
    assert found is not None
    return {c["type"]: c for c in found.get("status", {}).get("conditions", [])}


def loaded_monitor(config_map: dict[str, Any], key: str) -> Monitor:
    config = decode_monitor_config(json.loads(config_map["data"][key]), key)
    return build_monitor(config, MonitorDefaults(), base_dir=Path("/nonexistent"), source=key)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --------------------------------------------------------------------------------- tests


async def test_reconcile_writes_config_alerts_autoscaler_and_conditions(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    seed(fake, "http://127.0.0.1:1")
    await operator.reconcile(body=current(fake), memo=kopf.Memo())

    config_map = fake.find("ConfigMap", "driftline-monitors")
    assert config_map is not None
    assert config_map["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
        "driftline-controller"
    )
    monitor = loaded_monitor(config_map, "credit-risk.json")
    assert monitor.name == "credit-risk"
    assert monitor.profile.rows == len(ROWS)
    assert monitor.policy.thresholds_for("credit_score").warning == 0.15

    secret = fake.find("Secret", "driftline-alerts")
    assert secret is not None
    alerts = msgspec.json.decode(
        base64.b64decode(secret["data"]["credit-risk.json"]), type=ReceiverFile
    )
    assert [(r.name, r.url) for r in alerts.receivers] == [
        ("on-call-webhook", "https://hooks.example.com/driftline"),
        ("ml-team-slack", "https://hooks.slack.com/services/T000/B000/XXXX"),
    ]
    assert alerts.receivers[0].signing_secret == "s3cr3t-signing-key"

    hpa = fake.find("HorizontalPodAutoscaler", "driftline")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)

    status = fake.stored("DriftMonitor", "credit-risk")["status"]
    assert status["observedGeneration"] == 1
    found = conditions(fake)
    assert {t: c["status"] for t, c in found.items()} == {
        "ConfigRendered": "True",
        "AlertsReady": "True",
        "AutoscalingReady": "True",
        "Ready": "Unknown",
    }
    assert found["AutoscalingReady"]["message"].startswith("HorizontalPodAutoscaler driftline: 2-5")
    assert set(status["inputRevisions"]) == {
        "ConfigMap/credit-risk-baseline",
        "Secret/credit-risk-alerts",
    }
    # Shared keys are written per monitor with its own field manager, and forced.
    managers = {q.get("fieldManager") for m, p, q in fake.requests if m == "PATCH"}
    assert "driftline-monitor/credit-risk" in managers


async def test_the_service_loads_what_the_operator_wrote(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator, tmp_path: Path
) -> None:
    fake, _ = kube_api
    seed(fake, "http://127.0.0.1:1")
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    config_map = fake.find("ConfigMap", "driftline-monitors")
    secret = fake.find("Secret", "driftline-alerts")
    assert config_map is not None and secret is not None
    # As the kubelet mounts them: one file per key.
    monitors, alerts = tmp_path / "monitors", tmp_path / "alerts"
    monitors.mkdir()
    alerts.mkdir()
    for key, text in config_map["data"].items():
        (monitors / key).write_text(text)
    for key, encoded in secret["data"].items():
        (alerts / key).write_bytes(base64.b64decode(encoded))
    registry = MonitorRegistry(
        load_settings({}, monitors_dir=str(monitors), alerts_dir=str(alerts))
    )
    registry.load()
    assert registry.errors == {}
    loaded = registry.get("credit-risk")
    assert loaded.model == "credit-risk-xgb"
    assert [(r.name, r.min_severity) for r in registry.receivers("credit-risk")] == [
        ("on-call-webhook", "warning"),
        ("ml-team-slack", "critical"),
    ]


async def test_baseline_in_binary_data_as_csv_is_read(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    names = list(ROWS[0])
    csv = "\n".join([",".join(names)] + [",".join(str(r[n]) for n in names) for r in ROWS])
    seed(fake, "http://127.0.0.1:1", baseline={"configMapKeyRef": {"name": "csv", "key": "r.csv"}})
    fake.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "csv"},
            "binaryData": {"r.csv": base64.b64encode(csv.encode()).decode()},
        }
    )
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    rendered = loaded_monitor(fake.stored("ConfigMap", "driftline-monitors"), "credit-risk.json")
    assert rendered.profile.rows == len(ROWS)
    assert set(rendered.profile.features) == set(names)


async def test_reconcile_is_idempotent(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    seed(fake, "http://127.0.0.1:1")
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    first = copy.deepcopy(fake.find("ConfigMap", "driftline-monitors"))
    transitions = {t: c["lastTransitionTime"] for t, c in conditions(fake).items()}
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    again = fake.find("ConfigMap", "driftline-monitors")
    assert again is not None and first is not None
    assert again["data"] == first["data"]
    assert {t: c["lastTransitionTime"] for t, c in conditions(fake).items()} == transitions


async def test_monitors_share_objects_and_deleting_one_removes_only_its_keys(
    kube_api: tuple[FakeKubeApi, str],
    drift_service: tuple[FakeDriftService, str],
    operator: DriftMonitorOperator,
) -> None:
    fake, _ = kube_api
    service, service_url = drift_service
    seed(fake, service_url)
    new_monitor(
        fake,
        "fraud",
        service_url,
        traffic={"expectedEventsPerSecond": 5000, "peakEventsPerSecond": 12000},
    )
    await operator.reconcile(body=current(fake, "credit-risk"), memo=kopf.Memo())
    await operator.reconcile(body=current(fake, "fraud"), memo=kopf.Memo())
    config_map = fake.find("ConfigMap", "driftline-monitors")
    secret = fake.find("Secret", "driftline-alerts")
    hpa = fake.find("HorizontalPodAutoscaler", "driftline")
    assert config_map and secret and hpa
    assert set(config_map["data"]) == {"credit-risk.json", "fraud.json"}
    assert set(secret["data"]) == {"credit-risk.json", "fraud.json"}
    # 3000 + 5000 expected, 9000 + 12000 peak, 2000 events/s per replica.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 11)
    assert hpa["metadata"]["annotations"]["driftline.io/monitors"] == "credit-risk,fraud"

    deleting = current(fake, "fraud")
    fake.stored("DriftMonitor", "fraud")["metadata"]["deletionTimestamp"] = "2025-05-29T10:30:00Z"
    await operator.finalize(body=deleting, retry=0, logger=LOG)
    assert service.forgotten == ["fraud"]
    assert set(config_map["data"]) == {"credit-risk.json"}
    assert set(secret["data"]) == {"credit-risk.json"}
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "driftline"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    del fake.objects[("apis/driftline.io/v1alpha1", "driftmonitors", NS, "fraud")]

    last = current(fake, "credit-risk")
    fake.stored("DriftMonitor", "credit-risk")["metadata"]["deletionTimestamp"] = (
        "2025-05-29T10:31:00Z"
    )
    await operator.finalize(body=last, retry=0, logger=LOG)
    assert service.forgotten == ["fraud", "credit-risk"]
    assert fake.find("HorizontalPodAutoscaler", "driftline") is None
    assert config_map.get("data", {}) == {}
    assert secret.get("data", {}) == {}


async def test_missing_secret_leaves_alerts_not_ready_until_it_appears(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    seed(fake, "http://127.0.0.1:1")
    secret = fake.objects.pop(("api/v1", "secrets", NS, "credit-risk-alerts"))
    with pytest.raises(kopf.TemporaryError) as retry:
        await operator.reconcile(body=current(fake), memo=kopf.Memo())
    assert retry.value.delay == 30
    found = conditions(fake)
    assert found["AlertsReady"]["status"] == "False"
    assert found["AlertsReady"]["reason"] == "SecretNotFound"
    assert (
        "Secret 'credit-risk-alerts' (URL of alert 'on-call-webhook') not found"
        in (found["AlertsReady"]["message"])
    )
    assert found["ConfigRendered"]["status"] == "True"  # the other parts still land
    assert found["Ready"]["status"] == "False"
    assert fake.find("Secret", "driftline-alerts") is None

    # The Secret appears: its watch event marks the monitor for a new reconcile.
    fake.objects[("api/v1", "secrets", NS, "credit-risk-alerts")] = secret
    index = monitor_inputs(dict(current(fake)))
    indexed = {key: [use] for key, use in index.items()}
    assert operator.reads_input(SECRETS, "credit-risk-alerts", NS, monitor_inputs=indexed)
    assert not operator.reads_input(SECRETS, "unrelated", NS, monitor_inputs=indexed)
    await operator.input_changed(
        event={"type": "ADDED", "object": secret},
        resource=SECRETS,
        name="credit-risk-alerts",
        namespace=NS,
        logger=LOG,
        monitor_inputs={key: [use] for key, use in index.items()},
    )
    annotations = fake.stored("DriftMonitor", "credit-risk")["metadata"]["annotations"]
    revision = secret["metadata"]["resourceVersion"]
    assert annotations[INPUT_CHANGED_ANNOTATION] == f"Secret/credit-risk-alerts@{revision}"
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    assert conditions(fake)["AlertsReady"]["status"] == "True"
    assert fake.find("Secret", "driftline-alerts") is not None

    # Now the monitor has read this revision: another event of it changes nothing.
    fake.requests.clear()
    index = monitor_inputs(dict(current(fake)))
    await operator.input_changed(
        event={"type": "MODIFIED", "object": secret},
        resource=SECRETS,
        name="credit-risk-alerts",
        namespace=NS,
        logger=LOG,
        monitor_inputs={key: [use] for key, use in index.items()},
    )
    assert fake.requests == []


async def test_a_spec_the_service_refuses_is_a_permanent_error_with_its_message(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    seed(fake, "http://127.0.0.1:1", features=[{"name": "salary", "warningThreshold": 0.1}])
    with pytest.raises(
        kopf.PermanentError, match=r"features\.salary: not a feature of the baseline"
    ):
        await operator.reconcile(body=current(fake), memo=kopf.Memo())
    rendered = conditions(fake)["ConfigRendered"]
    assert (rendered["status"], rendered["reason"]) == ("False", "InvalidConfig")
    assert fake.find("ConfigMap", "driftline-monitors") is None
    assert conditions(fake)["AlertsReady"]["status"] == "True"


async def test_status_follows_the_service_and_severity_changes_post_events(
    kube_api: tuple[FakeKubeApi, str],
    drift_service: tuple[FakeDriftService, str],
    operator: DriftMonitorOperator,
) -> None:
    fake, _ = kube_api
    service, service_url = drift_service
    seed(fake, service_url)
    memo = kopf.Memo()
    await operator.reconcile(body=current(fake), memo=memo)
    config_map = fake.find("ConfigMap", "driftline-monitors")
    assert config_map is not None
    monitor = loaded_monitor(config_map, "credit-risk.json")

    # Not loaded by the service yet: Ready says so.
    await operator.refresh_status(body=current(fake), memo=memo, logger=LOG)
    ready = conditions(fake)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "MonitorNotLoaded")
    assert "no monitor named 'credit-risk'" in ready["message"]

    service.reports["credit-risk"] = window_report(monitor, drifted=True)
    await operator.refresh_status(body=current(fake), memo=memo, logger=LOG)
    status = fake.stored("DriftMonitor", "credit-risk")["status"]
    assert status["severity"] == "critical"
    assert status["driftScore"] > 0.5
    assert status["windowEvents"] == len(ROWS)
    assert set(status["driftedFeatures"]) == set(monitor.layout.features)
    assert status["lastEvaluated"] == "2025-05-29T10:13:20.000Z"
    assert conditions(fake)["Ready"]["status"] == "True"
    # The reconcile's conditions survive the timer's apply (separate field managers).
    assert conditions(fake)["ConfigRendered"]["status"] == "True"
    (event,) = fake.events()
    assert (event["reason"], event["type"]) == ("SeverityChanged", "Warning")
    assert event["regarding"]["name"] == "credit-risk"
    assert event["note"].startswith("severity unknown -> critical")

    await operator.refresh_status(body=current(fake), memo=memo, logger=LOG)
    assert len(fake.events()) == 1  # no change, no event

    service.reports["credit-risk"] = window_report(monitor, drifted=False)
    await operator.refresh_status(body=current(fake), memo=memo, logger=LOG)
    assert fake.stored("DriftMonitor", "credit-risk")["status"]["severity"] == "none"
    assert [e["type"] for e in fake.events()] == ["Warning", "Normal"]
    # A later reconcile keeps Ready as the service last said.
    await operator.reconcile(body=current(fake), memo=memo)
    assert conditions(fake)["Ready"]["reason"] == "Monitoring"


async def test_unreachable_service_is_reported_not_raised(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    url = f"http://127.0.0.1:{unused_port()}"
    seed(fake, url)
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    obj = fake.find("DriftMonitor", "credit-risk")
    assert obj is not None
    obj["status"] |= {"severity": "warning", "windowEvents": 300}
    await operator.refresh_status(body=current(fake), memo=kopf.Memo(), logger=LOG)
    ready = conditions(fake)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ServiceUnreachable")
    assert f"drift service at {url} unreachable" in ready["message"]
    # The last verdict stays on show.
    assert (obj["status"]["severity"], obj["status"]["windowEvents"]) == ("warning", 300)
    assert fake.events() == []


async def test_finalizer_gives_up_on_an_unreachable_service_after_its_attempts(
    kube_api: tuple[FakeKubeApi, str], operator: DriftMonitorOperator
) -> None:
    fake, _ = kube_api
    seed(fake, f"http://127.0.0.1:{unused_port()}")
    await operator.reconcile(body=current(fake), memo=kopf.Memo())
    fake.stored("DriftMonitor", "credit-risk")["metadata"]["deletionTimestamp"] = (
        "2025-05-29T10:30:00Z"
    )
    with pytest.raises(kopf.TemporaryError, match="unreachable"):
        await operator.finalize(body=current(fake), retry=0, logger=LOG)
    config_map = fake.find("ConfigMap", "driftline-monitors")
    assert config_map is not None and "credit-risk.json" in config_map["data"]
    await operator.finalize(body=current(fake), retry=2, logger=LOG)
    assert config_map.get("data", {}) == {}
    assert fake.find("HorizontalPodAutoscaler", "driftline") is None
