"""The operator end to end on a real API server, against a real drift service.

`driftline controller` runs as a process with the ServiceAccount token and RBAC of
manifests/controller (so the least-privilege rules are what it really has), watching
this module's namespaces, with 2 monitors ConfigMaps (shards) per service so that a few
dozen large monitors fill them. `driftline serve` runs as a process on Redis;
`MountedObjects` copies the operator's ConfigMaps and Secret into its directories as the
kubelet's projected volume would (no kubelet runs here). Alerts go to a real HTTP
receiver. Tests run in file order and share the processes; each creates the monitors it
checks.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx2
import numpy as np
import pytest
import yaml
from k8s_support import (
    DRIFTLINE,
    ROOT,
    TIMEOUT,
    HeldDriftService,
    KubeTarget,
    MountedObjects,
    Process,
    WebhookReceiver,
    condition,
    free_port,
    wait_for,
)
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace, Secret
from lightkube.types import PatchType
from support import driftline_serve

from driftline.core.monitor import build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.profile import build_profile, encode_profile
from driftline.operator.placement import preferred_shard, shard_names
from driftline.operator.render import CONFIG_MAP_LIMIT

pytestmark = pytest.mark.k8s

ROWS: list[dict[str, Any]] = json.loads((ROOT / "examples" / "baseline_data.json").read_text())[
    :1000
]
DriftMonitor = create_namespaced_resource(
    "driftline.io", "v1alpha1", "DriftMonitor", "driftmonitors"
)
STATUS_INTERVAL = 1.0  # the operator's status refresh in this module, seconds
IDLE_MONITORS = 200
SHARDS = 2  # the operator's monitors ConfigMaps per service in this module


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(kube: KubeTarget) -> Client:
    kube.install_crd()
    return Client(
        config=KubeConfig.from_file(kube.kubeconfig),
        field_manager="driftline-tests",
        timeout=httpx2.Timeout(60.0),  # deleting 200 monitors at once takes a while
    )


def new_namespace(client: Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": name}})))
    return name


@pytest.fixture(scope="module")
def namespaces(client: Client) -> Iterator[tuple[str, str]]:
    """The namespace of most tests, and one the namespace-deletion test deletes."""
    created = new_namespace(client, "op"), new_namespace(client, "doomed")
    yield created
    # On a cluster that outlives the session: the operator has stopped, so monitors left
    # by a failed test lose their finalizer, and the namespaces go.
    for name in created:
        try:
            for monitor in client.list(DriftMonitor, namespace=name):
                client.patch(
                    DriftMonitor,
                    monitor["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                    namespace=name,
                    patch_type=PatchType.MERGE,
                )
            client.delete(Namespace, name)
        except ApiError as exc:
            if exc.status.code != 404:
                raise


@pytest.fixture(scope="module")
def namespace(namespaces: tuple[str, str]) -> str:
    return namespaces[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def service(
    client: Client, namespace: str, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real drift service on Redis, fed the operator's objects as mounted files."""
    directory = tmp_path_factory.mktemp("serve")
    redis_url = f"redis://{redis_server.host}:{redis_server.port}/3"
    mounts = {
        directory / "monitors": [f"ConfigMap/{n}" for n in shard_names("driftline", SHARDS)],
        directory / "alerts": ["Secret/driftline-alerts"],
    }
    for sub in ("monitors", "alerts"):
        (directory / sub).mkdir()
    serving = driftline_serve(
        directory / "serve.log",
        monitors_dir=directory / "monitors",
        ready_path="/monitor/health",  # ready once it loads a monitor: none yet
        REDIS_URL=redis_url,
        DRIFTLINE_ALERTS_DIR=str(directory / "alerts"),
        DRIFTLINE_RELOAD_INTERVAL="0.2",
        DRIFTLINE_ALERT_POLL_INTERVAL="0.2",
    )
    with serving as url, MountedObjects(client, namespace, mounts):
        # By name: a DriftMonitor's serviceUrl must name a host (the CRD refuses addresses).
        yield url.replace("127.0.0.1", "localhost")


