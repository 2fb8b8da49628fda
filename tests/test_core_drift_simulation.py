"""Seeded simulation: drift-free windows are flagged at most at alpha, at every size and shape.

Each cell draws REPS drift-free windows, each against a fresh baseline (the tests account
for the baseline's noise too), bins them as driftline does and runs the service's own
statistics on the counts. Every cell asserts: share of windows with p < alpha, and with
a notice or worse, <= alpha + 3 standard errors (6.46 % for 2 000 windows; a test whose
true level is 5 % fails a given cell with probability ~0.1 %). The seeds are fixed, so
the run is deterministic. `pytest -s` prints the rows of docs/metrics.md's false-alarm
table ("False alarms, measured").

Numeric windows: the baseline is a real sample of the shape; the window's counts are
multinomial over the bins with the shape's own probabilities between the cuts (exact
given the baseline, and cheap for 100 000 events). Categorical windows: the baseline's
two held-out halves and the window as multinomial counts of the categories.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats
from scipy.special import ndtr

from driftline.core.binning import bin_batch
from driftline.core.drift import (
    PoolingOrder,
    adjust_pvalues,
    distribution_scores,
    feature_test,
    severity_levels,
)
from driftline.core.limits import Limits
from driftline.core.monitor import MonitorConfig, build_monitor
from driftline.core.policy import DEFAULTS, TEST_THRESHOLDS, TESTS, TestName
from driftline.core.profile import (
    build_profile,
    categorical_profile,
    numeric_cuts,
    quantile_bins,
    tail_rank,
)
from driftline.core.quality import rate_increase_p, tail_p
from driftline.core.report import adjusted_p, evaluate
from driftline.core.severity import Severity

pytestmark = pytest.mark.slow

Matrix = npt.NDArray[np.float64]
ALPHA = DEFAULTS.alpha
REPS = 2000


def bound(reps: int) -> float:
    """alpha + 3 standard errors of a share of `reps` windows."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


def report(
    what: str,
    m: int,
    n: int,
    p: float,
    ks: float | None = None,
    warning: float | None = None,
    notice: float | None = None,
) -> None:
    """One row of docs/metrics.md's false-alarm table (shown with `pytest -s`)."""
    cells = [f"{v:.1%}" if v is not None else "-" for v in (p, ks, warning, notice)]
    print(f"\n| {what} | {m:,} | {n:,} | " + " | ".join(cells) + " |", end="")


def worst(found: dict[str, dict[str, float]], share: str) -> str:
    """The highest share over the tests, and the test it belongs to."""
    test = max(found, key=lambda t: found[t][share])
    return f"{found[test][share]:.1%} ({test})"


def padded(rows: list[npt.NDArray[np.float64]], width: int | None = None) -> Matrix:
    out = np.zeros((len(rows), width or max(r.size for r in rows)))
    for i, row in enumerate(rows):
        out[i, : row.size] = row
    return out


# ------------------------------------------------------------------------ numeric

Shape = tuple[Callable[[np.random.Generator, tuple[int, ...]], Matrix], Callable[[Matrix], Matrix]]
SHAPES: dict[str, Shape] = {
    "normal": (lambda rng, size: rng.standard_normal(size), ndtr),
    "t(2)": (lambda rng, size: rng.standard_t(2, size), lambda x: stats.t.cdf(x, 2)),
    "lognormal": (
        lambda rng, size: rng.lognormal(0.0, 1.0, size),
        lambda x: ndtr(np.log(np.maximum(x, 1e-300))),
    ),
}


