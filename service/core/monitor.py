"""Monitors: a config file's policy and baseline turned into a laid-out window.

A monitor config names a baseline (a path to raw rows or a saved profile, or an inline
profile) and the policy knobs; anything it leaves out comes from the service defaults.
Building a monitor resolves the policy, loads the baseline and lays out its window
(driftline.core.layout). Alert receivers are not part of a monitor: the registry keeps
them beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import msgspec.yaml

from driftline.core.layout import Layout, layout_id
from driftline.core.limits import ModelVersion
from driftline.core.policy import Alpha, Bins, MonitorDefaults, Policy, Thresholds, TopK
from driftline.core.profile import (
    BaselineError,
    BaselineProfile,
    CategoricalProfile,
    FeatureKind,
    NumericProfile,
    load_baseline,
    validate_profile,
)
from driftline.core.window import WindowSpec

MONITOR_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


class FeatureConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-feature overrides: the type when building bins, and own thresholds."""

    type: FeatureKind | None = None
    warning_threshold: Annotated[float, msgspec.Meta(gt=0)] | None = None
    critical_threshold: Annotated[float, msgspec.Meta(gt=0)] | None = None


class MonitorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One monitor as written in a config file; unset fields take the service defaults."""

    name: Annotated[str, msgspec.Meta(pattern=MONITOR_NAME)]
    baseline: str | BaselineProfile
    model: str = ""
    features: dict[str, FeatureConfig] = {}
    warning_threshold: Annotated[float, msgspec.Meta(gt=0)] | None = None
    critical_threshold: Annotated[float, msgspec.Meta(gt=0)] | None = None
    alpha: Alpha | None = None
    bonferroni: bool | None = None
    min_samples: Annotated[int, msgspec.Meta(gt=0)] | None = None
    min_drifted_features: Annotated[int, msgspec.Meta(gt=0)] | None = None
    window_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bucket_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bins: Bins | None = None
    top_k: TopK | None = None
    alert_hold_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    alert_cooldown_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Versions that always keep their own model_version label (the others rotate).
    model_versions: Annotated[list[ModelVersion], msgspec.Meta(max_length=100)] = []


class MonitorConfigError(ValueError):
    """A monitor config that cannot work; the message names the field."""


@dataclass(frozen=True, slots=True)
class Monitor:
    """A loaded monitor: its baseline, policy, layout and window."""

    name: str
    model: str
    profile: BaselineProfile
    policy: Policy
    layout: Layout
    window: WindowSpec
    source: str
    model_versions: tuple[str, ...] = ()


def _validation_message(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.min_samples`": lead with the path.
    message = str(exc)
    if " - at `$." in message:
        text, _, path = message.rpartition(" - at `$.")
        return f"{path.rstrip('`')}: {text[0].lower()}{text[1:]}"
    return message


def _thresholds(source: str, prefix: str, warning: float, critical: float) -> Thresholds:
    if not math.isfinite(critical):
        raise MonitorConfigError(
            f"{source}: {prefix}critical_threshold: expected a finite number, got {critical}"
        )
    if critical <= warning:
        raise MonitorConfigError(
            f"{source}: {prefix}critical_threshold: must be greater than warning_threshold "
            f"({warning}), got {critical}"
        )
    return Thresholds(warning=warning, critical=critical)


def decode_monitor_config(data: Any, origin: str) -> MonitorConfig:
    """Validate a decoded config document, naming the bad field."""
    try:
        return msgspec.convert(data, MonitorConfig)
    except msgspec.ValidationError as exc:
        raise MonitorConfigError(f"{origin}: {_validation_message(exc)}") from exc


def read_monitor_config(path: Path, source: str) -> MonitorConfig:
    """Read and validate a config file (`.json`, else YAML), naming the bad field."""
    try:
        raw = path.read_bytes()
        data = msgspec.json.decode(raw) if path.suffix == ".json" else msgspec.yaml.decode(raw)
    except OSError as exc:
        raise MonitorConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    except msgspec.DecodeError as exc:
        raise MonitorConfigError(f"{source}: not valid {path.suffix[1:]}: {exc}") from exc
    return decode_monitor_config(data, source)


def build_monitor(
    config: MonitorConfig, defaults: MonitorDefaults, *, base_dir: Path, source: str
) -> Monitor:
    """Resolve a config against the defaults, load its baseline and lay out its window."""

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    warning = pick(config.warning_threshold, defaults.warning_threshold)
    critical = pick(config.critical_threshold, defaults.critical_threshold)
    window_seconds = pick(config.window_seconds, defaults.window_seconds)
    bucket_seconds = pick(config.bucket_seconds, defaults.bucket_seconds)
    if window_seconds % bucket_seconds:
        raise MonitorConfigError(
            f"{source}: window_seconds: must be a whole number of buckets "
            f"({bucket_seconds} s), got {window_seconds}"
        )
    kinds = {name: f.type for name, f in config.features.items() if f.type is not None}
    if isinstance(config.baseline, BaselineProfile):
        try:
            profile = validate_profile(config.baseline, "baseline")
        except BaselineError as exc:
            raise MonitorConfigError(f"{source}: {exc}") from exc
    else:
        path = Path(config.baseline)
        if not path.is_absolute():
            path = base_dir / path
        try:
            profile = load_baseline(
                path,
                kinds=kinds,
                bins=pick(config.bins, defaults.bins),
                top_k=pick(config.top_k, defaults.top_k),
            )
        except BaselineError as exc:
            raise MonitorConfigError(f"{source}: baseline: {exc}") from exc
    unknown = sorted(set(config.features) - set(profile.features))
    if unknown:
        raise MonitorConfigError(
            f"{source}: features.{unknown[0]}: not a feature of the baseline "
            f"(has {', '.join(profile.features)})"
        )
    for name, kind in kinds.items():
        expected = NumericProfile if kind == "numeric" else CategoricalProfile
        if not isinstance(profile.features[name], expected):
            raise MonitorConfigError(
                f"{source}: features.{name}.type: the baseline profile has it as "
                f"{'categorical' if kind == 'numeric' else 'numeric'}, not {kind}"
            )
    base = _thresholds(source, "", warning, critical)
    feature_thresholds: dict[str, Thresholds] = {}
    for name, feature in config.features.items():
        if feature.warning_threshold is None and feature.critical_threshold is None:
            continue
        feature_thresholds[name] = _thresholds(
            source,
            f"features.{name}.",
            pick(feature.warning_threshold, warning),
            pick(feature.critical_threshold, critical),
        )
    min_drifted = pick(config.min_drifted_features, defaults.min_drifted_features)
    if min_drifted > len(profile.features):
        # Such a monitor could never call drift: refuse it rather than watch in silence.
        raise MonitorConfigError(
            f"{source}: min_drifted_features: {min_drifted} is more than the baseline's "
            f"{len(profile.features)} features; at most {len(profile.features)} is allowed"
        )
    policy = Policy(
        thresholds=base,
        feature_thresholds=feature_thresholds,
        alpha=pick(config.alpha, defaults.alpha),
        bonferroni=pick(config.bonferroni, defaults.bonferroni),
        min_samples=pick(config.min_samples, defaults.min_samples),
        min_drifted_features=min_drifted,
        alert_hold_seconds=pick(config.alert_hold_seconds, defaults.alert_hold_seconds),
        alert_cooldown_seconds=pick(config.alert_cooldown_seconds, defaults.alert_cooldown_seconds),
    )
    layout = Layout.of(profile)
    window = WindowSpec(
        monitor=config.name,
        layout_id=layout_id(profile, bucket_seconds),
        width=layout.width,
        window_seconds=window_seconds,
        bucket_seconds=bucket_seconds,
    )
    return Monitor(
        name=config.name,
        model=config.model,
        profile=profile,
        policy=policy,
        layout=layout,
        window=window,
        source=source,
        model_versions=tuple(dict.fromkeys(config.model_versions)),
    )
