"""Every number of driftline.core.drift against an independent computation.

The references below are written from the formulas in docs/metrics.md with plain Python
loops (math.log, math.fsum, math.comb) and scipy (chi2_contingency, jensenshannon,
wasserstein_distance, kstwobign), not by calling the code under test. The exact null
moments of Pearson's X² are checked by enumerating every table with the margins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, chi2_contingency, entropy, kstwobign, wasserstein_distance

from driftline.core import drift
from driftline.core.drift import (
    STACKED_POOLINGS_KEPT,
    DriftTest,
    PoolingOrder,
    StackedPooling,
    Verdict,
    adjust_pvalues,
    feature_severity,
    feature_test,
    homogeneity,
    monitor_verdict,
)
from driftline.core.policy import TESTS, Thresholds
from driftline.core.severity import SEVERITY_GAUGE, SEVERITY_RANK, Severity

EPS = 1e-4  # the spec's floor, written here on purpose instead of importing it
MIN_EVENTS = 10  # the spec's minimum window for a test
TOL = 1e-9


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL)


def close_p(actual: float, expected: float) -> bool:
    # p-values far in the tail would pass any absolute tolerance, so compare relatively.
    return math.isclose(actual, expected, rel_tol=1e-7, abs_tol=1e-300)


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


def ref_raw_w(e: list[float], a: list[float]) -> float:
    terms = []
    for ei, ai in zip(e, a, strict=True):
        denom = ei if ei > 0 else EPS
        terms.append((ai - ei) ** 2 / denom)
    return math.sqrt(math.fsum(terms))


def ref_hellinger(e: list[float], a: list[float]) -> float:
    overlap = math.fsum(math.sqrt(ei * ai) for ei, ai in zip(e, a, strict=True))
    return math.sqrt(max(1.0 - overlap, 0.0))


def ref_ks(e: list[float], a: list[float]) -> float:
    return max(
        (
            abs(fa - fe)
            for fa, fe in zip(itertools.accumulate(a), itertools.accumulate(e), strict=True)
        ),
        default=0.0,
    )


def table(b: list[float], w: list[float]) -> np.ndarray:
    """The 2 x k' table with columns empty on both rows dropped."""
    kept = [j for j in range(len(b)) if b[j] > 0 or w[j] > 0]
    return np.array([[b[j] for j in kept], [w[j] for j in kept]])


def pearson(b: list[float], w: list[float]) -> tuple[float, int]:
    t = table(b, w)
    if t.shape[1] < 2 or t[0].sum() == 0 or t[1].sum() == 0:
        return 0.0, max(t.shape[1] - 1, 0)
    ref = chi2_contingency(t, correction=False)
    return float(ref.statistic), int(ref.dof)


def exact_moments(columns: list[int], n: int) -> tuple[float, float]:
    """E and Var of Pearson's X² over every window row with these column totals and sum n."""
    total = sum(columns)
    m = total - n
    mean = second = 0.0
    for w in itertools.product(*(range(c + 1) for c in columns)):
        if sum(w) != n:
            continue
        probability = math.prod(math.comb(c, x) for c, x in zip(columns, w, strict=True))
        probability /= math.comb(total, n)
        x2 = math.fsum((n * (c - x) - m * x) ** 2 / c for c, x in zip(columns, w, strict=True)) / (
            n * m
        )
        mean += probability * x2
        second += probability * x2 * x2
    return mean, second - mean * mean


def moment_matched_p(statistic: float, mean: float, variance: float) -> float:
    """P(a·χ²(nu) >= statistic), a and nu matching the mean and variance."""
    scale, shape = variance / (2 * mean), 2 * mean * mean / variance
    return float(chi2.sf(statistic / scale, shape))


def ref_pools(key: list[float], n: float, m: float) -> list[list[int]]:
    """Pools as docs/metrics.md states the rule, by plain loops (n already stepped)."""
    order = sorted(range(len(key)), key=lambda j: (key[j], j))
    total = math.fsum(key)
    need = max(1.0, m / n)  # expected baseline count of a complete pool
    pools: list[list[int]] = []
    current: list[int] = []
    acc = 0.0
    for j in order:
        current.append(j)
        acc += key[j] * m / total
        if acc >= need * (1 - 1e-12):
            pools.append(current)
            current, acc = [], 0.0
    if current:
        if pools:
            pools[-1].extend(current)
        else:
            pools.append(current)
    return pools


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
    if name == "tiny_window":
        k = int(rng.integers(2, 12))
        b = rng.integers(1, 500, k).astype(float)
        w = np.zeros(k)
        w[rng.integers(k, size=int(rng.integers(1, 15)))] += 1
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
    "tiny_window",
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


