"""Drift statistics: effect sizes, the homogeneity test, multiple testing and severity.

This module and driftline.core.quality are where the formulas live (docs/metrics.md
explains them). They work on count matrices over a feature's bins, one row per feature
(or per simulated window), and know nothing of HTTP, stores or config files.

Each feature answers two questions separately: is the change large (an effect size
compared with thresholds) and is it real (a test whose p-value accounts for how many
events the window and the baseline hold). A feature is flagged only when both say yes.
The test is the same for every effect size: Pearson's X² of the baseline-vs-window
table, referred to a chi-square scaled to X²'s exact mean and variance given the
table's margins, which holds its level from 10 window events up (docs/metrics.md).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc, kolmogorov, rel_entr

from driftline.core.policy import DEFAULTS, MIN_TEST_EVENTS, MultipleTesting, TestName, Thresholds
from driftline.core.severity import LEVELS, Severity

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]  # 2-d: one row per feature
IntVector = npt.NDArray[np.intp]

EPSILON: float = 1e-4
"""Floor for proportions in PSI and KL (effect sizes only, never in a test), so a bin
empty on one side keeps them finite. Floored proportions are not renormalised. The raw
Cohen's w of a report uses it as the baseline proportion of a category never seen."""

POOL_MIN_EXPECTED: float = 1.0
"""A categorical test pools rare categories until each pool expects at least this many
events on both sides (see `PoolingOrder`)."""


# --------------------------------------------------------------------- the test


@dataclass(frozen=True, slots=True)
class Homogeneity:
    """Pearson's X² test of each row's 2 x k table (baseline counts vs window counts)."""

    statistic: Vector  # X²
    dof: IntVector  # k' - 1, k' = bins non-empty on a side
    p_value: Vector  # 1 where the row cannot be tested (see `homogeneity`)
    null_mean: Vector  # E0[X²] given the margins, (k' - 1) N / (N - 1)
    n: Vector  # window events (non-missing)
    m: Vector  # baseline rows (non-missing)

    def select(self, rows: IntVector | slice) -> Homogeneity:
        """The test of some of the rows."""
        return Homogeneity(
            self.statistic[rows],
            self.dof[rows],
            self.p_value[rows],
            self.null_mean[rows],
            self.n[rows],
            self.m[rows],
        )


def homogeneity(baseline: Matrix, window: Matrix, *, reference: bool = True) -> Homogeneity:
    """X² per row and its p-value against a chi-square scaled to X²'s exact mean and variance.

    Under no drift, given the table's margins, the window row is multivariate
    hypergeometric; E0 and V0 below are X²'s exact mean and variance then. X² is
    referred to a·χ²(nu) with a = V0 / (2 E0), nu = 2 E0² / V0 (both matched). With
    large cells V0 -> 2(k' - 1) and this is the plain chi-square test; sparse bins
    enter through R = Σ 1/c_j and make the reference wider, which the plain test
    misses. A row is not tested (p = 1) with fewer than MIN_TEST_EVENTS window events,
    an empty baseline, or fewer than two bins seen. Bins empty on both sides (padding
    included) add nothing. `reference=False` skips the p-value (every p = 1).
    """
    b, w = baseline, window
    m = b.sum(axis=-1)
    n = w.sum(axis=-1)
    columns = b + w
    used = columns > 0.0
    inverse = np.divide(1.0, columns, out=np.zeros_like(columns), where=used)
    k = np.count_nonzero(used, axis=-1)
    dof = np.maximum(k - 1, 0)
    # X² = n m Σ (b/m - w/n)² / c = Σ (n b - m w)² / c / (n m); 0 when a side is empty.
    diff = n[:, None] * b - m[:, None] * w
    statistic = (diff * diff * inverse).sum(axis=-1) / np.maximum(m * n, 1.0)
    total = m + n
    mean = dof * total / np.maximum(total - 1, 1.0)
    p_value = np.ones(m.shape)
    testable = (n >= MIN_TEST_EVENTS) & (m > 0) & (k >= 2)
    if reference and testable.any():
        r = inverse.sum(axis=-1)
        mn = m * n
        d2 = (m - n) ** 2
        cross = 2 * (m - 1) * (n - 1)
        # Var0 = N² [R N (N-1) A - (c N (N - (N+1) k) + K2 k²)] / (m n (N-3)(N-2)(N-1)²)
        # with A = m² - 4mn + n² + N, c = 2(m-1)(n-1), K2 = N (m-n)² - 2(m² - mn + n²) + N.
        a = d2 - 2 * mn + total
        k2 = total * d2 - 2 * (d2 + mn) + total
        bracket = r * total * (total - 1) * a - (
            cross * total * (total - (total + 1) * k) + k2 * k * k
        )
        den = mn * (total - 3) * (total - 2) * (total - 1) ** 2
        variance = total * total * bracket / np.where(testable, den, 1.0)
        ok = testable & (variance > 0.0)
        variance = np.where(ok, variance, 2.0)
        shape = 2 * mean * mean / variance
        p_value = np.where(ok, chdtrc(shape, statistic * shape / np.where(ok, mean, 1.0)), 1.0)
    return Homogeneity(statistic, dof, p_value, mean, n, m)


