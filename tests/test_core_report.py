"""A monitor's verdict on windows of real binned events: drift, data quality, notices.

The example baseline (4 000 credit-risk rows) and events drawn from its profile; each
case changes one thing and checks that exactly that reaches the verdict, with its reason.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import numpy as np
import pytest
from support import ROOT, make_monitor

from driftline.core.binning import bin_batch
from driftline.core.limits import Limits
from driftline.core.monitor import Monitor
from driftline.core.policy import TEST_THRESHOLDS
from driftline.core.profile import LEGACY_PROFILE_KIND, load_baseline
from driftline.core.report import Evaluation, assess, drift_report, evaluate
from driftline.core.severity import Severity
from driftline.core.window import Vector, WindowTotals
from driftline.simulate import SCENARIOS, ProfileSampler

EXAMPLE = ROOT / "examples" / "baseline_data.json"


def monitor(**config: Any) -> Monitor:
    return make_monitor({"name": "m", "baseline": "examples/baseline_data.json", **config})


def events(m: Monitor, size: int, seed: int = 3) -> list[dict[str, Any]]:
    return ProfileSampler(m.profile, np.random.default_rng(seed)).events(
        size, SCENARIOS["baseline"]
    )


def vector_of(m: Monitor, rows: list[dict[str, Any]]) -> Vector:
    batch = bin_batch(m.layout, rows, Limits())
    assert not batch.errors
    return batch.deltas(m.window.width, np.zeros(len(rows), dtype=np.int64))[0][0]


def verdict_of(m: Monitor, rows: list[dict[str, Any]]) -> Evaluation:
    return evaluate(m, vector_of(m, rows))


def test_an_unchanged_window_is_not_evaluated_again() -> None:
    # The evaluation loop asks for every monitor's verdict whether its window moved or
    # not: equal counts give the evaluation already made, new counts a new one.
    m = monitor()
    vector = vector_of(m, events(m, 400))
    first = evaluate(m, vector)
    assert evaluate(m, vector.copy()) is first
    moved = vector_of(m, events(m, 401))
    assert evaluate(m, moved) is not first
    assert evaluate(m, moved).events == 401
    # A rolling reference is an input too; so is the monitor (its policy and baseline).
    assert evaluate(m, vector, vector) is not evaluate(m, vector)
    other = monitor(alpha=0.01)
    assert evaluate(other, vector) is not evaluate(m, vector)
    assert evaluate(other, vector).alpha == 0.01


def test_drift_free_events_reach_no_verdict() -> None:
    m = monitor()
    found = verdict_of(m, events(m, 2000))
    assert found.verdict.severity is Severity.NONE
    assert all(f.severity is Severity.NONE and not f.reasons for f in found.features.values())


def test_a_feature_gone_missing_is_critical_for_missing() -> None:
    m = monitor()
    rows = events(m, 400)
    for row in rows:
        row["income"] = None
    found = verdict_of(m, rows)
    income = found.features["income"]
    assert (income.severity, income.reasons) == (Severity.CRITICAL, ("missing",))
    assert income.drift is Severity.NONE  # no values: nothing for the distribution test
    assert found.verdict.severity is Severity.CRITICAL
    assert found.verdict.flagged == ["income"]


def test_missing_rate_rising_past_the_threshold_is_a_warning() -> None:
    m = monitor()
    rows = events(m, 2000, seed=4)
    rng = np.random.default_rng(9)
    for row in rows:
        if rng.random() < 0.2:
            row["age"] = None
    found = verdict_of(m, rows)
    age = found.features["age"]
    assert (age.severity, age.reasons) == (Severity.WARNING, ("missing",))
    rule = found.quality["missing"]
    i = rule.features.index("age")
    assert rule.baseline_rate[i] == 0.0
    assert 0.18 < rule.rate[i] < 0.22 and rule.change[i] == rule.rate[i]


def test_extreme_outliers_are_a_range_finding() -> None:
    m = monitor()
    rows = events(m, 2000, seed=5)
    for row in rows[::100]:  # 1 % of the window far beyond anything the baseline had
        row["credit_score"] = 15000.0
    found = verdict_of(m, rows)
    credit = found.features["credit_score"]
    assert credit.reasons[0] == "range"
    assert credit.severity is Severity.WARNING
    rule = found.quality["range"]
    i = rule.features.index("credit_score")
    low, high = m.profile.features["credit_score"].tail_cuts  # type: ignore[union-attr]
    beyond = sum(
        1 for r in rows if r["credit_score"] is not None and not low <= r["credit_score"] <= high
    )
    present = sum(1 for r in rows if r["credit_score"] is not None)
    assert rule.rate[i] == pytest.approx(beyond / present)


def test_a_new_category_is_a_new_categories_finding() -> None:
    m = monitor()
    rows = events(m, 1000, seed=6)
    for row in rows[::50]:  # 2 % of the window in a channel training never saw
        row["channel"] = "kiosk"
    found = verdict_of(m, rows)
    channel = found.features["channel"]
    assert "new_categories" in channel.reasons
    assert channel.severity is Severity.WARNING
    rule = found.quality["new_categories"]
    i = rule.features.index("channel")
    assert rule.rate[i] == pytest.approx(0.02)


def test_a_moderate_shift_is_a_notice_not_drift() -> None:
    m = monitor()
    rows = events(m, 4000, seed=7)
    rng = np.random.default_rng(1)
    for row in rows:  # 30 % of the customers with one product now have three
        if row["num_products"] < 1.5 and rng.random() < 0.3:
            row["num_products"] = 3.0
    found = verdict_of(m, rows)
    products = found.features["num_products"]
    assert 0.1 <= products.score < 0.2
    assert (products.severity, products.reasons) == (Severity.NOTICE, ("distribution",))
    assert found.verdict.severity is Severity.NOTICE
    assert not found.verdict.drift_detected and found.verdict.flagged == []


def test_fewer_than_ten_values_are_insufficient_for_the_drift_test() -> None:
    m = monitor()
    rows = events(m, 200, seed=8)
    for row in rows[9:]:
        row["age"] = None  # 9 values of age left
    now = time.time()
    totals = WindowTotals(vector=vector_of(m, rows), start=now - 60, now=now)
    report = drift_report(assess(m, totals), totals)
    age = report.features["age"]
    assert (age.status, age.p_value, age.drift_severity) == ("insufficient", 1.0, Severity.NONE)
    assert age.reasons == ["missing"]  # the data-quality rule still runs
    assert report.features["income"].status == "tested"


def test_multiple_testing_adjusts_the_p_values_of_the_monitor() -> None:
    rows = events(monitor(), 300, seed=10)
    plain = verdict_of(monitor(), rows)
    for method in ("bonferroni", "holm", "bh"):
        adjusted = verdict_of(monitor(multiple_testing=method), rows)
        for name, feature in adjusted.features.items():
            assert feature.p_value == plain.features[name].p_value
            assert feature.p_adjusted >= feature.p_value
    # Each of a feature's three checks is tested at alpha / 3; Bonferroni over the 8
    # features on top.
    assert {n: f.p_adjusted for n, f in plain.features.items()} == {
        n: min(1.0, 3 * f.p_value) for n, f in plain.features.items()
    }
    bonferroni = verdict_of(monitor(bonferroni=True), rows)
    assert {n: f.p_adjusted for n, f in bonferroni.features.items()} == {
        n: min(1.0, 8 * min(1.0, 3 * f.p_value)) for n, f in plain.features.items()
    }


def test_a_feature_can_choose_its_test_and_gets_its_thresholds() -> None:
    m = monitor(features={"age": {"test": "ks"}, "income": {"test": "wasserstein"}})
    now = time.time()
    totals = WindowTotals(vector=vector_of(m, events(m, 500)), start=now - 60, now=now)
    report = drift_report(assess(m, totals), totals)
    assert report.features["age"].test == "ks"
    assert report.features["age"].warning_threshold == TEST_THRESHOLDS["ks"].warning
    assert report.features["income"].test == "wasserstein"
    assert report.features["credit_score"].test == "psi"
    assert report.features["channel"].test == "chisquare"


def test_a_first_version_profile_is_reported_uncalibrated() -> None:
    profile = msgspec.to_builtins(load_baseline(EXAMPLE))
    profile["kind"] = LEGACY_PROFILE_KIND
    for feature in profile["features"].values():
        feature.pop("selection", None)
    m = make_monitor({"name": "m", "baseline": profile})
    rows = events(m, 1000, seed=11)
    for row in rows[::20]:
        row["channel"] = "kiosk"
    now = time.time()
    totals = WindowTotals(vector=vector_of(m, rows), start=now - 60, now=now)
    report = drift_report(assess(m, totals), totals)
    channel = report.features["channel"]
    assert channel.calibrated is False
    # Its `other` count chose the categories: the new-categories rule cannot be trusted.
    assert channel.quality["new_categories"].p_value == 1.0
    assert report.features["age"].calibrated is True


def test_report_names_every_check_and_the_reasons() -> None:
    m = monitor()
    rows = events(m, 400)
    for row in rows:
        row["income"] = None
    now = time.time()
    totals = WindowTotals(vector=vector_of(m, rows), start=now - 60, now=now)
    assessment = assess(m, totals)
    report = drift_report(assessment, totals)
    assert report.feature_reasons == {"income": ["missing"]}
    assert assessment.summary().feature_reasons == {"income": ["missing"]}
    assert set(report.features["age"].quality) == {"missing", "range"}
    assert set(report.features["channel"].quality) == {"missing", "new_categories"}
    missing = report.features["income"].quality["missing"]
    assert missing.severity is Severity.CRITICAL and missing.rate == 1.0
    assert missing.baseline_rate == pytest.approx(report.features["income"].baseline_missing_rate)
