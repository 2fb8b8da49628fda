"""The drift report of one monitor's window: per-feature numbers and the monitor's verdict.

A report is a function of the window totals alone, so a replica computes it once per
flush and shares it among every request that flush answers.

Each feature is checked for distribution drift (its test, `distribution`) and for data
quality (`missing`, and `range` or `new_categories`); its severity is the worst of its
checks, and its reasons are the checks that have one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np

from driftline.core.drift import (
    IntVector,
    PoolingOrder,
    Vector,
    Verdict,
    adjust_pvalues,
    distribution_scores,
    feature_test,
    homogeneity,
    monitor_verdict,
    severity_levels,
)
from driftline.core.fixedpoint import MOMENT_SCALE
from driftline.core.layout import EVENTS_SLOT, FeatureSlots, moment_unit
from driftline.core.memo import LastResults
from driftline.core.monitor import Monitor
from driftline.core.performance import Performance, PerformanceCheck, performance
from driftline.core.plan import Levels
from driftline.core.policy import MIN_TEST_EVENTS, MultipleTesting, Policy, TestName
from driftline.core.prediction import is_prediction_column, output_name
from driftline.core.profile import NumericProfile
from driftline.core.quality import Mask, rate_increase_p, tail_excess, tail_p
from driftline.core.severity import LEVELS, Severity
from driftline.core.timestamps import isoformat
from driftline.core.window import BASELINE, ReferenceInfo, WindowTotals

Reason = Literal["distribution", "missing", "range", "new_categories"]
QualityReason = Literal["missing", "range", "new_categories"]
REASONS: tuple[Reason, ...] = ("distribution", "missing", "range", "new_categories")
MonitorReason = Literal[Reason, "prediction", "performance"]

CHECKS_PER_FEATURE = 3
"""Every feature answers three questions (its distribution, missing values, and range or
new categories), so each check is tested at alpha / 3 (its p-value times 3, Bonferroni):
a drift-free feature is then flagged in at most alpha of windows, whatever the reason.
The monitor's multiple-testing method adjusts across features on top."""


def adjusted_p(p_value: Vector, method: MultipleTesting) -> Vector:
    """A check's p-values adjusted within each feature (CHECKS_PER_FEATURE) and across them."""
    return adjust_pvalues(np.minimum(p_value * CHECKS_PER_FEATURE, 1.0), method)


class WindowInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """The window a report was computed on (`reference` shown unless the baseline)."""

    events: int
    start: str
    end: str
    ready: bool
    min_samples: int
    seconds: int
    # What the window was compared with: the baseline, or a rolling reference.
    reference: ReferenceInfo = BASELINE
    # A window of events: the newest buckets until they hold this many (within `seconds`).
    target_events: int | None = None


class QualityCheck(msgspec.Struct, frozen=True):
    """One data-quality rule on one feature: a rate against the baseline's own."""

    rate: float  # in the window
    baseline_rate: float
    change: float  # the effect compared with the rule's thresholds (a rise)
    p_value: float  # 1 where the change stays below the warning threshold
    p_adjusted: float  # within the feature's checks and across features (see adjusted_p)
    severity: Severity
    warning_threshold: float
    critical_threshold: float


class FeatureReport(msgspec.Struct, frozen=True):
    """One feature: effect size, significance, quality, and the distributions compared."""

    type: str
    severity: Severity  # worst of the checks
    reasons: list[Reason]  # checks with a severity, worst first
    test: TestName
    status: Literal["tested", "insufficient"]  # insufficient: < MIN_TEST_EVENTS values
    calibrated: bool  # false: a categorical feature of a profile without held-out counts
    drift_severity: Severity  # the distribution check alone
    score: float
    significant: bool  # p_adjusted < alpha
    psi: float
    kl: float
    js: float
    cohen_w: float | None
    statistic: float
    dof: int
    p_value: float
    p_adjusted: float
    window_count: int
    baseline_count: int
    missing_rate: float
    baseline_missing_rate: float
    notice_threshold: float
    warning_threshold: float
    critical_threshold: float
    bins: tuple[str, ...]
    baseline_proportions: tuple[float, ...]
    window_proportions: list[float]
    quality: dict[str, QualityCheck]
    baseline_limited: bool  # the window holds more values than the baseline (see docs)
    out_of_range_rate: float | None = None
    mean: float | None = None
    baseline_mean: float | None = None
    std: float | None = None
    baseline_std: float | None = None
    mean_shift_z: float | None = None


