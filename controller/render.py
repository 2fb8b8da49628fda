"""What a DriftMonitor becomes: the service's monitor config, its alert receivers, the autoscaler.

Plain functions of plain data. Inputs that are missing (a ConfigMap, a Secret, a key)
raise MissingInputError: they may appear later. Inputs that exist but cannot work (bad
training rows, a spec the service refuses) raise InvalidInputError with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from driftline.core.monitor import MonitorConfigError, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.prediction import PredictionSpec as CorePredictionSpec
from driftline.core.profile import (
    BaselineError,
    BaselineProfile,
    FeatureKind,
    decode_profile,
    profile_from_bytes,
)
from driftline.core.receivers import ReceiverFile

from .kube import KeyedObject
from .settings import ControllerSettings
from .spec import DEFAULT_SERVICE, KeyRef, MonitorSpec, TrafficSpec

MANAGED_LABELS = {
    "app.kubernetes.io/managed-by": "driftline-controller",
    "app.kubernetes.io/part-of": "driftline",
}
# A ConfigMap (all its keys together) holds at most 1 MiB.
CONFIG_MAP_LIMIT = 1024 * 1024
# Ratios are rounded to this many decimals before ceil, so 0.1 + 0.2 events/s over a
# capacity of 0.3 is one replica, not two.
RATIO_DECIMALS = 9


class MissingInputError(Exception):
    """A referenced ConfigMap, Secret or key does not exist (yet)."""


class InvalidInputError(Exception):
    """The spec or what it references cannot make a working monitor."""


def alerts_secret_name(service: str) -> str:
    """The Secret the service mounts as its alerts directory."""
    return f"{service}-alerts"


def monitor_key(monitor: str) -> str:
    """The key of one DriftMonitor in its service's monitors ConfigMaps and alerts Secret."""
    return f"{monitor}.json"


# ------------------------------------------------------------------------- baseline


def resolve_baseline(spec: MonitorSpec, config_map: KeyedObject | None) -> BaselineProfile:
    """The monitor's baseline profile: inline, or from its ConfigMap key."""
    baseline = spec.baseline
    kinds: dict[str, FeatureKind] = {f.name: f.type for f in spec.features if f.type}
    if baseline.profile is not None:
        try:
            return decode_profile(baseline.profile, "spec.baseline.profile")
        except BaselineError as exc:
            raise InvalidInputError(str(exc)) from exc
    ref = baseline.config_map_key_ref
    if ref is None:
        raise InvalidInputError("spec.baseline: needs configMapKeyRef or profile")
    if config_map is None:
        raise MissingInputError(f"baseline ConfigMap {ref.name!r} not found")
    if ref.key not in config_map.values:
        raise MissingInputError(f"baseline ConfigMap {ref.name!r} has no key {ref.key!r}")
    prediction = prediction_config(spec)
    try:
        return profile_from_bytes(
            config_map.values[ref.key],
            f"ConfigMap {ref.name} key {ref.key}",
            csv_format=ref.key.lower().endswith(".csv"),
            kinds=kinds,
            bins=baseline.bins,
            top_k=baseline.top_k,
            prediction=msgspec.convert(prediction, CorePredictionSpec) if prediction else None,
        )
    except (BaselineError, msgspec.ValidationError) as exc:
        raise InvalidInputError(f"baseline: {exc}") from exc


def prediction_config(spec: MonitorSpec) -> dict[str, Any] | None:
    """The monitor config's `prediction` (driftline.core.prediction.PredictionSpec), if any."""
    declared = spec.prediction
    if declared is None:
        return None
    config: dict[str, Any] = {"kind": declared.kind}
    if declared.classes:
        config["classes"] = list(declared.classes)
    if declared.columns:
        config["column"] = list(declared.columns)
    return config


# --------------------------------------------------------------------- monitor config


