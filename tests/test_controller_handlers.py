"""The kopf handlers, called directly, against the real API server and a drift-service stand-in.

No kopf machinery: each test calls reconcile / refresh_status / finalize / input_changed
as kopf would, with the operator's real KubeApi talking to the session's Kubernetes API
server (bench/kubecluster.py), in a namespace of its own. The drift service is an HTTP
stand-in serving real DriftReports built by the service's own code, so each test can
choose the verdict; tests/test_k8s_operator_live.py runs the real one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
import msgspec
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from k8s_support import KubeTarget, free_port
from kopf._core.intents.stoppers import DaemonStopper
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace, Secret
from lightkube.types import PatchType
from support import window_totals

from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.profile import build_profile, rows_to_columns
from driftline.core.receivers import ReceiverFile
from driftline.core.report import assess, drift_report
from driftline.engine.registry import MonitorRegistry
from driftline.operator.inputs import INPUT_CHANGED_ANNOTATION, monitor_inputs
from driftline.operator.kube import KubeApi
from driftline.operator.operator import (
    FINALIZER,
    SHARDS_INDEX,
    TRAFFIC_INDEX,
    DriftMonitorOperator,
)
from driftline.operator.placement import (
    MonitorShard,
    parse_shard_name,
    preferred_shard,
    shard_entry,
    shard_name,
)
from driftline.operator.render import CONFIG_MAP_LIMIT, ServiceMonitor, service_traffic
from driftline.operator.settings import ControllerSettings
from driftline.settings import load_settings

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "driftmonitor" / "credit-risk.yaml"
ROWS = json.loads((ROOT / "examples" / "baseline_data.json").read_text())[:500]
LOG = logging.getLogger("test.controller")
SECRETS = kopf.Resource(group="", version="v1", plural="secrets", kind="Secret", namespaced=True)
DriftMonitor = create_namespaced_resource(
    "driftline.io", "v1alpha1", "DriftMonitor", "driftmonitors"
)


# ---------------------------------------------------------------- drift service stand-in


@dataclass
class FakeDriftService:
    """GET /v1/monitors/{name}/drift with real reports; DELETE .../window recorded."""

    reports: dict[str, bytes] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    # While `hold` is set (and not released), drift calls wait; `arrived` tells one came.
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/monitors/{name}/drift", self.drift)
        app.router.add_delete("/v1/monitors/{name}/window", self.forget)
        return app

    async def drift(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
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
    totals = window_totals(monitor, drifted=drifted)
    return msgspec.json.encode(drift_report(assess(monitor, totals), totals))


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def drift_service() -> AsyncIterator[tuple[FakeDriftService, str]]:
    fake = FakeDriftService()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        # By name: the CRD refuses a serviceUrl at an IP address.
        yield fake, str(server.make_url("")).rstrip("/").replace("127.0.0.1", "localhost")
    finally:
        if fake.hold is not None:
            fake.hold.set()
        await server.close()


def running() -> kopf.DaemonStopped:
    """The `stopped` flag kopf passes a timer that has not been asked to stop."""
    return DaemonStopper().async_waiter


@pytest.fixture(scope="module")
def crd(kube: KubeTarget) -> None:
    kube.install_crd()


@dataclass
class Scene:
    """One test's namespace on the API server, read and written as plain objects."""

    client: Client
    namespace: str
    created: list[str] = field(default_factory=list)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object in the namespace (DriftMonitors carry the operator's finalizer)."""
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["namespace"] = self.namespace
        if obj["kind"] == "DriftMonitor":
            obj["metadata"]["finalizers"] = [FINALIZER]
            return dict(self.client.create(DriftMonitor.from_dict(obj)))
        kind = {"ConfigMap": ConfigMap, "Secret": Secret}[obj["kind"]]
        return cast(dict[str, Any], self.client.create(kind.from_dict(obj)).to_dict())

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        resource: Any = {
            "ConfigMap": ConfigMap,
            "Secret": Secret,
            "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
            "DriftMonitor": DriftMonitor,
        }[kind]
        try:
            found = self.client.get(resource, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return dict(found) if kind == "DriftMonitor" else found.to_dict()

    def stored(self, kind: str, name: str) -> dict[str, Any]:
        found = self.find(kind, name)
        assert found is not None, f"no {kind} {name}"
        return found

    def current(self, name: str = "credit-risk") -> kopf.Body:
        return kopf.Body(self.stored("DriftMonitor", name))

    def conditions(self, name: str = "credit-risk") -> dict[str, dict[str, Any]]:
        found = self.stored("DriftMonitor", name)
        return {c["type"]: c for c in found.get("status", {}).get("conditions", [])}

    def events(self) -> list[dict[str, Any]]:
        return [
            e.to_dict()
            for e in self.client.list(Event, namespace=self.namespace)
            if e.reason == "SeverityChanged"
        ]

    def index(self) -> dict[str, Any]:
        """The indexes kopf would pass to the handlers, from the stored objects."""
        entries: dict[tuple[str, str], list[ServiceMonitor]] = {}
        for monitor in self.client.list(DriftMonitor, namespace=self.namespace):
            for key, value in service_traffic(dict(monitor)).items():
                entries.setdefault(key, []).append(value)
        shards: dict[tuple[str, str], list[MonitorShard]] = {}
        for config_map in self.client.list(ConfigMap, namespace=self.namespace):
            for key, shard in shard_entry(config_map.to_dict()).items():
                shards.setdefault(key, []).append(shard)
        return {TRAFFIC_INDEX: entries, SHARDS_INDEX: shards}

    def shards(self, service: str = "driftline") -> dict[str, dict[str, Any]]:
        """The service's monitors ConfigMaps (shards) that exist, by name."""
        return {
            cm.metadata.name: cm.to_dict()
            for cm in self.client.list(ConfigMap, namespace=self.namespace)
            if cm.metadata and (parse_shard_name(cm.metadata.name or "") or ("",))[0] == service
        }

    def monitors(self, service: str = "driftline") -> dict[str, str]:
        """Every monitor key of the service's shards -> its shard; a key in two fails."""
        found: dict[str, str] = {}
        for name, config_map in self.shards(service).items():
            for key in config_map.get("data") or {}:
                assert key not in found, f"{key} in {found[key]} and {name}"
                found[key] = name
        return found

    def config_map_of(self, key: str, service: str = "driftline") -> dict[str, Any]:
        """The one shard holding the monitor key."""
        shard = self.monitors(service).get(key)
        assert shard is not None, f"no shard of {service} holds {key}"
        return self.stored("ConfigMap", shard)

    def delete(self, name: str) -> kopf.Body:
        """Delete a monitor: the API server marks it, the finalizer keeps it; its body."""
        self.client.delete(DriftMonitor, name, namespace=self.namespace)
        return self.current(name)

    def finalized(self, name: str) -> None:
        """Drop the finalizer, as kopf does once finalize succeeded."""
        self.client.patch(
            DriftMonitor,
            name,
            {"metadata": {"finalizers": None}},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        self.client.patch(
            DriftMonitor.Status,
            name,
            {"status": status},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )


@pytest.fixture
def scene(kube: KubeTarget, crd: None) -> Iterator[Scene]:
    client = Client(config=KubeConfig.from_file(kube.kubeconfig), field_manager="driftline-tests")
    namespace = f"handlers-{uuid.uuid4().hex[:8]}"
    client.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": namespace}})))
    try:
        yield Scene(client, namespace)
    finally:
        for monitor in client.list(DriftMonitor, namespace=namespace):
            client.patch(
                DriftMonitor,
                monitor["metadata"]["name"],
                {"metadata": {"finalizers": None}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        client.delete(Namespace, namespace)
        client.close()


@asynccontextmanager
async def started(kube: KubeTarget, **settings: Any) -> AsyncIterator[DriftMonitorOperator]:
    """The operator's handlers with their clients open, as after kopf's start-up."""
    chosen = ControllerSettings(service_timeout=2.0, service_hosts=("localhost",), **settings)
    config = KubeConfig.from_file(kube.kubeconfig)
    op = DriftMonitorOperator(chosen, kube_factory=lambda: KubeApi(AsyncClient(config=config)))
    await op.startup(logger=LOG)
    try:
        yield op
    finally:
        await op.cleanup()


@pytest.fixture
async def operator(kube: KubeTarget) -> AsyncIterator[DriftMonitorOperator]:
    async with started(kube) as op:
        yield op


def fixture_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in yaml.safe_load_all(FIXTURE.read_text())}
    return docs["Secret"], docs["DriftMonitor"]


def seed(scene: Scene, service_url: str, **spec: Any) -> dict[str, Any]:
    """The fixture's Secret, a baseline ConfigMap and the DriftMonitor, created."""
    secret, monitor = fixture_objects()
    scene.put(secret)
    scene.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "credit-risk-baseline"},
            "data": {"baseline_data.json": json.dumps(ROWS)},
        }
    )
    monitor["spec"] |= {"serviceUrl": service_url, **spec}
    return scene.put(monitor)


def new_monitor(scene: Scene, name: str, service_url: str, **spec: Any) -> dict[str, Any]:
    _, monitor = fixture_objects()
    monitor["metadata"]["name"] = name
    monitor["spec"] |= {"serviceUrl": service_url, **spec}
    return scene.put(monitor)


def loaded_monitor(config_map: dict[str, Any], key: str) -> Monitor:
    config = decode_monitor_config(json.loads(config_map["data"][key]), key)
    return build_monitor(config, MonitorDefaults(), base_dir=Path("/nonexistent"), source=key)


def closed_url() -> str:
    return f"http://localhost:{free_port()}"


# --------------------------------------------------------------------------------- tests


async def test_reconcile_writes_config_alerts_autoscaler_and_conditions(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    seed(scene, closed_url())
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())

    # Its preferred shard of the default 128: nothing else is there.
    config_map = scene.config_map_of("credit-risk.json")
    assert config_map["metadata"]["name"] == shard_name(
        "driftline", preferred_shard("credit-risk", 128)
    )
    assert config_map["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
        "driftline-controller"
    )
    monitor = loaded_monitor(config_map, "credit-risk.json")
    assert monitor.name == "credit-risk"
    assert monitor.profile.rows == len(ROWS)
    assert monitor.policy.thresholds_for("credit_score").warning == 0.15

    secret = scene.stored("Secret", "driftline-alerts")
    alerts = msgspec.json.decode(
        base64.b64decode(secret["data"]["credit-risk.json"]), type=ReceiverFile
    )
    assert [(r.name, r.url) for r in alerts.receivers] == [
        ("on-call-webhook", "https://hooks.example.com/driftline"),
        ("ml-team-slack", "https://hooks.slack.com/services/T000/B000/XXXX"),
    ]
    assert alerts.receivers[0].signing_secret == "s3cr3t-signing-key"

    hpa = scene.stored("HorizontalPodAutoscaler", "driftline")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)

    status = scene.stored("DriftMonitor", "credit-risk")["status"]
    assert status["observedGeneration"] == 1
    found = scene.conditions()
    assert {t: c["status"] for t, c in found.items()} == {
        "ConfigRendered": "True",
        "AlertsReady": "True",
        "AutoscalingReady": "True",
        "Ready": "Unknown",
    }
    assert found["ConfigRendered"]["message"].startswith(
        f"ConfigMap {config_map['metadata']['name']} key credit-risk.json: "
    )
    # The monitor's own share: the sums, which change with every monitor, are the HPA's.
    assert found["AutoscalingReady"]["message"] == (
        "HorizontalPodAutoscaler driftline counts this monitor's 3000 expected and 9000 peak "
        "events/s"
    )
    assert hpa["metadata"]["annotations"]["driftline.io/expected-events-per-second"] == "3000"
    assert set(status["inputRevisions"]) == {
        "ConfigMap/credit-risk-baseline",
        "Secret/credit-risk-alerts",
    }
    # Shared keys are merged in by the controller's one field manager: the cost of a
    # write does not grow with the number of monitors.
    managers = {m["manager"] for m in config_map["metadata"]["managedFields"]}
    assert managers == {"driftline-controller"}


