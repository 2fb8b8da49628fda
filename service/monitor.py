"""Monitors: a config file's policy and baseline turned into a window layout.

A monitor config names a baseline (a path to raw rows or a saved profile, or an inline
profile) and the policy knobs; anything it leaves out comes from the service defaults.
The layout maps every (feature, bin) and the per-feature extras to a slot of the flat
count vector the window store keeps.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.drift import Thresholds
from driftline.profile import (
    BaselineError,
    BaselineProfile,
    CategoricalProfile,
    FeatureKind,
    NumericProfile,
    load_baseline,
    validate_profile,
)
from driftline.receivers import Receiver
from driftline.settings import MonitorDefaults
from driftline.window import WindowSpec

MONITOR_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
LAYOUT_VERSION = 1


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
    alpha: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    bonferroni: bool | None = None
    min_samples: Annotated[int, msgspec.Meta(gt=0)] | None = None
    min_drifted_features: Annotated[int, msgspec.Meta(gt=0)] | None = None
    window_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bucket_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bins: Annotated[int, msgspec.Meta(ge=2, le=100)] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    alert_cooldown_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None


class MonitorConfigError(ValueError):
    """A monitor config that cannot work; the message names the field."""


@dataclass(frozen=True, slots=True)
class Policy:
    """When a monitor calls its window drifted."""

    thresholds: Thresholds
    feature_thresholds: Mapping[str, Thresholds]
    alpha: float
    bonferroni: bool
    min_samples: int
    min_drifted_features: int
    alert_cooldown_seconds: float = 0.0

    def thresholds_for(self, feature: str) -> Thresholds:
        """The feature's own thresholds, else the monitor's."""
        return self.feature_thresholds.get(feature, self.thresholds)


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where one feature's counts sit in the window vector."""

    name: str
    profile: NumericProfile | CategoricalProfile
    first_bin: int
    missing: int
    # numeric only (-1 otherwise): values outside the baseline's [min, max], and the sum and
    # sum of squares of the standardised value in fixed point (see MOMENT_SCALE).
    out_of_range: int = -1
    sum: int = -1
    sum_squares: int = -1
    index: Mapping[str, int] | None = None  # categorical: category -> slot
    # Fixed by the baseline: computed once here, not in every report.
    bin_labels: tuple[str, ...] = ()
    baseline_proportions: tuple[float, ...] = ()
    baseline_counts: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def other(self) -> int:
        """Categorical: the slot of categories not kept from training."""
        return self.first_bin + self.profile.bins - 1

    @property
    def kind(self) -> FeatureKind:
        """`numeric` or `categorical`."""
        return "numeric" if isinstance(self.profile, NumericProfile) else "categorical"


EVENTS_SLOT = 0

MOMENT_SCALE = 2.0**20
"""Numeric moments are kept in fixed point, so every slot of a window is an integer.

A value adds round(z * MOMENT_SCALE) to its feature's `sum` slot and round(z^2 *
MOMENT_SCALE) to `sum_squares`, with z = (x - baseline mean) / baseline std. Integers
let the Redis window use fixed-width counters (constant memory, exact sums in any
order); 2^-20 of a standard deviation is far below what a report shows.
"""

MOMENT_CLIP = 2.0**10
"""|z| is clipped at 1024 standard deviations, so one event adds at most 2^40 to
`sum_squares` and 2^23 such events still fit a signed 64-bit counter. Values that far
out are also counted in `out_of_range`."""


def moment_unit(profile: NumericProfile) -> float:
    """The baseline standard deviation moments are measured in (1 for a constant)."""
    return profile.std if profile.std > 0 else 1.0


def _bin_labels(feature: NumericProfile | CategoricalProfile) -> tuple[str, ...]:
    """How a report names each bin: `[lo, hi)` intervals, or the categories and `other`."""
    if not isinstance(feature, NumericProfile):
        return (*feature.categories, "other")
    edges = ["-inf", *(f"{c:.6g}" for c in feature.cuts), "inf"]
    return tuple(f"[{lo}, {hi})" for lo, hi in itertools.pairwise(edges))


