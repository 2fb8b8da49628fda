"""Every number of driftline.core.drift against an independent numpy/scipy computation.

The references below are written from the formulas in docs/metrics.md with plain Python
loops (math.log, math.fsum) and scipy.stats, not by calling the code under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, chi2_contingency, entropy

from driftline.core import drift
from driftline.core.drift import (
    DriftTest,
    Verdict,
    categorical_test,
    effective_alpha,
    feature_severity,
    monitor_verdict,
    numeric_test,
)
from driftline.core.policy import Thresholds
from driftline.core.severity import Severity

EPS = 1e-4  # the spec's floor, written here on purpose instead of importing it
TOL = 1e-9


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL)


def close_p(actual: float, expected: float) -> bool:
    # p-values far in the tail would pass any absolute tolerance, so compare relatively.
    return math.isclose(actual, expected, rel_tol=TOL, abs_tol=1e-300)


# --- references --------------------------------------------------------------------


def proportions(counts: list[float]) -> list[float]:
    total = math.fsum(counts)
    return [c / total for c in counts]


def ref_psi(e: list[float], a: list[float]) -> float:
    terms = []
    for ei, ai in zip(e, a, strict=True):
        ef, af = max(ei, EPS), max(ai, EPS)
        terms.append((af - ef) * math.log(af / ef))
    return math.fsum(terms)


def ref_kl(e: list[float], a: list[float]) -> float:
    terms = []
    for ei, ai in zip(e, a, strict=True):
        ef, af = max(ei, EPS), max(ai, EPS)
        terms.append(af * math.log(af / ef))
    return math.fsum(terms)


def ref_w(e: list[float], a: list[float]) -> float:
    terms = []
    for ei, ai in zip(e, a, strict=True):
        denom = ei if ei > 0 else EPS
        terms.append((ai - ei) ** 2 / denom)
    return math.sqrt(math.fsum(terms))


def ref_pooled_table(b: list[float], w: list[float]) -> np.ndarray:
    """2 x k' table after dropping empty columns and pooling per Cochran's rule.

    Columns in ascending order of column total (ties: bin order) are gathered into a pool
    until the pool's smallest expected cell, row total * pool total / grand total, is at
    least 5; the pool then closes. A last pool that never got there joins the previous.
    """
    kept = [j for j in range(len(b)) if b[j] > 0 or w[j] > 0]
    m, n = math.fsum(b), math.fsum(w)
    grand = m + n
    order = sorted(kept, key=lambda j: (b[j] + w[j], j))
    pools: list[list[int]] = []
    current: list[int] = []
    for j in order:
        current.append(j)
        pool_total = sum(b[i] + w[i] for i in current)
        if min(m, n) * pool_total / grand >= 5:
            pools.append(current)
            current = []
    if current:
        if pools:
            pools[-1].extend(current)
        else:
            pools.append(current)
    return np.array(
        [[sum(b[i] for i in pool) for pool in pools], [sum(w[i] for i in pool) for pool in pools]]
    )


# --- random count vectors ----------------------------------------------------------


def scenario(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (baseline, window) count pair of the named shape."""
    if name == "one_bin":
        return rng.integers(1, 1000, 1).astype(float), rng.integers(0, 1000, 1).astype(float)
    if name == "two_bins":
        b = rng.integers(0, 50, 2).astype(float)
        b[0] += 1  # keep the baseline non-empty
        return b, rng.integers(0, 50, 2).astype(float)
    if name == "small_with_zeros":
        k = int(rng.integers(3, 12))
        b = rng.poisson(rng.uniform(0.2, 30), k).astype(float)
        w = rng.poisson(rng.uniform(0.2, 30), k).astype(float)
        b[0] += 1  # keep the baseline non-empty
        return b, w
    if name == "empty_in_window":
        k = int(rng.integers(2, 15))
        b = rng.integers(1, 500, k).astype(float)
        w = rng.integers(0, 500, k).astype(float)
        w[rng.integers(k)] = 0
        return b, w
    if name == "empty_in_baseline":
        k = int(rng.integers(2, 15))
        b = rng.integers(0, 500, k).astype(float)
        w = rng.integers(1, 500, k).astype(float)
        b[rng.integers(k)] = 0
        b[(rng.integers(k) + 1) % k] += 1
        return b, w
    if name == "both_empty_bins":
        k = int(rng.integers(4, 20))
        b = rng.integers(0, 100, k).astype(float) + 1
        w = rng.integers(0, 100, k).astype(float)
        both = rng.choice(k, 2, replace=False)
        b[both] = 0
        w[both] = 0
        return b, w
    if name == "drifted_decile":
        # Same bins, shifted window: p-values far in the tail.
        b = rng.multinomial(5000, np.full(10, 0.1)).astype(float)
        w = rng.multinomial(int(rng.integers(100, 3000)), np.linspace(0.02, 0.18, 10)).astype(float)
        return b, w
    if name == "categories_200":
        p = rng.dirichlet(np.full(200, 0.3))
        b = rng.multinomial(int(rng.integers(5000, 20000)), p).astype(float)
        w = rng.multinomial(int(rng.integers(50, 2000)), p).astype(float)
        return b, w
    if name == "categories_200_zipf_drift":
        ranks = np.arange(1, 201)
        b = rng.multinomial(10000, ranks**-1.1 / np.sum(ranks**-1.1)).astype(float)
        w = rng.multinomial(500, ranks[::-1] ** -1.1 / np.sum(ranks**-1.1)).astype(float)
        return b, w
    if name == "large_counts":
        k = int(rng.integers(2, 30))
        p = rng.dirichlet(np.ones(k))
        b = rng.multinomial(10**9, p).astype(float)
        w = rng.multinomial(int(rng.integers(10**6, 10**8)), p).astype(float)
        return b, w
    if name == "large_counts_drift":
        k = int(rng.integers(2, 30))
        b = rng.multinomial(10**9, rng.dirichlet(np.ones(k))).astype(float)
        w = rng.multinomial(10**7, rng.dirichlet(np.ones(k))).astype(float)
        return b, w
    raise AssertionError(name)


