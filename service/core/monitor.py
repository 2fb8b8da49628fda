"""Monitors: a config file's policy and baseline turned into a laid-out window.

A monitor config names a baseline (a path to raw rows or a saved profile, or an inline
profile) and the policy knobs; anything it leaves out comes from the service defaults.
Building a monitor resolves the policy, loads the baseline and lays out its window
(driftline.core.layout). Alert receivers are not part of a monitor: the registry keeps
them beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args

import msgspec
import msgspec.yaml

from driftline.core.inference import DIRECT, InferenceSpec
from driftline.core.inference import spec_problem as inference_problem
from driftline.core.layout import Layout, layout_id
from driftline.core.limits import ModelVersion
from driftline.core.performance import PerformanceSlots, baseline_problem
from driftline.core.plan import Plan
from driftline.core.policy import (
    MAX_KEPT_BUCKETS,
    NUMERIC_ONLY_TESTS,
    SHARED_SCALE_TESTS,
    TEST_THRESHOLDS,
    TESTS,
    Alpha,
    Bins,
    LabelsPolicy,
    MinSamples,
    MonitorDefaults,
    MultipleTesting,
    Policy,
    QualityPolicy,
    QualityThresholds,
    ReferenceConfig,
    ReferenceKind,
    TestName,
    Thresholds,
    TopK,
    multiple_testing_method,
)
from driftline.core.prediction import (
    Decoder,
    PredictionKind,
    PredictionSpec,
    is_prediction_column,
    output_name,
    spec_problem,
)
from driftline.core.profile import (
    BaselineError,
    BaselineProfile,
    CategoricalProfile,
    FeatureKind,
    NumericProfile,
    load_baseline,
    validate_profile,
)
from driftline.core.reference import WindowChoice
from driftline.core.scopes import (
    Scope,
    Scopes,
    SegmentsConfig,
    scopes_problem,
    top_segments,
    without_feature,
)
from driftline.core.window import WindowSpec

MONITOR_NAME = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


Threshold = Annotated[float, msgspec.Meta(gt=0)]


class FeatureConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-feature overrides: the type when building bins, the test, and own thresholds.

    Thresholds are on the scale of the feature's test; unset ones come from the monitor
    (psi and chisquare share its scale) or from the test's own defaults.
    """

    type: FeatureKind | None = None
    test: TestName | None = None
    warning_threshold: Threshold | None = None
    critical_threshold: Threshold | None = None
    notice_threshold: Threshold | None = None


class QualityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A monitor's data-quality thresholds; unset rules take the service defaults."""

    missing: QualityThresholds | None = None
    range: QualityThresholds | None = None
    new_categories: QualityThresholds | None = None


class LabelsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A monitor's delayed labels (docs/labels.md); unset fields take the defaults."""

    horizon_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] | None = None
    sample_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    threshold: float | None = None
    accuracy_drop: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    auc_drop: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    mae_increase: Annotated[float, msgspec.Meta(gt=0)] | None = None


class MonitorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One monitor as written in a config file; unset fields take the service defaults."""

    name: Annotated[str, msgspec.Meta(pattern=MONITOR_NAME)]
    baseline: str | BaselineProfile
    model: str = ""
    features: dict[str, FeatureConfig] = {}
    test: TestName | None = None
    warning_threshold: Threshold | None = None
    critical_threshold: Threshold | None = None
    notice_threshold: Threshold | None = None
    alpha: Alpha | None = None
    multiple_testing: MultipleTesting | None = None
    bonferroni: bool | None = None  # alias of multiple_testing: bonferroni
    min_samples: MinSamples | None = None
    min_drifted_features: Annotated[int, msgspec.Meta(gt=0)] | None = None
    window_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    window_events: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bucket_seconds: Annotated[int, msgspec.Meta(gt=0)] | None = None
    bins: Bins | None = None
    top_k: TopK | None = None
    alert_hold_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    alert_cooldown_seconds: Annotated[float, msgspec.Meta(ge=0)] | None = None
    quality: QualityConfig = QualityConfig()
    # Versions with a window of their own and their own model_version label (the others
    # are pooled in the monitor's window, and their labels rotate); docs/versions.md.
    model_versions: list[ModelVersion] = []
    # A categorical feature whose top values get a window of their own (docs/versions.md).
    segments: SegmentsConfig | None = None
    # The model's output, watched as the prediction's reserved columns (docs/predictions.md).
    prediction: PredictionSpec | None = None
    # How the model server's payloads map to features and prediction (docs/model-servers.md).
    inference: InferenceSpec | None = None
    # Delayed labels joined to predictions by event id (docs/labels.md).
    labels: LabelsConfig | None = None
    # What the window is compared with (docs/metrics.md, "Reference and window choices").
    reference: ReferenceConfig | None = None


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
    window: WindowSpec  # what the store keeps: the window and its reference's span
    source: str
    plan: Plan  # the policy's arrays over the layout, for every verdict
    choice: WindowChoice  # the window it judges and its reference
    # The window vector's blocks: the layout's, then one per declared version and segment.
    scopes: Scopes
    model_versions: tuple[str, ...] = ()
    prediction: PredictionSpec | None = None
    decoder: Decoder | None = None  # the prediction's, built once
    inference: InferenceSpec = DIRECT
    labels: LabelsPolicy | None = None  # takes delayed labels (layout.performance)
    # How a segment's window is judged: as the monitor, without the segment feature.
    segment_monitor: Monitor | None = None

    def judged_as(self, scope: Scope | None) -> Monitor:
        """The monitor that judges a scope's window (the whole window's for None)."""
        if scope is not None and scope.kind == "segment":
            assert self.segment_monitor is not None
            return self.segment_monitor
        return self


# What a field of named choices allows (msgspec's message names only the value refused).
CHOICES: dict[str, tuple[str, ...]] = {
    "test": TESTS,
    "multiple_testing": get_args(MultipleTesting),
    "type": get_args(FeatureKind),
    "kind": get_args(PredictionKind),
    "reference.kind": get_args(ReferenceKind),
}


def _validation_message(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.min_samples`": lead with the path.
    message = str(exc)
    if " - at `$." in message:
        text, _, path = message.rpartition(" - at `$.")
        path = path.rstrip("`")
        message = f"{path}: {text[0].lower()}{text[1:]}"
        choices = CHOICES.get(path) or CHOICES.get(path.rpartition(".")[2])
        if choices and text.startswith("Invalid enum value"):
            message += f"; allowed: {', '.join(choices)}"
    return message


def _thresholds(
    source: str, prefix: str, warning: float, critical: float, notice: float | None, scale: float
) -> Thresholds:
    """Thresholds as configured; an unset notice is the scale's, or the warning if lower."""
    if not math.isfinite(critical):
        raise MonitorConfigError(
            f"{source}: {prefix}critical_threshold: expected a finite number, got {critical}"
        )
    if critical <= warning:
        raise MonitorConfigError(
            f"{source}: {prefix}critical_threshold: must be greater than warning_threshold "
            f"({warning}), got {critical}"
        )
    if notice is not None and notice > warning:
        raise MonitorConfigError(
            f"{source}: {prefix}notice_threshold: must not exceed warning_threshold "
            f"({warning}), got {notice}"
        )
    return Thresholds(warning, critical, min(scale, warning) if notice is None else notice)