def ks_p_value(distance: Vector, n: Vector, m: Vector, testable: npt.NDArray[np.bool_]) -> Vector:
    """Two-sample Kolmogorov-Smirnov p of `distance` (Stephens' small-sample correction).

    p = kolmogorov((√e + 0.12 + 0.11/√e) D), e = nm/(n+m). On binned CDFs the distance is
    taken at the bin edges only, so it is at most the unbinned one: conservative.
    """
    effective = np.sqrt(np.where(testable, n * m / np.where(testable, n + m, 1.0), 1.0))
    p = kolmogorov((effective + 0.12 + 0.11 / effective) * distance)
    return np.where(testable, np.minimum(p, 1.0), 1.0)


# ----------------------------------------------------------------- effect sizes


def proportions(counts: Matrix) -> Matrix:
    """Each row divided by its sum (a row of zeros stays zeros)."""
    total = counts.sum(axis=-1, keepdims=True)
    shares: Matrix = counts / np.where(total > 0, total, 1.0)
    return shares


def psi_by_row(expected: Matrix, actual: Matrix) -> Vector:
    """Population stability index of each row: sum((a - e) * ln(a / e)), floored at EPSILON."""
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    terms: Matrix = (a - e) * np.log(a / e)
    sums: Vector = terms.sum(axis=-1)
    return sums


def js_by_row(expected: Matrix, actual: Matrix) -> Vector:
    """Jensen-Shannon distance of each row (square root of the divergence, natural log)."""
    mid = 0.5 * (actual + expected)
    # rel_entr gives 0 * ln(0 / x) = 0, so empty bins need no floor here.
    divergence = 0.5 * (rel_entr(actual, mid).sum(axis=-1) + rel_entr(expected, mid).sum(axis=-1))
    # Rounding can leave a tiny negative divergence for identical inputs.
    distance: Vector = np.sqrt(np.maximum(divergence, 0.0))
    return distance


def hellinger_by_row(expected: Matrix, actual: Matrix) -> Vector:
    """Hellinger distance of each row, sqrt(1 - Σ sqrt(a e)), from 0 to 1."""
    overlap = np.sqrt(expected * actual).sum(axis=-1)
    distance: Vector = np.sqrt(np.maximum(1.0 - overlap, 0.0))
    return distance


def cdf_gaps(expected: Matrix, actual: Matrix) -> Matrix:
    """|F_window - F_baseline| at each bin's upper edge (the last, always 0, left out)."""
    gaps: Matrix = np.abs(np.cumsum(actual, axis=-1) - np.cumsum(expected, axis=-1))[:, :-1]
    return gaps