def check_detail(result: DriftTest, b: list[float], w: list[float]) -> None:
    e, a = proportions(b), proportions(w)
    assert close(result.psi, ref_psi(e, a))
    assert close(result.kl, ref_kl(e, a))
    assert close(result.js, float(jensenshannon(a, e)))
    if min(e) >= EPS and min(a) >= EPS:
        # No floor applied, so the proportions are a distribution and scipy applies.
        assert close(result.kl, float(entropy(a, e)))
    assert result.n == round(math.fsum(w))
    assert result.m == round(math.fsum(b))


# --- the homogeneity test ------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_statistic_is_pearsons_chi_square_of_the_table(name: str) -> None:
    for b, w in cases(name):
        test = homogeneity(np.array([b]), np.array([w]))
        statistic, dof = pearson(b, w)
        assert int(test.dof[0]) == dof
        assert close(float(test.statistic[0]), statistic)
        n, m = math.fsum(w), math.fsum(b)
        assert close(float(test.null_mean[0]), dof * (n + m) / (n + m - 1))


@pytest.mark.parametrize(
    ("columns", "n"),
    [([5, 8, 6, 7], 12), ([1, 1, 2, 9, 3], 10), ([20, 1, 1], 11), ([3, 4, 5, 6, 7, 2], 13)],
)
def test_reference_matches_the_exact_null_moments(columns: list[int], n: int) -> None:
    # Every window row with these column totals is enumerated: the p-value must be that
    # of a chi-square scaled to X²'s exact mean and variance.
    mean, variance = exact_moments(columns, n)
    rng = np.random.default_rng(sum(columns))
    for _ in range(20):
        w = rng.multivariate_hypergeometric(columns, n).astype(float)
        b = np.asarray(columns, dtype=float) - w
        test = homogeneity(b[None, :], w[None, :])
        assert close(float(test.null_mean[0]), mean)
        statistic, _ = pearson(b.tolist(), w.tolist())
        assert close_p(float(test.p_value[0]), moment_matched_p(statistic, mean, variance))


def test_large_cells_give_the_plain_chi_square_test() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        k = int(rng.integers(2, 12))
        b = rng.integers(5000, 50000, k).astype(float)
        w = rng.integers(5000, 50000, k).astype(float)
        p = float(homogeneity(b[None, :], w[None, :]).p_value[0])
        ref = chi2_contingency(np.array([b, w]), correction=False)
        assert p == pytest.approx(float(ref.pvalue), rel=2e-3, abs=1e-12)


