"""The drift report of one monitor's window: per-feature numbers and the monitor's verdict.

A report is a function of the window totals alone, so a replica computes it once per
flush and shares it among every request that flush answers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec
import numpy as np

from .drift import (
    DriftTest,
    Severity,
    categorical_test,
    effective_alpha,
    feature_severity,
    monitor_verdict,
    numeric_test,
)
from .monitor import EVENTS_SLOT, FeatureSlots, Monitor
from .profile import NumericProfile
from .window import WindowTotals


def isoformat(timestamp: float) -> str:
    """RFC 3339 UTC timestamp with a `Z`, as the seed API returns."""
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


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


class DriftReport(msgspec.Struct, frozen=True):
    """A monitor's verdict on its current window."""

    monitor: str
    model: str
    drift_detected: bool
    drift_score: float
    severity: Severity
    feature_scores: dict[str, float]
    drifted_features: list[str]  # flagged features, once the monitor calls drift
    alpha: float
    window: WindowInfo
    features: dict[str, FeatureReport]
    evaluated_at: str


def _proportions(counts: np.ndarray) -> list[float]:
    total = float(counts.sum())
    return [float(c) / total for c in counts] if total else [0.0] * len(counts)


def _feature_report(
    slots: FeatureSlots,
    vector: np.ndarray,
    events: int,
    test: DriftTest,
    severity: Severity,
    thresholds_warning: float,
    thresholds_critical: float,
    alpha: float,
) -> FeatureReport:
    profile = slots.profile
    window_counts = vector[slots.first_bin : slots.first_bin + profile.bins]
    baseline_total = profile.n + profile.missing
    numeric: dict[str, float | None] = {}
    if isinstance(profile, NumericProfile):
        n = test.n
        mean = std = z = None
        if n:
            centred_mean = float(vector[slots.sum]) / n
            mean = profile.mean + centred_mean
            variance = max(float(vector[slots.sum_squares]) / n - centred_mean**2, 0.0)
            std = math.sqrt(variance * n / (n - 1)) if n > 1 else 0.0
            z = centred_mean / profile.std if profile.std > 0 else None
        numeric = {
            "out_of_range_rate": float(vector[slots.out_of_range]) / n if n else 0.0,
            "mean": mean,
            "baseline_mean": profile.mean,
            "std": std,
            "baseline_std": profile.std,
            "mean_shift_z": z,
        }
    return FeatureReport(
        type="numeric" if isinstance(profile, NumericProfile) else "categorical",
        severity=severity,
        score=test.score,
        significant=test.p_value < alpha,
        psi=test.psi,
        kl=test.kl,
        js=test.js,
        cohen_w=test.cohen_w,
        statistic=test.statistic,
        dof=test.dof,
        p_value=test.p_value,
        window_count=test.n,
        baseline_count=test.m,
        missing_rate=float(vector[slots.missing]) / events if events else 0.0,
        baseline_missing_rate=profile.missing / baseline_total if baseline_total else 0.0,
        warning_threshold=thresholds_warning,
        critical_threshold=thresholds_critical,
        bins=slots.bin_labels,
        baseline_proportions=slots.baseline_proportions,
        window_proportions=_proportions(window_counts),
        **numeric,
    )


def drift_report(monitor: Monitor, totals: WindowTotals) -> DriftReport:
    """Evaluate every feature of the monitor on the window totals and decide severity."""
    vector = totals.vector
    events = round(float(vector[EVENTS_SLOT]))
    policy = monitor.policy
    alpha = effective_alpha(
        policy.alpha, len(monitor.layout.features), bonferroni=policy.bonferroni
    )
    features: dict[str, FeatureReport] = {}
    severities: dict[str, Severity] = {}
    scores: dict[str, float] = {}
    for name, slots in monitor.layout.features.items():
        profile = slots.profile
        window_counts = vector[slots.first_bin : slots.first_bin + profile.bins]
        test = (numeric_test if isinstance(profile, NumericProfile) else categorical_test)(
            profile.counts, window_counts
        )
        thresholds = policy.thresholds_for(name)
        severity = feature_severity(test.score, test.p_value, alpha, thresholds)
        severities[name] = severity
        scores[name] = test.score
        features[name] = _feature_report(
            slots, vector, events, test, severity, thresholds.warning, thresholds.critical, alpha
        )
    verdict = monitor_verdict(
        severities,
        scores,
        events,
        min_samples=policy.min_samples,
        min_drifted_features=policy.min_drifted_features,
    )
    return DriftReport(
        monitor=monitor.name,
        model=monitor.model,
        drift_detected=verdict.drift_detected,
        drift_score=verdict.drift_score,
        severity=verdict.severity,
        feature_scores=scores,
        drifted_features=verdict.flagged if verdict.drift_detected else [],
        alpha=alpha,
        window=WindowInfo(
            events=events,
            start=isoformat(totals.start),
            end=isoformat(totals.now),
            ready=verdict.ready,
            min_samples=policy.min_samples,
            seconds=monitor.window.window_seconds,
        ),
        features=features,
        evaluated_at=isoformat(totals.now),
    )