def ks_by_row(expected: Matrix, actual: Matrix) -> Vector:
    """Kolmogorov-Smirnov distance of the binned distributions: the largest CDF gap."""
    gaps = cdf_gaps(expected, actual)
    distance: Vector = gaps.max(axis=-1) if gaps.shape[-1] else np.zeros(gaps.shape[0])
    return distance


def wasserstein_by_row(
    expected: Matrix, actual: Matrix, positions: Matrix, scale: Vector
) -> Vector:
    """W1 of the binned distributions with bins at `positions`, in units of `scale`.

    W1 = Σ_j |F_w(j) - F_b(j)| (x_{j+1} - x_j) / scale over bin edges; rows padded
    with bins empty on both sides repeat the last position (a gap of 0).
    """
    steps = np.diff(positions, axis=-1)
    distance: Vector = (cdf_gaps(expected, actual) * steps).sum(axis=-1) / scale
    return distance


def cohen_w_by_row(test: Homogeneity) -> Vector:
    """Cohen's w less its noise: sqrt(max(0, X² - E0[X²]) (1/n + 1/m)).

    Cohen's w with the pooled proportions in the denominator equals sqrt(X² (1/n + 1/m));
    subtracting X²'s exact expectation under no drift leaves about 0 for drift-free
    windows of any size and number of categories, with no floor for categories the
    baseline never saw.
    """
    n, m = test.n, test.m
    observed = (n > 0) & (m > 0)
    inverse = np.where(observed, 1.0 / np.where(n > 0, n, 1.0) + 1.0 / np.where(m > 0, m, 1.0), 0)
    excess = np.maximum(test.statistic - test.null_mean, 0.0)
    return np.where(observed & (test.dof >= 1), np.sqrt(excess * inverse), 0.0)