SCENARIOS = [
    "one_bin",
    "two_bins",
    "small_with_zeros",
    "empty_in_window",
    "empty_in_baseline",
    "both_empty_bins",
    "drifted_decile",
    "categories_200",
    "categories_200_zipf_drift",
    "large_counts",
    "large_counts_drift",
]


def cases(name: str, count: int = 40) -> Iterator[tuple[list[float], list[float]]]:
    rng = np.random.default_rng(SCENARIOS.index(name))
    for _ in range(count):
        b, w = scenario(name, rng)
        yield b.tolist(), w.tolist()


def check_effect_sizes(result: DriftTest, b: list[float], w: list[float]) -> None:
    e, a = proportions(b), proportions(w)
    assert close(result.psi, ref_psi(e, a))
    assert close(result.kl, ref_kl(e, a))
    assert close(result.js, float(jensenshannon(a, e)))
    if min(e) >= EPS and min(a) >= EPS:
        # No floor applied, so the proportions are a distribution and scipy applies.
        assert close(result.kl, float(entropy(a, e)))
    assert result.n == round(math.fsum(w))
    assert result.m == round(math.fsum(b))


# --- numeric -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_numeric_matches_reference(name: str) -> None:
    for b, w in cases(name):
        result = numeric_test(b, w)
        if math.fsum(w) == 0:
            assert (result.score, result.p_value) == (0.0, 1.0)
            continue
        check_effect_sizes(result, b, w)
        e, a = proportions(b), proportions(w)
        n, m = math.fsum(w), math.fsum(b)
        dof = sum(1 for bi, wi in zip(b, w, strict=True) if bi > 0 or wi > 0) - 1
        assert result.kind == "numeric"
        assert result.cohen_w is None
        assert result.dof == dof
        assert close(result.score, ref_psi(e, a))
        if dof < 1:
            assert (result.statistic, result.p_value) == (0.0, 1.0)
            continue
        statistic = ref_psi(e, a) * n * m / (n + m)
        assert close(result.statistic, statistic)
        assert close_p(result.p_value, float(chi2.sf(statistic, dof)))


