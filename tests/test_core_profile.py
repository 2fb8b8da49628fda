"""Baseline profiles checked against independent numpy computations."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from driftline.core.profile import (
    DISCRETE_MAX_VALUES,
    LEGACY_PROFILE_KIND,
    PROFILE_KIND,
    BaselineError,
    BaselineProfile,
    CategoricalProfile,
    CodedColumn,
    NumericProfile,
    build_profile,
    categorical_profile,
    decode_profile,
    encode_profile,
    held_out_split,
    infer_kind,
    load_baseline,
    numeric_profile,
    parse_numbers,
    rows_to_columns,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "baseline_data.json"


def expected_cuts(x: np.ndarray, bins: int) -> np.ndarray:
    """Unique quantile cuts, at most one bin per 50 values (at least 2 bins)."""
    bins = max(2, min(bins, len(x) // 50))
    return np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))


def expected_counts(x: np.ndarray, cuts: np.ndarray) -> list[int]:
    """Count per bin with bin i = [cuts[i-1], cuts[i]), open at both ends, by np.histogram."""
    edges = np.concatenate([[-np.inf], cuts, [np.inf]])
    # np.histogram's bins are half-open [a, b) except the last; the last is (cut, inf] here
    # and inf never occurs, so that is the same as [cut, inf).
    counts, _ = np.histogram(x, bins=edges)
    return [int(c) for c in counts]


def bin_of(profile: NumericProfile, value: float) -> int:
    return int(np.searchsorted(np.asarray(profile.cuts), value, side="right"))


# ---------------------------------------------------------------------------- numeric


@pytest.mark.parametrize("bins", [2, 4, 10, 17])
def test_continuous_cuts_are_unique_quantiles_and_counts_match_histogram(bins: int) -> None:
    rng = np.random.default_rng(bins)
    x = rng.normal(50.0, 12.0, size=997).round(3)
    profile = numeric_profile(x.tolist(), bins, "x")

    cuts = expected_cuts(x, bins)
    assert profile.cuts == cuts.tolist()
    assert len(profile.counts) == len(profile.cuts) + 1
    assert profile.counts == expected_counts(x, cuts)
    assert sum(profile.counts) == profile.n == len(x)
    assert not profile.discrete
    assert profile.missing == 0
    assert profile.mean == pytest.approx(float(np.mean(x)))
    assert profile.std == pytest.approx(float(np.std(x, ddof=1)))
    assert profile.min == float(x.min())
    assert profile.max == float(x.max())


def test_tied_quantiles_are_collapsed() -> None:
    # Half the values are 0: several quantile cuts coincide and must collapse to one.
    x = np.concatenate([np.zeros(500), np.arange(1, 501, dtype=float)])
    profile = numeric_profile(x.tolist(), 10, "x")
    raw = np.quantile(x, np.linspace(0, 1, 11)[1:-1])
    assert len(np.unique(raw)) < len(raw)  # the premise: there are ties
    cuts = expected_cuts(x, 10)
    assert profile.cuts == cuts.tolist()
    assert all(b > a for a, b in zip(profile.cuts, profile.cuts[1:], strict=False))
    assert profile.counts == expected_counts(x, cuts)


def test_discrete_feature_gets_one_bin_per_value_with_empty_outer_bins() -> None:
    values = [1, 2, 2, 3, 3, 3, 5, 5, 5, 5, 8]
    profile = numeric_profile(values, 10, "n")
    distinct = sorted(set(values))
    assert profile.discrete
    assert profile.bins == len(distinct) + 2
    # Outer bins are empty; inner bin k holds exactly the k-th distinct value.
    assert profile.counts == [0] + [values.count(v) for v in distinct] + [0]
    for k, v in enumerate(distinct, start=1):
        assert bin_of(profile, v) == k
    # Every baseline value lands in its own bin (no two distinct values share one).
    assert len({bin_of(profile, v) for v in distinct}) == len(distinct)
    assert bin_of(profile, 0.999) == 0
    assert bin_of(profile, -1e9) == 0
    assert bin_of(profile, 8.0000001) == profile.bins - 1
    assert bin_of(profile, 1e9) == profile.bins - 1


@pytest.mark.parametrize("seed", range(5))
def test_discrete_bins_are_numpys_distinct_values_whatever_the_row_order(seed: int) -> None:
    # Shuffled rows with ties, both zeros and a missing value: the bins hold np.unique's
    # values, each with its count, as a histogram of the rows says.
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.repeat([-3.5, -0.0, 0.0, 1.0, 2.25, 9.0], rng.integers(1, 9, 6)))
    profile = numeric_profile([*x.tolist(), None], 10, "x")
    distinct, counts = np.unique(x, return_counts=True)
    assert profile.discrete
    assert profile.bin_means[1:-1] == distinct.tolist()
    assert profile.counts == [0, *counts.tolist(), 0]
    assert profile.missing == 1


@pytest.mark.parametrize("magnitude", [1e200, 1e306, 1.5e308])
def test_a_baseline_near_the_float_limit_is_summarised_and_saved(magnitude: float) -> None:
    # Plain float64 sums of such values overflow: the profile's mean, SD and bin means
    # must still be the values', and the saved profile must load again.
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.2, 1.0, 400) * magnitude
    profile = numeric_profile(x.tolist(), 10, "big")
    scaled = [math.ldexp(v, -1024) for v in x.tolist()]  # exact: a power of two
    mean = math.ldexp(math.fsum(scaled) / len(scaled), 1024)
    spread = math.fsum((v - math.fsum(scaled) / len(scaled)) ** 2 for v in scaled)
    std = math.ldexp(math.sqrt(spread / (len(scaled) - 1)), 1024)
    assert profile.mean == pytest.approx(mean, rel=1e-12)
    assert profile.std == pytest.approx(std, rel=1e-12)
    index = np.searchsorted(np.asarray(profile.cuts), x, side="right")
    for k in np.unique(index).tolist():
        inside = [math.ldexp(v, -1024) for v in x[index == k].tolist()]
        expected = math.ldexp(math.fsum(inside) / len(inside), 1024)
        assert profile.bin_means[k] == pytest.approx(expected, rel=1e-12)
    assert all(math.isfinite(v) for v in [*profile.bin_means, *profile.cuts])
    saved = build_profile({"big": x.tolist()})
    assert decode_profile(msgspec.json.decode(encode_profile(saved))) == saved


def test_a_feature_whose_spread_float64_cannot_hold_is_refused_by_name() -> None:
    with pytest.raises(BaselineError, match=r"^big: values too large to summarise"):
        numeric_profile([1.79e308, -1.79e308] * 30, 10, "big")


def test_discrete_threshold_is_twenty_distinct_values() -> None:
    twenty = [float(v) for v in range(DISCRETE_MAX_VALUES)] * 3
    p20 = numeric_profile(twenty, 5, "x")
    assert p20.discrete
    assert p20.bins == DISCRETE_MAX_VALUES + 2
    assert p20.counts == [0] + [3] * DISCRETE_MAX_VALUES + [0]

    twenty_one = [float(v) for v in range(DISCRETE_MAX_VALUES + 1)] * 5
    p21 = numeric_profile(twenty_one, 5, "x")
    x = np.asarray(twenty_one)
    assert not p21.discrete
    assert p21.cuts == expected_cuts(x, 5).tolist()
    assert p21.counts == expected_counts(x, np.asarray(p21.cuts))


def test_constant_feature() -> None:
    profile = numeric_profile([7, 7.0, "7", None], 10, "c")
    assert profile.discrete
    assert profile.counts == [0, 3, 0]
    assert profile.n == 3
    assert profile.missing == 1
    assert profile.mean == 7.0
    assert profile.std == 0.0
    assert profile.min == profile.max == 7.0
    assert bin_of(profile, 7.0) == 1
    assert bin_of(profile, 6.9) == 0
    assert bin_of(profile, 7.1) == 2


def test_single_value_has_zero_std() -> None:
    profile = numeric_profile([3.5], 10, "c")
    assert profile.std == 0.0
    assert profile.counts == [0, 1, 0]


def test_missing_values_are_counted_not_binned() -> None:
    present = [float(v) for v in range(240)]
    values: list[object] = [*present, None, math.nan, "", "NA", "n/a", " null ", "None", "nan"]
    profile = numeric_profile(values, 4, "x")
    assert profile.missing == 8
    assert profile.n == len(present)
    assert sum(profile.counts) == len(present)
    x = np.asarray(present)
    assert profile.cuts == expected_cuts(x, 4).tolist()
    assert profile.mean == pytest.approx(float(x.mean()))


@pytest.mark.parametrize(("present", "bins"), [(60, 2), (120, 2), (150, 3), (499, 9), (500, 10)])
def test_small_baselines_get_at_least_fifty_values_per_quantile_bin(
    present: int, bins: int
) -> None:
    x = np.random.default_rng(present).normal(size=present)
    profile = numeric_profile(x.tolist(), 10, "x")
    assert profile.bins == bins
    assert profile.cuts == np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]).tolist()


@pytest.mark.parametrize("present", [1, 1999, 2000, 5000, 12345])
def test_tail_cuts_are_the_baselines_order_statistics(present: int) -> None:
    x = np.random.default_rng(present).lognormal(size=present)
    profile = numeric_profile([*x.tolist(), None], 10, "x")
    r = max(1, int(0.001 * present))
    ordered = np.sort(x)
    assert profile.tail_rank == r
    assert profile.tail_cuts == (ordered[r - 1], ordered[present - r])
    assert (profile.tail_low, profile.tail_high) == profile.tail_cuts


def test_bin_means_are_the_baseline_means_of_each_bin() -> None:
    x = np.random.default_rng(8).gamma(2.0, 3.0, size=3000)
    profile = numeric_profile(x.tolist(), 10, "x")
    index = np.searchsorted(np.asarray(profile.cuts), x, side="right")
    means = [float(x[index == i].mean()) for i in range(profile.bins)]
    assert profile.bin_means == pytest.approx(means, rel=1e-12)
    assert profile.positions == profile.bin_means
    # A per-value bin sits at its value; its empty outer bins a neighbour's width out.
    discrete = numeric_profile([1, 2, 2, 4], 10, "k")
    assert discrete.positions == pytest.approx([0.5, 1.0, 2.0, 4.0, 5.0], rel=1e-15)


def test_numeric_strings_are_numbers() -> None:
    assert infer_kind(["1", "2.5", "-3e2", None, ""]) == "numeric"
    profile = numeric_profile(["1", "2.5", "-3e2"], 10, "x")
    assert profile.min == -300.0
    assert profile.max == 2.5


def test_infer_kind() -> None:
    assert infer_kind([1, 2.5, None]) == "numeric"
    assert infer_kind([1, "a"]) == "categorical"
    assert infer_kind([True, False]) == "categorical"  # bools are not numbers
    assert infer_kind([None, ""]) == "categorical"  # nothing present


def test_non_numeric_value_in_forced_numeric_feature_is_rejected() -> None:
    with pytest.raises(BaselineError, match=r"^age: expected a number, got 'old'$"):
        build_profile({"age": [1, 2, "old"]}, kinds={"age": "numeric"})
    with pytest.raises(BaselineError, match=r"^flag: expected a number, got True$"):
        build_profile({"flag": [1, True]}, kinds={"flag": "numeric"})
    with pytest.raises(BaselineError, match=r"x: expected a number, got 'inf'"):
        numeric_profile([1, "inf"], 10, "x")


def test_all_missing_forced_numeric_is_rejected() -> None:
    with pytest.raises(BaselineError, match=r"^x: no non-missing values"):
        build_profile({"x": [None, "", "NA"]}, kinds={"x": "numeric"})


# ------------------------------------------------------------------------ categorical


def halves(values: list[object]) -> tuple[Counter[str], Counter[str]]:
    """The selection and reference halves of the labels, as the profile splits them."""
    return held_out_split(Counter(str(v) for v in values if v not in (None, "")))


def test_categorical_top_k_of_the_selection_half_counted_on_the_other() -> None:
    rng = np.random.default_rng(4)
    values: list[object] = [f"c{int(v)}" for v in rng.zipf(1.6, size=3000) if v <= 40]
    values += [None, ""]
    profile = categorical_profile(values, top_k=5)
    selection, reference = halves(values)
    ranked = sorted(selection.items(), key=lambda item: (-item[1], item[0]))
    assert profile.categories == [c for c, _ in ranked[:5]]
    kept = profile.categories
    assert profile.selection == [selection[c] for c in kept] + [
        sum(selection.values()) - sum(selection[c] for c in kept)
    ]
    assert profile.counts == [reference[c] for c in kept] + [
        sum(reference.values()) - sum(reference[c] for c in kept)
    ]
    # The halves partition the rows: every row counted once, the missing ones aside.
    assert sum(profile.counts) + sum(profile.selection) == profile.n == len(values) - 2
    assert sum(profile.selection) == profile.n // 2
    assert profile.missing == 2
    assert profile.bins == 6
    assert profile.calibrated


def test_held_out_split_is_random_but_fixed_by_the_data() -> None:
    labels = Counter({f"c{i}": 143 - i for i in range(7)})
    selection, reference = held_out_split(labels)
    assert held_out_split(labels) == (selection, reference)
    # The halves partition the rows: per category, and half of all rows (rounded down).
    assert selection + reference == labels
    assert sum(selection.values()) == sum(labels.values()) // 2
    # Drawn as a random half of the rows would be, not halved category by category.
    assert any(selection[c] != labels[c] // 2 for c in labels)
    assert set(selection) == set(reference) == set(labels)
    # Fixed by the data alone: another category count gives another draw.
    assert held_out_split(labels + Counter({"c0": 1})) != (selection, reference)


def test_held_out_split_draws_like_a_random_half_of_the_rows() -> None:
    # A category of 40 rows out of 1,000: its share of a random half is hypergeometric.
    draws = [held_out_split(Counter({"a": 40, f"b{i}": 960}))[0]["a"] for i in range(2000)]
    assert np.mean(draws) == pytest.approx(20, abs=0.3)
    expected_var = 500 * 0.04 * 0.96 * (1000 - 500) / (1000 - 1)  # n p (1 - p) (N - n)/(N - 1)
    assert np.var(draws) == pytest.approx(expected_var, rel=0.15)


def test_categorical_all_kept_leaves_other_empty() -> None:
    values = ["x"] * 10 + ["y"] * 20
    profile = categorical_profile(values, top_k=100)
    assert profile.categories == ["y", "x"]
    assert profile.counts[-1] == profile.selection[-1] == 0
    assert [a + b for a, b in zip(profile.counts, profile.selection, strict=True)] == [20, 10, 0]


def test_categories_seen_in_one_half_only() -> None:
    # One row of "rare": it lands in one half. Chosen on the selection half, it is kept
    # only if that half holds it, and counts under `other` in the reference otherwise.
    values = ["a"] * 40 + ["rare"]
    profile = categorical_profile(values, top_k=100)
    selection, reference = halves(values)
    assert ("rare" in profile.categories) == ("rare" in selection)
    assert profile.counts[-1] == (reference["rare"] if "rare" not in selection else 0)


def test_bools_are_categories_true_false() -> None:
    profile = build_profile({"flag": [True, False, True, None] * 10}).features["flag"]
    assert isinstance(profile, CategoricalProfile)
    assert profile.categories == ["true", "false"]
    assert [a + b for a, b in zip(profile.counts, profile.selection or [], strict=True)] == [
        20,
        10,
        0,
    ]
    assert profile.missing == 10


def test_numbers_forced_categorical_use_string_labels() -> None:
    profile = build_profile({"code": [1, 1, 2, 3.5] * 5}, kinds={"code": "categorical"})
    feature = profile.features["code"]
    assert isinstance(feature, CategoricalProfile)
    # Ranked by the selection half's counts (ties by name).
    chosen = dict(zip(feature.categories, feature.selection or [], strict=False))
    assert sorted(chosen) == ["1", "2", "3.5"]
    assert feature.categories == sorted(chosen, key=lambda c: (-chosen[c], c))
    both = [a + b for a, b in zip(feature.counts, feature.selection or [], strict=True)]
    assert dict(zip(feature.categories, both, strict=False)) == {"1": 10, "2": 5, "3.5": 5}
    assert both[-1] == 0  # nothing pooled in `other`


def test_profile_of_the_first_version_loads_and_is_not_calibrated() -> None:
    data = msgspec.to_builtins(_small_profile())
    data["kind"] = LEGACY_PROFILE_KIND
    for feature in data["features"].values():
        for field in ("selection", "tail_low", "tail_high", "tail_rank", "bin_means"):
            feature.pop(field, None)
    profile = decode_profile(data)
    c, x = profile.features["c"], profile.features["x"]
    assert isinstance(c, CategoricalProfile) and isinstance(x, NumericProfile)
    assert not c.calibrated
    assert x.tail_cuts == (x.min, x.max) and x.tail_rank == 1
    # Without stored bin means: interval middles, outer bins a neighbour's width out.
    cuts = x.cuts
    assert x.positions == [
        cuts[0] - (cuts[1] - cuts[0]),
        *((a + b) / 2 for a, b in itertools.pairwise(cuts)),
        cuts[-1] + (cuts[-1] - cuts[-2]),
    ]


# ---------------------------------------------------------------- formats and loading


def _sample_records(n: int = 120) -> list[dict[str, object]]:
    rng = np.random.default_rng(3)
    records: list[dict[str, object]] = []
    for i in range(n):
        records.append(
            {
                "amount": None if i % 17 == 0 else round(float(rng.gamma(2.0, 40.0)), 2),
                "count": int(rng.integers(0, 4)),
                "colour": ["red", "green", "blue", "teal"][int(rng.integers(0, 4))],
                "active": bool(i % 3),
                "note": None if i % 11 == 0 else f"n{i % 5}",
            }
        )
    return records


def _write_csv(path: Path, records: list[dict[str, object]]) -> None:
    names = list(records[0])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for r in records:
            cells = []
            for name in names:
                v = r[name]
                if v is None:
                    cells.append("NA" if name == "amount" else "")
                elif isinstance(v, bool):
                    cells.append("true" if v else "false")
                else:
                    cells.append(str(v))
            writer.writerow(cells)


def test_records_columns_and_csv_give_identical_profiles(tmp_path: Path) -> None:
    records = _sample_records()
    columns = {name: [r[name] for r in records] for name in records[0]}
    (tmp_path / "records.json").write_text(json.dumps(records))
    (tmp_path / "columns.json").write_text(json.dumps(columns))
    _write_csv(tmp_path / "rows.csv", records)

    from_records = load_baseline(tmp_path / "records.json", bins=6, top_k=3)
    from_columns = load_baseline(tmp_path / "columns.json", bins=6, top_k=3)
    from_csv = load_baseline(tmp_path / "rows.csv", bins=6, top_k=3)
    assert from_records == from_columns == from_csv
    assert from_records.content_hash == from_csv.content_hash

    # And the content is what independent computations say.
    assert from_records.rows == len(records)
    assert list(from_records.features) == sorted(records[0])
    amount = from_records.features["amount"]
    assert isinstance(amount, NumericProfile)
    x = np.asarray([r["amount"] for r in records if r["amount"] is not None], dtype=float)
    assert amount.missing == len(records) - len(x)
    assert amount.cuts == expected_cuts(x, 6).tolist()
    assert amount.counts == expected_counts(x, np.asarray(amount.cuts))
    count = from_records.features["count"]
    assert isinstance(count, NumericProfile)
    assert count.discrete
    assert count.counts[1:-1] == [sum(r["count"] == v for r in records) for v in range(4)]
    active = from_records.features["active"]
    assert isinstance(active, CategoricalProfile)
    assert sorted(active.categories) == ["false", "true"]
    colour = from_records.features["colour"]
    assert isinstance(colour, CategoricalProfile)
    assert len(colour.categories) == 3
    assert sum(colour.counts) + sum(colour.selection or []) == len(records)
    note = from_records.features["note"]
    assert isinstance(note, CategoricalProfile)
    assert note.missing == sum(r["note"] is None for r in records)


def test_records_with_absent_keys_count_as_missing() -> None:
    columns = rows_to_columns([{"a": 1}, {"b": "x"}, {"a": 3, "b": "y"}])
    assert columns == {"a": [1, None, 3], "b": [None, "x", "y"]}
    profile = build_profile(columns)
    assert profile.features["a"].missing == 1
    assert profile.features["b"].missing == 1
    assert profile.rows == 3


def test_csv_with_bom_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes("\ufeffx,y\n1,a\n,b\n3,\n".encode())
    profile = load_baseline(path)
    assert list(profile.features) == ["x", "y"]
    assert profile.features["x"].missing == 1
    assert profile.features["y"].missing == 1
    assert isinstance(profile.features["x"], NumericProfile)


def test_kinds_override_unknown_column_is_rejected() -> None:
    with pytest.raises(BaselineError, match=r"^features\.nope: not a column"):
        build_profile({"a": [1, 2]}, kinds={"nope": "numeric"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", r"no rows"),
        ("{}", r"no rows"),
        ('{"a": [], "b": []}', r"no rows"),
        ('{"a": [1, 2], "b": [1]}', r"columns have different lengths"),
        ('{"a": [1, 2], "b": 3}', r"\.b: expected a list of values"),
        ("[1, 2]", r"\[0\]: expected an object of feature values, got int"),
        ('"text"', r"expected a list of records or an object of columns, got str"),
        ("[{", r"not valid JSON"),
    ],
)
def test_bad_json_baselines_are_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=message) as info:
        load_baseline(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"), [("", r"CSV has no header row"), ("a,b\n", r"no rows")]
)
def test_bad_csv_baselines_are_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(BaselineError, match=message):
        load_baseline(path)


def test_unreadable_baseline_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"cannot read baseline"):
        load_baseline(tmp_path / "missing.json")


def test_empty_columns_mapping_is_rejected() -> None:
    with pytest.raises(BaselineError, match=r"no features"):
        build_profile({})


# ------------------------------------------------------------------------ persistence


def test_one_column_csv_keeps_empty_cells_as_missing(tmp_path: Path) -> None:
    # An empty cell of a one-column CSV is an empty line: it is a missing value, not
    # nothing (a profile with no missing values would be the wrong baseline).
    path = tmp_path / "temperature.csv"
    path.write_text("temperature\n21.5\n\n19.0\n\n\n22.25\n")
    profile = load_baseline(path)
    feature = profile.features["temperature"]
    assert (feature.n, feature.missing, profile.rows) == (3, 3, 6)


def test_wider_csv_skips_empty_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,y\n1,a\n\n2,b\n,\n")
    profile = load_baseline(path)
    assert profile.rows == 3
    assert (profile.features["x"].n, profile.features["x"].missing) == (2, 1)
    assert (profile.features["y"].n, profile.features["y"].missing) == (2, 1)


def _small_profile(bins: int = 4) -> BaselineProfile:
    rng = np.random.default_rng(11)
    return build_profile(
        {
            "x": rng.normal(size=200).round(4).tolist(),
            "k": [int(v) for v in rng.integers(0, 3, size=200)],
            "c": [["p", "q", "r"][int(v)] for v in rng.integers(0, 3, size=200)],
        },
        bins=bins,
    )


def test_saved_profile_round_trips_and_keeps_hash(tmp_path: Path) -> None:
    profile = _small_profile()
    path = tmp_path / "profile.json"
    path.write_bytes(encode_profile(profile))
    document = json.loads(path.read_text())
    assert document["kind"] == PROFILE_KIND
    loaded = load_baseline(path, bins=50, top_k=1)  # build options do not apply to a profile
    assert loaded == profile
    assert loaded.content_hash == profile.content_hash
    assert len(profile.content_hash) == 16
    int(profile.content_hash, 16)


def test_content_hash_changes_with_bins() -> None:
    a = _small_profile(bins=4)
    b = _small_profile(bins=3)
    assert a.features["x"] != b.features["x"]
    assert a.content_hash != b.content_hash
    assert _small_profile(bins=4).content_hash == a.content_hash


def test_content_hash_changes_with_counts() -> None:
    profile = _small_profile()
    data = msgspec.to_builtins(profile)
    data["features"]["c"]["counts"][0] += 1
    assert decode_profile(data).content_hash != profile.content_hash


def test_profile_with_wrong_number_of_counts_is_rejected(tmp_path: Path) -> None:
    data = msgspec.to_builtins(_small_profile())
    data["features"]["x"]["counts"].append(0)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    expected = len(data["features"]["x"]["cuts"]) + 1
    with pytest.raises(
        BaselineError,
        match=rf"\.features\.x\.counts: expected {expected} counts, got {expected + 1}",
    ):
        load_baseline(path)

    data = msgspec.to_builtins(_small_profile())
    data["features"]["c"]["counts"] = [1]
    with pytest.raises(BaselineError, match=r"features\.c\.counts: expected 4 counts, got 1"):
        decode_profile(data)


def test_profile_with_unsorted_cuts_is_rejected() -> None:
    data = msgspec.to_builtins(_small_profile())
    cuts = data["features"]["x"]["cuts"]
    cuts[0], cuts[1] = cuts[1], cuts[0]
    with pytest.raises(BaselineError, match=r"features\.x\.cuts: must be strictly increasing"):
        decode_profile(data)


def test_profile_with_bad_field_type_is_rejected() -> None:
    data = msgspec.to_builtins(_small_profile())
    data["features"]["x"]["n"] = "many"
    with pytest.raises(BaselineError, match=r"^profile: Expected `int`, got `str`"):
        decode_profile(data)


# ---------------------------------------------------------------------------- example


def test_example_baseline() -> None:
    profile = load_baseline(EXAMPLE)
    records = json.loads(EXAMPLE.read_text())
    assert isinstance(records, list)
    assert profile.rows == len(records)
    assert len(profile.features) == 8
    assert list(profile.features) == sorted(records[0])
    income = profile.features["income"]
    assert isinstance(income, NumericProfile)
    missing_income = sum(r.get("income") is None for r in records)
    assert income.missing == missing_income
    assert 0.02 <= income.missing / profile.rows <= 0.04
    x = np.asarray([r["income"] for r in records if r.get("income") is not None], dtype=float)
    assert income.cuts == expected_cuts(x, 10).tolist()
    assert income.counts == expected_counts(x, np.asarray(income.cuts))
    num_products = profile.features["num_products"]
    assert isinstance(num_products, NumericProfile)
    assert num_products.discrete
    for name in ("channel", "product_category", "region"):
        assert isinstance(profile.features[name], CategoricalProfile)


# -------------------------------------------------------------------------------- CLI


def _driftline() -> list[str]:
    script = Path(sys.executable).parent / "driftline"
    if script.exists():
        return [str(script)]
    found = shutil.which("driftline")
    if found:
        return [found]
    return [sys.executable, "-m", "driftline.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_driftline(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_baseline_build_writes_loadable_profile(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run_cli("baseline", "build", str(EXAMPLE), "-o", str(out))
    assert result.returncode == 0, result.stderr
    in_process = load_baseline(EXAMPLE)
    written = load_baseline(out)
    assert written == in_process
    assert written.content_hash == in_process.content_hash
    assert in_process.content_hash in result.stderr
    assert "8 features" in result.stderr


def test_cli_baseline_build_keeps_a_csvs_empty_cells(tmp_path: Path) -> None:
    data = tmp_path / "temperature.csv"
    data.write_text(
        "temperature\n" + "".join("\n" if i % 20 == 0 else f"{i / 10}\n" for i in range(200))
    )
    out = tmp_path / "profile.json"
    result = run_cli("baseline", "build", str(data), "-o", str(out))
    assert result.returncode == 0, result.stderr
    feature = json.loads(out.read_text())["features"]["temperature"]
    assert (feature["n"], feature["missing"]) == (190, 10)
    assert json.loads(out.read_text())["kind"] == PROFILE_KIND


def test_cli_baseline_build_bad_file_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2], "b": [1]}')
    out = tmp_path / "out.json"
    result = run_cli("baseline", "build", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert "columns have different lengths" in result.stderr
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# ------------------------------------------------------------- regressions


def test_discrete_adjacent_floats_get_their_own_bins(tmp_path: Path) -> None:
    a = 1.0
    b = float(np.nextafter(a, 2.0))
    profile = build_profile({"x": [a, b, b, 2.0]})
    feature = profile.features["x"]
    assert isinstance(feature, NumericProfile)
    assert feature.counts == [0, 1, 2, 1, 0]
    path = tmp_path / "p.json"
    path.write_bytes(encode_profile(profile))
    assert load_baseline(path) == profile


def test_huge_integer_in_baseline_is_a_baseline_error() -> None:
    with pytest.raises(BaselineError, match=r"^x: "):
        build_profile({"x": [1, 10**400]}, kinds={"x": "numeric"})


# ------------------------------------------------------------------- raw values


def test_parse_numbers_takes_what_the_rules_take_on_every_path() -> None:
    # (value, what the rules make of it): a number, None for missing, "bad" for no number.
    cases = [
        (1, 1.0), (2.5, 2.5), (" 2 ", 2.0), ("1_0", 10.0), ("-3e2", -300.0), (None, None),
        (float("nan"), None), ("", None), ("NA ", None), ("n/a", None), ("null", None),
        ("None", None), (" NaN", None), ("-nan", "bad"), ("inf", "bad"), (float("inf"), "bad"),
        (True, "bad"), (10**400, "bad"), ("x", "bad"),
    ]  # fmt: skip
    values = [v for v, _ in cases]
    numbers, bad = parse_numbers(values)
    assert bad == [i for i, (_, want) in enumerate(cases) if want == "bad"]
    for i, (_, want) in enumerate(cases):
        if want is None:
            assert math.isnan(numbers[i]), cases[i]
        elif want != "bad":
            assert numbers[i] == want, cases[i]
    # Each clean value alone takes numpy's path over a whole column: same answer.
    for value, want in cases:
        if want == "bad":
            continue
        column, column_bad = parse_numbers([value] * 3 + [4.0])
        assert column_bad == []
        assert np.array_equal(
            column[:3], np.full(3, np.nan if want is None else want), equal_nan=True
        )
    assert parse_numbers(values, max_bad=2)[1] == bad[:2]


def test_arrays_and_lists_build_the_same_profile() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=2000)
    x[::17] = np.nan
    codes = rng.integers(0, 4, 2000)
    from_arrays = build_profile(
        {"x": x, "k": codes, "c": np.array(["a", "b"] * 1000, dtype=object)}
    )
    from_lists = build_profile(
        {
            "x": [None if np.isnan(v) else float(v) for v in x],
            "k": [int(v) for v in codes],
            "c": ["a", "b"] * 1000,
        }
    )
    assert encode_profile(from_arrays) == encode_profile(from_lists)
    assert isinstance(from_arrays.features["k"], NumericProfile)
    assert from_arrays.features["x"].missing == len(x[::17])


def test_equal_values_of_other_types_keep_their_own_categories() -> None:
    profile = categorical_profile([1, 1.0, True, "1", None, float("nan"), "NA"] * 3, top_k=10)
    both = [a + b for a, b in zip(profile.counts, profile.selection or [], strict=True)]
    assert dict(zip(profile.categories, both, strict=False)) == {"1": 6, "1.0": 3, "true": 3}
    assert profile.missing == 9


def test_coded_columns_read_like_the_column_they_stand_for() -> None:
    rng = np.random.default_rng(4)
    distinct = ["a", "b", "NA", "7", None]
    codes = rng.integers(-1, len(distinct), 3000).astype(np.intp)
    coded = CodedColumn(codes, distinct)
    plain = [None if c < 0 else distinct[c] for c in codes]
    assert list(coded) == plain
    assert coded[2:5] == plain[2:5]
    assert categorical_profile(coded, top_k=2) == categorical_profile(plain, top_k=2)
    numbers, bad = parse_numbers(coded)
    plain_numbers, plain_bad = parse_numbers(plain)
    assert np.array_equal(numbers, plain_numbers, equal_nan=True)
    assert bad == plain_bad
    assert parse_numbers(coded, max_bad=3)[1] == plain_bad[:3]
    digits = CodedColumn(codes, ["1", "2.5", "", "7", None])
    assert encode_profile(build_profile({"d": digits})) == encode_profile(
        build_profile({"d": list(digits)})
    )