def kl_divergence(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """KL(actual || expected) = sum(a * ln(a / e)) on EPSILON-floored proportions."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum(a * np.log(a / e)))


def cohen_w(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Raw Cohen's w = sqrt(sum((a - e)^2 / e)); e == 0 (never seen) counts as EPSILON."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e_w = np.where(e > 0.0, e, EPSILON)
    return float(np.sqrt(np.sum((a - e) ** 2 / e_w)))


# ---------------------------------------------------------------- categorical pooling


@dataclass(frozen=True, slots=True)
class Pools:
    """One pooling of a categorical feature's bins: where each pool starts, in pooling order."""

    starts: IntVector
    baseline: Vector  # the baseline counts pooled


def _step(n: float) -> int:
    """The step of n on the 2^(1/8) scale the pooling is fixed on (-1 below one event)."""
    return math.floor(8 * math.log2(n)) if n >= 1 else -1


def _rounded(n: float) -> float:
    """The event count n rounded down to its step (see PoolingOrder)."""
    step = _step(n)
    return 2 ** (step / 8) if step >= 0 else 0.0


@dataclass(frozen=True, eq=False, slots=True)
class PoolingOrder:
    """How a categorical feature's bins are pooled for its test; fixed by the baseline.

    Bins are taken in ascending order of a key (the held-out selection counts, which
    neither row of the tested table shares; stable, so ties keep the profile's order)
    and gathered greedily into pools, each closed once its expected baseline count
    reaches POOL_MIN_EXPECTED · max(1, m/n'), so both its cells expect at least one
    event; n' is n rounded down to a power of 2^(1/8), so that the pooling stays the
    same while the window grows by less than 9 % (and is computed once for each such
    step). A bin that large alone closes the pool it joins and every later bin stands
    alone; a last pool left short joins the one before. The partition depends only on
    the key, n and m, so given them the pooled table is a fixed coarser table and the
    test keeps its level.
    """

    order: IntVector  # bins by ascending key
    shares: Vector  # each bin's share of the key, in that order
    cumulative: Vector  # running sum of shares
    baseline: Vector  # the baseline counts, in that order
    _pools: dict[int, Pools]  # by the step of n
    # shares and cumulative as lists: the greedy pass bisects them once per pool, and
    # numpy's per-call cost made that pass most of a young window's verdict.
    _share_list: list[float]
    _cumulative_list: list[float]

    @classmethod
    def of(cls, key: npt.ArrayLike, baseline: npt.ArrayLike) -> PoolingOrder:
        """The pooling order of a key vector (selection counts, or the baseline's own)."""
        values = np.asarray(key, dtype=np.float64)
        order = np.argsort(values, kind="stable").astype(np.intp)
        total = values.sum()
        shares = values[order] / (total if total > 0 else 1.0)
        counts = np.asarray(baseline, dtype=np.float64)[order]
        cumulative = np.cumsum(shares)
        return cls(order, shares, cumulative, counts, {}, shares.tolist(), cumulative.tolist())

    def pools(self, n: float) -> Pools:
        """The pools for a window of n events."""
        step = _step(n)
        found = self._pools.get(step)
        if found is None:
            m = float(self.baseline.sum())
            starts = self._starts(_rounded(n), m)
            found = self._pools[step] = Pools(starts, np.add.reduceat(self.baseline, starts))
        return found

    def _starts(self, n: float, m: float) -> IntVector:
        bins = self.shares.size
        if n <= 0 or m <= 0:
            return np.arange(bins, dtype=np.intp)
        # A pool is complete when its share of the key reaches `need` (rounding aside).
        need = POOL_MIN_EXPECTED * max(1.0 / m, 1.0 / n) * (1 - 1e-12)
        cumulative = self._cumulative_list
        # bisect_left is searchsorted(side="left") on the same floats.
        alone = bisect_left(self._share_list, need)
        starts = [0]
        reached = 0.0
        while True:
            end = bisect_left(cumulative, reached + need)
            if end >= alone:
                break
            starts.append(end + 1)
            reached = cumulative[end]
        if alone < bins:
            # The pool in progress closes with the first bin large enough alone.
            starts.extend(range(alone + 1, bins))
        elif len(starts) > 1 and cumulative[-1] - reached < need:
            starts.pop()  # the last pool fell short: it joins the one before
        return np.asarray(starts, dtype=np.intp)

    def pool(self, window: Vector, reference: Vector | None = None) -> tuple[Vector, Vector]:
        """The baseline's (or a rolling `reference`'s) and the window's counts, pooled.

        A reference's pools follow the same rule with its own total as m.
        """
        if reference is None:
            pools = self.pools(float(window.sum()))
            return pools.baseline, np.add.reduceat(window[self.order], pools.starts)
        n = float(window.sum())
        ordered = reference[self.order]
        starts = self._starts(_rounded(n), float(ordered.sum()))
        return np.add.reduceat(ordered, starts), np.add.reduceat(window[self.order], starts)


STACKED_POOLINGS_KEPT = 64
"""Poolings a StackedPooling keeps, one per combination of its features' steps of n; the
steps move together as a window grows or shrinks, so a few are in use at a time."""


@dataclass(frozen=True, eq=False, slots=True)
class StackedPooling:
    """Every categorical feature's PoolingOrder over a padded count matrix at once.

    The same pools as each row's `PoolingOrder.pool` (they come from it), in a few numpy
    calls for all rows instead of a few per row: a 50-feature verdict spent a fifth of
    its time pooling row by row.
    """

    orders: tuple[PoolingOrder, ...]
    flat_order: IntVector  # every row's bins in its pooling order, as flat matrix indices
    offsets: tuple[int, ...]  # where each row's bins start in flat_order
    # By the rows' steps of n: flat pool starts, the pools' places in the pooled
    # matrix (flat), the baseline pooled, and that matrix's width.
    _by_steps: dict[tuple[int, ...], tuple[IntVector, IntVector, Matrix, int]]

    @classmethod
    def of(cls, orders: Sequence[PoolingOrder], width: int) -> StackedPooling:
        """The stacked pooling of rows `width` bins wide (padding after each row's bins)."""
        flat = [row * width + order.order for row, order in enumerate(orders)]
        sizes = [order.order.size for order in orders]
        offsets = np.cumsum([0, *sizes])[:-1].tolist()
        joined = np.concatenate(flat) if flat else np.zeros(0, dtype=np.intp)
        return cls(tuple(orders), joined.astype(np.intp), tuple(offsets), {})

    def pool(self, window: Matrix) -> tuple[Matrix, Matrix]:
        """The baseline's and the window's counts pooled, one row per feature, padded."""
        totals = window.sum(axis=-1).tolist()
        steps = tuple(_step(n) for n in totals)
        found = self._by_steps.get(steps)
        if found is None:
            if len(self._by_steps) >= STACKED_POOLINGS_KEPT:
                self._by_steps.clear()
            found = self._by_steps[steps] = self._made(totals)
        starts, places, baseline, pools = found
        pooled = np.zeros(len(self.orders) * pools)
        if starts.size:
            pooled[places] = np.add.reduceat(window.ravel()[self.flat_order], starts)
        return baseline, pooled.reshape(len(self.orders), pools)

    def _made(self, totals: Sequence[float]) -> tuple[IntVector, IntVector, Matrix, int]:
        each = [order.pools(n) for order, n in zip(self.orders, totals, strict=True)]
        pools = max((p.starts.size for p in each), default=0)
        baseline = np.zeros((len(each), pools))
        starts, places = [], []
        for row, (p, offset) in enumerate(zip(each, self.offsets, strict=True)):
            baseline[row, : p.starts.size] = p.baseline
            starts.append(p.starts + offset)
            places.append(np.arange(p.starts.size) + row * pools)
        joined = np.concatenate(starts) if starts else np.zeros(0, dtype=np.intp)
        spots = np.concatenate(places) if places else np.zeros(0, dtype=np.intp)
        return joined.astype(np.intp), spots.astype(np.intp), baseline, pools


# --------------------------------------------------------------------- scores


@dataclass(frozen=True, slots=True)
class DistributionScores:
    """Each row's effect size under its test, and the test."""

    score: Vector  # the effect size of the row's test
    statistic: Vector  # X² of the table the p-value comes from (pooled, for categories)
    dof: IntVector
    p_value: Vector  # the row's test: Kolmogorov for ks, the homogeneity test otherwise
    n: Vector
    m: Vector


def distribution_scores(
    baseline: Matrix,
    window: Matrix,
    groups: Mapping[TestName, IntVector],
    *,
    positions: Matrix | None = None,
    scale: Vector | None = None,
    pooled: tuple[Matrix, Matrix] | None = None,
    test: Homogeneity | None = None,
    raw: Homogeneity | None = None,
) -> DistributionScores:
    """Effect size and significance of every row, each under the test its group names.

    `groups` maps a test to the rows that use it. Wasserstein rows need `positions`
    (where each bin sits) and `scale` (the baseline SD). `pooled` is the table the
    homogeneity p-value is computed on when it differs from the bins (categorical
    features: sparse categories pooled, see PoolingOrder); effect sizes always use
    every bin. `test`: that homogeneity test, when already run (a monitor tests its
    numeric and categorical features in one pass); `raw`: with `pooled`, the unpooled
    bins' X² when already run (chisquare's Cohen's w is scored on them). One numpy pass
    per test, whatever the number of rows.
    """
    if test is None:
        test = homogeneity(baseline, window) if pooled is None else homogeneity(*pooled)
    # The bins' own X² serves only Cohen's w (chisquare); the p-value is the pooled one.
    if pooled is None or "chisquare" not in groups:
        raw = test
    elif raw is None:
        raw = homogeneity(baseline, window, reference=False)
    expected, actual = proportions(baseline), proportions(window)
    every = len(groups) == 1  # the usual case: one test for all rows, no row selection
    score = np.zeros(raw.n.shape)
    p_value = test.p_value
    for name, rows in groups.items():
        if not rows.size:
            continue
        e, a = (expected, actual) if every else (expected[rows], actual[rows])
        if name == "psi":
            value = psi_by_row(e, a)
        elif name == "jensenshannon":
            value = js_by_row(e, a)
        elif name == "hellinger":
            value = hellinger_by_row(e, a)
        elif name == "ks":
            value = ks_by_row(e, a)
            n, m, dof = raw.n[rows], raw.m[rows], raw.dof[rows]
            testable = (n >= MIN_TEST_EVENTS) & (m > 0) & (dof >= 1)
            p_value = p_value.copy()
            p_value[rows] = ks_p_value(value, n, m, testable)
        elif name == "wasserstein":
            assert positions is not None, "wasserstein needs bin positions"
            assert scale is not None, "wasserstein needs a scale"
            value = wasserstein_by_row(e, a, positions[rows], scale[rows])
        else:
            value = cohen_w_by_row(raw if every else raw.select(rows))
        score[rows] = value
    # An empty window has no effect (PSI's floors would give it one).
    score = np.where(raw.n > 0, score, 0.0)
    return DistributionScores(score, test.statistic, test.dof, p_value, raw.n, raw.m)


# ------------------------------------------------------------- one feature (reports)


@dataclass(frozen=True, slots=True)
class DriftTest:
    """One feature's numbers for one window against its baseline."""

    kind: Literal["numeric", "categorical"]
    test: TestName
    score: float  # the effect size of `test`, compared with the thresholds
    psi: float
    kl: float
    js: float
    cohen_w: float | None  # categorical only: raw w (EPSILON for unseen categories)
    statistic: float  # X² of the homogeneity test (of the pooled table for categories)
    dof: int
    p_value: float
    n: int  # window events (non-missing)
    m: int  # baseline rows (non-missing)


def feature_test(
    kind: Literal["numeric", "categorical"],
    baseline_counts: npt.ArrayLike,
    window_counts: npt.ArrayLike,
    test: TestName | None = None,
    *,
    pooling_key: npt.ArrayLike | None = None,
    positions: npt.ArrayLike | None = None,
    scale: float = 1.0,
) -> DriftTest:
    """One feature's scores and test, as `distribution_scores` computes them, plus KL and JS.

    `test` defaults to psi (numeric) or chisquare (categorical). A categorical
    feature's bins are pooled by `pooling_key` (its held-out selection counts; the
    baseline counts themselves when it has none). Wasserstein places the bins at
    `positions` (the bin indices when not given), in units of `scale`.
    """
    b, w, m, n = _counts(baseline_counts, window_counts)
    name: TestName = test or ("psi" if kind == "numeric" else "chisquare")
    pooled = None
    if kind == "categorical":
        pooled_b, pooled_w = PoolingOrder.of(b if pooling_key is None else pooling_key, b).pool(w)
        pooled = (pooled_b[None, :], pooled_w[None, :])
    where = np.asarray(np.arange(b.size) if positions is None else positions, dtype=np.float64)
    scores = distribution_scores(
        b[None, :],
        w[None, :],
        {name: np.zeros(1, dtype=np.intp)},
        positions=where[None, :],
        scale=np.array([scale]),
        pooled=pooled,
    )
    e = b / m
    a = w / n if n else np.zeros_like(w)
    observed = n > 0
    return DriftTest(
        kind=kind,
        test=name,
        score=float(scores.score[0]),
        psi=float(psi_by_row(e[None, :], a[None, :])[0]) if observed else 0.0,
        kl=kl_divergence(e, a) if observed else 0.0,
        js=float(js_by_row(e[None, :], a[None, :])[0]) if observed else 0.0,
        cohen_w=(cohen_w(e, a) if observed else 0.0) if kind == "categorical" else None,
        statistic=float(scores.statistic[0]),
        dof=int(scores.dof[0]),
        p_value=float(scores.p_value[0]),
        n=round(n),
        m=round(m),
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


# ------------------------------------------------------------ multiple testing


def adjust_pvalues(p_values: npt.ArrayLike, method: MultipleTesting) -> Vector:
    """p-values adjusted for testing a family at once, along the last axis.

    none: as they are; bonferroni: min(1, F p); holm: step-down, the running maximum of
    (F - i + 1) p_(i); bh (Benjamini-Hochberg, false discovery rate): step-up, the
    running minimum from the top of F p_(i) / i. A hypothesis is rejected when its
    adjusted p < alpha. Untestable members (p = 1) stay in the family.
    """
    p = np.asarray(p_values, dtype=np.float64)
    family = p.shape[-1] if p.ndim else 1
    if method == "none" or family <= 1:
        return p.copy()
    if method == "bonferroni":
        bonferroni: Vector = np.minimum(p * family, 1.0)
        return bonferroni
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    i = np.arange(1, family + 1, dtype=np.float64)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum((family - i + 1) * ranked, 1.0), axis=-1)
    else:
        adjusted = np.minimum.accumulate((family / i * ranked)[..., ::-1], axis=-1)[..., ::-1]
        adjusted = np.minimum(adjusted, 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


# -------------------------------------------------------------------- severity


def severity_levels(
    score: Vector,
    significant: npt.NDArray[np.bool_],
    notice: Vector,
    warning: Vector,
    critical: Vector,
) -> IntVector:
    """Severity ranks (0 none, 1 notice, 2 warning, 3 critical) where significant, else 0.

    Needs notice <= warning < critical per row; notice == warning leaves out the notice tier.
    """
    level = (
        (score >= notice).astype(np.intp)
        + (score >= warning).astype(np.intp)
        + (score >= critical).astype(np.intp)
    )
    return np.where(significant, level, 0)


def feature_severity(
    score: float,
    p_value: float,
    alpha: float = DEFAULTS.alpha,
    thresholds: Thresholds = Thresholds(),
) -> Severity:
    """Severity from one effect size, but only when the change is significant (p < alpha)."""
    level = severity_levels(
        np.array([score]),
        np.array([p_value < alpha]),
        np.array([thresholds.notice]),
        np.array([thresholds.warning]),
        np.array([thresholds.critical]),
    )
    return LEVELS[int(level[0])]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A monitor's overall result for one window."""

    severity: Severity
    drift_detected: bool
    drift_score: float  # largest feature score
    flagged: list[str]  # features of severity warning or worse, in input order
    ready: bool  # the window holds at least min_samples events


def monitor_verdict(
    feature_severities: Mapping[str, Severity],
    scores: Mapping[str, float],
    events: int,
    *,
    min_samples: int = DEFAULTS.min_samples,
    min_drifted_features: int = DEFAULTS.min_drifted_features,
) -> Verdict:
    """Worst feature severity once enough features are flagged and the window is ready.

    Flagged means warning or worse. With fewer flagged features than
    `min_drifted_features` (or only notices) a ready window is a `notice` if any
    feature is one or worse: informational, drift is not called.
    """
    if min_drifted_features < 1:
        raise ValueError(f"min_drifted_features must be >= 1, got {min_drifted_features}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")
    warning = Severity.WARNING.rank
    flagged = [name for name, sev in feature_severities.items() if sev.rank >= warning]
    ready = events >= min_samples
    severity = Severity.NONE
    if ready and len(flagged) >= min_drifted_features:
        severity = max((feature_severities[name] for name in flagged), key=lambda s: s.rank)
    elif ready and any(sev is not Severity.NONE for sev in feature_severities.values()):
        severity = Severity.NOTICE
    return Verdict(
        severity=severity,
        drift_detected=severity.rank >= warning,
        drift_score=max(scores.values(), default=0.0),
        flagged=flagged,
        ready=ready,
    )


def rows_by_test(tests: Sequence[TestName]) -> dict[TestName, IntVector]:
    """Row indices of each test among `tests` (the `groups` of distribution_scores)."""
    groups: dict[TestName, list[int]] = {}
    for row, name in enumerate(tests):
        groups.setdefault(name, []).append(row)
    return {name: np.asarray(rows, dtype=np.intp) for name, rows in groups.items()}
