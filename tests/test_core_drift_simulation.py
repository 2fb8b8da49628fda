"""Seeded simulation of the default policy: false-alarm rate without drift, power with it.

Run with `pytest -s` to see the measured rates quoted in docs/metrics.md.

A feature is flagged only when its effect size passes the warning threshold AND its
test is significant, so the flagged share sits below the test's own level alpha; the
check is the design's: flagged share <= alpha on every seeded run. Plain Pearson on
sparse categories (printed for comparison) would fail it with 10-25 % of windows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2

from driftline.core.drift import categorical_test, feature_severity, numeric_test
from driftline.core.severity import Severity

pytestmark = pytest.mark.slow

ALPHA = 0.05  # the policy default, checked below
SIZES = (100, 300, 1000, 5000)
BASELINE_ROWS = 5000
NUMERIC_REPS = 1500
CATEGORICAL_REPS = 3000
POWER_REPS = 1500
CATEGORIES = 200


# The design's bound: no more false alarms than the significance level.
ALLOWED_FALSE_ALARMS = ALPHA


def decile_counts(baseline: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ten bins cut at the baseline's deciles, counted for baseline and window."""
    cuts = np.quantile(baseline, np.linspace(0.1, 0.9, 9))
    b = np.bincount(np.searchsorted(cuts, baseline, side="right"), minlength=10)
    w = np.bincount(np.searchsorted(cuts, window, side="right"), minlength=10)
    return b.astype(float), w.astype(float)


def report(label: str, flagged: float, significant: float, extra: str = "") -> None:
    print(f"\n{label}: flagged {flagged:.4f}, p < alpha {significant:.4f}{extra}", end="")


def test_default_alpha_is_the_simulated_one() -> None:
    # The simulation relies on feature_severity's default alpha being 0.05.
    assert feature_severity(10.0, math.nextafter(ALPHA, 0.0)) is Severity.CRITICAL
    assert feature_severity(10.0, ALPHA) is Severity.NONE


@pytest.mark.parametrize("n", SIZES)
def test_numeric_false_alarms(n: int) -> None:
    rng = np.random.default_rng(1000 + n)
    flagged = significant = 0
    for _ in range(NUMERIC_REPS):
        # A fresh baseline each time: the test accounts for the baseline's noise too.
        b, w = decile_counts(rng.standard_normal(BASELINE_ROWS), rng.standard_normal(n))
        result = numeric_test(b, w)
        flagged += feature_severity(result.score, result.p_value) is not Severity.NONE
        significant += result.p_value < ALPHA
    report(f"numeric 10 bins, n={n}", flagged / NUMERIC_REPS, significant / NUMERIC_REPS)
    assert flagged / NUMERIC_REPS <= ALLOWED_FALSE_ALARMS


def zipf(s: float) -> np.ndarray:
    weights = np.arange(1, CATEGORIES + 1, dtype=float) ** -s
    return np.asarray(weights / weights.sum(), dtype=np.float64)


CATEGORICAL_CASES = {
    "zipf(1.1), m=20000": (zipf(1.1), 20000),
    "uniform, m=5000": (np.full(CATEGORIES, 1 / CATEGORIES), 5000),
}


def unpooled_pearson_p(b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-row p of the plain chi-square homogeneity test: for comparison only."""
    m, n = b.sum(axis=1, keepdims=True), w.sum(axis=1, keepdims=True)
    columns = b + w
    expected_b, expected_w = m * columns / (m + n), n * columns / (m + n)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = (b - expected_b) ** 2 / expected_b + (w - expected_w) ** 2 / expected_w
    statistic = np.where(columns > 0, cells, 0.0).sum(axis=1)
    dof = (columns > 0).sum(axis=1) - 1
    return np.asarray(chi2.sf(statistic, dof))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", list(CATEGORICAL_CASES))
def test_categorical_false_alarms(case: str, n: int) -> None:
    p, rows = CATEGORICAL_CASES[case]
    rng = np.random.default_rng([2000 + n, list(CATEGORICAL_CASES).index(case)])
    baselines = rng.multinomial(rows, p, size=CATEGORICAL_REPS).astype(float)
    windows = rng.multinomial(n, p, size=CATEGORICAL_REPS).astype(float)
    flagged = significant = 0
    for b, w in zip(baselines, windows, strict=True):
        result = categorical_test(b, w)
        flagged += feature_severity(result.score, result.p_value) is not Severity.NONE
        significant += result.p_value < ALPHA
    unpooled = float(np.mean(unpooled_pearson_p(baselines, windows) < ALPHA))
    report(
        f"categorical {CATEGORIES} {case}, n={n}",
        flagged / CATEGORICAL_REPS,
        significant / CATEGORICAL_REPS,
        f", unpooled Pearson p < alpha {unpooled:.4f}",
    )
    assert flagged / CATEGORICAL_REPS <= ALLOWED_FALSE_ALARMS


def test_numeric_half_sd_shift_is_flagged_at_1000_events() -> None:
    rng = np.random.default_rng(3000)
    flagged = critical = significant = 0
    psis = []
    for _ in range(POWER_REPS):
        b, w = decile_counts(rng.standard_normal(BASELINE_ROWS), rng.standard_normal(1000) + 0.5)
        result = numeric_test(b, w)
        severity = feature_severity(result.score, result.p_value)
        flagged += severity is not Severity.NONE
        critical += severity is Severity.CRITICAL
        significant += result.p_value < ALPHA
        psis.append(result.psi)
    report(
        "numeric 0.5 sd shift, n=1000",
        flagged / POWER_REPS,
        significant / POWER_REPS,
        f", critical {critical / POWER_REPS:.4f}, mean PSI {np.mean(psis):.4f}"
        f" (sd {np.std(psis):.4f})",
    )
    assert flagged / POWER_REPS >= 0.90