def test_numeric_reference_covers_the_tail() -> None:
    # The comparisons above must include p-values far from 1 and below alpha, or the
    # tail of chdtrc would go unchecked.
    ps = [numeric_test(b, w).p_value for b, w in cases("drifted_decile")]
    assert min(ps) < 1e-30


# --- categorical -------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_categorical_matches_reference(name: str) -> None:
    for b, w in cases(name):
        result = categorical_test(b, w)
        if math.fsum(w) == 0:
            assert (result.score, result.p_value) == (0.0, 1.0)
            continue
        check_effect_sizes(result, b, w)
        e, a = proportions(b), proportions(w)
        assert result.kind == "categorical"
        assert result.cohen_w is not None
        assert close(result.cohen_w, ref_w(e, a))
        # The score is w less its sampling noise (k' - 1)(1/n + 1/m), k' = categories seen.
        k = np.count_nonzero((np.asarray(b) > 0) | (np.asarray(w) > 0))
        n, m = math.fsum(w), math.fsum(b)
        noise = (k - 1) * (1 / n + 1 / m)
        assert close(result.score, math.sqrt(max(ref_w(e, a) ** 2 - noise, 0.0)))
        table = ref_pooled_table(b, w)
        if table.shape[1] < 2:
            assert (result.statistic, result.dof, result.p_value) == (0.0, table.shape[1] - 1, 1.0)
            continue
        ref = chi2_contingency(table, correction=False)
        assert result.dof == ref.dof
        assert close(result.statistic, float(ref.statistic))
        assert close_p(result.p_value, float(ref.pvalue))


def test_categorical_without_sparse_columns_is_plain_chi2_contingency() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        k = int(rng.integers(2, 40))
        b = rng.integers(50, 5000, k).astype(float)
        w = rng.integers(50, 5000, k).astype(float)
        result = categorical_test(b, w)
        ref = chi2_contingency(np.array([b, w]), correction=False)
        assert result.dof == ref.dof == k - 1
        assert close(result.statistic, float(ref.statistic))
        assert close_p(result.p_value, float(ref.pvalue))


def test_pooling_happens_in_the_sparse_cases() -> None:
    # Otherwise the pooled comparisons above would silently test the unpooled path only.
    pooled = 0
    for b, w in cases("categories_200"):
        kept = sum(1 for bi, wi in zip(b, w, strict=True) if bi > 0 or wi > 0)
        pooled += categorical_test(b, w).dof < kept - 1
    assert pooled == 40


def test_expected_count_of_exactly_five_is_not_pooled() -> None:
    # n = 100, m = 400: a column of total 25 expects 100 * 25 / 500 = 5 window events.
    b = [20.0, 380.0]
    w = [5.0, 95.0]
    assert categorical_test(b, w).dof == 1
    # One event fewer in the small column: expected 4.8, pooled into one column.
    b = [19.0, 381.0]
    result = categorical_test(b, w)
    assert (result.dof, result.statistic, result.p_value) == (0, 0.0, 1.0)


def test_uniform_sparse_categories_keep_degrees_of_freedom() -> None:
    # 200 categories of column total 50 each, m + n = 10000, window of 100: each column
    # expects 100 * 50 / 10000 = 0.5 window events, so pools of exactly ten columns reach
    # 5 and the test keeps 20 columns. One pooled column for all would leave no test.
    w = np.zeros(200)
    w[::2] = 1.0
    b = 50.0 - w
    result = categorical_test(b, w)
    assert result.dof == 19
    assert result.p_value > 0.05  # the window matches the baseline closely