def test_fewer_than_ten_window_events_are_not_tested() -> None:
    b = np.array([[100.0, 100.0, 100.0]] * 3)
    w = np.array([[9.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    test = homogeneity(b, w)
    assert test.p_value[0] == 1.0  # 9 events, all in one bin: no verdict
    assert test.p_value[1] < 1e-3  # 10 events: tested
    assert test.p_value[2] == 1.0
    assert test.statistic[0] > 0  # the statistic is still reported


def test_p_values_reach_far_into_the_tail() -> None:
    ps = [
        float(homogeneity(np.array([b]), np.array([w])).p_value[0])
        for b, w in cases("drifted_decile")
    ]
    assert min(ps) < 1e-30


# --- effect sizes ------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_every_effect_size_matches_its_reference(name: str, kind: str) -> None:
    for b, w in cases(name, 15):
        n, m = math.fsum(w), math.fsum(b)
        e, a = proportions(b), proportions(w) if n else [0.0] * len(w)
        statistic, dof = pearson(b, w)
        positions = np.cumsum(np.arange(1, len(b) + 1, dtype=float))  # increasing, uneven
        expected = {
            "psi": ref_psi(e, a),
            "jensenshannon": float(jensenshannon(a, e)) if n else 0.0,
            "hellinger": ref_hellinger(e, a),
            "ks": ref_ks(e, a),
            "wasserstein": wasserstein_distance(positions, positions, a, e) / 2.5 if n else 0.0,
            "chisquare": math.sqrt(
                max(statistic - dof * (n + m) / (n + m - 1), 0.0) * (1 / n + 1 / m)
            )
            if n and dof >= 1
            else 0.0,
        }
        for test in TESTS:
            if kind == "categorical" and test in ("ks", "wasserstein"):
                continue
            result = feature_test(kind, b, w, test, positions=positions, scale=2.5)  # type: ignore[arg-type]
            assert result.test == test
            assert close(result.score, expected[test] if n else 0.0), (test, b, w)
            if n:
                check_detail(result, b, w)


def test_raw_cohen_w_floors_categories_the_baseline_never_saw() -> None:
    b = [600.0, 400.0, 0.0]
    w = [55.0, 40.0, 5.0]  # 5 % of the window is a category the baseline never saw
    result = feature_test("categorical", b, w)
    assert result.cohen_w == pytest.approx(ref_raw_w(proportions(b), proportions(w)), rel=TOL)
    assert result.cohen_w is not None and result.cohen_w > 0.5
    # The score (noise-free w from X²) needs no floor: large, but not ten times the
    # window's share as the floored w makes it.
    assert 0.5 < result.score < result.cohen_w / 5


def test_noise_free_w_is_near_zero_without_drift() -> None:
    # 200 categories and 100 events: the raw w of such windows is ~1.4 from noise alone.
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(200, 0.5))
    scores = [
        feature_test(
            "categorical",
            rng.multinomial(5000, p).astype(float),
            rng.multinomial(100, p).astype(float),
        ).score
        for _ in range(200)
    ]
    assert float(np.mean(scores)) < 0.3


def test_ks_p_value_is_kolmogorovs_with_stephens_correction() -> None:
    for b, w in cases("drifted_decile", 20):
        result = feature_test("numeric", b, w, "ks")
        n, m = math.fsum(w), math.fsum(b)
        en = n * m / (n + m)
        d = ref_ks(proportions(b), proportions(w))
        expected = float(kstwobign.sf((math.sqrt(en) + 0.12 + 0.11 / math.sqrt(en)) * d))
        assert close_p(result.p_value, expected)


def test_tests_share_the_homogeneity_p_value_except_ks() -> None:
    b, w = next(cases("drifted_decile"))
    p = float(homogeneity(np.array([b]), np.array([w])).p_value[0])
    for test in ("psi", "jensenshannon", "hellinger", "chisquare", "wasserstein"):
        assert feature_test("numeric", b, w, test).p_value == p  # type: ignore[arg-type]
    assert feature_test("numeric", b, w, "ks").p_value != p


# --- categorical pooling ------------------------------------------------------------


def test_pools_follow_the_documented_rule() -> None:
    rng = np.random.default_rng(21)
    for _ in range(200):
        k = int(rng.integers(1, 60))
        key = rng.poisson(rng.uniform(0.1, 40), k).astype(float)
        key[rng.integers(k)] += 1
        baseline = rng.poisson(key + 0.5).astype(float)
        if baseline.sum() == 0:
            baseline[0] = 1
        window = rng.poisson(1.0, k).astype(float)
        window[0] += float(rng.integers(1, 5000))
        stepped = 2 ** (math.floor(8 * math.log2(window.sum())) / 8)
        pools = ref_pools(key.tolist(), stepped, float(baseline.sum()))
        order = PoolingOrder.of(key, baseline)
        pooled_b, pooled_w = order.pool(window)
        expected_b = [math.fsum(baseline[j] for j in pool) for pool in pools]
        expected_w = [math.fsum(window[j] for j in pool) for pool in pools]
        # Pools in ascending key order, as the reference lists them.
        assert pooled_b.tolist() == pytest.approx(expected_b)
        assert pooled_w.tolist() == pytest.approx(expected_w)


def test_pools_depend_on_the_selection_counts_not_the_window() -> None:
    key = [50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 45.0]
    baseline = [48.0, 2.0, 0.0, 1.0, 1.0, 0.0, 3.0, 45.0]
    order = PoolingOrder.of(key, baseline)
    a = order.pool(np.array([10.0, 0, 0, 0, 0, 0, 0, 10]))
    b = order.pool(np.array([10.0, 5, 0, 0, 0, 0, 5, 0]))
    assert a[0].tolist() == b[0].tolist()  # same baseline pools for the same n
    assert a[0].size == b[0].size < 8


def test_stacked_pooling_pools_every_row_as_its_own_order_does() -> None:
    # Rows of different widths padded into one matrix, windows from empty to large
    # (steps of n below, at and above a pool's size), and more combinations of steps
    # than the stacked pooling keeps: each answer is the rows' own pools, padded.
    rng = np.random.default_rng(5)
    sizes = [int(k) for k in rng.integers(1, 40, size=12)]
    width = max(sizes) + 3
    orders = []
    for k in sizes:
        key = rng.poisson(rng.uniform(0.2, 30), k).astype(float) + (rng.random(k) < 0.3)
        baseline = rng.poisson(key + 0.5).astype(float)
        baseline[0] += 1
        orders.append(PoolingOrder.of(key, baseline))
    stacked = StackedPooling.of(orders, width)
    seen = set()
    for trial in range(STACKED_POOLINGS_KEPT * 3):
        window = np.zeros((len(sizes), width))
        for row, k in enumerate(sizes):
            scale = 0 if rng.random() < 0.1 else float(rng.choice([0.3, 3, 30, 3000]))
            window[row, :k] = rng.poisson(scale, k)
        seen.add(tuple(window.sum(axis=1).tolist()))
        pooled_b, pooled_w = stacked.pool(window)
        rows = [order.pool(window[row]) for row, order in enumerate(orders)]
        wide = max(b.size for b, _ in rows)
        assert pooled_b.shape == pooled_w.shape == (len(sizes), wide), trial
        for row, (b, w) in enumerate(rows):
            np.testing.assert_array_equal(pooled_b[row, : b.size], b)
            np.testing.assert_array_equal(pooled_w[row, : w.size], w)
            assert not pooled_b[row, b.size :].any() and not pooled_w[row, w.size :].any()
    assert len(seen) > STACKED_POOLINGS_KEPT
    assert len(stacked._by_steps) <= STACKED_POOLINGS_KEPT  # memory stays bounded


def test_pooled_test_is_the_homogeneity_test_of_the_pooled_table() -> None:
    for b, w in cases("categories_200", 20):
        result = feature_test("categorical", b, w)
        pooled_b, pooled_w = PoolingOrder.of(b, b).pool(np.asarray(w))
        statistic, dof = pearson(pooled_b.tolist(), pooled_w.tolist())
        assert result.dof == dof < 199
        assert close(result.statistic, statistic)


# --- shared input handling ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_empty_window_is_no_evidence(kind: str) -> None:
    result = feature_test(kind, [10.0, 20.0, 30.0], [0.0, 0.0, 0.0])  # type: ignore[arg-type]
    assert (result.score, result.psi, result.kl, result.js) == (0.0, 0.0, 0.0, 0.0)
    assert (result.statistic, result.p_value, result.n, result.m) == (0.0, 1.0, 0, 60)


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
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
def test_invalid_counts_are_rejected(kind: str, baseline: list[float], window: list[float]) -> None:
    with pytest.raises(ValueError, match="count"):
        feature_test(kind, baseline, window)  # type: ignore[arg-type]


def test_epsilon_is_the_documented_floor() -> None:
    assert drift.EPSILON == EPS


def test_identical_distributions_have_no_effect() -> None:
    counts = [10.0, 0.0, 30.0, 60.0]
    for kind in ("numeric", "categorical"):
        result = feature_test(kind, counts, [c * 3 for c in counts])  # type: ignore[arg-type]
        assert (result.psi, result.kl, result.js, result.score) == (0.0, 0.0, 0.0, 0.0)
        assert result.statistic == 0.0
        assert result.p_value == pytest.approx(1.0)


# --- multiple testing ----------------------------------------------------------------


def ref_adjusted(p: list[float], method: str) -> list[float]:
    f = len(p)
    order = sorted(range(f), key=lambda i: p[i])
    out = [0.0] * f
    if method == "bonferroni":
        return [min(1.0, f * x) for x in p]
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (f - rank) * p[i]))
            out[i] = running
        return out
    running = 1.0
    for rank in range(f - 1, -1, -1):
        i = order[rank]
        running = min(running, f / (rank + 1) * p[i])
        out[i] = running
    return out