def _feature_tests(
    source: str, config: MonitorConfig, profile: BaselineProfile, monitor_test: TestName | None
) -> dict[str, TestName]:
    """Every feature's test: its own, else the monitor's where it applies, else its kind's."""
    tests: dict[str, TestName] = {}
    for name, feature in profile.features.items():
        numeric = isinstance(feature, NumericProfile)
        own = config.features[name].test if name in config.features else None
        if own in NUMERIC_ONLY_TESTS and not numeric:
            raise MonitorConfigError(
                f"{source}: features.{name}.test: {own} needs a numeric feature; a "
                "categorical one can use psi, jensenshannon, hellinger or chisquare"
            )
        if own is not None:
            tests[name] = own
        elif monitor_test is not None and (numeric or monitor_test not in NUMERIC_ONLY_TESTS):
            tests[name] = monitor_test
        else:
            tests[name] = "psi" if numeric else "chisquare"
    return tests


def _feature_thresholds(
    source: str, config: MonitorConfig, tests: dict[str, TestName], base: Thresholds
) -> dict[str, Thresholds]:
    """Thresholds of the features that do not use the monitor's: own ones, or their test's."""
    found: dict[str, Thresholds] = {}
    for name, test in tests.items():
        scale = base if test in SHARED_SCALE_TESTS else TEST_THRESHOLDS[test]
        feature = config.features.get(name, FeatureConfig())
        own = (feature.warning_threshold, feature.critical_threshold, feature.notice_threshold)
        if own == (None, None, None):
            if scale is not base:
                found[name] = scale
            continue
        warning = scale.warning if feature.warning_threshold is None else feature.warning_threshold
        found[name] = _thresholds(
            source,
            f"features.{name}.",
            warning,
            scale.critical if feature.critical_threshold is None else feature.critical_threshold,
            feature.notice_threshold,
            scale.notice,
        )
    return found


def _quality(config: QualityConfig, defaults: QualityPolicy) -> QualityPolicy:
    return QualityPolicy(
        missing=config.missing or defaults.missing,
        range=config.range or defaults.range,
        new_categories=config.new_categories or defaults.new_categories,
    )


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
    problem = spec_problem(config.prediction) if config.prediction is not None else None
    if problem is not None:
        raise MonitorConfigError(f"{source}: prediction.{problem}")
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
                prediction=config.prediction,
            )
        except BaselineError as exc:
            raise MonitorConfigError(f"{source}: baseline: {exc}") from exc
    profile = _with_prediction(profile, config.prediction, source)
    unknown = sorted(set(config.features) - set(profile.features))
    if unknown:
        raise MonitorConfigError(
            f"{source}: features.{unknown[0]}: not a feature of the baseline "
            f"(has {', '.join(profile.features)})"
        )
    if config.inference is not None:
        named = [n for n in profile.features if not is_prediction_column(n)]
        problem = inference_problem(config.inference, named)
        if problem is not None:
            raise MonitorConfigError(f"{source}: inference.{problem}")
    for name, kind in kinds.items():
        expected = NumericProfile if kind == "numeric" else CategoricalProfile
        if not isinstance(profile.features[name], expected):
            raise MonitorConfigError(
                f"{source}: features.{name}.type: the baseline profile has it as "
                f"{'categorical' if kind == 'numeric' else 'numeric'}, not {kind}"
            )
    base = _thresholds(
        source,
        "",
        warning,
        critical,
        config.notice_threshold,
        defaults.notice_threshold,
    )
    tests = _feature_tests(source, config, profile, pick(config.test, defaults.test))
    min_drifted = pick(config.min_drifted_features, defaults.min_drifted_features)
    if min_drifted > len(profile.features):
        # Such a monitor could never call drift: refuse it rather than watch in silence.
        raise MonitorConfigError(
            f"{source}: min_drifted_features: {min_drifted} is more than the baseline's "
            f"{len(profile.features)} features; at most {len(profile.features)} is allowed"
        )
    try:
        method = multiple_testing_method(config.multiple_testing, config.bonferroni)
    except ValueError as exc:
        raise MonitorConfigError(f"{source}: {exc}") from None
    policy = Policy(
        thresholds=base,
        feature_thresholds=_feature_thresholds(source, config, tests, base),
        alpha=pick(config.alpha, defaults.alpha),
        multiple_testing=method
        or multiple_testing_method(defaults.multiple_testing, defaults.bonferroni)
        or "none",
        min_samples=pick(config.min_samples, defaults.min_samples),
        min_drifted_features=min_drifted,
        alert_hold_seconds=pick(config.alert_hold_seconds, defaults.alert_hold_seconds),
        alert_cooldown_seconds=pick(config.alert_cooldown_seconds, defaults.alert_cooldown_seconds),
        tests=tests,
        quality=_quality(config.quality, defaults.quality),
    )
    labels = _labels(source, config, defaults.labels)
    if labels is not None and config.prediction is not None:
        problem = baseline_problem(config.prediction, labels, profile)
        if problem is not None:
            raise MonitorConfigError(f"{source}: {problem}")
    layout = Layout.of(
        profile,
        None
        if labels is None or config.prediction is None
        else functools.partial(PerformanceSlots.of, config.prediction, labels, profile),
    )
    choice = _window_choice(
        source,
        config.reference or defaults.reference,
        window_seconds,
        bucket_seconds,
        pick(config.window_events, defaults.window_events),
        policy.min_samples,
    )
    versions = tuple(dict.fromkeys(config.model_versions))
    problem = scopes_problem(layout, versions, config.segments)
    if problem is not None:
        raise MonitorConfigError(f"{source}: {problem}")
    scopes = _scopes(layout, versions, config.segments)
    window = WindowSpec(
        monitor=config.name,
        layout_id=layout_id(
            profile, bucket_seconds, layout, scopes.signature if scopes.blocks > 1 else None
        ),
        width=scopes.width,
        window_seconds=choice.kept_seconds,
        bucket_seconds=bucket_seconds,
    )
    monitor = Monitor(
        name=config.name,
        model=config.model,
        profile=profile,
        policy=policy,
        layout=layout,
        window=window,
        source=source,
        plan=Plan.of(layout, policy),
        model_versions=versions,
        prediction=config.prediction,
        decoder=Decoder(config.prediction) if config.prediction is not None else None,
        inference=config.inference or DIRECT,
        labels=labels,
        choice=choice,
        scopes=scopes,
    )
    if scopes.segment_feature is None:
        return monitor
    return dataclasses.replace(monitor, segment_monitor=_segment_monitor(monitor, scopes))