def operator_kubeconfig(kube: KubeTarget, directory: Path) -> Path:
    """A kubeconfig with a token of the operator's ServiceAccount (installed by manifests/)."""
    kube.kubectl("apply", "-k", str(ROOT / "manifests"))
    token = kube.kubectl(
        "create", "token", "driftline-controller", "-n", "driftline", "--duration=2h"
    ).stdout.strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    context["context"]["user"] = "driftline-controller"
    config["users"] = [{"name": "driftline-controller", "user": {"token": token}}]
    path = directory / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def operator(
    kube: KubeTarget, namespaces: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    directory = tmp_path_factory.mktemp("operator")
    env = {
        **kube.environment(),
        "KUBECONFIG": str(operator_kubeconfig(kube, directory)),
        "DRIFTLINE_CONTROLLER_STATUS_INTERVAL": str(STATUS_INTERVAL),
        # A service slowed by a busy machine is not an unreachable one: Ready must not
        # flip (and be written) because a call took more than the default 5 s.
        "DRIFTLINE_CONTROLLER_SERVICE_TIMEOUT": "30",
        # The drift service of these tests listens on the loopback.
        "DRIFTLINE_CONTROLLER_SERVICE_HOSTS": "localhost",
        "DRIFTLINE_CONTROLLER_MONITOR_SHARDS": str(SHARDS),
        "DRIFTLINE_LOG_LEVEL": "INFO",
    }
    argv = [DRIFTLINE, "controller"]
    for name in namespaces:
        argv += ["--namespace", name]
    process = Process("driftline controller", argv, env, directory / "controller.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


# -------------------------------------------------------------------------- helpers


def config_map(namespace: str, name: str, data: dict[str, str]) -> ConfigMap:
    return cast(
        ConfigMap,
        ConfigMap.from_dict(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": data,
            }
        ),
    )


def baseline_config_map(namespace: str, name: str, rows: list[dict[str, Any]]) -> ConfigMap:
    return config_map(namespace, name, {"baseline_data.json": json.dumps(rows)})


def alert_secret(namespace: str, values: dict[str, str]) -> Secret:
    return cast(
        Secret,
        Secret.from_dict(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alerts", "namespace": namespace},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
            }
        ),
    )


def monitor_object(
    namespace: str, name: str, service_url: str, baseline: str = "baseline", **spec: Any
) -> Any:
    body = {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DriftMonitor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": f"{name}-model",
            "serviceUrl": service_url,
            "baseline": {"configMapKeyRef": {"name": baseline, "key": "baseline_data.json"}},
            "traffic": {"expectedEventsPerSecond": 1000, "peakEventsPerSecond": 3000},
            **spec,
        },
    }
    return DriftMonitor.from_dict(body)


def get_monitor(client: Client, namespace: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.get(DriftMonitor, name, namespace=namespace))


def conditions_true(client: Client, namespace: str, name: str, *kinds: str) -> Any:
    found = get_monitor(client, namespace, name)
    states = [condition(found, kind) for kind in kinds]
    return found if all(s and s["status"] == "True" for s in states) else None


def with_condition(client: Client, namespace: str, name: str, kind: str, reason: str) -> Any:
    entry = condition(get_monitor(client, namespace, name), kind)
    return entry if entry and entry["reason"] == reason else None