async def test_the_service_loads_what_the_operator_wrote(
    scene: Scene, operator: DriftMonitorOperator, tmp_path: Path
) -> None:
    seed(scene, closed_url())
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    secret = scene.stored("Secret", "driftline-alerts")
    # As the kubelet mounts them: one file per key, every shard into one directory.
    monitors, alerts = tmp_path / "monitors", tmp_path / "alerts"
    monitors.mkdir()
    alerts.mkdir()
    for config_map in scene.shards().values():
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
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    names = list(ROWS[0])
    csv = "\n".join([",".join(names)] + [",".join(str(r[n]) for n in names) for r in ROWS])
    seed(scene, closed_url(), baseline={"configMapKeyRef": {"name": "csv", "key": "r.csv"}})
    scene.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "csv"},
            "binaryData": {"r.csv": base64.b64encode(csv.encode()).decode()},
        }
    )
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    rendered = loaded_monitor(scene.config_map_of("credit-risk.json"), "credit-risk.json")
    assert rendered.profile.rows == len(ROWS)
    assert set(rendered.profile.features) == set(names)


async def test_reconcile_again_writes_nothing(scene: Scene, operator: DriftMonitorOperator) -> None:
    seed(scene, closed_url())
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())

    shard = scene.monitors()["credit-risk.json"]

    def versions() -> list[str]:
        return [
            scene.stored(kind, name)["metadata"]["resourceVersion"]
            for kind, name in (
                ("ConfigMap", shard),
                ("Secret", "driftline-alerts"),
                ("HorizontalPodAutoscaler", "driftline"),
                ("DriftMonitor", "credit-risk"),
            )
        ]

    first = versions()
    # A new process (a restart): nothing remembered, the same objects read again.
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    assert versions() == first