def continuous_windows(
    rng: np.random.Generator, n: int, m: int, shape: str, reps: int = REPS, shift: float = 0.0
) -> tuple[Matrix, Matrix, Matrix, Matrix]:
    """Baseline counts, window counts, bin positions and baseline SD of `reps` windows.

    Quantile cuts as the profile makes them (numeric_cuts, with its bin cap); the window
    drawn from the same shape, moved by `shift` baseline SDs.
    """
    draw, cdf = SHAPES[shape]
    x = np.sort(draw(rng, (reps, m)), axis=1)
    bins = quantile_bins(m, DEFAULTS.bins)
    cuts = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1], axis=1).T
    below = np.stack([np.searchsorted(row, c, side="left") for row, c in zip(x, cuts, strict=True)])
    edges = np.concatenate([np.zeros((reps, 1), int), below, np.full((reps, 1), m)], axis=1)
    b = np.diff(edges, axis=1).astype(np.float64)
    cumulative = np.concatenate([np.zeros((reps, 1)), np.cumsum(x, axis=1)], axis=1)
    totals = np.diff(np.take_along_axis(cumulative, edges, axis=1), axis=1)
    positions = totals / np.maximum(b, 1.0)
    std = x.std(axis=1, ddof=1)
    moved = cuts - shift * std[:, None]
    probs = np.diff(np.concatenate([np.zeros((reps, 1)), cdf(moved), np.ones((reps, 1))], 1), 1)
    w = rng.multinomial(n, np.clip(probs, 0, None) / probs.clip(0, None).sum(1, keepdims=True))
    return b, w.astype(np.float64), positions, std


def row_windows(
    rng: np.random.Generator, n: int, m: int, kind: str, *, missing: float = 0.0, reps: int = REPS
) -> tuple[Matrix, Matrix, Matrix, Matrix]:
    """As continuous_windows, one baseline at a time with the profile's own numeric_cuts:
    for integer values (Poisson(3): one bin per value) and mostly-missing features (the
    baseline and window lose each value with probability `missing`)."""
    rows_b, rows_w, rows_p, scale = [], [], [], []
    for _ in range(reps):
        m_eff = int(rng.binomial(m, 1 - missing))
        n_eff = int(rng.binomial(n, 1 - missing))
        if kind == "poisson(3)":
            x = rng.poisson(3.0, m_eff).astype(np.float64)
        else:
            x = rng.standard_normal(m_eff)
        if m_eff == 0:
            rows_b.append(np.zeros(1))
            rows_w.append(np.array([float(n_eff)]))
            rows_p.append(np.zeros(1))
            scale.append(1.0)
            continue
        cuts, _ = numeric_cuts(x, DEFAULTS.bins)
        index = np.searchsorted(cuts, x, side="right")
        b = np.bincount(index, minlength=cuts.size + 1).astype(np.float64)
        # P(value < cut) under the shape: an integer below c is at most ceil(c) - 1.
        below = stats.poisson.cdf(np.ceil(cuts) - 1, 3.0) if kind == "poisson(3)" else ndtr(cuts)
        probs = np.diff(np.concatenate([[0.0], below, [1.0]]))
        rows_b.append(b)
        rows_w.append(rng.multinomial(n_eff, probs / probs.sum()).astype(np.float64))
        sums = np.bincount(index, weights=x, minlength=cuts.size + 1)
        rows_p.append(np.where(b > 0, sums / np.maximum(b, 1), 0.0))
        scale.append(float(x.std(ddof=1)) if m_eff > 1 else 1.0)
    width = max(r.size for r in rows_b)
    positions = padded(rows_p, width)
    # Padding repeats the last position; empty bins sit next to their neighbours.
    for i, row in enumerate(rows_p):
        positions[i, row.size :] = row[-1]
        positions[i] = np.maximum.accumulate(positions[i])
    return padded(rows_b, width), padded(rows_w, width), positions, np.asarray(scale)


def every_test(
    b: Matrix,
    w: Matrix,
    *,
    positions: Matrix | None = None,
    scale: Matrix | None = None,
    pooled: tuple[Matrix, Matrix] | None = None,
    tests: tuple[TestName, ...] = TESTS,
) -> dict[str, dict[str, float]]:
    """Per test: share of windows with p < alpha, a notice or worse, a warning or worse."""
    rows = np.arange(b.shape[0], dtype=np.intp)
    found: dict[str, dict[str, float]] = {}
    for test in tests:
        scores = distribution_scores(
            b, w, {test: rows}, positions=positions, scale=scale, pooled=pooled
        )
        t = TEST_THRESHOLDS[test]
        significant = scores.p_value < ALPHA
        level = severity_levels(scores.score, significant, t.notice, t.warning, t.critical)
        found[test] = {
            "p": float(np.mean(significant)),
            "notice": float(np.mean(level >= 1)),
            "warning": float(np.mean(level >= 2)),
        }
    return found