class PredictionSummary(msgspec.Struct, frozen=True):
    """The verdict on the model's prediction: its outputs' drift (docs/predictions.md).

    Outputs: `value` (regression), `score`, `class`, or `probability` and `class`.
    """

    kind: str
    severity: Severity  # worst of its outputs
    drifted: bool  # an output is flagged and the monitor calls drift
    score: float  # largest output score
    scores: dict[str, float]  # per output
    reasons: dict[str, list[Reason]]  # outputs with a severity: why, worst first


class PredictionReport(PredictionSummary, frozen=True):
    """The prediction's verdict with every output's detail, as a feature's."""

    classes: list[str]
    outputs: dict[str, FeatureReport]


class DriftSummary(msgspec.Struct, frozen=True):
    """A monitor's verdict on a window: the fields every answer states.

    The batch answers carry it as is; the full report and the predict answer extend it.
    The prediction's outputs count in the verdict as features do, but are named in
    `prediction` (null for a monitor that declares none), not among the features.
    """

    drift_detected: bool
    drift_score: float
    severity: Severity
    feature_scores: dict[str, float]
    drifted_features: list[str]  # flagged features, once the monitor calls drift
    window: WindowInfo
    feature_reasons: dict[str, list[Reason]]  # features with a severity: why, worst first
    prediction: PredictionSummary | None


class DriftReport(DriftSummary, frozen=True):
    """A monitor's verdict on its current window, with every feature's detail."""

    monitor: str
    model: str
    alpha: float
    multiple_testing: MultipleTesting
    features: dict[str, FeatureReport]
    evaluated_at: str
    prediction: PredictionReport | None
    # From delayed labels (docs/labels.md); null for a monitor that takes none.
    performance: Performance | None = None
    # Why the monitor has its severity: the features' reasons, prediction, performance.
    reasons: list[MonitorReason] = []
    # A declared model version's or segment's window (docs/versions.md); unset: every event's.
    model_version: str | None = None
    segment: str | None = None


def monitor_reasons(
    feature_reasons: Iterable[Iterable[str]], *, prediction: bool, performance: bool
) -> list[MonitorReason]:
    """Why, for the monitor as a whole: the features' reasons, `prediction`, `performance`.

    The features' in REASONS order; `prediction` when its outputs are flagged;
    `performance` when the model is worse than on its baseline.
    """
    found = {reason for reasons in feature_reasons for reason in reasons}
    reasons: list[MonitorReason] = [reason for reason in REASONS if reason in found]
    reasons += ["prediction"] if prediction else []
    reasons += ["performance"] if performance else []
    return reasons


def _proportions(counts: np.ndarray) -> list[float]:
    total = float(counts.sum())
    return [float(c) / total for c in counts] if total else [0.0] * len(counts)


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One check over the features it applies to (`features`, in layout order)."""

    features: tuple[str, ...]
    rate: Vector
    baseline_rate: Vector
    change: Vector
    p_value: Vector
    p_adjusted: Vector
    level: IntVector  # severity rank
    levels: Levels


class FeatureScore(msgspec.Struct, frozen=True):
    """What the verdict says of one feature.

    A Struct: a verdict makes one per feature, and a frozen dataclass's __init__ cost
    ~2 µs each.
    """

    score: float
    p_value: float
    p_adjusted: float
    statistic: float
    dof: int
    n: int  # non-missing window values
    drift: Severity  # the distribution check alone
    severity: Severity  # worst of its checks
    reasons: tuple[Reason, ...]  # checks with a severity, worst first


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A monitor's verdict on a window vector, without the report's detail."""

    features: dict[str, FeatureScore]  # in layout order
    quality: dict[QualityReason, RuleResult]
    verdict: Verdict  # its severity is the worst of the features' and the performance's
    events: int
    alpha: float
    performance: Performance | None = None  # from delayed labels, when the monitor takes them