def _scopes(layout: Layout, versions: tuple[str, ...], segments: SegmentsConfig | None) -> Scopes:
    """The monitor's window blocks (the layout's alone when it declares none)."""
    if segments is None:
        return Scopes(layout.width, versions)
    feature = layout.features[segments.by]
    values = tuple(dict.fromkeys(segments.values or top_segments(feature, segments.top)))
    # A BinnedBatch holds the numeric matrix, then one array per categorical feature.
    categorical = [name for name, f in layout.features.items() if f.index is not None]
    return Scopes(layout.width, versions, feature, values, 1 + categorical.index(segments.by))


def _segment_monitor(monitor: Monitor, scopes: Scopes) -> Monitor:
    """The monitor judging a segment's window: it cannot drift on the feature that makes it."""
    assert scopes.segment_feature is not None
    layout = without_feature(monitor.layout, scopes.segment_feature.name)
    policy = dataclasses.replace(
        monitor.policy,
        min_drifted_features=min(monitor.policy.min_drifted_features, max(len(layout.features), 1)),
    )
    return dataclasses.replace(
        monitor, layout=layout, policy=policy, plan=Plan.of(layout, policy), segment_monitor=None
    )


def _window_choice(
    source: str,
    reference: ReferenceConfig,
    window_seconds: int,
    bucket_seconds: int,
    window_events: int | None,
    min_samples: int,
) -> WindowChoice:
    """The window and reference a config asks for; the span they keep within the cap."""
    if window_events is not None and window_events < min_samples:
        raise MonitorConfigError(
            f"{source}: window_events: must be at least min_samples ({min_samples}), "
            f"got {window_events}"
        )
    if window_events is not None and reference.kind != "baseline":
        raise MonitorConfigError(
            f"{source}: window_events: a window of events is compared with the baseline; "
            f"reference.kind {reference.kind} needs a window of time (unset window_events)"
        )
    period = reference.period_seconds
    if reference.kind == "period":
        if period is None:
            raise MonitorConfigError(
                f"{source}: reference.period_seconds: required with kind period "
                "(e.g. 86400 for a day, 604800 for a week)"
            )
        if period % bucket_seconds or period < window_seconds:
            raise MonitorConfigError(
                f"{source}: reference.period_seconds: must be a whole number of buckets "
                f"({bucket_seconds} s) and at least window_seconds ({window_seconds}), "
                f"got {period}"
            )
        offset = period
    elif period is not None:
        raise MonitorConfigError(
            f"{source}: reference.period_seconds: only kind period takes one; "
            f"kind is {reference.kind}"
        )
    else:
        offset = window_seconds if reference.kind == "previous_window" else 0
    choice = WindowChoice(window_seconds, reference.kind, offset, window_events)
    kept = choice.kept_seconds // bucket_seconds
    if kept > MAX_KEPT_BUCKETS:
        field = "reference.period_seconds" if reference.kind == "period" else "window_seconds"
        raise MonitorConfigError(
            f"{source}: {field}: the window and its reference keep {kept} buckets of "
            f"{bucket_seconds} s; at most {MAX_KEPT_BUCKETS} are allowed (use longer "
            "buckets or a shorter span)"
        )
    return choice