def check(what: str, m: int, n: int, found: dict[str, dict[str, float]], reps: int = REPS) -> None:
    """Every test's shares within the bound; the table row (p < alpha of the shared test)."""
    print(
        f"\n| {what} | {m:,} | {n:,} | {found['psi']['p']:.1%} | "
        + (f"{found['ks']['p']:.1%}" if "ks" in found else "-")
        + f" | {worst(found, 'warning')} | {worst(found, 'notice')} |",
        end="",
    )
    for test, shares in found.items():
        assert shares["p"] <= bound(reps), (test, shares)
        assert shares["notice"] <= bound(reps), (test, shares)


NUMERIC_CELLS = [
    ("normal", 1000, 20),
    ("normal", 5000, 30),
    ("normal", 1000, 100),
    ("normal", 5000, 1000),
    ("normal", 1000, 100_000),
    ("normal", 200, 5000),  # 4 bins: a small baseline, n >> m
    ("t(2)", 1000, 50),
    ("t(2)", 5000, 2000),
    ("lognormal", 1000, 500),
    ("lognormal", 5000, 20_000),
]


@pytest.mark.parametrize(("shape", "m", "n"), NUMERIC_CELLS)
def test_continuous_false_alarms(shape: str, m: int, n: int) -> None:
    rng = np.random.default_rng([1, m, n, len(shape)])
    b, w, positions, scale = continuous_windows(rng, n, m, shape)
    check(shape, m, n, every_test(b, w, positions=positions, scale=scale))


@pytest.mark.parametrize(
    ("kind", "missing", "m", "n"),
    [
        ("poisson(3)", 0.0, 5000, 20),
        ("poisson(3)", 0.0, 5000, 300),
        ("poisson(3)", 0.0, 1000, 100_000),
        ("normal, 90 % missing", 0.9, 5000, 20),
        ("normal, 90 % missing", 0.9, 5000, 200),
        ("normal, 90 % missing", 0.9, 5000, 2000),
        ("normal, 90 % missing", 0.9, 1000, 100_000),
    ],
)
def test_integer_and_mostly_missing_false_alarms(kind: str, missing: float, m: int, n: int) -> None:
    rng = np.random.default_rng([2, m, n, len(kind)])
    b, w, positions, scale = row_windows(rng, n, m, kind, missing=missing)
    check(kind, m, n, every_test(b, w, positions=positions, scale=scale))


# -------------------------------------------------------------------- categorical


def zipf(categories: int, s: float) -> npt.NDArray[np.float64]:
    weights = np.arange(1, categories + 1, dtype=np.float64) ** -s
    return np.asarray(weights / weights.sum(), dtype=np.float64)