# Evaluations kept per monitor with the counts they came from (driftline.core.memo).
_LAST: LastResults[Evaluation] = LastResults(2048)


def _rule(
    features: tuple[str, ...],
    rate: Vector,
    baseline_rate: Vector,
    change: Vector,
    p_value: Vector,
    levels: Levels,
    policy: Policy,
    critical_when: Mask | None = None,
) -> RuleResult:
    """A data-quality rule's verdict: adjusted p-values (one family per rule), levels.

    `critical_when`: features that are critical whatever the change, once significant.
    """
    if not (p_value < 1.0).any():  # the usual case: no rate rose far enough to be tested
        none = np.zeros(p_value.shape, dtype=np.intp)
        return RuleResult(features, rate, baseline_rate, change, p_value, p_value, none, levels)
    adjusted = adjusted_p(p_value, policy.multiple_testing)
    significant = adjusted < policy.alpha
    level = severity_levels(change, significant, levels.notice, levels.warning, levels.critical)
    if critical_when is not None:
        level = np.where(critical_when & significant, Severity.CRITICAL.rank, level)
    return RuleResult(features, rate, baseline_rate, change, p_value, adjusted, level, levels)


def evaluate(monitor: Monitor, vector: Vector, reference: Vector | None = None) -> Evaluation:
    """Score and test every feature, check its data quality, decide the monitor's severity.

    `reference`: a rolling reference window's counts, compared in place of the
    baseline's (the distribution tests and the missing rate; the baseline's profile
    keeps the bins, tails and categories). Cheap enough to run on every flush: the
    numeric and the categorical features each go through one numpy pass, and an exact
    data-quality p-value is computed only for a feature whose rate rose past the rule's
    warning threshold. Kept per monitor with the counts it came from: an idle window is
    judged again (the evaluation loop, a read) without being evaluated again.
    """
    inputs = (
        np.asarray(vector, dtype=np.float64).tobytes(),
        None if reference is None else np.asarray(reference, dtype=np.float64).tobytes(),
    )
    found = _LAST.get(monitor, inputs)
    if found is None:
        found = _evaluate(monitor, vector, reference)
        _LAST.put(monitor, inputs, found)
    return found


