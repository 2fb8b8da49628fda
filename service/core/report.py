"""The drift report of one monitor's window: per-feature numbers and the monitor's verdict.

A report is a function of the window totals alone, so a replica computes it once per
flush and shares it among every request that flush answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from driftline.core.drift import (
    Verdict,
    categorical_score,
    categorical_test,
    effective_alpha,
    feature_severity,
    monitor_verdict,
    numeric_scores,
    numeric_test,
)
from driftline.core.layout import EVENTS_SLOT, MOMENT_SCALE, FeatureSlots, moment_unit
from driftline.core.monitor import Monitor
from driftline.core.profile import NumericProfile
from driftline.core.severity import Severity
from driftline.core.timestamps import isoformat
from driftline.core.window import Vector, WindowTotals


class WindowInfo(msgspec.Struct, frozen=True):
    """The window a report was computed on."""

    events: int
    start: str
    end: str
    ready: bool
    min_samples: int
    seconds: int


class FeatureReport(msgspec.Struct, frozen=True):
    """One feature: effect size, significance, quality, and the distributions compared."""

    type: str
    severity: Severity
    score: float
    significant: bool
    psi: float
    kl: float
    js: float
    cohen_w: float | None
    statistic: float
    dof: int
    p_value: float
    window_count: int
    baseline_count: int
    missing_rate: float
    baseline_missing_rate: float
    warning_threshold: float
    critical_threshold: float
    bins: tuple[str, ...]
    baseline_proportions: tuple[float, ...]
    window_proportions: list[float]
    out_of_range_rate: float | None = None
    mean: float | None = None
    baseline_mean: float | None = None
    std: float | None = None
    baseline_std: float | None = None
    mean_shift_z: float | None = None


class DriftSummary(msgspec.Struct, frozen=True):
    """A monitor's verdict on a window: the fields every answer states.

    The batch answers carry it as is; the full report and the predict answer extend it.
    """

    drift_detected: bool
    drift_score: float
    severity: Severity
    feature_scores: dict[str, float]
    drifted_features: list[str]  # flagged features, once the monitor calls drift
    window: WindowInfo


class DriftReport(DriftSummary, frozen=True):
    """A monitor's verdict on its current window, with every feature's detail."""

    monitor: str
    model: str
    alpha: float
    features: dict[str, FeatureReport]
    evaluated_at: str


def _proportions(counts: np.ndarray) -> list[float]:
    total = float(counts.sum())
    return [float(c) / total for c in counts] if total else [0.0] * len(counts)


@dataclass(frozen=True, slots=True)
class FeatureScore:
    """What the verdict needs of one feature: effect size, test, severity."""

    score: float
    p_value: float
    statistic: float
    dof: int
    severity: Severity


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A monitor's verdict on a window vector, without the report's detail."""

    features: dict[str, FeatureScore]  # in layout order
    verdict: Verdict
    events: int
    alpha: float


def evaluate(monitor: Monitor, vector: Vector) -> Evaluation:
    """Score and test every feature and decide the monitor's severity.

    Cheap enough to run on every flush: the numeric features go through one numpy pass.
    """
    layout = monitor.layout
    policy = monitor.policy
    events = round(float(vector[EVENTS_SLOT]))
    alpha = effective_alpha(policy.alpha, len(layout.features), bonferroni=policy.bonferroni)
    found: dict[str, tuple[float, float, float, int]] = {}
    matrix = layout.numeric
    if matrix.names:
        padded = np.append(vector, 0.0)
        numeric = numeric_scores(matrix.baseline, padded[matrix.index])
        for i, name in enumerate(matrix.names):
            found[name] = (
                float(numeric.psi[i]),
                float(numeric.p_value[i]),
                float(numeric.statistic[i]),
                int(numeric.dof[i]),
            )
    features: dict[str, FeatureScore] = {}
    for name, slots in layout.features.items():
        if name in found:
            score, p_value, statistic, dof = found[name]
        else:
            window = vector[slots.first_bin : slots.first_bin + slots.profile.bins]
            b = slots.baseline_counts
            cat = categorical_score(b, window, float(b.sum()), float(window.sum()))
            score, p_value, statistic, dof = cat.score, cat.p_value, cat.statistic, cat.dof
        severity = feature_severity(score, p_value, alpha, policy.thresholds_for(name))
        features[name] = FeatureScore(score, p_value, statistic, dof, severity)
    verdict = monitor_verdict(
        {name: f.severity for name, f in features.items()},
        {name: f.score for name, f in features.items()},
        events,
        min_samples=policy.min_samples,
        min_drifted_features=policy.min_drifted_features,
    )
    return Evaluation(features, verdict, events, alpha)