def categorical_windows(
    rng: np.random.Generator,
    n: int,
    m: int,
    probs: npt.NDArray[np.float64],
    top_k: int,
    reps: int = REPS,
    window_probs: npt.NDArray[np.float64] | None = None,
) -> tuple[Matrix, Matrix, tuple[Matrix, Matrix]]:
    """Reference and window counts (kept categories + other) and the pooled tables.

    As the profile builds them: the top_k categories of the selection half by count
    (ties by name, i.e. category order), counted on the other half.
    """
    half = m // 2
    selection = rng.multinomial(half, probs, size=reps)
    reference = rng.multinomial(m - half, probs, size=reps)
    window = rng.multinomial(n, probs if window_probs is None else window_probs, size=reps)
    order = np.argsort(-selection, axis=1, kind="stable")[:, :top_k]
    rows_b, rows_w, rows_pb, rows_pw = [], [], [], []
    for i in range(reps):
        kept = order[i][selection[i, order[i]] > 0]
        b = np.append(reference[i, kept], reference[i].sum() - reference[i, kept].sum())
        w = np.append(window[i, kept], window[i].sum() - window[i, kept].sum())
        key = np.append(selection[i, kept], half - selection[i, kept].sum())
        pooled_b, pooled_w = PoolingOrder.of(key, b).pool(w.astype(np.float64))
        rows_b.append(b.astype(np.float64))
        rows_w.append(w.astype(np.float64))
        rows_pb.append(pooled_b)
        rows_pw.append(pooled_w)
    width = max(r.size for r in rows_b)
    return padded(rows_b, width), padded(rows_w, width), (padded(rows_pb), padded(rows_pw))


CATEGORICAL_CELLS = [
    (20, 100, 1.1, 5000, 20),
    (20, 100, 1.1, 5000, 500),
    (200, 100, 1.1, 5000, 500),
    (200, 100, 1.1, 5000, 2000),
    (200, 100, 1.5, 5000, 500),
    (200, 100, 0.8, 1000, 20_000),
    (1000, 1000, 0.0, 1000, 20_000),
    (1000, 1000, 1.1, 50_000, 20),
]


@pytest.mark.parametrize(("categories", "top_k", "s", "m", "n"), CATEGORICAL_CELLS)
def test_categorical_false_alarms(categories: int, top_k: int, s: float, m: int, n: int) -> None:
    rng = np.random.default_rng([3, categories, int(10 * s), m, n])
    b, w, pooled = categorical_windows(rng, n, m, zipf(categories, s), top_k)
    found = every_test(
        b, w, pooled=pooled, tests=("psi", "jensenshannon", "hellinger", "chisquare")
    )
    # The `other` rule: the share of the window outside the kept categories against the
    # reference half's, exact one-sided test (asked everywhere here, to see its level).
    kept = (b > 0) | (w > 0)
    last = kept.shape[1] - 1 - np.argmax(kept[:, ::-1], axis=1)
    b_other, w_other = b[np.arange(REPS), last], w[np.arange(REPS), last]
    m_ref, n_w = b.sum(axis=1), w.sum(axis=1)
    p_other = rate_increase_p(b_other, m_ref, w_other, n_w, np.ones(REPS, dtype=bool))
    change = w_other / n_w - b_other / m_ref
    flagged_other = (p_other < ALPHA) & (change >= DEFAULTS.quality.new_categories.warning)
    shape = "uniform" if s == 0 else f"Zipf {s}"
    what = f"{categories} categories, {shape}, top {top_k}"
    check(what, m, n, found)
    other_p = float(np.mean(p_other < ALPHA))
    report(f"{what}: new categories", m, n, other_p, warning=float(np.mean(flagged_other)))
    assert other_p <= bound(REPS)


def test_profiles_built_from_rows_hold_the_level() -> None:
    # End to end on raw rows: the profile builder's held-out split and the pooled test.
    rng = np.random.default_rng(4)
    probs = zipf(200, 1.1)
    names = np.array([f"c{i:03d}" for i in range(200)])
    reps, flagged = 500, 0
    for _ in range(reps):
        profile = categorical_profile(names[rng.choice(200, 1000, p=probs)].tolist(), top_k=100)
        slot = {c: i for i, c in enumerate(profile.categories)}
        window = np.zeros(profile.bins)
        for label in names[rng.choice(200, 100, p=probs)]:
            window[slot.get(str(label), profile.bins - 1)] += 1
        result = feature_test("categorical", profile.counts, window, pooling_key=profile.selection)
        flagged += result.p_value < ALPHA
    report("200 categories, Zipf 1.1, profile built from rows", 1000, 100, flagged / reps)
    assert flagged / reps <= bound(reps)