def _labels(source: str, config: MonitorConfig, defaults: LabelsPolicy) -> LabelsPolicy | None:
    """The monitor's labels policy (None without `labels`): its own fields over the defaults."""
    if config.labels is None:
        return None
    if config.prediction is None:
        raise MonitorConfigError(
            f"{source}: labels: a label is joined to a prediction; declare `prediction` "
            "(kind, classes) to take labels"
        )
    own = {k: v for k, v in msgspec.structs.asdict(config.labels).items() if v is not None}
    labels = msgspec.structs.replace(defaults, **own)
    if not math.isfinite(labels.threshold):
        raise MonitorConfigError(
            f"{source}: labels.threshold: expected a finite number, got {labels.threshold}"
        )
    return labels


def _with_prediction(
    profile: BaselineProfile, spec: PredictionSpec | None, source: str
) -> BaselineProfile:
    """The profile whose prediction columns match the declaration.

    Without a declaration its prediction columns are dropped: the monitor watches the
    features only, as one without a prediction always has.
    """
    present = {name: f for name, f in profile.features.items() if is_prediction_column(name)}
    if spec is None:
        if not present:
            return profile
        features = {n: f for n, f in profile.features.items() if n not in present}
        return msgspec.structs.replace(profile, features=features)
    hint = (
        f"declares a {spec.kind} prediction: build the baseline with it, e.g. `driftline "
        f"baseline build DATA --prediction COLUMN --prediction-kind {spec.kind}`"
    )
    wanted = dict(spec.outputs)
    if set(present) != set(wanted):
        has = ", ".join(output_name(n) for n in present) or "no prediction"
        message = f"the baseline has {has}; the monitor {hint}"
        raise MonitorConfigError(f"{source}: prediction: {message}")
    for name, kind in wanted.items():
        found = present[name]
        if isinstance(found, CategoricalProfile) != (kind == "categorical"):
            raise MonitorConfigError(
                f"{source}: prediction: the baseline's {output_name(name)} is not {kind}; "
                f"the monitor {hint}"
            )
        if isinstance(found, CategoricalProfile):
            strange = sorted(set(found.categories) - set(spec.classes))
            if strange:
                raise MonitorConfigError(
                    f"{source}: prediction.classes: the baseline predicts {strange[0]!r}, "
                    f"which is not declared; declared: {', '.join(spec.classes)}"
                )
    return profile