def _evaluate(monitor: Monitor, vector: Vector, reference: Vector | None) -> Evaluation:
    layout, policy, plan = monitor.layout, monitor.policy, monitor.plan
    events = round(float(vector[EVENTS_SLOT]))
    padded = np.append(vector, 0.0)
    size = len(plan.names)
    score, p_value, statistic = np.zeros(size), np.ones(size), np.zeros(size)
    dof, n = np.zeros(size, dtype=np.intp), np.zeros(size)
    numeric, categorical = layout.numeric, layout.categorical
    numeric_window = padded[numeric.index]
    categorical_window = padded[categorical.index]
    if reference is None:
        numeric_expected, categorical_expected = numeric.baseline, categorical.baseline
        pooled = categorical.stacked.pool(categorical_window)
    else:
        expected = np.append(reference, 0.0)
        numeric_expected = expected[numeric.index]
        categorical_expected = expected[categorical.index]
        pooled = _pooled(categorical.stacked.orders, categorical_window, categorical_expected)
    # One pass for every feature: the numeric bins and the categorical pools (the tests),
    # stacked with the categorical bins unpooled when chisquare scores them (Cohen's w).
    raw = bool(categorical.names) and "chisquare" in plan.categorical_groups
    expected_blocks = [numeric_expected, pooled[0]] + ([categorical_expected] if raw else [])
    window_blocks = [numeric_window, pooled[1]] + ([categorical_window] if raw else [])
    tests = homogeneity(_stacked(*expected_blocks), _stacked(*window_blocks))
    split, tested = len(numeric.names), len(numeric.names) + len(categorical.names)
    if numeric.names:
        found = distribution_scores(
            numeric_expected,
            numeric_window,
            plan.numeric_groups,
            positions=numeric.positions,
            scale=plan.scale,
            test=tests.select(slice(0, split)),
        )
        rows = plan.numeric_rows
        score[rows], p_value[rows], statistic[rows] = found.score, found.p_value, found.statistic
        dof[rows], n[rows] = found.dof, found.n
    if categorical.names:
        found = distribution_scores(
            categorical_expected,
            categorical_window,
            plan.categorical_groups,
            pooled=pooled,
            test=tests.select(slice(split, tested)),
            raw=tests.select(slice(tested, None)) if raw else None,
        )
        rows = plan.categorical_rows
        score[rows], p_value[rows], statistic[rows] = found.score, found.p_value, found.statistic
        dof[rows], n[rows] = found.dof, found.n
    adjusted = adjusted_p(p_value, policy.multiple_testing)
    drift = plan.drift
    drift_level = severity_levels(
        score, adjusted < policy.alpha, drift.notice, drift.warning, drift.critical
    )
    quality = _quality(monitor, vector, events, n, reference)
    stacked = np.zeros((len(REASONS), size), dtype=np.intp)  # (reason, feature), REASONS order
    stacked[0] = drift_level
    stacked[1] = quality["missing"].level
    stacked[2, plan.numeric_rows] = quality["range"].level
    stacked[3, plan.categorical_rows] = quality["new_categories"].level
    worst = stacked.max(axis=0).tolist()
    checks = stacked.T.tolist()  # per feature, its level of each reason
    columns = zip(
        plan.names,
        score.tolist(),
        p_value.tolist(),
        adjusted.tolist(),
        statistic.tolist(),
        dof.tolist(),
        n.tolist(),
        drift_level.tolist(),
        worst,
        strict=True,
    )
    features = {
        name: FeatureScore(
            score=s,
            p_value=p,
            p_adjusted=q,
            statistic=x2,
            dof=k,
            n=round(count),
            drift=LEVELS[d],
            severity=LEVELS[level],
            reasons=_reasons(tuple(checks[i])) if level else (),
        )
        for i, (name, s, p, q, x2, k, count, d, level) in enumerate(columns)
    }
    verdict = monitor_verdict(
        {name: f.severity for name, f in features.items()},
        {name: f.score for name, f in features.items()},
        events,
        min_samples=policy.min_samples,
        min_drifted_features=policy.min_drifted_features,
    )
    slots = layout.performance
    if slots is None:
        return Evaluation(features, quality, verdict, events, policy.alpha)
    # A degraded model raises the monitor's severity whatever its inputs do; drift
    # (drift_detected, flagged) stays about distributions.
    model = performance(slots, vector, alpha=policy.alpha, min_labels=policy.min_samples)
    if model.severity is not None and model.severity.rank > verdict.severity.rank:
        verdict = dataclasses.replace(verdict, severity=model.severity)
    return Evaluation(features, quality, verdict, events, policy.alpha, model)


@functools.cache
def _reasons(levels: tuple[int, ...]) -> tuple[Reason, ...]:
    """The checks with a severity, worst first (ties in REASONS order).

    `levels`: one per REASONS entry; its 4^4 combinations are kept.
    """
    ranked = sorted((-level, r) for r, level in enumerate(levels) if level)
    return tuple(REASONS[r] for _, r in ranked)