def test_one_feature_monitors_hold_the_level_over_all_their_checks() -> None:
    # The whole verdict: a monitor of one feature built from raw rows (2 000, a fresh
    # reference each window), its distribution test and its data-quality checks
    # together. 100 events, where the checks' false alarms are largest.
    rng = np.random.default_rng(9)
    names = np.array([f"c{i:03d}" for i in range(200)])
    probs = zipf(200, 1.1)
    limits = Limits()
    reps = 600
    found: dict[str, float] = {}
    for kind in ("numeric", "categorical"):
        alarms = 0
        for _ in range(reps):
            values: list[Any]
            if kind == "numeric":
                x = rng.standard_normal(2100)
                values = [
                    None if gone else v
                    for v, gone in zip(x.tolist(), rng.random(2100) < 0.05, strict=True)
                ]
            else:
                values = names[rng.choice(200, 2100, p=probs)].tolist()
            profile = build_profile({"x": values[:2000]}, kinds={"x": kind})  # type: ignore[dict-item]
            monitor = build_monitor(
                MonitorConfig(name="m", baseline=profile), DEFAULTS, base_dir=Path("."), source="m"
            )
            window = [{"x": v} for v in values[2000:]]
            batch = bin_batch(monitor.layout, window, limits)
            vector = batch.deltas(monitor.window.width, np.zeros(100, dtype=np.int64))[0][0]
            alarms += evaluate(monitor, vector).verdict.severity is not Severity.NONE
        found[kind] = alarms / reps
    for kind, share in found.items():
        report(f"one-feature monitor ({kind}), any check", 2000, 100, share, notice=share)
    for share in found.values():
        assert share <= bound(reps)


# ------------------------------------------------------------------- data quality


@pytest.mark.parametrize(
    ("rate", "rows", "n"),
    [(0.3, 5000, 20_000), (0.05, 5000, 100), (0.9, 5000, 20), (0.01, 50_000, 2000)],
)
def test_missing_rule_false_alarms(rate: float, rows: int, n: int) -> None:
    rng = np.random.default_rng([5, rows, n])
    x_b = rng.binomial(rows, rate, REPS).astype(np.float64)
    x_w = rng.binomial(n, rate, REPS).astype(np.float64)
    t_b, t_w = np.full(REPS, float(rows)), np.full(REPS, float(n))
    p = rate_increase_p(x_b, t_b, x_w, t_w, np.ones(REPS, dtype=bool))
    change = x_w / t_w - x_b / t_b
    flagged = (p < ALPHA) & ((change >= DEFAULTS.quality.missing.warning) | (x_w == t_w))
    report(
        f"missing values, {rate:.0%}",
        rows,
        n,
        float(np.mean(p < ALPHA)),
        warning=float(np.mean(flagged)),
    )
    assert float(np.mean(p < ALPHA)) <= bound(REPS)


@pytest.mark.parametrize(("m", "n"), [(1000, 100_000), (1000, 2000), (5000, 20), (5000, 500)])
def test_tail_rule_false_alarms(m: int, n: int) -> None:
    rng = np.random.default_rng([6, m, n])
    r = tail_rank(m)
    x = np.partition(rng.standard_normal((REPS, m)), [r - 1, m - r], axis=1)
    mass = ndtr(x[:, r - 1]) + 1 - ndtr(x[:, m - r])
    beyond = rng.binomial(n, mass).astype(np.float64)
    full = np.full(REPS, 1.0)
    p = tail_p(beyond, n * full, m * full, r * full, np.ones(REPS, dtype=bool))
    excess = beyond / n - 2 * r / (m + 1)
    flagged = (p < ALPHA) & (excess >= DEFAULTS.quality.range.warning)
    report(
        "range (beyond the tail cuts)",
        m,
        n,
        float(np.mean(p < ALPHA)),
        warning=float(np.mean(flagged)),
    )
    assert float(np.mean(p < ALPHA)) <= bound(REPS)


# --------------------------------------------------------------- multiple testing