def shards(client: Client, namespace: str, service: str = "driftline") -> dict[str, ConfigMap]:
    """The service's monitors ConfigMaps that exist, by name.

    Got by name, not listed: tests poll this every 0.1 s, and the namespace's baselines
    are large; listing them all would load the API server whose latency they measure.
    """
    found: dict[str, ConfigMap] = {}
    for name in shard_names(service, SHARDS):
        try:
            found[name] = client.get(ConfigMap, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
    return found


def holders(client: Client, namespace: str, service: str) -> dict[str, list[str]]:
    """Every key of the service's shards -> the shards holding it."""
    found: dict[str, list[str]] = {}
    for name, config_map in sorted(shards(client, namespace, service).items()):
        for key in config_map.data or {}:
            found.setdefault(key, []).append(name)
    return found


def config_key(
    client: Client, namespace: str, key: str, service: str = "driftline"
) -> dict[str, Any] | None:
    for config_map in shards(client, namespace, service).values():
        data = config_map.data or {}
        if key in data:
            return cast(dict[str, Any], json.loads(data[key]))
    return None


def alerts_key(client: Client, namespace: str, key: str) -> dict[str, Any] | None:
    try:
        data = client.get(Secret, "driftline-alerts", namespace=namespace).data or {}
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return json.loads(base64.b64decode(data[key])) if key in data else None


def autoscaler(client: Client, namespace: str) -> HorizontalPodAutoscaler | None:
    try:
        return client.get(HorizontalPodAutoscaler, "driftline", namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def events_about(client: Client, namespace: str, name: str) -> list[Event]:
    # Listed through core/v1, which shows events.k8s.io Events too (and parses them:
    # their eventTime may be null here, which events.k8s.io/v1 models refuse).
    return [
        e
        for e in client.list(Event, namespace=namespace)
        if e.involvedObject.kind == "DriftMonitor" and e.involvedObject.name == name
    ]


def delete_and_wait(client: Client, namespace: str, name: str, timeout: float = TIMEOUT) -> None:
    client.delete(DriftMonitor, name, namespace=namespace)

    def gone() -> bool | None:
        try:
            client.get(DriftMonitor, name, namespace=namespace)
        except ApiError as exc:
            return True if exc.status.code == 404 else None
        return None

    wait_for(f"DriftMonitor {name} to be finalized and gone", gone, timeout)


def drifted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events far from the baseline: every number tripled."""
    return [
        {
            "features": {
                k: (v * 3 if isinstance(v, int | float) and not isinstance(v, bool) else v)
                for k, v in row.items()
            }
        }
        for row in rows
    ]


# ------------------------------------------------------------------------------ tests


def test_a_monitor_is_rendered_sized_served_and_ready(
    client: Client,
    namespace: str,
    service: str,
    operator: Process,
    receiver: WebhookReceiver,
) -> None:
    client.create(
        alert_secret(
            namespace,
            {"hook": receiver.url, "signing": "s3cr3t", "slack": receiver.url},
        )
    )
    client.create(baseline_config_map(namespace, "baseline", ROWS))
    client.create(
        monitor_object(
            namespace,
            "credit-risk",
            service,
            features=[{"name": "credit_score", "warningThreshold": 0.15, "criticalThreshold": 0.4}],
            alerts=[
                {
                    "name": "on-call",
                    "type": "webhook",
                    "urlSecretRef": {"name": "alerts", "key": "hook"},
                    "signingSecretRef": {"name": "alerts", "key": "signing"},
                },
                {
                    "name": "team",
                    "type": "slack",
                    "minSeverity": "critical",
                    "urlSecretRef": {"name": "alerts", "key": "slack"},
                },
            ],
        )
    )
    kinds = ("ConfigRendered", "AlertsReady", "AutoscalingReady", "Ready")
    found = wait_for(
        "all conditions True",
        lambda: operator.check_alive() or conditions_true(client, namespace, "credit-risk", *kinds),
    )
    generation = found["metadata"]["generation"]
    assert found["status"]["observedGeneration"] == generation
    assert all(condition(found, k)["observedGeneration"] == generation for k in kinds)  # type: ignore[index]
    assert condition(found, "Ready")["reason"] == "Monitoring"  # type: ignore[index]

    config = config_key(client, namespace, "credit-risk.json")
    assert config is not None
    monitor = build_monitor(
        decode_monitor_config(config, "credit-risk"),
        MonitorDefaults(),
        base_dir=Path("/nonexistent"),
        source="credit-risk",
    )
    assert monitor.profile.rows == len(ROWS)
    assert monitor.policy.feature_thresholds["credit_score"].critical == 0.4
    receivers = alerts_key(client, namespace, "credit-risk.json")
    assert receivers is not None
    assert [(r["name"], r["url"]) for r in receivers["receivers"]] == [
        ("on-call", receiver.url),
        ("team", receiver.url),
    ]
    hpa = autoscaler(client, namespace)
    assert hpa is not None and hpa.spec is not None
    # 1000 expected / 3000 peak events/s over 2000 per replica: 1 -> floor 2, 2.
    assert (hpa.spec.minReplicas, hpa.spec.maxReplicas) == (2, 2)
    # The service really loaded what the operator wrote.
    answer = httpx2.get(f"{service}/v1/monitors/credit-risk")
    assert answer.status_code == 200
    assert answer.json()["model"] == "credit-risk-model"


def test_drift_reaches_the_status_an_event_the_columns_and_the_receivers(
    kube: KubeTarget,
    client: Client,
    namespace: str,
    service: str,
    operator: Process,
    receiver: WebhookReceiver,
) -> None:
    answer = httpx2.post(
        f"{service}/v1/monitors/credit-risk/events", json=drifted(ROWS[:400]), timeout=30
    )
    assert answer.status_code == 200, answer.text

    def critical() -> Any:
        found = get_monitor(client, namespace, "credit-risk")
        return found if found.get("status", {}).get("severity") == "critical" else None

    found = wait_for("severity critical in the status", critical)
    status = found["status"]
    assert status["windowEvents"] == 400
    assert status["driftScore"] > 0.5 and status["driftScore"] == round(status["driftScore"], 2)
    assert "lastEvaluated" not in status
    assert set(status["driftedFeatures"]) >= {"age", "income"}
    # Each flagged feature with its severity and the checks that flagged it.
    reasons = {r["feature"]: r for r in status["featureReasons"]}
    assert set(status["driftedFeatures"]) <= set(reasons)
    assert "distribution" in reasons["age"]["reasons"]
    assert reasons["age"]["severity"] in {"warning", "critical"}

    events = wait_for(
        "a SeverityChanged Event",
        lambda: (
            [
                e
                for e in events_about(client, namespace, "credit-risk")
                if e.reason == "SeverityChanged"
            ]
            or None
        ),
    )
    assert events[0].type == "Warning"
    assert "-> critical" in (events[0].message or "")

    table = kube.kubectl("get", "dm", "credit-risk", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "SEVERITY", "SCORE", "EVENTS", "READY", "AGE"]
    name, model, severity, score, window_events, ready = table[1].split()[:6]
    assert (name, model, severity, window_events, ready) == (
        "credit-risk",
        "credit-risk-model",
        "critical",
        "400",
        "True",
    )
    assert len(score.split(".")[-1]) <= 2, f"score column not rounded: {score}"

    # The service's alert reached the real receiver (webhook and Slack formats).
    wait_for(
        "the critical alert at the receiver",
        lambda: [b for b in receiver.received.bodies if b.get("severity") == "critical"] or None,
    )


def test_a_spec_update_is_rendered_again_and_observed(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    client.patch(
        DriftMonitor,
        "credit-risk",
        {"spec": {"thresholds": {"warning": 0.25, "critical": 0.6}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    wait_for(
        "the new thresholds in the ConfigMap key",
        lambda: (
            (config_key(client, namespace, "credit-risk.json") or {}).get("warning_threshold")
            == 0.25
            or None
        ),
    )

    def observed() -> Any:
        found = get_monitor(client, namespace, "credit-risk")
        generation = found["metadata"]["generation"]
        entries = found["status"]["conditions"]
        done = found["status"]["observedGeneration"] == generation and all(
            e["observedGeneration"] == generation for e in entries if e["type"] != "Ready"
        )
        return found if done else None

    assert wait_for("the new generation observed", observed)["metadata"]["generation"] >= 2
    wait_for(
        "the service to load the new thresholds",
        lambda: (
            httpx2.get(f"{service}/v1/monitors/credit-risk").json()["policy"]["warning_threshold"]
            == 0.25
            or None
        ),
    )


def test_a_baseline_created_after_its_monitor_is_picked_up_at_once(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    late: list[float] = []
    prompt: list[float] = []
    names: list[str] = []
    for i in range(5):
        name = f"late-{i}"
        names.append(name)
        client.create(monitor_object(namespace, name, service, baseline=f"late-baseline-{i}"))
        wait_for(
            f"{name} to wait for its baseline",
            lambda name=name: with_condition(  # type: ignore[misc]
                client, namespace, name, "ConfigRendered", "BaselineNotFound"
            ),
        )
        start = time.monotonic()
        client.create(baseline_config_map(namespace, f"late-baseline-{i}", ROWS[:200]))
        wait_for(
            f"{name}'s key once its baseline exists",
            lambda name=name: config_key(client, namespace, f"{name}.json"),  # type: ignore[misc]
        )
        late.append(time.monotonic() - start)
    for i in range(8):
        name = f"prompt-{i}"
        names.append(name)
        start = time.monotonic()
        client.create(monitor_object(namespace, name, service))
        wait_for(
            f"{name}'s key",
            lambda name=name: config_key(client, namespace, f"{name}.json"),  # type: ignore[misc]
        )
        prompt.append(time.monotonic() - start)
    print(
        f"\n[k8s] baseline created after its monitor -> ConfigMap key: median "
        f"{statistics.median(late):.2f} s, max {max(late):.2f} s; monitor applied -> key: "
        f"median {statistics.median(prompt):.2f} s, max {max(prompt):.2f} s"
    )
    assert max(late) < 2.0
    for name in names:
        delete_and_wait(client, namespace, name)


def test_a_monitor_deleted_while_its_status_call_waits_goes_at_once(
    client: Client, namespace: str, operator: Process
) -> None:
    # kopf keeps the finalizer until the monitor's status timer has exited, and looks
    # again only after its polling delay (a minute by default): the timer must leave its
    # call at the stop. Bounded below the operator's 30 s service timeout, so passing
    # means the held call was abandoned, not finished.
    with HeldDriftService() as held:
        client.create(monitor_object(namespace, "held", held.url, service="held-drift"))
        wait_for("the status call to the held service", lambda: held.held.is_set() or None)
        delete_and_wait(client, namespace, "held", timeout=20)


def test_monitors_of_one_service_share_its_autoscaler(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    client.create(
        monitor_object(
            namespace,
            "second",
            service,
            traffic={"expectedEventsPerSecond": 3000, "peakEventsPerSecond": 9000},
        )
    )

    def sized(monitors: str, bounds: tuple[int, int]) -> HorizontalPodAutoscaler | None:
        hpa = autoscaler(client, namespace)
        if hpa is None or hpa.spec is None or hpa.metadata is None:
            return None
        annotations = hpa.metadata.annotations or {}
        ok = (
            annotations.get("driftline.io/monitors") == monitors
            and (
                hpa.spec.minReplicas,
                hpa.spec.maxReplicas,
            )
            == bounds
        )
        return hpa if ok else None

    # (1000 + 3000) / 2000 = 2 and (3000 + 9000) / 2000 = 6 replicas.
    hpa = wait_for("the HPA sized for both", lambda: sized("credit-risk,second", (2, 6)))
    assert hpa.metadata is not None and hpa.metadata.annotations is not None
    assert hpa.metadata.annotations["driftline.io/expected-events-per-second"] == "4000"
    delete_and_wait(client, namespace, "second")
    wait_for("the HPA sized for the one left", lambda: sized("credit-risk", (2, 2)))
    assert config_key(client, namespace, "second.json") is None
    assert config_key(client, namespace, "credit-risk.json") is not None


def test_a_config_the_service_refuses_is_reported_withdrawn_and_not_counted(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    client.create(
        monitor_object(
            namespace,
            "too-strict",
            service,
            minDriftedFeatures=99,
            traffic={"expectedEventsPerSecond": 50000},
            alerts=[
                {
                    "name": "hook",
                    "type": "webhook",
                    "urlSecretRef": {"name": "alerts", "key": "hook"},
                }
            ],
        )
    )
    rendered = wait_for(
        "ConfigRendered=False InvalidConfig",
        lambda: with_condition(client, namespace, "too-strict", "ConfigRendered", "InvalidConfig"),
    )
    assert "min_drifted_features: 99 is more than the baseline's" in rendered["message"]
    alerts = condition(get_monitor(client, namespace, "too-strict"), "AlertsReady")
    assert alerts is not None and (alerts["status"], alerts["reason"]) == ("False", "ConfigInvalid")
    assert config_key(client, namespace, "too-strict.json") is None
    assert alerts_key(client, namespace, "too-strict.json") is None
    hpa = autoscaler(client, namespace)
    assert hpa is not None and hpa.metadata is not None and hpa.metadata.annotations is not None
    assert hpa.metadata.annotations["driftline.io/monitors"] == "credit-risk"
    # `kubectl describe dm too-strict` shows why: the handler's failure is an Event.
    event = wait_for(
        "an Event with the handler's failure",
        lambda: (
            [
                e
                for e in events_about(client, namespace, "too-strict")
                if "min_drifted_features" in (e.message or "")
            ]
            or None
        ),
    )
    assert event[0].type in ("Warning", "Error")

    client.patch(
        DriftMonitor,
        "too-strict",
        {"spec": {"minDriftedFeatures": 2}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    wait_for(
        "the fixed monitor rendered and counted",
        lambda: conditions_true(client, namespace, "too-strict", "ConfigRendered", "AlertsReady"),
    )
    assert config_key(client, namespace, "too-strict.json") is not None
    hpa = autoscaler(client, namespace)
    assert hpa is not None and hpa.metadata is not None and hpa.metadata.annotations is not None
    assert hpa.metadata.annotations["driftline.io/monitors"] == "credit-risk,too-strict"
    delete_and_wait(client, namespace, "too-strict")


def test_every_bad_alert_url_is_named(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    bad = alert_secret(namespace, {"first": "ftp://example.com/hook", "second": "hooks.example"})
    assert bad.metadata is not None
    bad.metadata.name = "bad-alerts"
    client.create(bad)
    client.create(
        monitor_object(
            namespace,
            "bad-urls",
            service,
            alerts=[
                {
                    "name": "one",
                    "type": "webhook",
                    "urlSecretRef": {"name": "bad-alerts", "key": "first"},
                },
                {
                    "name": "two",
                    "type": "slack",
                    "urlSecretRef": {"name": "bad-alerts", "key": "second"},
                },
            ],
        )
    )
    alerts = wait_for(
        "AlertsReady=False InvalidAlert",
        lambda: with_condition(client, namespace, "bad-urls", "AlertsReady", "InvalidAlert"),
    )
    assert "alert 'one'" in alerts["message"] and "alert 'two'" in alerts["message"]
    assert "ftp://" not in alerts["message"], "a secret value was echoed"
    delete_and_wait(client, namespace, "bad-urls")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:{closed}", "ServiceUnreachable"),
        ("http://driftline.kube-system.svc:8080", "ServiceUrlRefused"),
        ("http://metadata.google.internal/computeMetadata", "ServiceUrlRefused"),
    ],
)
def test_ready_says_when_the_service_cannot_or_may_not_be_called(
    client: Client, namespace: str, operator: Process, url: str, reason: str
) -> None:
    name = f"unserved-{uuid.uuid4().hex[:6]}"
    client.create(monitor_object(namespace, name, url.format(closed=free_port())))
    ready = wait_for(
        f"Ready=False {reason}", lambda: with_condition(client, namespace, name, "Ready", reason)
    )
    assert ready["status"] == "False"
    delete_and_wait(client, namespace, name)


def window_keys(redis_server: Any, monitor: str) -> list[bytes]:
    import redis

    connection = redis.Redis(host=redis_server.host, port=redis_server.port, db=3)
    try:
        return list(connection.scan_iter(match=f"driftline:{{{monitor}}}:*"))
    finally:
        connection.close()


def test_delete_drops_the_window_the_keys_and_the_last_autoscaler(
    client: Client, namespace: str, service: str, operator: Process, redis_server: Any
) -> None:
    assert window_keys(redis_server, "credit-risk"), "the drifted traffic left no window"
    delete_and_wait(client, namespace, "credit-risk")
    assert window_keys(redis_server, "credit-risk") == []
    assert config_key(client, namespace, "credit-risk.json") is None
    assert alerts_key(client, namespace, "credit-risk.json") is None
    wait_for(
        "the HPA to go with the last monitor", lambda: autoscaler(client, namespace) is None or None
    )


def test_deleting_a_namespace_with_monitors_completes(
    kube: KubeTarget, client: Client, namespaces: tuple[str, str], service: str, operator: Process
) -> None:
    if not kube.controllers:
        reason = "no kube-controller-manager beside the API server: namespaces are never deleted"
        print(f"\n[k8s] skipped: {reason}")
        pytest.skip(reason)
    doomed = namespaces[1]
    client.create(baseline_config_map(doomed, "baseline", ROWS[:200]))
    for name in ("first", "second"):
        client.create(monitor_object(doomed, name, service))
    for name in ("first", "second"):
        wait_for(
            f"{name} rendered",
            lambda name=name: conditions_true(client, doomed, name, "ConfigRendered"),  # type: ignore[misc]
        )
    client.delete(Namespace, doomed)

    def deleted() -> bool | None:
        try:
            client.get(Namespace, doomed)
        except ApiError as exc:
            return True if exc.status.code == 404 else None
        return None

    wait_for(f"namespace {doomed} to be deleted", deleted, timeout=120)


WIDE_MONITORS = 40
WIDE_CATEGORIES = 60  # a 50-feature monitor config of ~44 KB: 23 fill a ConfigMap
# Never called (outside the namespace): these monitors test placement, not the service.
REFUSED_URL = "http://driftline.kube-system.svc:8080"


def wide_profile() -> bytes:
    """A saved profile of 30 numeric and 20 categorical features of 60 categories each."""
    rng = np.random.default_rng(7)
    columns: dict[str, list[Any]] = {
        f"x{i:02d}": np.round(rng.normal(i, 1 + i / 10, 4000), 4).tolist() for i in range(30)
    }
    for i in range(20):
        columns[f"k{i:02d}"] = [f"category-{v:03d}" for v in rng.integers(0, WIDE_CATEGORIES, 4000)]
    return encode_profile(build_profile(columns))


def names_preferring(prefix: str, counts: dict[int, int]) -> list[str]:
    """Monitor names, `counts[shard]` of them preferring each shard of SHARDS."""
    chosen: list[str] = []
    wanted = dict(counts)
    for i in range(10_000):
        name = f"{prefix}-{i:03d}"
        shard = preferred_shard(name, SHARDS)
        if wanted.get(shard, 0) > 0:
            wanted[shard] -= 1
            chosen.append(name)
    assert not any(wanted.values())
    return chosen


def delete_all(client: Client, namespace: str, names: list[str]) -> None:
    for name in names:
        client.delete(DriftMonitor, name, namespace=namespace)

    def gone() -> bool | None:
        left = {m["metadata"]["name"] for m in client.list(DriftMonitor, namespace=namespace)}
        return None if left & set(names) else True

    wait_for(f"{len(names)} DriftMonitors finalized and gone", gone, timeout=120)


def test_monitors_beyond_one_config_map_fill_the_shards_each_key_in_one(
    client: Client, namespace: str, operator: Process
) -> None:
    # 30 prefer the first shard, which holds 23: the rest are placed by probing, and
    # 8 reconciles at once run into the API server's 1 MiB refusal.
    names = names_preferring("wide", {0: 30, 1: WIDE_MONITORS - 30})
    profile = wide_profile()
    client.create(config_map(namespace, "wide-baseline", {"baseline_data.json": profile.decode()}))
    start = time.monotonic()
    for name in names:
        client.create(
            monitor_object(
                namespace,
                name,
                REFUSED_URL,
                baseline="wide-baseline",
                service="wide",
            )
        )

    def all_rendered() -> list[dict[str, Any]] | None:
        operator.check_alive()
        found = [
            m
            for m in client.list(DriftMonitor, namespace=namespace)
            if m["metadata"]["name"] in names
            and (c := condition(m, "ConfigRendered")) is not None
            and c["status"] == "True"
        ]
        return found if len(found) == len(names) else None

    rendered = wait_for(f"{WIDE_MONITORS} wide monitors rendered", all_rendered, timeout=180)
    elapsed = time.monotonic() - start
    placed = holders(client, namespace, "wide")
    assert sorted(placed) == sorted(f"{name}.json" for name in names)
    assert {key: len(where) for key, where in placed.items() if len(where) != 1} == {}
    configs = {
        name: [len(v.encode()) for v in (cm.data or {}).values()]
        for name, cm in shards(client, namespace, "wide").items()
    }
    sizes = {name: sum(lengths) for name, lengths in configs.items()}
    assert set(sizes) <= set(shard_names("wide", SHARDS))
    assert max(sizes.values()) <= CONFIG_MAP_LIMIT
    assert sum(sizes.values()) > CONFIG_MAP_LIMIT  # more than one ConfigMap could hold
    probed = [
        n
        for n in names
        if placed[f"{n}.json"] != [shard_names("wide", SHARDS)[preferred_shard(n, SHARDS)]]
    ]
    # All past the first shard, which can hold no more than this many of them.
    smallest = min(min(lengths) for lengths in configs.values())
    assert len(probed) >= 30 - CONFIG_MAP_LIMIT // smallest
    for monitor in rendered:  # the condition names the shard the key is in
        name = monitor["metadata"]["name"]
        message = condition(monitor, "ConfigRendered")["message"]  # type: ignore[index]
        assert message.startswith(
            f"ConfigMap {placed[f'{name}.json'][0]} key {name}.json: 50 features"
        )
    print(
        f"\n[k8s] {WIDE_MONITORS} monitors of {sum(sizes.values()) // WIDE_MONITORS} bytes "
        f"({sum(sizes.values())} bytes) over {SHARDS} shards ({sorted(sizes.values())}), "
        f"{len(probed)} past their preferred one: all rendered {elapsed:.1f} s after creation"
    )

    # Deleting a monitor releases its key; the others stay where they are.
    gone = probed[0]
    delete_and_wait(client, namespace, gone)
    after = holders(client, namespace, "wide")
    assert f"{gone}.json" not in after
    assert after == {k: v for k, v in placed.items() if k != f"{gone}.json"}
    delete_all(client, namespace, [n for n in names if n != gone])
    assert holders(client, namespace, "wide") == {}


def test_an_upgrade_from_one_config_map_leaves_each_key_in_one_shard(
    client: Client, namespace: str, operator: Process
) -> None:
    # Both prefer the second shard. Rendered there, then laid out as an older operator
    # (one ConfigMap) and a move cut short would have left them, while no operator ran.
    moved, doubled = names_preferring("legacy", {1: 2})
    client.create(baseline_config_map(namespace, "legacy-baseline", ROWS[:200]))
    for name in (moved, doubled):
        client.create(
            monitor_object(
                namespace, name, REFUSED_URL, baseline="legacy-baseline", service="legacy"
            )
        )
    for name in (moved, doubled):
        wait_for(
            f"{name} rendered",
            lambda name=name: conditions_true(client, namespace, name, "ConfigRendered"),  # type: ignore[misc]
        )
    first, second = shard_names("legacy", SHARDS)
    assert holders(client, namespace, "legacy") == {
        f"{moved}.json": [second],
        f"{doubled}.json": [second],
    }
    operator.stop()
    rendered = client.get(ConfigMap, second, namespace=namespace).data or {}
    stale = json.dumps({**json.loads(rendered[f"{moved}.json"]), "model": "stale"})
    client.create(
        config_map(
            namespace,
            first,
            {f"{moved}.json": stale, f"{doubled}.json": rendered[f"{doubled}.json"]},
        )
    )
    client.patch(
        ConfigMap,
        second,
        {"data": {f"{moved}.json": None}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    start = time.monotonic()
    operator.start()

    def settled() -> dict[str, list[str]] | None:
        operator.check_alive()
        found = holders(client, namespace, "legacy")
        fresh = (config_key(client, namespace, f"{moved}.json", "legacy") or {}).get("model")
        done = fresh == f"{moved}-model" and all(len(v) == 1 for v in found.values())
        return found if done else None

    # The key already in <service>-monitors stays there (rewritten: nothing moves on an
    # upgrade); the doubled one keeps its preferred shard and leaves the other.
    assert wait_for("each key in one shard after the restart", settled) == {
        f"{moved}.json": [first],
        f"{doubled}.json": [second],
    }
    print(
        f"\n[k8s] restarted operator left each key in one shard in {time.monotonic() - start:.1f} s"
    )
    delete_all(client, namespace, [moved, doubled])
    assert holders(client, namespace, "legacy") == {}


def drift_reads(service: str) -> int:
    """How many drift reports the service has answered (the operator's status polls)."""
    total = 0
    for line in httpx2.get(f"{service}/monitor/metrics").text.splitlines():
        if line.startswith("driftline_request_duration_seconds_count") and (
            'route="/v1/monitors/{name}/drift"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def versions(client: Client, namespace: str) -> dict[str, str]:
    """resourceVersion of every DriftMonitor and of the objects the operator writes."""
    found = {
        f"DriftMonitor/{m['metadata']['name']}": m["metadata"]["resourceVersion"]
        for m in client.list(DriftMonitor, namespace=namespace)
    }
    for name, config_map in shards(client, namespace).items():
        found[f"ConfigMap/{name}"] = config_map.metadata.resourceVersion  # type: ignore[union-attr]
    alerts = client.get(Secret, "driftline-alerts", namespace=namespace)
    found["Secret/driftline-alerts"] = alerts.metadata.resourceVersion  # type: ignore[union-attr]
    hpa = autoscaler(client, namespace)
    assert hpa is not None and hpa.metadata is not None
    found["HorizontalPodAutoscaler/driftline"] = hpa.metadata.resourceVersion or ""
    return found


def monitor_bodies(client: Client, namespace: str) -> dict[str, dict[str, Any]]:
    """Every DriftMonitor as the API server holds it, by the key `versions` gives it."""
    return {
        f"DriftMonitor/{m['metadata']['name']}": dict(m)
        for m in client.list(DriftMonitor, namespace=namespace)
    }


def rewritten(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], log: str, key: str
) -> str:
    """What a write changed in one DriftMonitor, and the operator's log lines naming it."""
    old, new = before.get(key, {}), after.get(key, {})
    fields = [
        f"{part}.{name}: {str(old.get(part, {}).get(name))[:200]} -> "
        f"{str(new.get(part, {}).get(name))[:200]}"
        for part in ("metadata", "spec", "status")
        for name in sorted(set(old.get(part, {})) | set(new.get(part, {})))
        if name not in ("resourceVersion", "managedFields")
        and old.get(part, {}).get(name) != new.get(part, {}).get(name)
    ]
    name = key.split("/", 1)[1]
    lines = [line[:300] for line in log.splitlines() if f'"name": "{name}"' in line]
    return f"{key}: " + "; ".join(fields) + "\n  log: " + "\n  log: ".join(lines[-10:])


def status_rounds(service: str, rounds: int, monitors: int) -> None:
    """Wait until the operator has asked the service for every monitor's report `rounds` times."""
    start = drift_reads(service)
    wait_for(
        f"{rounds} status rounds over {monitors} monitors",
        lambda: drift_reads(service) - start >= rounds * monitors or None,
    )


def test_idle_monitors_and_a_restart_write_nothing(
    client: Client, namespace: str, service: str, operator: Process
) -> None:
    # A refresh every 5 s: 40 drift reports a second for 200 monitors, on 2 cores.
    operator.stop()
    operator.env["DRIFTLINE_CONTROLLER_STATUS_INTERVAL"] = "5"
    operator.start()
    small = [{"age": row["age"], "region": row["region"]} for row in ROWS[:200]]
    client.create(baseline_config_map(namespace, "small", small))
    names = [f"idle-{i:03d}" for i in range(IDLE_MONITORS)]
    for name in names:
        client.create(monitor_object(namespace, name, service, baseline="small"))

    def settled(monitor: dict[str, Any]) -> bool:
        # Every condition True for this generation, the verdict shown, and no handler of
        # kopf's pending a retry (kopf keeps its progress in annotations until it succeeds).
        metadata = monitor["metadata"]
        pending = [
            key
            for key in metadata.get("annotations", {})
            if key.startswith("kopf.driftline.io/")
            and not key.endswith("last-handled-configuration")
        ]
        status = monitor.get("status", {})
        return (
            not pending
            and "severity" in status  # the status timer has shown the service's verdict
            and status.get("observedGeneration") == metadata["generation"]
            and all(
                (c := condition(monitor, kind)) is not None and c["status"] == "True"
                for kind in ("ConfigRendered", "AlertsReady", "AutoscalingReady", "Ready")
            )
        )

    def all_settled() -> bool | None:
        operator.check_alive()
        done = [m for m in client.list(DriftMonitor, namespace=namespace) if settled(dict(m))]
        return True if len(done) == IDLE_MONITORS else None

    wait_for(f"{IDLE_MONITORS} monitors reconciled and Ready", all_settled, timeout=300)
    status_rounds(service, 1, IDLE_MONITORS)  # the round that saw them Ready has written
    before = versions(client, namespace)
    bodies = monitor_bodies(client, namespace)
    start = time.monotonic()
    status_rounds(service, 2, IDLE_MONITORS)
    elapsed = time.monotonic() - start
    changed = sorted(k for k, v in versions(client, namespace).items() if before.get(k) != v)
    print(
        f"\n[k8s] {IDLE_MONITORS} idle monitors: {len(changed)} objects written in "
        f"{elapsed:.1f} s ({len(changed) / elapsed:.2f} writes/s)"
    )
    assert changed == [], f"idle monitors rewrote {changed[:10]}:\n" + "\n".join(
        rewritten(bodies, monitor_bodies(client, namespace), operator.log.read_text(), key)
        for key in changed[:3]
    )

    log_size = operator.log.stat().st_size
    operator.stop()
    operator.start()

    def resumed() -> bool | None:
        operator.check_alive()
        text = operator.log.read_text(errors="replace")[log_size:]
        return True if text.count("Handler 'reconcile' succeeded") >= IDLE_MONITORS else None

    wait_for("the restarted operator to resume every monitor", resumed, timeout=300)
    status_rounds(service, 2, IDLE_MONITORS)
    changed = sorted(k for k, v in versions(client, namespace).items() if before.get(k) != v)
    # What a rewrite changed, and why by the operator's log: the failure says which write.
    since = operator.log.read_text(errors="replace")[log_size:]
    after = monitor_bodies(client, namespace)
    assert changed == [], f"a restart rewrote {changed[:10]}:\n" + "\n".join(
        rewritten(bodies, after, since, key) for key in changed[:3]
    )
    # Left for the namespace's teardown: 200 finalizers would take minutes here.