def _pooled(
    pooling: tuple[PoolingOrder, ...], window: Vector, reference: Vector
) -> tuple[Vector, Vector]:
    """Every categorical row and its rolling reference's pooled by its order, padded.

    Against the baseline, `CategoricalMatrix.stacked` pools every row at once.
    """
    rows = [order.pool(window[i], reference[i]) for i, order in enumerate(pooling)]
    width = max((b.size for b, _ in rows), default=0)
    pooled_b = np.zeros((len(rows), width))
    pooled_w = np.zeros((len(rows), width))
    for i, (b, w) in enumerate(rows):
        pooled_b[i, : b.size] = b
        pooled_w[i, : w.size] = w
    return pooled_b, pooled_w


def _stacked(*blocks: Vector) -> Vector:
    """Count matrices one above the other, the narrower padded with empty bins."""
    out = np.zeros((sum(b.shape[0] for b in blocks), max(b.shape[1] for b in blocks)))
    row = 0
    for block in blocks:
        out[row : row + block.shape[0], : block.shape[1]] = block
        row += block.shape[0]
    return out


def _rate_rule(
    features: tuple[str, ...],
    baseline: tuple[Vector, Vector, Vector],
    window: tuple[Vector, Vector],
    levels: Levels,
    policy: Policy,
    *,
    critical_when: Mask | None = None,
    only: Mask | None = None,
) -> RuleResult:
    """A rule on a rate: `baseline` is (count, rows, rate), `window` (count, rows).

    Fisher's exact p is computed where the rate rose past the warning threshold (or
    `critical_when` holds), among the features `only` allows.
    """
    count, rows = window
    rate = count / np.maximum(rows, 1.0)
    change = np.where(rows > 0, rate - baseline[2], 0.0)
    asked = change >= levels.warning
    if critical_when is not None:
        asked |= critical_when
    if only is not None:
        asked &= only
    p_value = rate_increase_p(baseline[0], baseline[1], count, rows, asked)
    return _rule(features, rate, baseline[2], change, p_value, levels, policy, critical_when)


def _quality(
    monitor: Monitor, vector: Vector, events: int, n: Vector, reference: Vector | None
) -> dict[QualityReason, RuleResult]:
    """The data-quality rules of every feature: missing, range and new categories.

    The missing rate is compared with a rolling reference's when there is one; the
    range and new-category rules measure against the baseline's tails and categories.
    """
    plan, layout, policy = monitor.plan, monitor.layout, monitor.policy
    numeric, categorical = layout.numeric, layout.categorical
    missing = vector[plan.missing_slots]
    rows = np.full(missing.shape, float(events))
    expected = (plan.baseline_missing, plan.baseline_rows, plan.baseline_missing_rate)
    if reference is not None:
        held = reference[plan.missing_slots]
        total = np.full(held.shape, float(reference[EVENTS_SLOT]))
        expected = (held, total, held / np.maximum(total, 1.0))
    missing_rule = _rate_rule(
        plan.names,
        expected,
        (missing, rows),
        plan.missing,
        policy,
        # A feature that lost every value is critical once that is significant.
        critical_when=(missing == rows) & (rows > 0),
        only=plan.missing_testable,
    )
    present = n[plan.numeric_rows]
    beyond = vector[numeric.out_of_range] if numeric.names else np.zeros(0)
    m, rank = plan.tail_baseline, numeric.tail_rank
    excess = tail_excess(beyond, present, m, rank)
    range_rule = _rule(
        numeric.names,
        beyond / np.maximum(present, 1.0),
        plan.tail_baseline_rate,
        excess,
        tail_p(beyond, present, m, rank, excess >= plan.range.warning),
        plan.range,
        policy,
    )
    other = vector[categorical.other] if categorical.names else np.zeros(0)
    new_rule = _rate_rule(
        categorical.names,
        (plan.other_baseline, plan.other_rows, plan.other_baseline_rate),
        (other, n[plan.categorical_rows]),
        plan.new_categories,
        policy,
        # Without a held-out split the `other` count comes from the rows that chose the
        # categories: no test of it holds its level, so the rule does not run.
        only=plan.other_testable,
    )
    return {"missing": missing_rule, "range": range_rule, "new_categories": new_rule}