def render_monitor_config(name: str, spec: MonitorSpec, profile: BaselineProfile) -> dict[str, Any]:
    """The service's monitor config (driftline.core.monitor.MonitorConfig), profile inline."""
    features: dict[str, dict[str, Any]] = {}
    for feature in spec.features:
        overrides = {
            key: value
            for key, value in (
                ("type", feature.type),
                ("test", feature.test),
                ("warning_threshold", feature.warning_threshold),
                ("critical_threshold", feature.critical_threshold),
                ("notice_threshold", feature.notice_threshold),
            )
            if value is not None
        }
        features[feature.name] = overrides
    config: dict[str, Any] = {
        "name": name,
        "model": spec.model,
        "baseline": msgspec.to_builtins(profile),
        "features": features,
        "warning_threshold": spec.thresholds.warning,
        "critical_threshold": spec.thresholds.critical,
        "alpha": spec.alpha,
        "bonferroni": spec.bonferroni,
        "min_samples": spec.min_samples,
        "min_drifted_features": spec.min_drifted_features,
        "window_seconds": spec.window_seconds,
        "bucket_seconds": spec.bucket_seconds,
        "bins": spec.baseline.bins,
        "top_k": spec.baseline.top_k,
    }
    config["reference"] = {
        key: value
        for key, value in msgspec.structs.asdict(spec.reference).items()
        if value is not None
    }
    if spec.window_events is not None:
        config["window_events"] = spec.window_events
    if spec.model_versions:
        config["model_versions"] = list(spec.model_versions)
    if spec.segments is not None:
        config["segments"] = {
            key: value
            for key, value in msgspec.structs.asdict(spec.segments).items()
            if value is not None
        }
    prediction = prediction_config(spec)
    if prediction is not None:
        config["prediction"] = prediction
    if spec.inference is not None:
        config["inference"] = msgspec.to_builtins(spec.inference)
    if spec.labels is not None:
        config["labels"] = msgspec.structs.asdict(spec.labels)
    optional = {
        "alert_hold_seconds": spec.alert_hold_seconds,
        "alert_cooldown_seconds": spec.alert_cooldown_seconds,
        "notice_threshold": spec.thresholds.notice,
        "test": spec.test,
        "multiple_testing": spec.multiple_testing,
    }
    config.update({key: value for key, value in optional.items() if value is not None})
    rules = {
        "missing": spec.quality.missing,
        "range": spec.quality.range,
        "new_categories": spec.quality.new_categories,
    }
    quality = {rule: msgspec.to_builtins(levels) for rule, levels in rules.items() if levels}
    if quality:
        config["quality"] = quality
    return config


def encode_monitor_config(config: Mapping[str, Any]) -> bytes:
    """Check a rendered config with the service's own decoder and builder, then encode it.

    A config the service would refuse raises InvalidInputError with the service's message,
    so the DriftMonitor says why instead of the service logging it.
    """
    origin = f"DriftMonitor {config.get('name')}"
    try:
        monitor_config = decode_monitor_config(config, origin)
        # The baseline is inline: base_dir is never read.
        build_monitor(monitor_config, MonitorDefaults(), base_dir=Path("."), source=origin)
    except MonitorConfigError as exc:
        raise InvalidInputError(str(exc)) from exc
    data = msgspec.json.encode(config)
    if len(data) > CONFIG_MAP_LIMIT:
        raise InvalidInputError(
            f"the rendered monitor config is {len(data)} bytes, more than a ConfigMap holds "
            f"({CONFIG_MAP_LIMIT}): lower spec.baseline.topK or monitor fewer features"
        )
    return data


# ------------------------------------------------------------------------------ alerts


def alert_secret_names(spec: MonitorSpec) -> list[str]:
    """Every Secret the monitor's alerts read, once each, in order."""
    names: dict[str, None] = {}
    for alert in spec.alerts:
        names[alert.url_secret_ref.name] = None
        if alert.signing_secret_ref is not None:
            names[alert.signing_secret_ref.name] = None
    return list(names)


def _secret_value(
    ref: KeyRef,
    secrets: Mapping[str, KeyedObject | None],
    what: str,
    missing: list[str],
    invalid: list[str],
) -> str | None:
    secret = secrets.get(ref.name)
    if secret is None:
        missing.append(f"Secret {ref.name!r} ({what}) not found")
        return None
    if ref.key not in secret.values:
        missing.append(f"Secret {ref.name!r} has no key {ref.key!r} ({what})")
        return None
    try:
        # `kubectl create secret --from-file` keeps a file's final newline: drop it.
        return secret.values[ref.key].decode().strip()
    except UnicodeDecodeError:
        invalid.append(f"Secret {ref.name!r} key {ref.key!r} ({what}): not UTF-8")
        return None


def render_alerts(spec: MonitorSpec, secrets: Mapping[str, KeyedObject | None]) -> dict[str, Any]:
    """The monitor's alerts file for the service: receivers with URLs and keys resolved.

    Messages name Secrets and keys, never their values: URLs and keys are secrets.
    """
    missing: list[str] = []
    invalid: list[str] = []
    receivers: list[dict[str, Any]] = []
    for alert in spec.alerts:
        receiver: dict[str, Any] = {"name": alert.name, "type": alert.type}
        url = _secret_value(
            alert.url_secret_ref, secrets, f"URL of alert {alert.name!r}", missing, invalid
        )
        if url is not None and not url.startswith(("http://", "https://")):
            invalid.append(
                f"Secret {alert.url_secret_ref.name!r} key {alert.url_secret_ref.key!r} "
                f"(URL of alert {alert.name!r}): must start with http:// or https://"
            )
        receiver["url"] = url
        if alert.signing_secret_ref is not None:
            receiver["signing_secret"] = _secret_value(
                alert.signing_secret_ref,
                secrets,
                f"signing key of alert {alert.name!r}",
                missing,
                invalid,
            )
        receiver["min_severity"] = alert.min_severity
        receivers.append(receiver)
    if invalid:
        raise InvalidInputError("; ".join(invalid))
    if missing:
        raise MissingInputError("; ".join(missing))
    document = {"receivers": receivers}
    try:
        msgspec.convert(document, ReceiverFile)
    except msgspec.ValidationError as exc:
        # msgspec names the field path and the rule, not the offending value.
        raise InvalidInputError(f"alerts: {exc}") from exc
    return document