async def test_monitors_share_objects_and_deleting_one_removes_only_its_keys(
    scene: Scene,
    drift_service: tuple[FakeDriftService, str],
    operator: DriftMonitorOperator,
) -> None:
    service, service_url = drift_service
    seed(scene, service_url)
    new_monitor(
        scene,
        "fraud",
        service_url,
        traffic={"expectedEventsPerSecond": 5000, "peakEventsPerSecond": 12000},
    )
    await operator.reconcile(body=scene.current("credit-risk"), memo=kopf.Memo(), **scene.index())
    await operator.reconcile(body=scene.current("fraud"), memo=kopf.Memo(), **scene.index())
    secret = scene.stored("Secret", "driftline-alerts")
    hpa = scene.stored("HorizontalPodAutoscaler", "driftline")
    assert set(scene.monitors()) == {"credit-risk.json", "fraud.json"}
    assert set(secret["data"]) == {"credit-risk.json", "fraud.json"}
    # 3000 + 5000 expected, 9000 + 12000 peak, 2000 events/s per replica.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 11)
    assert hpa["metadata"]["annotations"]["driftline.io/monitors"] == "credit-risk,fraud"

    await operator.finalize(body=scene.delete("fraud"), retry=0, logger=LOG, **scene.index())
    scene.finalized("fraud")
    assert service.forgotten == ["fraud"]
    assert set(scene.monitors()) == {"credit-risk.json"}
    assert set(scene.stored("Secret", "driftline-alerts")["data"]) == {"credit-risk.json"}
    config_map = scene.config_map_of("credit-risk.json")
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "driftline"
    hpa = scene.stored("HorizontalPodAutoscaler", "driftline")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)

    await operator.finalize(body=scene.delete("credit-risk"), retry=0, logger=LOG, **scene.index())
    assert service.forgotten == ["fraud", "credit-risk"]
    assert scene.find("HorizontalPodAutoscaler", "driftline") is None
    assert scene.monitors() == {}
    assert not scene.stored("Secret", "driftline-alerts").get("data")