def window_info(monitor: Monitor, evaluation: Evaluation, totals: WindowTotals) -> WindowInfo:
    """The window block of a report or a predict answer."""
    return WindowInfo(
        events=evaluation.events,
        start=isoformat(totals.start),
        end=isoformat(totals.now),
        ready=evaluation.verdict.ready,
        min_samples=monitor.policy.min_samples,
        seconds=monitor.choice.window_seconds,
        reference=totals.reference_info,
        target_events=monitor.choice.window_events,
    )


def shown(value: float, resolution: float) -> float:
    """`value` rounded to the decimals of `resolution` (what it is known to), for display."""
    if not math.isfinite(value) or resolution <= 0:
        return value
    return round(value, max(0, math.ceil(-math.log10(resolution))))


def _moments(slots: FeatureSlots, vector: Vector, n: int) -> dict[str, float | None]:
    """Mean, std and mean shift (in baseline SDs) from the fixed-point moment slots.

    The sums are kept in units of 2^-20 baseline SD: mean and std are shown rounded to
    that resolution, not with the digits of the fixed-point noise.
    """
    profile = slots.profile
    assert isinstance(profile, NumericProfile)
    unit = moment_unit(profile)
    mean = std = z = None
    if n:
        mean_z = float(vector[slots.sum]) / MOMENT_SCALE / n
        mean = shown(profile.mean + unit * mean_z, unit / MOMENT_SCALE)
        variance = max(float(vector[slots.sum_squares]) / MOMENT_SCALE / n - mean_z**2, 0.0)
        std = shown(unit * math.sqrt(variance * n / (n - 1)) if n > 1 else 0.0, unit / MOMENT_SCALE)
        z = mean_z if profile.std > 0 else None
    return {
        "out_of_range_rate": float(vector[slots.out_of_range]) / n if n else 0.0,
        "mean": mean,
        "baseline_mean": profile.mean,
        "std": std,
        "baseline_std": profile.std,
        "mean_shift_z": z,
    }


