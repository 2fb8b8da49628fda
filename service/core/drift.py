"""Drift statistics: effect sizes, significance tests and the severity policy.

This module is the only place the formulas live (see docs/metrics.md). It works on
count vectors over a feature's bins and knows nothing of HTTP, stores or config files.

Each feature answers two questions separately: is the change large (an effect size
compared with thresholds) and is it real (a test whose p-value accounts for how many
events the window and the baseline hold). A feature is flagged only when both say yes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc, rel_entr

from driftline.core.policy import DEFAULTS, Thresholds
from driftline.core.severity import Severity

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]  # 2-d: one row per feature

EPSILON: float = 1e-4
"""Floor for proportions in PSI and KL, so a bin empty on one side keeps them finite.

Floored proportions are not renormalised. Cohen's w uses it as the baseline proportion
of a category never seen in training, so such a category counts as a large effect.
"""

COCHRAN_MIN_EXPECTED: float = 5.0
"""Smallest expected cell count the categorical chi-square test keeps unpooled."""


@dataclass(frozen=True, slots=True)
class DriftTest:
    """One feature's numbers for one window against its baseline."""

    kind: Literal["numeric", "categorical"]
    score: float  # compared with Thresholds: PSI (numeric) or noise-adjusted w (categorical)
    psi: float
    kl: float
    js: float
    cohen_w: float | None  # categorical only
    statistic: float  # chi-square statistic of the test behind p_value
    dof: int
    p_value: float
    n: int  # window events (non-missing)
    m: int  # baseline rows (non-missing)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A monitor's overall result for one window."""

    severity: Severity
    drift_detected: bool
    drift_score: float  # largest feature score (PSI and w share the thresholds' scale)
    flagged: list[str]  # features whose own severity is not none, in input order
    ready: bool  # the window holds at least min_samples events


def psi_by_row(expected: Matrix, actual: Matrix) -> Vector:
    """Population stability index of each row: sum((a - e) * ln(a / e)), floored at EPSILON."""
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    terms: Matrix = (a - e) * np.log(a / e)
    sums: Vector = terms.sum(axis=-1)
    return sums


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Population stability index of one pair of proportion vectors (see `psi_by_row`)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    return float(psi_by_row(e[None, :], a[None, :])[0])