def test_adjusted_p_values_match_hand_computed_ones() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    assert adjust_pvalues(p, "holm").tolist() == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.2])
    assert adjust_pvalues(p, "bh").tolist() == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.2])
    assert adjust_pvalues(p, "bonferroni").tolist() == pytest.approx([0.05, 0.2, 0.15, 0.025, 1.0])
    assert adjust_pvalues(p, "none").tolist() == p


@pytest.mark.parametrize("method", ["bonferroni", "holm", "bh"])
def test_adjusted_p_values_match_their_definitions(method: str) -> None:
    rng = np.random.default_rng(5)
    for size in (1, 2, 7, 40):
        p = rng.uniform(0, 0.2, size).tolist()
        p[0] = 1.0  # an untested feature stays in the family
        got = adjust_pvalues(p, method)  # type: ignore[arg-type]
        assert got.tolist() == pytest.approx(ref_adjusted(p, method) if size > 1 else p)
        # Rows are families of their own.
        assert adjust_pvalues(np.array([p, p]), method).tolist() == [got.tolist()] * 2  # type: ignore[arg-type]


def test_bonferroni_is_alpha_over_the_features() -> None:
    # p = 0.02 is significant alone but not as one of five features under Bonferroni.
    p = np.array([0.02, 0.5, 0.5, 0.5, 0.5])
    assert adjust_pvalues(p, "none")[0] < 0.05
    assert not adjust_pvalues(p, "bonferroni")[0] < 0.05
    assert adjust_pvalues(np.array([0.009, 1, 1, 1, 1]), "bonferroni")[0] < 0.05