@dataclass(frozen=True, eq=False, slots=True)
class Assessment:
    """A monitor's verdict on its window at one moment.

    One is made per evaluation and shared by every request the flushes it covers answer,
    so whatever is derived from it (an encoded answer) can be computed once.
    """

    monitor: Monitor
    evaluation: Evaluation
    window: WindowInfo
    evaluated_at: str
    at: float  # evaluated_at in epoch seconds (the store's clock)

    @property
    def performance(self) -> Performance | None:
        """The performance from delayed labels (and its verdict), when the monitor takes them."""
        return self.evaluation.performance

    @property
    def drifted_features(self) -> list[str]:
        """Flagged features (not the prediction's outputs), once the monitor calls drift."""
        verdict = self.evaluation.verdict
        if not verdict.drift_detected:
            return []
        return [name for name in verdict.flagged if not is_prediction_column(name)]

    @property
    def feature_scores(self) -> dict[str, float]:
        """Effect size per feature, in layout order."""
        return {
            name: f.score
            for name, f in self.evaluation.features.items()
            if not is_prediction_column(name)
        }

    @property
    def feature_reasons(self) -> dict[str, list[Reason]]:
        """Features with a severity and why, worst reason first."""
        return {
            name: list(f.reasons)
            for name, f in self.evaluation.features.items()
            if f.reasons and not is_prediction_column(name)
        }

    def prediction_outputs(self) -> dict[str, FeatureScore]:
        """The prediction's outputs by name (`score`, `class`...); empty without a prediction."""
        return {
            output_name(name): f
            for name, f in self.evaluation.features.items()
            if is_prediction_column(name)
        }

    def flagged_features(self) -> list[str]:
        """The features behind the monitor's severity: flagged ones, a notice's noticed ones."""
        if self.evaluation.verdict.severity is Severity.NOTICE:
            return list(self.feature_reasons)
        return self.drifted_features

    def flagged_outputs(self) -> list[str]:
        """The prediction's outputs behind the monitor's severity, by the features' rule."""
        severity = self.evaluation.verdict.severity
        if severity is Severity.NONE:
            return []
        notice = severity is Severity.NOTICE
        return [
            name
            for name, output in self.prediction_outputs().items()
            if (output.reasons if notice else output.severity.rank >= Severity.WARNING.rank)
        ]

    def degraded(self) -> dict[str, PerformanceCheck]:
        """The performance checks with a severity (empty without labels or a baseline's)."""
        checks = self.performance.checks if self.performance is not None else None
        return {m: c for m, c in (checks or {}).items() if c.severity is not Severity.NONE}

    def reasons(self) -> list[MonitorReason]:
        """Why the monitor has its severity (see `monitor_reasons`)."""
        features = self.evaluation.features
        return monitor_reasons(
            (features[name].reasons for name in self.flagged_features()),
            prediction=bool(self.flagged_outputs()),
            performance=bool(self.degraded()),
        )

    def prediction(self) -> PredictionSummary | None:
        """The verdict on the prediction, if the monitor declares one."""
        spec = self.monitor.prediction
        if spec is None:
            return None
        return PredictionSummary(**_prediction_fields(self))

    def summary(self) -> DriftSummary:
        """The verdict as every answer states it (report, predict, batch)."""
        verdict = self.evaluation.verdict
        return DriftSummary(
            drift_detected=verdict.drift_detected,
            drift_score=verdict.drift_score,
            severity=verdict.severity,
            feature_scores=self.feature_scores,
            drifted_features=self.drifted_features,
            window=self.window,
            feature_reasons=self.feature_reasons,
            prediction=self.prediction(),
        )

    def verdict_fields(self) -> dict[str, Any]:
        """The summary's fields, to build an answer that extends DriftSummary."""
        return msgspec.structs.asdict(self.summary())


def _prediction_fields(assessment: Assessment) -> dict[str, Any]:
    """The PredictionSummary fields of an assessment of a monitor with a prediction."""
    spec = assessment.monitor.prediction
    assert spec is not None
    outputs = assessment.prediction_outputs()
    severity = max((f.severity for f in outputs.values()), key=lambda s: s.rank)
    return {
        "kind": spec.kind,
        "severity": severity,
        "drifted": assessment.evaluation.verdict.drift_detected
        and severity.rank >= Severity.WARNING.rank,
        "score": max(f.score for f in outputs.values()),
        "scores": {name: f.score for name, f in outputs.items()},
        "reasons": {name: list(f.reasons) for name, f in outputs.items() if f.reasons},
    }


def assess(monitor: Monitor, totals: WindowTotals) -> Assessment:
    """Evaluate the window totals (see `evaluate`) and note the window they cover."""
    evaluation = evaluate(monitor, totals.vector, totals.reference)
    return Assessment(
        monitor,
        evaluation,
        window_info(monitor, evaluation, totals),
        isoformat(totals.now),
        totals.now,
    )


def _quality_checks(evaluation: Evaluation, name: str) -> dict[str, QualityCheck]:
    """The data-quality rules that apply to one feature."""
    checks: dict[str, QualityCheck] = {}
    for reason, rule in evaluation.quality.items():
        if name not in rule.features:
            continue
        i = rule.features.index(name)
        checks[reason] = QualityCheck(
            rate=float(rule.rate[i]),
            baseline_rate=float(rule.baseline_rate[i]),
            change=float(rule.change[i]),
            p_value=float(rule.p_value[i]),
            p_adjusted=float(rule.p_adjusted[i]),
            severity=LEVELS[int(rule.level[i])],
            warning_threshold=float(rule.levels.warning[i]),
            critical_threshold=float(rule.levels.critical[i]),
        )
    return checks