async def test_missing_secret_leaves_alerts_not_ready_until_it_appears(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    secret, monitor = fixture_objects()
    monitor["spec"]["baseline"] = {"profile": profile_of(ROWS)}
    scene.put(monitor | {"spec": monitor["spec"] | {"serviceUrl": closed_url()}})
    # Not retried on a timer: the Secret's creation is a watch event that re-reconciles.
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    found = scene.conditions()
    assert found["AlertsReady"]["status"] == "False"
    assert found["AlertsReady"]["reason"] == "SecretNotFound"
    assert (
        "Secret 'credit-risk-alerts' (URL of alert 'on-call-webhook') not found"
        in (found["AlertsReady"]["message"])
    )
    assert found["ConfigRendered"]["status"] == "True"  # the other parts still land
    assert found["Ready"]["status"] == "False"
    assert scene.find("Secret", "driftline-alerts") is None

    # The Secret appears: its watch event marks the monitor for a new reconcile.
    created = scene.put(secret)
    index = monitor_inputs(dict(scene.current()))
    indexed = {key: [use] for key, use in index.items()}
    namespace = scene.namespace
    assert operator.reads_input(SECRETS, "credit-risk-alerts", namespace, monitor_inputs=indexed)
    assert not operator.reads_input(SECRETS, "unrelated", namespace, monitor_inputs=indexed)
    await operator.input_changed(
        event={"type": "ADDED", "object": created},
        resource=SECRETS,
        name="credit-risk-alerts",
        namespace=namespace,
        logger=LOG,
        monitor_inputs=indexed,
    )
    annotations = scene.stored("DriftMonitor", "credit-risk")["metadata"]["annotations"]
    revision = created["metadata"]["resourceVersion"]
    assert annotations[INPUT_CHANGED_ANNOTATION] == f"Secret/credit-risk-alerts@{revision}"
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    assert scene.conditions()["AlertsReady"]["status"] == "True"
    assert scene.find("Secret", "driftline-alerts") is not None

    # Now the monitor has read this revision: another event of it changes nothing.
    before = scene.stored("DriftMonitor", "credit-risk")["metadata"]["resourceVersion"]
    index = monitor_inputs(dict(scene.current()))
    await operator.input_changed(
        event={"type": "MODIFIED", "object": created},
        resource=SECRETS,
        name="credit-risk-alerts",
        namespace=namespace,
        logger=LOG,
        monitor_inputs={key: [use] for key, use in index.items()},
    )
    assert scene.stored("DriftMonitor", "credit-risk")["metadata"]["resourceVersion"] == before


def profile_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return cast(dict[str, Any], msgspec.to_builtins(build_profile(rows_to_columns(rows))))


async def test_a_spec_the_service_refuses_is_withdrawn_with_its_message(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    seed(scene, closed_url(), features=[{"name": "salary", "warningThreshold": 0.1}])
    with pytest.raises(
        kopf.PermanentError, match=r"features\.salary: not a feature of the baseline"
    ):
        await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    found = scene.conditions()
    assert (found["ConfigRendered"]["status"], found["ConfigRendered"]["reason"]) == (
        "False",
        "InvalidConfig",
    )
    # Withdrawn: no config, no receivers, no share of the autoscaler.
    assert (found["AlertsReady"]["status"], found["AlertsReady"]["reason"]) == (
        "False",
        "ConfigInvalid",
    )
    assert found["AutoscalingReady"]["reason"] == "Withdrawn"
    assert scene.shards() == {}
    assert scene.find("Secret", "driftline-alerts") is None
    assert scene.find("HorizontalPodAutoscaler", "driftline") is None


async def test_status_follows_the_service_and_severity_changes_post_events(
    scene: Scene,
    drift_service: tuple[FakeDriftService, str],
    operator: DriftMonitorOperator,
) -> None:
    service, service_url = drift_service
    seed(scene, service_url)
    memo = kopf.Memo()
    await operator.reconcile(body=scene.current(), memo=memo, **scene.index())
    monitor = loaded_monitor(scene.config_map_of("credit-risk.json"), "credit-risk.json")

    # Not loaded by the service yet: Ready says so.
    await operator.refresh_status(body=scene.current(), memo=memo, logger=LOG, stopped=running())
    ready = scene.conditions()["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "MonitorNotLoaded")
    assert "no monitor named 'credit-risk'" in ready["message"]

    service.reports["credit-risk"] = window_report(monitor, drifted=True)
    await operator.refresh_status(body=scene.current(), memo=memo, logger=LOG, stopped=running())
    status = scene.stored("DriftMonitor", "credit-risk")["status"]
    assert status["severity"] == "critical"
    assert status["driftScore"] > 0.5 and status["driftScore"] == round(status["driftScore"], 2)
    assert status["windowEvents"] == len(ROWS)
    assert set(status["driftedFeatures"]) == set(monitor.layout.features)
    assert scene.conditions()["Ready"]["status"] == "True"
    # The reconcile's conditions survive the timer's apply (separate field managers).
    assert scene.conditions()["ConfigRendered"]["status"] == "True"
    (event,) = scene.events()
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "credit-risk"
    assert event["message"].startswith("severity unknown -> critical")

    version = scene.stored("DriftMonitor", "credit-risk")["metadata"]["resourceVersion"]
    await operator.refresh_status(body=scene.current(), memo=memo, logger=LOG, stopped=running())
    assert len(scene.events()) == 1  # no change, no event
    # ... and no write: nothing a person reads has changed.
    assert scene.stored("DriftMonitor", "credit-risk")["metadata"]["resourceVersion"] == version

    service.reports["credit-risk"] = window_report(monitor, drifted=False)
    await operator.refresh_status(body=scene.current(), memo=memo, logger=LOG, stopped=running())
    assert scene.stored("DriftMonitor", "credit-risk")["status"]["severity"] == "none"
    assert sorted(e["type"] for e in scene.events()) == ["Normal", "Warning"]
    # A later reconcile keeps Ready as the service last said.
    await operator.reconcile(body=scene.current(), memo=memo, **scene.index())
    assert scene.conditions()["Ready"]["reason"] == "Monitoring"


async def test_a_stopped_status_timer_abandons_its_service_call(
    scene: Scene, drift_service: tuple[FakeDriftService, str], operator: DriftMonitorOperator
) -> None:
    # kopf keeps a deleted monitor's finalizer until its timer has exited: a refresh
    # waiting for the service must end at the stop, not when the call times out.
    service, service_url = drift_service
    seed(scene, service_url)
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    reconciled = scene.conditions()["Ready"]
    service.hold = asyncio.Event()
    stopper = DaemonStopper()
    refresh = asyncio.ensure_future(
        operator.refresh_status(
            body=scene.current(), memo=kopf.Memo(), logger=LOG, stopped=stopper.async_waiter
        )
    )
    await service.arrived.wait()
    stopper.set(reason=kopf.DaemonStoppingReason.RESOURCE_DELETED)
    await refresh
    # The abandoned call wrote nothing: had it run to its timeout, Ready would say
    # ServiceUnreachable.
    assert scene.conditions()["Ready"] == reconciled


async def test_unreachable_service_is_reported_not_raised(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    url = closed_url()
    seed(scene, url)
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    scene.set_status("credit-risk", {"severity": "warning", "windowEvents": 300})
    await operator.refresh_status(
        body=scene.current(), memo=kopf.Memo(), logger=LOG, stopped=running()
    )
    ready = scene.conditions()["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ServiceUnreachable")
    assert f"drift service at {url} unreachable" in ready["message"]
    # The last verdict stays on show.
    status = scene.stored("DriftMonitor", "credit-risk")["status"]
    assert (status["severity"], status["windowEvents"]) == ("warning", 300)
    assert scene.events() == []


async def test_a_service_url_outside_the_namespace_is_never_called(
    scene: Scene, drift_service: tuple[FakeDriftService, str], operator: DriftMonitorOperator
) -> None:
    service, _ = drift_service
    seed(scene, "http://driftline.kube-system.svc:8080")
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    ready = scene.conditions()["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ServiceUrlRefused")
    await operator.refresh_status(
        body=scene.current(), memo=kopf.Memo(), logger=LOG, stopped=running()
    )
    assert scene.conditions()["Ready"]["reason"] == "ServiceUrlRefused"
    await operator.finalize(body=scene.delete("credit-risk"), retry=0, logger=LOG, **scene.index())
    assert service.forgotten == []
    assert scene.monitors() == {}


async def test_finalizer_gives_up_on_an_unreachable_service_after_its_attempts(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    seed(scene, closed_url())
    await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    deleting = scene.delete("credit-risk")
    with pytest.raises(kopf.TemporaryError, match="unreachable"):
        await operator.finalize(body=deleting, retry=0, logger=LOG, **scene.index())
    assert "credit-risk.json" in scene.monitors()
    await operator.finalize(body=deleting, retry=2, logger=LOG, **scene.index())
    assert scene.monitors() == {}
    assert scene.find("HorizontalPodAutoscaler", "driftline") is None


# ------------------------------------------------------------------------------ shards


def filled_shard(scene: Scene, name: str, free: int) -> None:
    """A monitors ConfigMap holding another key, leaving `free` bytes of its 1 MiB."""
    scene.put(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"filler.json": "x" * (CONFIG_MAP_LIMIT - free)},
        }
    )


async def test_a_shard_filled_behind_the_index_passes_the_key_to_the_next(
    scene: Scene, kube: KubeTarget
) -> None:
    seed(scene, closed_url())
    full = preferred_shard("credit-risk", 2)
    lagging = scene.index()  # taken before the shard filled: the watch has not shown it
    filled_shard(scene, shard_name("driftline", full), 1000)
    async with started(kube, monitor_shards=2) as operator:
        await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **lagging)
    # The API server refused the full shard (422); the other one took the key.
    assert scene.monitors() == {
        "credit-risk.json": shard_name("driftline", 1 - full),
        "filler.json": shard_name("driftline", full),
    }
    assert scene.conditions()["ConfigRendered"]["status"] == "True"


async def test_no_shard_with_room_is_no_room_and_the_monitor_is_withdrawn(
    scene: Scene, kube: KubeTarget
) -> None:
    seed(scene, closed_url())
    filled_shard(scene, "driftline-monitors", 1000)
    async with started(kube, monitor_shards=1) as operator:
        with pytest.raises(kopf.PermanentError, match="no monitors ConfigMap of service"):
            await operator.reconcile(body=scene.current(), memo=kopf.Memo(), **scene.index())
    found = scene.conditions()
    rendered = found["ConfigRendered"]
    assert (rendered["status"], rendered["reason"]) == ("False", "NoRoom")
    assert "the emptiest, driftline-monitors, has 1000 bytes free" in rendered["message"]
    assert "DRIFTLINE_CONTROLLER_MONITOR_SHARDS" in rendered["message"]
    assert found["AlertsReady"]["reason"] == "ConfigInvalid"
    assert found["AutoscalingReady"]["reason"] == "Withdrawn"
    assert scene.monitors() == {"filler.json": "driftline-monitors"}
    assert scene.find("HorizontalPodAutoscaler", "driftline") is None


async def test_keys_of_the_unsharded_layout_and_in_two_shards_end_in_one(
    scene: Scene, operator: DriftMonitorOperator
) -> None:
    seed(scene, closed_url())
    new_monitor(scene, "fraud", closed_url())
    fraud = shard_name("driftline", preferred_shard("fraud", 128))
    assert shard_name("driftline", preferred_shard("credit-risk", 128)) != "driftline-monitors"
    # As the unsharded operator left them: every key in <service>-monitors; and a move
    # cut short, fraud's key in its preferred shard as well.
    old = {"name": "stale"}
    for name, keys in (
        ("driftline-monitors", ["credit-risk.json", "fraud.json"]),
        (fraud, ["fraud.json"]),
    ):
        scene.put(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {key: json.dumps(old) for key in keys},
            }
        )
    for name in ("credit-risk", "fraud"):
        await operator.reconcile(body=scene.current(name), memo=kopf.Memo(), **scene.index())
    # Each key in exactly one shard (monitors() fails on a second), rewritten: the one
    # in <service>-monitors stays there, nothing moves on an upgrade.
    assert scene.monitors() == {"credit-risk.json": "driftline-monitors", "fraud.json": fraud}
    for key in ("credit-risk.json", "fraud.json"):
        assert loaded_monitor(scene.config_map_of(key), key).model == "credit-risk-xgb"
