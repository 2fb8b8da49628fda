"""The data-quality tests against scipy's Fisher exact test and beta-binomial distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import betabinom, fisher_exact

from driftline.core.quality import rate_increase_p, tail_excess, tail_p


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


@pytest.mark.parametrize(
    ("x_b", "t_b", "x_w", "t_w"),
    [
        (250, 5000, 30, 100),
        (0, 4000, 1, 20),
        (1500, 5000, 40, 100),
        (5, 1000, 400, 400),
        (3, 50, 2, 10),
    ],
)
def test_missing_rate_p_is_fishers_one_sided_exact_test(
    x_b: int, t_b: int, x_w: int, t_w: int
) -> None:
    # The window's missing count against the baseline's: is the window's rate higher?
    table = [[x_w, t_w - x_w], [x_b, t_b - x_b]]
    expected = fisher_exact(table, alternative="greater").pvalue
    got = rate_increase_p(floats(x_b), floats(t_b), floats(x_w), floats(t_w), np.array([True]))
    assert got[0] == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_rate_p_is_one_where_not_asked_or_nothing_counted() -> None:
    got = rate_increase_p(
        floats(10, 10, 10, 10),
        floats(100, 100, 0, 100),
        floats(50, 50, 50, 0),
        floats(60, 60, 60, 0),
        np.array([False, True, True, True]),
    )
    assert got[0] == 1.0  # not asked: below the rule's threshold
    assert got[1] < 1e-10
    assert got[2] == got[3] == 1.0  # a side with no rows


@pytest.mark.parametrize(
    ("beyond", "n", "m", "r"),
    [
        (1, 20, 1000, 1),
        (5, 500, 5000, 5),
        (3, 100, 1000, 1),
        (200, 100000, 1000, 1),
        (12, 2000, 50000, 50),
    ],
)
def test_tail_p_is_the_beta_binomial_tail(beyond: int, n: int, m: int, r: int) -> None:
    # Mass beyond the r-th smallest and largest of m values ~ Beta(2r, m + 1 - 2r).
    expected = betabinom.sf(beyond - 1, n, 2 * r, m + 1 - 2 * r)
    got = tail_p(floats(beyond), floats(n), floats(m), floats(r), np.array([True]))
    assert got[0] == pytest.approx(expected, rel=1e-7, abs=1e-15)


def test_tail_excess_is_the_share_beyond_less_the_baselines() -> None:
    got = tail_excess(floats(30, 0, 5), floats(1000, 0, 10), floats(5000, 5000, 3), floats(5, 5, 2))
    assert got[0] == pytest.approx(30 / 1000 - 10 / 5001)
    assert got[1] == 0.0  # empty window
    assert got[2] == 0.0  # baseline too small for its rank: untestable


def test_tail_p_is_one_where_untestable() -> None:
    got = tail_p(
        floats(0, 4, 4),
        floats(100, 100, 100),
        floats(1000, 3, 1000),
        floats(1, 2, 1),
        np.array([True, True, False]),
    )
    assert got.tolist() == [1.0, 1.0, 1.0]