def test_category_unseen_in_training_is_a_large_effect() -> None:
    b = [600.0, 400.0, 0.0]
    w = [55.0, 40.0, 5.0]  # 5 % of the window is a category the baseline never saw
    result = categorical_test(b, w)
    assert result.cohen_w is not None
    assert result.cohen_w > 0.5
    assert math.isfinite(result.psi)
    assert math.isfinite(result.kl)


# --- shared input handling ----------------------------------------------------------


@pytest.mark.parametrize("test", [numeric_test, categorical_test])
def test_empty_window_is_no_evidence(test: Callable[..., DriftTest]) -> None:
    result = test([10.0, 20.0, 30.0], [0.0, 0.0, 0.0])
    assert (result.score, result.psi, result.kl, result.js) == (0.0, 0.0, 0.0, 0.0)
    assert (result.statistic, result.p_value, result.n, result.m) == (0.0, 1.0, 0, 60)


@pytest.mark.parametrize("test", [numeric_test, categorical_test])
@pytest.mark.parametrize(
    ("baseline", "window"),
    [
        ([1.0, 2.0], [1.0]),
        ([], []),
        ([[1.0, 2.0]], [[1.0, 2.0]]),
        ([1.0, -1.0], [1.0, 1.0]),
        ([1.0, 1.0], [1.0, float("nan")]),
        ([1.0, float("inf")], [1.0, 1.0]),
        ([0.0, 0.0], [1.0, 1.0]),
    ],
)
def test_invalid_counts_are_rejected(
    test: Callable[..., DriftTest], baseline: list[float], window: list[float]
) -> None:
    with pytest.raises(ValueError, match="count"):
        test(baseline, window)


def test_epsilon_is_the_documented_floor() -> None:
    assert drift.EPSILON == EPS


def test_identical_distributions_have_no_effect() -> None:
    counts = [10.0, 0.0, 30.0, 60.0]
    for test in (numeric_test, categorical_test):
        result = test(counts, [c * 3 for c in counts])
        assert (result.psi, result.kl, result.js) == (0.0, 0.0, 0.0)
        assert result.statistic == 0.0
        assert result.p_value == 1.0


# --- severity policy ---------------------------------------------------------------


def test_severity_values_and_order() -> None:
    assert [s.value for s in Severity] == ["none", "warning", "critical"]
    assert Severity.NONE.rank < Severity.WARNING.rank < Severity.CRITICAL.rank
    assert Severity("critical") is Severity.CRITICAL


@pytest.mark.parametrize(
    ("score", "p_value", "expected"),
    [
        (0.2, 0.01, Severity.WARNING),  # exactly at the warning threshold
        (math.nextafter(0.2, 0.0), 0.01, Severity.NONE),
        (0.5, 0.01, Severity.CRITICAL),  # exactly at the critical threshold
        (math.nextafter(0.5, 0.0), 0.01, Severity.WARNING),
        (3.0, 0.05, Severity.NONE),  # p == alpha is not significant
        (3.0, math.nextafter(0.05, 0.0), Severity.CRITICAL),
        (3.0, 1.0, Severity.NONE),
        (0.0, 0.0, Severity.NONE),
    ],
)
def test_severity_boundaries_at_defaults(score: float, p_value: float, expected: Severity) -> None:
    assert feature_severity(score, p_value) is expected
    assert feature_severity(score, p_value, 0.05, Thresholds()) is expected


def test_custom_thresholds() -> None:
    thresholds = Thresholds(warning=0.1, critical=0.3)
    assert feature_severity(0.1, 0.001, 0.05, thresholds) is Severity.WARNING
    assert feature_severity(0.3, 0.001, 0.05, thresholds) is Severity.CRITICAL
    assert feature_severity(0.09, 0.001, 0.05, thresholds) is Severity.NONE