# --- severity policy ---------------------------------------------------------------


def test_severity_values_order_and_gauges() -> None:
    assert [s.value for s in Severity] == ["none", "notice", "warning", "critical"]
    assert [s.rank for s in Severity] == [0, 1, 2, 3] == list(SEVERITY_RANK.values())
    # Warning and critical keep the Prometheus values they had before notice existed.
    assert [s.gauge for s in Severity] == [0.0, 0.5, 1.0, 2.0] == list(SEVERITY_GAUGE.values())
    assert Severity("critical") is Severity.CRITICAL


@pytest.mark.parametrize(
    ("score", "p_value", "expected"),
    [
        (0.1, 0.01, Severity.NOTICE),  # exactly at the notice threshold
        (math.nextafter(0.1, 0.0), 0.01, Severity.NONE),
        (0.2, 0.01, Severity.WARNING),  # exactly at the warning threshold
        (math.nextafter(0.2, 0.0), 0.01, Severity.NOTICE),
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
    thresholds = Thresholds(warning=0.1, critical=0.3, notice=0.05)
    assert feature_severity(0.05, 0.001, 0.05, thresholds) is Severity.NOTICE
    assert feature_severity(0.1, 0.001, 0.05, thresholds) is Severity.WARNING
    assert feature_severity(0.3, 0.001, 0.05, thresholds) is Severity.CRITICAL
    assert feature_severity(0.04, 0.001, 0.05, thresholds) is Severity.NONE
    # notice == warning: no notice tier.
    no_notice = Thresholds(warning=0.2, critical=0.5, notice=0.2)
    assert feature_severity(0.19, 0.001, 0.05, no_notice) is Severity.NONE
    assert feature_severity(0.2, 0.001, 0.05, no_notice) is Severity.WARNING


@pytest.mark.parametrize(
    ("warning", "critical"),
    [(0.5, 0.2), (0.3, 0.3), (0.0, 0.5), (-0.1, 0.5), (float("nan"), 0.5), (0.2, float("inf"))],
)
def test_invalid_thresholds(warning: float, critical: float) -> None:
    with pytest.raises(ValueError, match="warning"):
        Thresholds(warning=warning, critical=critical)


@pytest.mark.parametrize("notice", [0.3, 0.0, -1.0, float("nan")])
def test_notice_must_not_exceed_warning(notice: float) -> None:
    with pytest.raises(ValueError, match="notice"):
        Thresholds(warning=0.2, critical=0.5, notice=notice)


# --- monitor verdict ---------------------------------------------------------------

W, C, N, NOTE = Severity.WARNING, Severity.CRITICAL, Severity.NONE, Severity.NOTICE


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
    # One flagged feature of the two needed: drift is not called, but it is a notice.
    assert (one.severity, one.drift_detected, one.flagged, one.ready) == (NOTE, False, ["a"], True)
    two = monitor_verdict({**severities, "c": C}, scores, 1000, min_drifted_features=2)
    assert (two.severity, two.drift_detected, two.flagged) == (C, True, ["a", "c"])


def test_notices_make_a_notice_not_drift() -> None:
    verdict = monitor_verdict({"a": NOTE, "b": N}, {"a": 0.15, "b": 0.0}, 1000)
    assert (verdict.severity, verdict.drift_detected, verdict.flagged) == (NOTE, False, [])
    assert monitor_verdict({"a": NOTE}, {"a": 0.15}, 10).severity is N  # not ready


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