# -------------------------------------------------------------------------- autoscaler


@dataclass(frozen=True, slots=True)
class AutoscalerSize:
    """Replica bounds of a service's HPA and the traffic they were derived from."""

    min_replicas: int
    max_replicas: int
    expected_events_per_second: float
    peak_events_per_second: float


def _replicas_for(rate: float, capacity: float) -> int:
    return math.ceil(round(rate / capacity, RATIO_DECIMALS))


def size_autoscaler(traffic: Iterable[TrafficSpec], settings: ControllerSettings) -> AutoscalerSize:
    """Replica bounds from the summed expected and peak rates over the per-replica capacity.

    minReplicas = clamp(ceil(Σ expected / capacity)); maxReplicas = clamp(max(minReplicas,
    ceil(Σ peak / capacity))); clamp keeps both within the settings' floor and cap.
    """
    expected = peak = 0.0
    for item in traffic:
        expected += item.expected_events_per_second
        peak += item.peak

    def clamp(replicas: int) -> int:
        return min(max(replicas, settings.min_replicas), settings.max_replicas)

    low = clamp(_replicas_for(expected, settings.replica_capacity))
    high = clamp(max(low, _replicas_for(peak, settings.replica_capacity)))
    return AutoscalerSize(low, high, expected, peak)


@dataclass(frozen=True, slots=True)
class ServiceMonitor:
    """A DriftMonitor as the autoscaler of its service sees it."""

    name: str
    traffic: TrafficSpec
    # Its status says its current generation could not be rendered (see recorded_invalid).
    recorded_invalid: bool = False


# ConfigRendered reasons of a monitor that cannot run: it neither serves nor counts.
INVALID_REASONS = frozenset({"InvalidSpec", "InvalidConfig", "NoRoom"})


def recorded_invalid(monitor: Mapping[str, Any]) -> bool:
    """Whether the monitor's status says its current generation cannot be rendered."""
    generation = monitor.get("metadata", {}).get("generation")
    for condition in monitor.get("status", {}).get("conditions", []):
        if isinstance(condition, Mapping) and condition.get("type") == "ConfigRendered":
            return (
                condition.get("status") == "False"
                and condition.get("reason") in INVALID_REASONS
                and condition.get("observedGeneration") == generation
            )
    return False


def service_traffic(monitor: Mapping[str, Any]) -> dict[tuple[str, str], ServiceMonitor]:
    """Index entry of a DriftMonitor (raw object): (namespace, service) -> its traffic.

    None while it is being deleted: its traffic leaves the autoscaler's sums.
    """
    metadata = monitor.get("metadata", {})
    if metadata.get("deletionTimestamp"):
        return {}
    spec = monitor.get("spec", {})
    try:
        traffic = msgspec.convert(spec.get("traffic", {}), TrafficSpec)
    except msgspec.ValidationError:
        traffic = TrafficSpec()  # the CRD schema refuses this; count no traffic
    key = (metadata.get("namespace", ""), spec.get("service", DEFAULT_SERVICE))
    return {key: ServiceMonitor(metadata.get("name", ""), traffic, recorded_invalid(monitor))}


def serving_monitors(
    entries: Iterable[ServiceMonitor], rendered: Mapping[str, bool]
) -> list[ServiceMonitor]:
    """The monitors a service runs, by name: those whose config rendered.

    `rendered` is what this operator process decided; a monitor it has not handled yet
    is judged by its status.
    """
    found = {m.name: m for m in entries if rendered.get(m.name, not m.recorded_invalid)}
    return [found[name] for name in sorted(found)]


def _rate(value: float) -> str:
    return f"{value:g}"


def render_autoscaler(
    namespace: str,
    service: str,
    monitors: Sequence[ServiceMonitor],
    settings: ControllerSettings,
) -> dict[str, Any]:
    """The service's one HorizontalPodAutoscaler (autoscaling/v2), sized for its monitors."""
    size = size_autoscaler((m.traffic for m in monitors), settings)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": service,
            "namespace": namespace,
            "labels": dict(MANAGED_LABELS),
            "annotations": {
                "driftline.io/monitors": ",".join(m.name for m in monitors),
                "driftline.io/expected-events-per-second": _rate(size.expected_events_per_second),
                "driftline.io/peak-events-per-second": _rate(size.peak_events_per_second),
                "driftline.io/replica-capacity": _rate(settings.replica_capacity),
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
            "minReplicas": size.min_replicas,
            "maxReplicas": size.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": settings.cpu_utilization,
                        },
                    },
                }
            ],
            # As manifests/standalone: at most one pod a minute, after 5 min of lower
            # load, so bursty traffic does not make the service flap.
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }
