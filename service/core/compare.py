"""Champion / challenger: two declared model versions' windows compared with each other.

What a promotion step asks (docs/versions.md): is version B better than version A on
the same traffic window? The performance metric's difference is read off its confidence
interval at a margin: `b_better` when the interval lies above +margin, `b_worse` when it
lies below -margin, else `no_difference` (also while either version has too few
labelled events). The drift between them is B's window tested against A's as the
reference, with the monitor's tests, thresholds and significance.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from driftline.core.monitor import Monitor
from driftline.core.performance import CompareMetric, Difference, Performance, difference
from driftline.core.report import DriftSummary, assess
from driftline.core.scopes import Scope
from driftline.core.timestamps import isoformat
from driftline.core.window import WindowTotals

CompareVerdict = Literal["b_better", "no_difference", "b_worse"]
COMPARE_METRICS: tuple[CompareMetric, ...] = get_args(CompareMetric)


class VersionSide(msgspec.Struct, frozen=True, omit_defaults=True):
    """One version's window: its events and its performance (with labels)."""

    model_version: str
    events: int
    performance: Performance | None = None


class Comparison(msgspec.Struct, frozen=True):
    """The answer of GET /v1/monitors/{name}/compare."""

    monitor: str
    model: str
    a: VersionSide
    b: VersionSide
    verdict: CompareVerdict
    reason: str
    metric: CompareMetric | None  # None: the monitor takes no labels
    margin: float
    confidence: float
    difference: Difference | None  # None until both versions have the metric
    min_labels: int
    drift: DriftSummary  # B's window against A's
    evaluated_at: str


def default_metric(monitor: Monitor) -> CompareMetric | None:
    """The metric a comparison decides on: ROC-AUC with scores, accuracy, MAE for regression."""
    slots = monitor.layout.performance
    if slots is None:
        return None
    if slots.task == "regression":
        return "mae"
    return "roc_auc" if slots.scored else "accuracy"


def metric_problem(monitor: Monitor, metric: CompareMetric) -> str | None:
    """Why `metric` cannot compare this monitor's versions, else None."""
    slots = monitor.layout.performance
    if slots is None:
        return (
            f"monitor {monitor.name!r} takes no labels: a comparison of performance needs "
            "`labels` and `prediction` in its config (docs/labels.md)"
        )
    allowed: tuple[CompareMetric, ...] = (
        ("mae",)
        if slots.task == "regression"
        else ("accuracy", "roc_auc")
        if slots.scored
        else ("accuracy",)
    )
    if metric not in allowed:
        return f"metric: {metric} does not apply to this monitor's prediction; allowed: " + (
            ", ".join(allowed)
        )
    return None


def compare(
    monitor: Monitor,
    totals: WindowTotals,
    a: Scope,
    b: Scope,
    *,
    margin: float,
    metric: CompareMetric | None,
) -> Comparison:
    """Compare versions `a` and `b` of a monitor's window (`totals`: the whole window's)."""
    blocks = monitor.scopes
    window_a, window_b = blocks.totals(totals, a.block), blocks.totals(totals, b.block)
    against = WindowTotals(window_b.vector, totals.start, totals.now, reference=window_a.vector)
    drift = assess(monitor, against)
    side_a, side_b = assess(monitor, window_a), assess(monitor, window_b)
    policy = monitor.policy
    confidence = 1.0 - policy.alpha
    found = None
    slots = monitor.layout.performance
    if slots is not None and metric is not None:
        found = difference(slots, window_a.vector, window_b.vector, metric, confidence)
    verdict, reason = _verdict(found, margin, policy.min_samples, metric)
    return Comparison(
        monitor=monitor.name,
        model=monitor.model,
        a=VersionSide(a.value, side_a.window.events, side_a.performance),
        b=VersionSide(b.value, side_b.window.events, side_b.performance),
        verdict=verdict,
        reason=reason,
        metric=metric,
        margin=margin,
        confidence=confidence,
        difference=found,
        min_labels=policy.min_samples,
        drift=drift.summary(),
        evaluated_at=isoformat(totals.now),
    )


def _verdict(
    found: Difference | None, margin: float, min_labels: int, metric: CompareMetric | None
) -> tuple[CompareVerdict, str]:
    """The verdict read off the improvement's confidence interval, and why."""
    if metric is None:
        return "no_difference", "the monitor takes no labels: performance cannot be compared"
    if found is None or min(found.labelled_a, found.labelled_b) < min_labels:
        return "no_difference", (
            f"too few labelled events to decide: each version needs {min_labels} "
            f"(min_samples) with {metric} defined"
        )
    interval = f"{found.ci_low:+.4g} to {found.ci_high:+.4g}"
    if found.ci_low > margin:
        return "b_better", f"B's {metric} gain {interval} lies above the margin +{margin:g}"
    if found.ci_high < -margin:
        return "b_worse", f"B's {metric} gain {interval} lies below the margin -{margin:g}"
    return "no_difference", f"B's {metric} gain {interval} reaches within ±{margin:g}"