def test_multiple_testing_holds_the_family_level() -> None:
    # 1 000 windows of a monitor with 20 drift-free features: the share of windows where
    # any feature is significant (the family-wise error rate).
    rng = np.random.default_rng(7)
    families, features = 1000, 20
    b, w, _, _ = continuous_windows(rng, 500, 1000, "normal", reps=families * features)
    p = distribution_scores(b, w, {"psi": np.arange(b.shape[0], dtype=np.intp)}).p_value
    p = p.reshape(families, features)
    any_rejected = {
        method: float(np.mean((adjust_pvalues(p, method) < ALPHA).any(axis=1)))  # type: ignore[arg-type]
        for method in ("none", "bonferroni", "holm", "bh")
    }
    print(
        "\n20 features, windows with any false alarm: "
        + ", ".join(f"{method} {share:.1%}" for method, share in any_rejected.items()),
        end="",
    )
    assert any_rejected["none"] > 0.5  # why a monitor of many features needs a method
    for method in ("bonferroni", "holm", "bh"):
        assert any_rejected[method] <= bound(families)


# ------------------------------------------------------------------------- power


def warned(b: Matrix, w: Matrix, test: TestName) -> float:
    """Share of windows a monitor calls a warning or worse under `test`."""
    scores = distribution_scores(b, w, {test: np.arange(b.shape[0], dtype=np.intp)})
    t = TEST_THRESHOLDS[test]
    significant = adjusted_p(scores.p_value, "none") < ALPHA
    level = severity_levels(scores.score, significant, t.notice, t.warning, t.critical)
    return float(np.mean(level >= 2))


def test_drift_is_found() -> None:
    # As a monitor judges: each check at alpha / 3 (a feature's three checks share alpha).
    rng = np.random.default_rng(8)
    # A 0.5 SD mean shift at 500 events: a warning under PSI.
    b, w, _, _ = continuous_windows(rng, 500, 5000, "normal", reps=1000, shift=0.5)
    half_sd = warned(b, w, "psi")
    # A 0.25 SD shift at 2 000 events: below PSI's thresholds, a warning under chisquare.
    b, w, _, _ = continuous_windows(rng, 2000, 5000, "normal", reps=1000, shift=0.25)
    quarter_sd = warned(b, w, "chisquare")
    # 1 % of 2 000 values at 10 000 SDs: beyond the tail cuts.
    m, n, r = 5000, 2000, tail_rank(5000)
    x = np.partition(rng.standard_normal((1000, m)), [r - 1, m - r], axis=1)
    mass = 0.99 * (ndtr(x[:, r - 1]) + 1 - ndtr(x[:, m - r])) + 0.01
    beyond = rng.binomial(n, mass).astype(np.float64)
    ones = np.ones(1000)
    excess = beyond / n - 2 * r / (m + 1)
    p = tail_p(beyond, n * ones, m * ones, r * ones, excess >= DEFAULTS.quality.range.warning)
    outliers = float(
        np.mean((adjusted_p(p, "none") < ALPHA) & (excess >= DEFAULTS.quality.range.warning))
    )
    # Missing 5 % -> 20 % at 500 events.
    x_b, x_w = rng.binomial(5000, 0.05, 1000), rng.binomial(500, 0.2, 1000)
    change = x_w / 500 - x_b / 5000
    asked = change >= DEFAULTS.quality.missing.warning
    p = rate_increase_p(x_b * 1.0, 5000 * ones, x_w * 1.0, 500 * ones, asked)
    missing = float(np.mean((adjusted_p(p, "none") < ALPHA) & asked))
    print(
        f"\npower: 0.5 SD at 500 (psi) {half_sd:.1%}, 0.25 SD at 2000 (chisquare) "
        f"{quarter_sd:.1%}, 1 % outliers at 2000 {outliers:.1%}, missing 5 -> 20 % at 500 "
        f"{missing:.1%}",
        end="",
    )
    assert half_sd >= 0.8
    assert quarter_sd >= 0.9
    assert outliers >= 0.9
    assert missing >= 0.99