def drift_report(assessment: Assessment, totals: WindowTotals) -> DriftReport:
    """The full report: the assessment of `totals` plus every feature's detail."""
    monitor = assessment.monitor
    vector = totals.vector
    evaluation = assessment.evaluation
    policy = monitor.policy
    events = evaluation.events
    reference = totals.reference
    features: dict[str, FeatureReport] = {}
    outputs: dict[str, FeatureReport] = {}
    for name, slots in monitor.layout.features.items():
        profile = slots.profile
        scored = evaluation.features[name]
        bins = slice(slots.first_bin, slots.first_bin + profile.bins)
        window_counts = vector[bins]
        # A rolling reference stands where the baseline does (its `baseline_*` fields).
        expected = slots.baseline_counts if reference is None else reference[bins]
        numeric = isinstance(profile, NumericProfile)
        test_name = policy.test_for(name, slots.kind)
        # KL, JS, PSI and the proportions are detail only: the verdict never uses them.
        test = feature_test(
            slots.kind,
            expected,
            window_counts,
            test_name,
            pooling_key=None if isinstance(profile, NumericProfile) else profile.selection,
            positions=profile.positions if isinstance(profile, NumericProfile) else None,
            scale=moment_unit(profile) if isinstance(profile, NumericProfile) else 1.0,
        )
        thresholds = policy.thresholds_for(name)
        baseline_missing = float(profile.missing)
        baseline_total = float(profile.n + profile.missing)
        if reference is not None:
            baseline_missing = float(reference[slots.missing])
            baseline_total = float(reference[EVENTS_SLOT])
        found = outputs if is_prediction_column(name) else features
        found[output_name(name)] = FeatureReport(
            type=slots.kind,
            severity=scored.severity,
            reasons=list(scored.reasons),
            test=test_name,
            status="tested" if scored.n >= MIN_TEST_EVENTS else "insufficient",
            calibrated=slots.calibrated,
            drift_severity=scored.drift,
            score=scored.score,
            significant=scored.p_adjusted < evaluation.alpha,
            psi=test.psi,
            kl=test.kl,
            js=test.js,
            cohen_w=test.cohen_w,
            statistic=scored.statistic,
            dof=scored.dof,
            p_value=scored.p_value,
            p_adjusted=scored.p_adjusted,
            window_count=test.n,
            baseline_count=test.m,
            missing_rate=float(vector[slots.missing]) / events if events else 0.0,
            baseline_missing_rate=baseline_missing / baseline_total if baseline_total else 0.0,
            notice_threshold=thresholds.notice,
            warning_threshold=thresholds.warning,
            critical_threshold=thresholds.critical,
            bins=slots.bin_labels,
            baseline_proportions=slots.baseline_proportions
            if reference is None
            else tuple(_proportions(expected)),
            window_proportions=_proportions(window_counts),
            quality=_quality_checks(evaluation, name),
            baseline_limited=test.n > test.m,
            **(_moments(slots, vector, test.n) if numeric else {}),
        )
    spec = monitor.prediction
    fields = assessment.verdict_fields()
    fields["prediction"] = (
        None
        if spec is None
        else PredictionReport(
            **_prediction_fields(assessment), classes=list(spec.classes), outputs=outputs
        )
    )
    return DriftReport(
        monitor=monitor.name,
        model=monitor.model,
        alpha=evaluation.alpha,
        multiple_testing=policy.multiple_testing,
        features=features,
        evaluated_at=assessment.evaluated_at,
        performance=assessment.performance,
        reasons=assessment.reasons(),
        **fields,
    )
