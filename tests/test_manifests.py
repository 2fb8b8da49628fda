"""The Kubernetes manifests: render every kustomization and check what it would deploy.

Each kustomization is rendered with `kubectl kustomize` and every object is validated
against the Kubernetes 1.28 schemas (kubernetes-validate, strict: unknown fields fail);
DriftMonitors are validated against the CRD's own openAPIV3Schema. Beyond the schemas:
security contexts, probes against the service's real routes, resources, selectors that
match pod labels, the settings the service would read, the standalone monitor config
decoded by the service's own code, RBAC, and at most one HPA per Deployment.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import msgspec.yaml
import pytest
import yaml
from aioprometheus.collectors import Histogram

from bench.quantity import quantity
from driftline.cli import parser as cli_parser
from driftline.core.monitor import build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.profile import BaselineProfile, load_baseline
from driftline.core.severity import SEVERITY_GAUGE
from driftline.engine.registry import MonitorRegistry
from driftline.http.routes import ROUTES
from driftline.operator.placement import shard_names
from driftline.operator.render import (
    encode_monitor_config,
    monitor_key,
    render_autoscaler,
    render_monitor_config,
    service_traffic,
)
from driftline.operator.settings import ENVIRONMENT as CONTROLLER_ENVIRONMENT
from driftline.operator.settings import ControllerSettings, load_controller_settings
from driftline.operator.spec import parse_spec
from driftline.settings import ENVIRONMENT, load_settings
from driftline.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.28"
NAMESPACE = "driftline"
# Each kustomization and what it is applied with.
RENDERINGS = {
    "base": MANIFESTS,
    "standalone": MANIFESTS / "standalone",
    "examples": MANIFESTS / "examples",
    "kserve": MANIFESTS / "examples" / "kserve",
    "monitoring": MANIFESTS / "monitoring",
}
# Kinds of CRDs this project does not own: no schema is bundled for them, so they get
# the structural checks of the tests below instead (and the reason is printed).
NO_SCHEMA = {
    "InferenceService": "KServe CRD (serving.kserve.io) is not bundled with "
    "kubernetes-validate; checked by test_kserve_example_logs_to_the_cloudevents_route",
    "ServiceMonitor": "Prometheus Operator CRD (monitoring.coreos.com) is not bundled "
    "with kubernetes-validate; checked by test_service_monitor_scrapes_the_service",
    "PrometheusRule": "Prometheus Operator CRD (monitoring.coreos.com) is not bundled "
    "with kubernetes-validate; checked by test_alert_rules_and_dashboard_use_real_metrics",
}
WORKLOADS = ("Deployment", "StatefulSet")
SERVICE_IMAGE = "ghcr.io/driftline/driftline:0.1.0"
# The final flush waits at most the Redis socket timeout; in-flight requests finish
# within a few seconds more. The grace period must cover both after the drain.
SHUTDOWN_BUDGET_SECONDS = 10


# ----------------------------------------------------------------------- helpers


@functools.cache
def _render(name: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed (not on PATH): the manifest tests render the "
            "kustomizations with `kubectl kustomize`. Install the kubectl client.",
            pytrace=False,
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(RENDERINGS[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {RENDERINGS[name]} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(name: str) -> list[dict[str, Any]]:
    """The objects of one kustomization (a fresh copy: tests may not share mutations)."""
    return copy.deepcopy(list(_render(name)))


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selected(docs: list[dict[str, Any]], selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in workloads(docs) if matches(selector, pod_labels(w))]


def service_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "driftline")


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    result: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    return result


def container_env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment a container starts with: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", ref)["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def route_paths() -> set[str]:
    return {route.path for route in ROUTES}


def strict_crd_schema(schema: dict[str, Any], top: bool = True) -> dict[str, Any]:
    """The CRD schema as the API server applies it: unknown fields are errors.

    Kubernetes prunes (or, with field validation, rejects) fields a structural schema
    does not declare; JSON Schema allows them unless told. Objects with `properties`
    get additionalProperties false unless they preserve unknown fields.
    """
    schema = dict(schema)
    props = schema.get("properties")
    if isinstance(props, dict):
        schema["properties"] = {k: strict_crd_schema(v, False) for k, v in props.items()}
        if top:
            for field in ("apiVersion", "kind", "metadata"):
                schema["properties"].setdefault(field, {})
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict_crd_schema(schema["items"], False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict_crd_schema(schema["additionalProperties"], False)
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [strict_crd_schema(s, False) for s in schema[key]]
    return schema


def crd_validators() -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> validator, from the CRDs the base installs."""
    validators: dict[tuple[str, str], jsonschema.Validator] = {}
    for crd in objects(render("base"), "CustomResourceDefinition"):
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
            # openAPIV3Schema is OpenAPI 3.0 flavoured JSON Schema: closest to draft 4.
            validators[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = (
                jsonschema.Draft4Validator(schema)
            )
    return validators


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


# ----------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_objects_validate_against_kubernetes_schemas(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = render(name)
    assert docs, f"{name} renders nothing"
    custom = crd_validators()
    not_validated: set[str] = set()
    crd_validated: set[str] = set()
    for doc in docs:
        assert doc["metadata"].get("name"), f"{name}: object without a name: {doc}"
        key = (doc["apiVersion"], doc["kind"])
        if key in custom:
            errors = sorted(custom[key].iter_errors(doc), key=lambda e: list(e.path))
            assert not errors, f"{name}: {name_of(doc)} fails the CRD schema: " + "; ".join(
                f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
            )
            crd_validated.add(doc["kind"])
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert doc["kind"] in NO_SCHEMA, (
                f"{name}: no schema for {name_of(doc)} ({doc['apiVersion']}): "
                "validate it or add it to NO_SCHEMA with the reason"
            )
            not_validated.add(doc["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{name}: {name_of(doc)} is invalid for Kubernetes {K8S_VERSION} at "
                f"{'.'.join(map(str, exc.path))}: {exc.message}"
            )
    with capsys.disabled():
        for kind in sorted(not_validated):
            print(f"\n[{name}] {kind} not schema-validated: {NO_SCHEMA[kind]}")
        for kind in sorted(crd_validated):
            print(
                f"\n[{name}] {kind} validated against its CRD's openAPIV3Schema; its CEL "
                "rules (x-kubernetes-validations) and defaults are the API server's to apply"
            )


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_every_namespaced_object_lands_in_the_driftline_namespace(name: str) -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in render(name):
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], name_of(doc)
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {name_of(doc)}"


def test_base_installs_namespace_crd_controller_service_and_redis() -> None:
    docs = render("base")
    kinds = Counter(d["kind"] for d in docs)
    assert one(docs, "Namespace", NAMESPACE)
    crd = one(docs, "CustomResourceDefinition", "driftmonitors.driftline.io")
    assert crd["spec"]["names"]["kind"] == "DriftMonitor"
    assert "dm" in crd["spec"]["names"].get("shortNames", [])
    assert one(docs, "Deployment", "driftline-controller")["spec"]["replicas"] == 1
    for kind in ("Service", "Ingress", "PodDisruptionBudget"):
        assert one(docs, kind, "driftline")
    assert one(docs, "StatefulSet", "driftline-redis")
    # The examples are applied on their own; the operator creates the HPA and monitors.
    assert kinds["DriftMonitor"] == 0
    assert kinds["HorizontalPodAutoscaler"] == 0
    config_maps = {d["metadata"]["name"] for d in objects(docs, "ConfigMap")}
    shards = set(shard_names("driftline", ControllerSettings().monitor_shards))
    assert not config_maps & shards, "the operator writes the monitors"


# ----------------------------------------------------------------------- workloads


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_every_pod_runs_restricted(name: str) -> None:
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, RO root."""
    found = workloads(render(name))
    assert found
    for workload in found:
        pod = workload["spec"]["template"]["spec"]
        pod_ctx = pod.get("securityContext", {})
        assert pod_ctx.get("runAsNonRoot") is True, name_of(workload)
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in containers(workload):
            ctx = c.get("securityContext", {})
            where = f"{name_of(workload)} container {c['name']}"
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("privileged", False) is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: numeric non-root uid"
            assert c["image"].rsplit(":", 1)[-1] not in ("", "latest"), f"{where}: pin a tag"
            assert ":" in c["image"], f"{where}: pin a tag"


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_every_container_has_probes_and_bounded_resources(name: str) -> None:
    docs = render(name)
    behind_a_service = [
        w
        for s in objects(docs, "Service")
        for w in selected(docs, {"matchLabels": s["spec"]["selector"]})
    ]
    for workload in workloads(docs):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            where = f"{name_of(workload)} container {c['name']}"
            assert "livenessProbe" in c and "startupProbe" in c, where
            if workload in behind_a_service:
                assert "readinessProbe" in c, where
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                action = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket")
                if action:
                    port = action["port"]
                    assert port in ports or port in ports.values(), f"{where} {probe}: {port}"
            resources = c.get("resources", {})
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{where}: {resource} request {request} > {limit}"


def test_service_container_runs_driftline_serve_with_probes_on_real_routes() -> None:
    deployment = service_deployment(render("base"))
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == SERVICE_IMAGE
    assert c["command"] == ["driftline", "serve"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/monitor/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/monitor/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/monitor/health"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", 8080)
        assert c[probe]["httpGet"]["path"] in route_paths()
    # The startup probe, not the liveness probe, covers a slow start (baselines built).
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert quantity(limits["cpu"]) == 0.5
    assert quantity(limits["memory"]) == 2**30
    assert quantity(requests["cpu"]) < quantity(limits["cpu"])
    assert quantity(requests["memory"]) < quantity(limits["memory"])
    ctx = c["securityContext"]
    assert ctx["runAsUser"] == 10001 and ctx["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    # The service never calls the Kubernetes API.
    assert pod["automountServiceAccountToken"] is False
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


def test_service_spreads_across_zones_and_nodes() -> None:
    deployment = service_deployment(render("base"))
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    keys = {c["topologyKey"] for c in constraints}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in constraints:
        assert matches(constraint["labelSelector"], pod_labels(deployment))


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_service_mounts_monitors_alerts_and_a_writable_tmp(name: str) -> None:
    docs = render(name)
    deployment = service_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    env = container_env(c, docs)

    tmp = volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in tmp and not mounts["/tmp"].get("readOnly")

    monitors_dir = env["DRIFTLINE_MONITORS_DIR"]
    assert monitors_dir == "/etc/driftline/monitors"
    monitors = volumes[mounts[monitors_dir]["name"]]
    # Every monitors ConfigMap (shard) the operator writes, projected into one directory,
    # each optional so pods start before it exists; keys are DriftMonitor names, so no
    # two sources project the same file.
    assert set(monitors) == {"name", "projected"}
    assert monitors["projected"]["sources"] == [
        {"configMap": {"name": name, "optional": True}}
        for name in shard_names("driftline", ControllerSettings().monitor_shards)
    ]
    assert mounts[monitors_dir]["readOnly"] is True

    alerts_dir = env["DRIFTLINE_ALERTS_DIR"]
    assert alerts_dir == "/etc/driftline/alerts"
    alerts = volumes[mounts[alerts_dir]["name"]]["secret"]
    assert alerts["secretName"] == "driftline-alerts" and alerts["optional"] is True
    assert mounts[alerts_dir]["readOnly"] is True

    tokens_file = Path(env["DRIFTLINE_TOKENS_FILE"])
    tokens = volumes[mounts[str(tokens_file.parent)]["name"]]["secret"]
    assert tokens["secretName"] == "driftline-tokens" and tokens["optional"] is True
    assert mounts[str(tokens_file.parent)]["readOnly"] is True
    # Every volume is mounted (a stray volume is a sign of a broken patch).
    assert {m["name"] for m in c["volumeMounts"]} == set(volumes)


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_settings_are_variables_the_service_reads(name: str) -> None:
    docs = render(name)
    (c,) = service_deployment(docs)["spec"]["template"]["spec"]["containers"]
    (source,) = c["envFrom"]
    settings_map = one(docs, "ConfigMap", source["configMapRef"]["name"])
    assert settings_map["metadata"]["name"].startswith("driftline-settings")
    env = container_env(c, docs)
    unknown = sorted(set(env) - set(ENVIRONMENT))
    assert not unknown, f"variables the service does not read: {unknown}"
    settings = load_settings(environ=env)
    assert settings.redis_url == "redis://driftline-redis:6379/0"
    assert settings.port == 8080
    assert settings.drain_seconds == 5
    assert settings.log_level == "INFO"
    # REDIS_URL names the headless Service of the Redis StatefulSet.
    redis = one(docs, "Service", "driftline-redis")
    assert redis["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in redis["spec"]["ports"]] == [6379]
    assert selected(docs, {"matchLabels": redis["spec"]["selector"]})


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_termination_grace_outlasts_drain_and_flush(name: str) -> None:
    docs = render(name)
    deployment = service_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    settings = load_settings(environ=container_env(pod["containers"][0], docs))
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > settings.drain_seconds + settings.redis_timeout
    assert grace >= settings.drain_seconds + SHUTDOWN_BUDGET_SECONDS
    # The readiness probe notices the drain (503) well within it.
    probe = pod["containers"][0]["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= settings.drain_seconds * 2


def test_redis_statefulset_persists_and_runs_non_root() -> None:
    docs = render("base")
    redis = one(docs, "StatefulSet", "driftline-redis")
    spec = redis["spec"]
    governing = one(docs, "Service", spec["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert matches({"matchLabels": governing["spec"]["selector"]}, pod_labels(redis))
    (c,) = spec["template"]["spec"]["containers"]
    assert c["image"] == "redis:7.2"
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    # What docs/durability.md promises: an acknowledged count survives a Redis restart
    # (kill -9 included), and a node crash loses at most about a second of them.
    assert args[args.index("--appendfsync") + 1] in {"everysec", "always"}
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    (claim,) = spec["volumeClaimTemplates"]
    assert {m["name"]: m["mountPath"] for m in c["volumeMounts"]}[claim["metadata"]["name"]] == (
        args[args.index("--dir") + 1]
    )
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(c)
    assert spec["template"]["spec"]["securityContext"]["runAsUser"] != 0


# ----------------------------------------------------------------------- selectors


@pytest.mark.parametrize("name", ["base", "standalone"])
def test_selectors_match_pod_labels(name: str) -> None:
    docs = render(name)
    for workload in workloads(docs):
        assert matches(workload["spec"]["selector"], pod_labels(workload)), name_of(workload)
    # No two workloads share pods: each workload's selector picks only its own pods.
    for workload in workloads(docs):
        assert selected(docs, workload["spec"]["selector"]) == [workload], name_of(workload)

    for service in objects(docs, "Service"):
        targets = selected(docs, {"matchLabels": service["spec"]["selector"]})
        assert len(targets) == 1, f"{name_of(service)} selects {len(targets)} workloads"
        ports = {p["name"]: p["containerPort"] for c in containers(targets[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), f"{name_of(service)}: {target}"

    for pdb in objects(docs, "PodDisruptionBudget"):
        assert selected(docs, pdb["spec"]["selector"]) == [service_deployment(docs)]
        spec = pdb["spec"]
        assert spec.get("minAvailable") == 1 or spec.get("maxUnavailable") == 1

    for policy in objects(docs, "NetworkPolicy"):
        assert selected(docs, policy["spec"]["podSelector"]), f"{name_of(policy)} selects no pod"

    for ingress in objects(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = one(docs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
                assert any(
                    r == path["path"] or r.startswith(path["path"] + "/") for r in route_paths()
                ), f"ingress path {path['path']} reaches no route of the service"


def test_network_policies_admit_what_the_service_needs() -> None:
    docs = render("base")
    controller = one(docs, "Deployment", "driftline-controller")
    redis = one(docs, "StatefulSet", "driftline-redis")
    service = service_deployment(docs)

    policy = one(docs, "NetworkPolicy", "driftline")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] in (["http"], [8080])
    peers = rule["from"]
    # The namespace (a bare podSelector), the controller, and Prometheus.
    assert {"podSelector": {}} in peers
    pod_peers = [p["podSelector"] for p in peers if p.get("podSelector")]
    assert any(matches(s, pod_labels(controller)) for s in pod_peers)
    assert any(matches(s, {"app.kubernetes.io/name": "prometheus"}) for s in pod_peers)

    egress = policy["spec"]["egress"]
    to_redis = [
        rule
        for rule in egress
        for peer in rule.get("to", [])
        if "podSelector" in peer and matches(peer["podSelector"], pod_labels(redis))
    ]
    assert to_redis and to_redis[0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert any({"port": 53, "protocol": "UDP"} in r.get("ports", []) for r in egress), "DNS"
    https = [r for r in egress if {"port": 443, "protocol": "TCP"} in r.get("ports", [])]
    assert https and any("ipBlock" in t for t in https[0]["to"]), "alert webhooks over HTTPS"

    redis_policy = one(docs, "NetworkPolicy", "driftline-redis")
    # Redis calls no one: Egress is enforced, with no rule admitting anything.
    assert "Egress" in redis_policy["spec"]["policyTypes"]
    assert not redis_policy["spec"].get("egress")
    (redis_rule,) = redis_policy["spec"]["ingress"]
    (peer,) = redis_rule["from"]
    assert matches(peer["podSelector"], pod_labels(service))
    assert not matches(peer["podSelector"], pod_labels(controller))


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_no_two_hpas_target_the_same_deployment(name: str) -> None:
    docs = render(name)
    targets = Counter(
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
        for h in objects(docs, "HorizontalPodAutoscaler")
    )
    assert all(n == 1 for n in targets.values()), f"{name}: {targets}"


def test_standalone_has_one_hpa_on_the_service_deployment() -> None:
    docs = render("standalone")
    (hpa,) = objects(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert one(docs, "Deployment", ref["name"]) is service_deployment(docs)
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The standalone variant reuses the base's pieces, without the operator's.
    assert not objects(docs, "CustomResourceDefinition")
    assert not [d for d in docs if "controller" in d["metadata"]["name"]]
    base = {name_of(d): d for d in render("base")}
    for doc in docs:
        if name_of(doc) in base and doc["kind"] != "HorizontalPodAutoscaler":
            assert doc == base[name_of(doc)], f"{name_of(doc)} differs from the base's"


# ----------------------------------------------------------------------- standalone monitor


def _standalone_monitor_files() -> dict[str, str]:
    docs = render("standalone")
    monitors = one(docs, "ConfigMap", "driftline-monitors")
    files: dict[str, str] = monitors["data"]
    assert files, "the standalone monitor ConfigMap holds no config"
    return files


def test_standalone_monitor_config_decodes_with_the_service_code(tmp_path: Path) -> None:
    defaults = MonitorDefaults()
    expected = load_baseline(
        ROOT / "examples" / "baseline_data.json", kinds={}, bins=defaults.bins, top_k=defaults.top_k
    )
    for filename, text in _standalone_monitor_files().items():
        assert filename.endswith((".yaml", ".yml", ".json"))
        config = decode_monitor_config(msgspec.yaml.decode(text.encode()), filename)
        # Inline: nothing outside the ConfigMap is needed (a path would not resolve).
        assert isinstance(config.baseline, BaselineProfile), "baseline must be inline"
        monitor = build_monitor(config, defaults, base_dir=tmp_path, source=filename)
        assert monitor.name == "credit-risk"
        assert monitor.profile.content_hash == expected.content_hash, (
            f"{filename}: the inline baseline differs from what `driftline baseline build "
            "examples/baseline_data.json` builds today; regenerate it"
        )


def test_standalone_monitors_load_in_the_service_registry(tmp_path: Path) -> None:
    for filename, text in _standalone_monitor_files().items():
        (tmp_path / filename).write_text(text)
    registry = MonitorRegistry(load_settings(environ={}, monitors_dir=str(tmp_path)))
    registry.load()
    assert registry.errors == {}
    assert [m.name for m in registry] == ["credit-risk"]
    assert registry.default_name == "credit-risk"


# ----------------------------------------------------------------------- operator


# The controller's permissions, cluster-wide: (apiGroup, resource) -> verbs.
CONTROLLER_RULES = {
    ("driftline.io", "driftmonitors"): {"get", "list", "watch", "patch", "update"},
    ("driftline.io", "driftmonitors/status"): {"get", "patch", "update"},
    ("driftline.io", "driftmonitors/finalizers"): {"update"},
    ("", "configmaps"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "secrets"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    },
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


def test_controller_rbac_is_least_privilege() -> None:
    docs = render("base")
    role = one(docs, "ClusterRole", "driftline-controller")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for (group, resource), verbs in granted.items():
        assert "*" not in (group, resource) and "*" not in verbs, (group, resource, verbs)
        assert not {"escalate", "bind", "impersonate"} & verbs
    assert granted == CONTROLLER_RULES
    # Names are not limited: the operator creates and patches each of a service's
    # monitors ConfigMaps (shards), in every namespace with DriftMonitors.
    (config_maps,) = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert "resourceNames" not in config_maps

    binding = one(docs, "ClusterRoleBinding", "driftline-controller")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "driftline-controller",
    }
    (subject,) = binding["subjects"]
    account = one(docs, "ServiceAccount", subject["name"])
    assert subject["kind"] == "ServiceAccount"
    assert subject["namespace"] == account["metadata"]["namespace"]
    controller = one(docs, "Deployment", "driftline-controller")
    pod = controller["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == subject["name"]
    assert controller["spec"]["replicas"] == 1
    (c,) = pod["containers"]
    assert c["command"] == ["driftline", "controller"]
    # Only the controller's account may talk to the API server.
    service_pod = service_deployment(docs)["spec"]["template"]["spec"]
    assert service_pod["serviceAccountName"] != subject["name"]
    assert service_pod["automountServiceAccountToken"] is False


def test_controller_runs_a_command_the_cli_accepts_with_settings_it_reads() -> None:
    docs = render("base")
    (c,) = one(docs, "Deployment", "driftline-controller")["spec"]["template"]["spec"]["containers"]
    # The `driftline` console script's own parser accepts the command line as written.
    args = cli_parser().parse_args([*c["command"][1:], *c.get("args", [])])
    assert args.command == "controller"
    probe = c["livenessProbe"]["httpGet"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}[probe["port"]]
    assert args.liveness_endpoint == f"http://0.0.0.0:{port}{probe['path']}"
    env = container_env(c, docs)
    unknown = sorted(set(env) - set(CONTROLLER_ENVIRONMENT))
    assert not unknown, f"variables the operator does not read: {unknown}"
    settings = load_controller_settings(environ=env)
    assert settings.namespaces == (), "the base operator watches every namespace"
    # Its token for the drift services comes from a mounted Secret.
    pod = one(docs, "Deployment", "driftline-controller")["spec"]["template"]["spec"]
    token = Path(settings.service_token_file or "")
    mount = {m["mountPath"]: m for m in c["volumeMounts"]}[str(token.parent)]
    volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
    assert volume["secret"]["secretName"] == "driftline-controller-token"


def test_the_ingress_publishes_ingest_and_read_routes_only() -> None:
    """No path of the Ingress reaches DELETE …/window or an acknowledgement."""
    docs = render("base")
    (ingress,) = objects(docs, "Ingress")
    published = {
        (p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]
    }
    assert all(kind == "Exact" for _, kind in published), published
    reachable = {r.path: r for r in ROUTES if (r.path, "Exact") in published}
    assert {r.access for r in reachable.values()} == {"ingest", "read"}
    assert {"/monitor/predict", "/monitor/batch", "/monitor/drift"} <= reachable.keys()


def test_service_runs_a_command_the_cli_accepts() -> None:
    (c,) = service_deployment(render("base"))["spec"]["template"]["spec"]["containers"]
    args = cli_parser().parse_args([*c["command"][1:], *c.get("args", [])])
    assert args.command == "serve"


# ----------------------------------------------------------------------- examples


def test_examples_are_a_driftmonitor_with_its_secrets_and_baseline() -> None:
    docs = render("examples")
    monitors = objects(docs, "DriftMonitor")
    assert monitors, "the examples hold no DriftMonitor"
    names = {name_of(d) for d in docs}
    for monitor in monitors:
        assert monitor["apiVersion"] == "driftline.io/v1alpha1"
        refs = 0
        for path, value in walk(monitor["spec"]):
            if not isinstance(value, dict) or set(value) != {"name", "key"}:
                continue
            parent = path.rsplit(".", 1)[-1].lower()
            kind = "Secret" if "secret" in parent else "ConfigMap" if "configmap" in parent else ""
            assert kind, f"{path}: a key reference to neither a Secret nor a ConfigMap"
            target = one(docs, kind, value["name"])
            data = target.get("data", {}) | target.get("stringData", {})
            assert value["key"] in data, f"{path}: {kind}/{value['name']} has no {value['key']}"
            refs += 1
        assert refs, f"{name_of(monitor)} references no Secret or ConfigMap"
    assert any(n.startswith("Secret/") for n in names)
    assert any(n.startswith("ConfigMap/") for n in names)


def test_example_driftmonitor_targets_the_base_service_and_parses_in_the_operator() -> None:
    (monitor,) = objects(render("examples"), "DriftMonitor")
    spec = parse_spec(monitor["spec"])  # the operator's own decoding
    base = render("base")
    # The operator renders `<service>-monitors[-NNN]` / `<service>-alerts` and sizes the HPA of
    # Deployment `<service>`: the names the base service mounts and the HPA must target.
    deployment = one(base, "Deployment", spec.service)
    assert deployment is service_deployment(base)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    sources = [s["configMap"]["name"] for s in volumes["monitors"]["projected"]["sources"]]
    assert sources == shard_names(spec.service, ControllerSettings().monitor_shards)
    assert volumes["alerts"]["secret"]["secretName"] == f"{spec.service}-alerts"
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert spec.window_seconds % spec.bucket_seconds == 0
    assert spec.thresholds.critical > spec.thresholds.warning
    assert spec.traffic.peak >= spec.traffic.expected_events_per_second > 0


def test_example_baseline_is_the_profile_of_the_example_training_data(tmp_path: Path) -> None:
    docs = render("examples")
    (monitor,) = objects(docs, "DriftMonitor")
    ref = monitor["spec"]["baseline"]["configMapKeyRef"]
    path = tmp_path / ref["key"]
    path.write_text(one(docs, "ConfigMap", ref["name"])["data"][ref["key"]])
    defaults = MonitorDefaults()
    profile = load_baseline(path, kinds={}, bins=defaults.bins, top_k=defaults.top_k)
    expected = load_baseline(
        ROOT / "examples" / "baseline_data.json", kinds={}, bins=defaults.bins, top_k=defaults.top_k
    )
    assert profile.content_hash == expected.content_hash, (
        "manifests/examples/baselines/credit-risk.json differs from what `driftline baseline "
        "build examples/baseline_data.json` builds today; regenerate it"
    )
    # The monitor's feature overrides name features of that baseline.
    for feature in monitor["spec"].get("features", []):
        assert feature["name"] in profile.features


def test_example_renders_through_the_operator_into_what_the_base_service_loads(
    tmp_path: Path,
) -> None:
    """The operator's own rendering of the example: a config the base service loads and
    the one HPA of the base Deployment, valid for Kubernetes 1.28."""
    examples, base = render("examples"), render("base")
    (monitor,) = objects(examples, "DriftMonitor")
    spec = parse_spec(monitor["spec"])
    ref = monitor["spec"]["baseline"]["configMapKeyRef"]
    baseline = tmp_path / ref["key"]
    baseline.write_text(one(examples, "ConfigMap", ref["name"])["data"][ref["key"]])
    profile = load_baseline(baseline, kinds={}, bins=spec.baseline.bins, top_k=spec.baseline.top_k)
    config = encode_monitor_config(
        render_monitor_config(monitor["metadata"]["name"], spec, profile)
    )
    monitors_dir = tmp_path / "monitors"
    monitors_dir.mkdir()
    (monitors_dir / monitor_key(monitor["metadata"]["name"])).write_bytes(config)
    registry = MonitorRegistry(load_settings(environ={}, monitors_dir=str(monitors_dir)))
    registry.load()
    assert registry.errors == {}
    assert [m.name for m in registry] == ["credit-risk"]

    (controller,) = one(base, "Deployment", "driftline-controller")["spec"]["template"]["spec"][
        "containers"
    ]
    settings = load_controller_settings(environ=container_env(controller, base))
    namespace = monitor["metadata"]["namespace"]
    serving = list(service_traffic(monitor).values())
    hpa = render_autoscaler(namespace, spec.service, serving, settings)
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    target = hpa["spec"]["scaleTargetRef"]
    assert one(base, target["kind"], target["name"]) is service_deployment(base)
    assert hpa["metadata"]["namespace"] == service_deployment(base)["metadata"]["namespace"]
    # The operator's HPA is the only one on the Deployment: the base ships none.
    assert not objects(base, "HorizontalPodAutoscaler")
    assert not objects(examples, "HorizontalPodAutoscaler")


# ----------------------------------------------------------------------- monitoring


def _exported_metric_names() -> set[str]:
    names: set[str] = set()
    for name, collector in Telemetry().registry.collectors.items():
        names.add(name)
        if isinstance(collector, Histogram):
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(driftline_[a-z_]+)\b", expr))


def test_alert_rules_and_dashboard_use_real_metrics() -> None:
    docs = render("monitoring")
    exported = _exported_metric_names()
    (rules,) = objects(docs, "PrometheusRule")
    used: set[str] = set()
    alerts = []
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            assert rule["expr"].strip()
            used |= _metric_names(rule["expr"])
            alerts.append(rule["alert"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"]
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    assert used <= exported, f"rules use metrics the service does not export: {used - exported}"
    required = {
        "driftline_monitor_severity",
        "driftline_drift_detected",
        "driftline_window_events",
        "driftline_store_errors_total",
        "driftline_request_duration_seconds_bucket",
        "driftline_lost_events_total",
    }
    assert required <= used, f"no rule on {required - used}"

    (dashboard_map,) = [
        d for d in objects(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard_map["data"].values()
    dashboard = json.loads(text)
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert exprs
    panel_metrics = set().union(*(_metric_names(e) for e in exprs))
    assert panel_metrics <= exported, f"unknown metrics: {panel_metrics - exported}"
    assert {"driftline_monitor_severity", "driftline_feature_drift_score"} <= panel_metrics


def test_alert_rules_and_dashboard_agree_with_the_severity_gauge() -> None:
    # The values driftline_monitor_severity exports (driftline.core.severity) are what
    # the rules compare with and what the dashboard names.
    docs = render("monitoring")
    (rules,) = objects(docs, "PrometheusRule")
    by_name = {r["alert"]: r for g in rules["spec"]["groups"] for r in g["rules"]}
    warning = by_name["DriftlineDriftWarning"]["expr"]
    critical = by_name["DriftlineDriftCritical"]["expr"]
    assert warning.endswith(f"(driftline_monitor_severity) == {SEVERITY_GAUGE['warning']:g}")
    assert critical.endswith(f"(driftline_monitor_severity) >= {SEVERITY_GAUGE['critical']:g}")
    assert SEVERITY_GAUGE["none"] < SEVERITY_GAUGE["notice"] < SEVERITY_GAUGE["warning"]
    (dashboard_map,) = [
        d for d in objects(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")
    ]
    dashboard = json.loads(next(iter(dashboard_map["data"].values())))
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Monitor severity"]
    mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {float(value): m["text"] for value, m in mapping.items()} == {
        value: name for name, value in SEVERITY_GAUGE.items()
    }


def test_service_monitor_scrapes_the_service() -> None:
    (monitor,) = objects(render("monitoring"), "ServiceMonitor")
    base = render("base")
    services = [
        s
        for s in objects(base, "Service")
        if matches(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == ["driftline"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/monitor/metrics"
        assert endpoint["path"] in route_paths()


# KServe's v1beta1 field names (pkg/apis/serving/v1beta1: LoggerSpec, ModelSpec).
KSERVE_LOGGER_FIELDS = {"url", "mode", "metadataHeaders", "metadataAnnotations"}
KSERVE_LOGGER_MODES = {"all", "request", "response"}


def test_kserve_example_logs_to_the_cloudevents_route(tmp_path: Path) -> None:
    docs = render("kserve")
    service = one(docs, "InferenceService", "credit-risk")
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(service["spec"]) == {"predictor"}
    predictor = service["spec"]["predictor"]
    assert set(predictor["model"]) <= {"modelFormat", "protocolVersion", "storageUri", "runtime"}
    assert predictor["model"]["protocolVersion"] in {"v1", "v2"}
    logger = predictor["logger"]
    assert set(logger) <= KSERVE_LOGGER_FIELDS and logger["mode"] in KSERVE_LOGGER_MODES
    # mode all: the prediction needs the response, the features the request.
    assert logger["mode"] == "all"
    url = re.fullmatch(
        r"http://(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc:(?P<port>\d+)"
        r"/v1/monitors/(?P<monitor>[a-z0-9-]+)/cloudevents",
        logger["url"],
    )
    assert url is not None, logger["url"]
    assert any(r.path == "/v1/monitors/{name}/cloudevents" for r in ROUTES)
    # The URL names the affinity Service of this kustomization, in its namespace, whose
    # selector and port reach the service pods of the base.
    target = one(docs, "Service", url["svc"])
    assert url["ns"] == NAMESPACE and target["spec"]["sessionAffinity"] == "ClientIP"
    assert int(url["port"]) == target["spec"]["ports"][0]["port"]
    (deployment,) = [d for d in workloads(render("base")) if d["metadata"]["name"] == "driftline"]
    assert matches({"matchLabels": target["spec"]["selector"]}, pod_labels(deployment))
    # The DriftMonitor it posts to: named in the URL, parsed by the operator, rendered into
    # a config the service loads with the prediction and the tensor mapping.
    monitor = one(docs, "DriftMonitor", url["monitor"])
    spec = parse_spec(monitor["spec"])
    baseline = one(docs, "ConfigMap", spec.baseline.config_map_key_ref.name)  # type: ignore[union-attr]
    # A copy of the example profile (with the model's scores), kept identical.
    assert (
        baseline["data"]["profile.json"]
        == (ROOT / "examples" / "credit-risk-profile.json").read_text()
    )
    profile = msgspec.json.decode(baseline["data"]["profile.json"], type=BaselineProfile)
    config = render_monitor_config(url["monitor"], spec, profile)
    loaded = build_monitor(
        decode_monitor_config(json.loads(encode_monitor_config(config)), "kserve"),
        MonitorDefaults(),
        base_dir=tmp_path,
        source="kserve",
    )
    assert loaded.prediction is not None and loaded.prediction.kind == "score"
    assert loaded.inference.output == "default_probability"
    assert loaded.inference.inputs["numeric"][0] == "age"