@pytest.mark.parametrize(
    ("warning", "critical"),
    [(0.5, 0.2), (0.3, 0.3), (0.0, 0.5), (-0.1, 0.5), (float("nan"), 0.5), (0.2, float("inf"))],
)
def test_invalid_thresholds(warning: float, critical: float) -> None:
    with pytest.raises(ValueError, match="warning"):
        Thresholds(warning=warning, critical=critical)


def test_bonferroni() -> None:
    assert effective_alpha(0.05, 5) == 0.05
    assert effective_alpha(0.05, 5, bonferroni=True) == pytest.approx(0.01, rel=1e-15)
    assert effective_alpha(0.05, 1, bonferroni=True) == 0.05
    assert effective_alpha(0.05, 0, bonferroni=True) == 0.05
    # p = 0.02 is significant alone but not as one of five features under Bonferroni.
    assert feature_severity(0.6, 0.02, effective_alpha(0.05, 5)) is Severity.CRITICAL
    bonferroni = effective_alpha(0.05, 5, bonferroni=True)
    assert feature_severity(0.6, 0.02, bonferroni) is Severity.NONE
    assert feature_severity(0.6, bonferroni, bonferroni) is Severity.NONE
    assert feature_severity(0.6, 0.009, bonferroni) is Severity.CRITICAL


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, float("nan")])
def test_invalid_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        effective_alpha(alpha, 3)


# --- monitor verdict ---------------------------------------------------------------

W, C, N = Severity.WARNING, Severity.CRITICAL, Severity.NONE


def test_verdict_worst_feature() -> None:
    verdict = monitor_verdict({"a": W, "b": N, "c": C}, {"a": 0.3, "b": 0.9, "c": 0.6}, 500)
    assert verdict == Verdict(
        severity=C, drift_detected=True, drift_score=0.9, flagged=["a", "c"], ready=True
    )


def test_verdict_needs_min_samples() -> None:
    severities, scores = {"a": C}, {"a": 2.0}
    below = monitor_verdict(severities, scores, 99)
    assert (below.severity, below.drift_detected, below.ready) == (N, False, False)
    assert below.drift_score == 2.0
    at = monitor_verdict(severities, scores, 100)
    assert (at.severity, at.drift_detected, at.ready) == (C, True, True)
    custom = monitor_verdict(severities, scores, 99, min_samples=50)
    assert custom.ready
    assert custom.severity is C


def test_verdict_needs_min_drifted_features() -> None:
    severities = {"a": W, "b": N, "c": N}
    scores = {"a": 0.3, "b": 0.0, "c": 0.1}
    one = monitor_verdict(severities, scores, 1000, min_drifted_features=2)
    assert (one.severity, one.drift_detected, one.flagged, one.ready) == (N, False, ["a"], True)
    two = monitor_verdict({**severities, "c": C}, scores, 1000, min_drifted_features=2)
    assert (two.severity, two.drift_detected, two.flagged) == (C, True, ["a", "c"])


def test_verdict_without_features() -> None:
    verdict = monitor_verdict({}, {}, 1000)
    assert verdict == Verdict(
        severity=N, drift_detected=False, drift_score=0.0, flagged=[], ready=True
    )


def test_verdict_nothing_flagged() -> None:
    verdict = monitor_verdict({"a": N}, {"a": 0.15}, 1000)
    assert (verdict.severity, verdict.drift_detected, verdict.drift_score) == (N, False, 0.15)


@pytest.mark.parametrize(("min_samples", "min_drifted"), [(-1, 1), (100, 0)])
def test_verdict_rejects_bad_settings(min_samples: int, min_drifted: int) -> None:
    with pytest.raises(ValueError, match="min_"):
        monitor_verdict(
            {"a": C}, {"a": 1.0}, 10, min_samples=min_samples, min_drifted_features=min_drifted
        )