def window_info(monitor: Monitor, evaluation: Evaluation, totals: WindowTotals) -> WindowInfo:
    """The window block of a report or a predict answer."""
    return WindowInfo(
        events=evaluation.events,
        start=isoformat(totals.start),
        end=isoformat(totals.now),
        ready=evaluation.verdict.ready,
        min_samples=monitor.policy.min_samples,
        seconds=monitor.window.window_seconds,
    )


def _moments(slots: FeatureSlots, vector: Vector, n: int) -> dict[str, float | None]:
    """Mean, std and mean shift (in baseline SDs) from the fixed-point moment slots."""
    profile = slots.profile
    assert isinstance(profile, NumericProfile)
    unit = moment_unit(profile)
    mean = std = z = None
    if n:
        mean_z = float(vector[slots.sum]) / MOMENT_SCALE / n
        mean = profile.mean + unit * mean_z
        variance = max(float(vector[slots.sum_squares]) / MOMENT_SCALE / n - mean_z**2, 0.0)
        std = unit * math.sqrt(variance * n / (n - 1)) if n > 1 else 0.0
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

    @property
    def drifted_features(self) -> list[str]:
        """Flagged features, once the monitor calls drift."""
        verdict = self.evaluation.verdict
        return verdict.flagged if verdict.drift_detected else []

    @property
    def feature_scores(self) -> dict[str, float]:
        """Effect size per feature, in layout order."""
        return {name: f.score for name, f in self.evaluation.features.items()}

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
        )

    def verdict_fields(self) -> dict[str, Any]:
        """The summary's fields, to build an answer that extends DriftSummary."""
        return msgspec.structs.asdict(self.summary())


def assess(monitor: Monitor, totals: WindowTotals) -> Assessment:
    """Evaluate the window totals (see `evaluate`) and note the window they cover."""
    evaluation = evaluate(monitor, totals.vector)
    return Assessment(
        monitor, evaluation, window_info(monitor, evaluation, totals), isoformat(totals.now)
    )


def drift_report(assessment: Assessment, totals: WindowTotals) -> DriftReport:
    """The full report: the assessment of `totals` plus every feature's detail."""
    monitor = assessment.monitor
    vector = totals.vector
    evaluation = assessment.evaluation
    policy = monitor.policy
    events = evaluation.events
    features: dict[str, FeatureReport] = {}
    for name, slots in monitor.layout.features.items():
        profile = slots.profile
        scored = evaluation.features[name]
        window_counts = vector[slots.first_bin : slots.first_bin + profile.bins]
        numeric = isinstance(profile, NumericProfile)
        # KL, JS and the proportions are detail only: the verdict never uses them.
        test = (numeric_test if numeric else categorical_test)(slots.baseline_counts, window_counts)
        thresholds = policy.thresholds_for(name)
        baseline_total = profile.n + profile.missing
        features[name] = FeatureReport(
            type=slots.kind,
            severity=scored.severity,
            score=scored.score,
            significant=scored.p_value < evaluation.alpha,
            psi=scored.score if numeric else test.psi,
            kl=test.kl,
            js=test.js,
            cohen_w=test.cohen_w,
            statistic=scored.statistic,
            dof=scored.dof,
            p_value=scored.p_value,
            window_count=test.n,
            baseline_count=test.m,
            missing_rate=float(vector[slots.missing]) / events if events else 0.0,
            baseline_missing_rate=profile.missing / baseline_total if baseline_total else 0.0,
            warning_threshold=thresholds.warning,
            critical_threshold=thresholds.critical,
            bins=slots.bin_labels,
            baseline_proportions=slots.baseline_proportions,
            window_proportions=_proportions(window_counts),
            **(_moments(slots, vector, test.n) if numeric else {}),
        )
    return DriftReport(
        monitor=monitor.name,
        model=monitor.model,
        alpha=evaluation.alpha,
        features=features,
        evaluated_at=assessment.evaluated_at,
        **assessment.verdict_fields(),
    )