@dataclass(frozen=True, slots=True)
class NumericMatrix:
    """Every numeric feature as arrays, so binning and verdicts take one numpy pass.

    Entry i of every array belongs to feature `names[i]`. `index` row i holds its bins'
    slots in the window vector, padded with `width` (a zero appended to the vector);
    `baseline` its counts, padded with zeros: padding adds nothing to PSI or the
    degrees of freedom.
    """

    names: tuple[str, ...]
    index: npt.NDArray[np.intp]
    baseline: npt.NDArray[np.float64]
    cuts: tuple[npt.NDArray[np.float64], ...]
    first_bin: npt.NDArray[np.intp]
    missing: npt.NDArray[np.intp]
    out_of_range: npt.NDArray[np.intp]
    sum: npt.NDArray[np.intp]
    sum_squares: npt.NDArray[np.intp]
    mean: npt.NDArray[np.float64]
    unit: npt.NDArray[np.float64]  # see moment_unit
    low: npt.NDArray[np.float64]  # baseline min
    high: npt.NDArray[np.float64]  # baseline max

    @classmethod
    def of(cls, features: Mapping[str, FeatureSlots], width: int) -> NumericMatrix:
        """The arrays of the numeric features among `features`, in their order."""
        numeric = [
            (f, f.profile) for f in features.values() if isinstance(f.profile, NumericProfile)
        ]
        bins = max((p.bins for _, p in numeric), default=0)
        index = np.full((len(numeric), bins), width, dtype=np.intp)
        baseline = np.zeros((len(numeric), bins), dtype=np.float64)
        for row, (feature, profile) in enumerate(numeric):
            index[row, : profile.bins] = np.arange(
                feature.first_bin, feature.first_bin + profile.bins
            )
            baseline[row, : profile.bins] = profile.counts

        def ints(values: list[int]) -> npt.NDArray[np.intp]:
            return np.array(values, dtype=np.intp)

        def floats(values: list[float]) -> npt.NDArray[np.float64]:
            return np.array(values, dtype=np.float64)

        return cls(
            names=tuple(f.name for f, _ in numeric),
            index=index,
            baseline=baseline,
            cuts=tuple(floats(p.cuts) for _, p in numeric),
            first_bin=ints([f.first_bin for f, _ in numeric]),
            missing=ints([f.missing for f, _ in numeric]),
            out_of_range=ints([f.out_of_range for f, _ in numeric]),
            sum=ints([f.sum for f, _ in numeric]),
            sum_squares=ints([f.sum_squares for f, _ in numeric]),
            mean=floats([p.mean for _, p in numeric]),
            unit=floats([moment_unit(p) for _, p in numeric]),
            low=floats([p.min for _, p in numeric]),
            high=floats([p.max for _, p in numeric]),
        )


@dataclass(frozen=True, slots=True)
class Layout:
    """The flat vector a monitor's window keeps: slot 0 counts events."""

    features: Mapping[str, FeatureSlots]
    width: int
    numeric: NumericMatrix

    @classmethod
    def of(cls, profile: BaselineProfile) -> Layout:
        """Assign slots to every feature of the profile in its (sorted) order."""
        slots: dict[str, FeatureSlots] = {}
        cursor = EVENTS_SLOT + 1
        for name, feature in profile.features.items():
            first = cursor
            cursor += feature.bins
            missing = cursor
            cursor += 1
            total = sum(feature.counts)
            labels = _bin_labels(feature)
            expected = tuple(c / total if total else 0.0 for c in feature.counts)
            if isinstance(feature, NumericProfile):
                slots[name] = FeatureSlots(
                    name,
                    feature,
                    first,
                    missing,
                    cursor,
                    cursor + 1,
                    cursor + 2,
                    bin_labels=labels,
                    baseline_proportions=expected,
                    baseline_counts=np.asarray(feature.counts, dtype=np.float64),
                )
                cursor += 3
            else:
                index = {category: first + i for i, category in enumerate(feature.categories)}
                slots[name] = FeatureSlots(
                    name,
                    feature,
                    first,
                    missing,
                    index=index,
                    bin_labels=labels,
                    baseline_proportions=expected,
                    baseline_counts=np.asarray(feature.counts, dtype=np.float64),
                )
        return cls(slots, cursor, NumericMatrix.of(slots, cursor))


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
    receivers: tuple[Receiver, ...] = ()  # from the alerts directory


def _layout_id(profile: BaselineProfile, bucket_seconds: int) -> str:
    key = f"{LAYOUT_VERSION}:{profile.content_hash}:{bucket_seconds}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


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
    policy = Policy(
        thresholds=base,
        feature_thresholds=feature_thresholds,
        alpha=pick(config.alpha, defaults.alpha),
        bonferroni=pick(config.bonferroni, defaults.bonferroni),
        min_samples=pick(config.min_samples, defaults.min_samples),
        min_drifted_features=pick(config.min_drifted_features, defaults.min_drifted_features),
        alert_cooldown_seconds=pick(config.alert_cooldown_seconds, defaults.alert_cooldown_seconds),
    )
    layout = Layout.of(profile)
    window = WindowSpec(
        monitor=config.name,
        layout_id=_layout_id(profile, bucket_seconds),
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
    )