def kl_divergence(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """KL(actual || expected) = sum(a * ln(a / e)) on EPSILON-floored proportions."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum(a * np.log(a / e)))


def js_distance(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (square root of the divergence, natural log), unfloored."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    mid = 0.5 * (a + e)
    # rel_entr gives 0 * ln(0 / x) = 0, so empty bins need no floor here.
    divergence = 0.5 * float(np.sum(rel_entr(a, mid)) + np.sum(rel_entr(e, mid)))
    # Rounding can leave a tiny negative divergence for identical inputs.
    return float(np.sqrt(max(divergence, 0.0)))


def cohen_w(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Cohen's w = sqrt(sum((a - e)^2 / e)); e == 0 (unseen in training) counts as EPSILON."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e_w = np.where(e > 0.0, e, EPSILON)
    return float(np.sqrt(np.sum((a - e) ** 2 / e_w)))


def adjusted_w(w: float, categories: int, n: float, m: float) -> float:
    """Cohen's w less its sampling noise: sqrt(max(0, w^2 - (k - 1)(1/n + 1/m))).

    With no drift E[w^2] is about (k - 1)(1/n + 1/m) (k categories seen, n window and m
    baseline events): 1.4 for 200 categories and 100 events, far above any threshold.
    Subtracting it lets the thresholds mean the same for every window size.
    """
    noise = (categories - 1) * (1.0 / n + 1.0 / m) if n and m else 0.0
    return float(np.sqrt(max(w * w - noise, 0.0)))


@dataclass(frozen=True, slots=True)
class NumericScores:
    """PSI and its chi-square test for several binned features at once, one row each."""

    psi: Vector
    statistic: Vector
    dof: npt.NDArray[np.int64]
    p_value: Vector
    n: Vector  # window events (non-missing)
    m: Vector  # baseline rows (non-missing)


def numeric_scores(baseline_counts: Matrix, window_counts: Matrix) -> NumericScores:
    """Per row: PSI and its test, PSI*n*m/(n+m) ~ chi2(k'-1), k' = bins non-empty on a side.

    Rows may be padded with bins empty on both sides: they add nothing to PSI or k'. One
    numpy pass for every numeric feature of a monitor, so a flush pays no per-feature
    overhead. Inputs are trusted (validated counts, positive baseline sums).
    """
    b = baseline_counts
    w = window_counts
    m = b.sum(axis=-1)
    n = w.sum(axis=-1)
    dof = np.count_nonzero((b > 0.0) | (w > 0.0), axis=-1).astype(np.int64) - 1
    observed = n > 0.0
    value = np.where(
        observed, psi_by_row(b / m[:, None], w / np.where(observed, n, 1.0)[:, None]), 0.0
    )
    testable = observed & (dof >= 1)
    # Jeffreys' divergence (PSI) is, to second order, Pearson's X^2 / (n*m/(n+m)).
    statistic = np.where(testable, value * n * m / (n + m), 0.0)
    p_value = np.where(testable, chdtrc(np.maximum(dof, 1), statistic), 1.0)
    return NumericScores(value, statistic, dof, p_value, n, m)


def numeric_test(baseline_counts: npt.ArrayLike, window_counts: npt.ArrayLike) -> DriftTest:
    """One numeric feature: `numeric_scores` on its bins, plus KL and JS."""
    b, w, m, n = _counts(baseline_counts, window_counts)
    scores = numeric_scores(b[None, :], w[None, :])
    dof = int(scores.dof[0])
    if n == 0.0:
        return _empty_window("numeric", dof, m)
    e, a = b / m, w / n
    value = float(scores.psi[0])
    return DriftTest(
        kind="numeric",
        score=value,
        psi=value,
        kl=kl_divergence(e, a),
        js=js_distance(e, a),
        cohen_w=None,
        statistic=float(scores.statistic[0]),
        dof=dof,
        p_value=float(scores.p_value[0]),
        n=round(n),
        m=round(m),
    )


@dataclass(frozen=True, slots=True)
class CategoricalScore:
    """A categorical feature's effect size and test of homogeneity."""

    score: float  # Cohen's w less its sampling noise
    cohen_w: float
    statistic: float
    dof: int
    p_value: float


def categorical_score(b: Vector, w: Vector, m: float, n: float) -> CategoricalScore:
    """Noise-adjusted Cohen's w and the chi-square test of the 2 x k table (trusted counts).

    The test runs after dropping columns empty on both rows and pooling sparse columns
    (see `_pool_sparse_columns`); w uses all bins. `m` and `n` are the row sums.
    """
    nonzero = (b > 0.0) | (w > 0.0)
    seen = int(np.count_nonzero(nonzero))
    if n == 0.0:
        return CategoricalScore(0.0, 0.0, 0.0, seen - 1, 1.0)
    pooled_b, pooled_w = _pool_sparse_columns(b[nonzero], w[nonzero])
    dof = pooled_b.size - 1
    statistic, p_value = 0.0, 1.0
    if dof >= 1:
        # Pearson's X^2 of the 2 x k table, sum((O - E)^2 / E) over both rows, reduces to
        # n*m * sum((e_j - a_j)^2 / c_j) with c_j the column totals.
        columns = pooled_b + pooled_w
        diff = pooled_b / m - pooled_w / n
        statistic = float(n * m * np.sum(diff * diff / columns))
        p_value = float(chdtrc(dof, statistic))
    w_value = cohen_w(b / m, w / n)
    return CategoricalScore(adjusted_w(w_value, seen, n, m), w_value, statistic, dof, p_value)


def categorical_test(baseline_counts: npt.ArrayLike, window_counts: npt.ArrayLike) -> DriftTest:
    """One categorical feature: `categorical_score` plus PSI, KL and JS."""
    b, w, m, n = _counts(baseline_counts, window_counts)
    scores = categorical_score(b, w, m, n)
    if n == 0.0:
        return _empty_window("categorical", scores.dof, m)
    e, a = b / m, w / n
    return DriftTest(
        kind="categorical",
        score=scores.score,
        psi=psi(e, a),
        kl=kl_divergence(e, a),
        js=js_distance(e, a),
        cohen_w=scores.cohen_w,
        statistic=scores.statistic,
        dof=scores.dof,
        p_value=scores.p_value,
        n=round(n),
        m=round(m),
    )


def _pool_sparse_columns(baseline: Vector, window: Vector) -> tuple[Vector, Vector]:
    """Pool columns of a 2 x k table until every expected cell count is >= 5 (Cochran).

    Columns are taken in ascending order of column total (stable, so ties keep bin
    order) and merged greedily until the pool's smaller expected cell reaches 5; the
    pool then closes and the next one starts. Columns already large enough stay alone,
    except that the smallest of them absorbs a pool left unfinished; with no such column
    that pool joins the previous one. Grouping depends on the table's margins only, so
    given the margins the pooled table is a fixed, coarser partition and keeps the
    test's null distribution. Inputs must have no column empty on both rows.
    """
    columns = baseline + window
    total = float(np.sum(columns))
    smaller_row = min(float(np.sum(baseline)), float(np.sum(window)))
    # Expected cell = row total * column total / grand total; the smaller row binds.
    min_column = COCHRAN_MIN_EXPECTED * total / smaller_row
    sparse = columns < min_column
    if not sparse.any():
        return baseline, window
    order = np.argsort(columns, kind="stable")
    n_sparse = int(np.count_nonzero(sparse))
    labels = np.empty(columns.size, dtype=np.intp)
    group, acc = 0, 0.0
    for position, column_total in enumerate(columns[order[:n_sparse]].tolist()):
        labels[position] = group
        acc += column_total
        if acc >= min_column:
            group, acc = group + 1, 0.0
    # Large columns stay alone; the first one also absorbs a last pool left too small.
    labels[n_sparse:] = np.arange(group, group + columns.size - n_sparse)
    if acc > 0.0 and n_sparse == columns.size and group > 0:
        # No large column to absorb it: the unfinished last pool joins the previous one.
        labels[labels == group] = group - 1
    sorted_b, sorted_w = baseline[order], window[order]
    return (
        np.bincount(labels, weights=sorted_b).astype(np.float64),
        np.bincount(labels, weights=sorted_w).astype(np.float64),
    )


def effective_alpha(alpha: float, n_features: int, *, bonferroni: bool = False) -> float:
    """Per-feature significance level: alpha / n_features with Bonferroni, else alpha."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if bonferroni and n_features > 1:
        return alpha / n_features
    return alpha


def feature_severity(
    score: float,
    p_value: float,
    alpha_effective: float = DEFAULTS.alpha,
    thresholds: Thresholds = Thresholds(),
) -> Severity:
    """Severity from the effect size, but only when the drift is significant (p < alpha)."""
    if not p_value < alpha_effective:
        return Severity.NONE
    if score >= thresholds.critical:
        return Severity.CRITICAL
    if score >= thresholds.warning:
        return Severity.WARNING
    return Severity.NONE


def monitor_verdict(
    feature_severities: Mapping[str, Severity],
    scores: Mapping[str, float],
    events: int,
    *,
    min_samples: int = DEFAULTS.min_samples,
    min_drifted_features: int = DEFAULTS.min_drifted_features,
) -> Verdict:
    """Worst feature severity once enough features are flagged and the window is ready."""
    if min_drifted_features < 1:
        raise ValueError(f"min_drifted_features must be >= 1, got {min_drifted_features}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")
    flagged = [name for name, sev in feature_severities.items() if sev is not Severity.NONE]
    ready = events >= min_samples
    severity = Severity.NONE
    if ready and len(flagged) >= min_drifted_features:
        severity = max((feature_severities[name] for name in flagged), key=lambda s: s.rank)
    return Verdict(
        severity=severity,
        drift_detected=severity is not Severity.NONE,
        drift_score=max(scores.values(), default=0.0),
        flagged=flagged,
        ready=ready,
    )


def _counts(
    baseline_counts: npt.ArrayLike, window_counts: npt.ArrayLike
) -> tuple[Vector, Vector, float, float]:
    """Validated float count vectors and their sums (m baseline, n window)."""
    b = np.asarray(baseline_counts, dtype=np.float64)
    w = np.asarray(window_counts, dtype=np.float64)
    if b.ndim != 1 or b.size == 0 or b.shape != w.shape:
        raise ValueError(f"need two 1-d count vectors of one length, got {b.shape}, {w.shape}")
    m, n = float(np.sum(b)), float(np.sum(w))
    # A sum of non-negative numbers is finite only if every term is, so no isfinite scan.
    if not (bool(np.all(b >= 0.0)) and bool(np.all(w >= 0.0)) and np.isfinite(m + n)):
        raise ValueError("counts must be finite and non-negative")
    if m == 0.0:
        raise ValueError("baseline has no counts")
    return b, w, m, n


def _empty_window(kind: Literal["numeric", "categorical"], dof: int, m: float) -> DriftTest:
    """No window events: nothing to compare, so no effect and no evidence."""
    return DriftTest(
        kind=kind,
        score=0.0,
        psi=0.0,
        kl=0.0,
        js=0.0,
        cohen_w=0.0 if kind == "categorical" else None,
        statistic=0.0,
        dof=dof,
        p_value=1.0,
        n=0,
        m=round(m),
    )
