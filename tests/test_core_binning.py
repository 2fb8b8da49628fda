"""Binning: one event at a time against independent computations, and a batch agreeing."""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from support import make_monitor, small_profile

from driftline.core.binning import (
    SMALL_BATCH,
    BinnedEvent,
    EventError,
    bin_batch,
    bin_columns,
    bin_event,
    plainly_valid,
)
from driftline.core.layout import EVENTS_SLOT, Layout
from driftline.core.limits import Limits
from driftline.core.monitor import Monitor
from driftline.core.profile import (
    CategoricalProfile,
    CodedColumn,
    NumericProfile,
    build_profile,
    load_baseline,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIMITS = Limits(max_string_length=12, max_abs_value=1e12)

# Values a client may send, good and bad, for either kind of feature.
NUMERIC_VALUES: list[Any] = [
    None,
    "NA",
    " na ",
    "",
    "old",
    True,
    [1],
    {"a": 1},
    10**400,
    2e12,
    -2e12,
    1e12,
    0,
    17,
    -3.5,
    250_000.0,
    10**6,
]
CATEGORY_VALUES: list[Any] = [
    None,
    "NA",
    "basic",
    "premium",
    "web",
    "north",
    "unseen",
    "x" * 13,
    3,
    2.5,
    False,
    {"a": 1},
    ["web"],
]


@pytest.fixture(scope="module")
def layout() -> Layout:
    return Layout.of(load_baseline(EXAMPLES / "baseline_data.json"))


def random_events(layout: Layout, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(n):
        event: dict[str, Any] = {}
        for name, feature in layout.features.items():
            if rng.random() < 0.1:
                continue  # absent: missing
            numeric = isinstance(feature.profile, NumericProfile)
            if rng.random() < 0.85:
                # Mostly valid values, so most events survive.
                profile = feature.profile
                if isinstance(profile, NumericProfile):
                    value: Any = float(rng.normal(profile.mean, 2 * profile.std + 1))
                    if rng.random() < 0.5:
                        value = round(value)
                else:
                    value = profile.categories[int(rng.integers(len(profile.categories)))]
            else:
                pool = NUMERIC_VALUES if numeric else CATEGORY_VALUES
                value = pool[int(rng.integers(len(pool)))]
            event[name] = value
        if rng.random() < 0.2:
            event["not_monitored"] = 1
        events.append(event)
    return events


@pytest.mark.parametrize("seed", range(5))
def test_batch_binning_equals_event_binning(layout: Layout, seed: int) -> None:
    rng = np.random.default_rng(seed)
    events = random_events(layout, rng, 400)
    expected = np.zeros(layout.width)
    expected_errors: dict[int, tuple[str, str]] = {}
    unknown: set[str] = set()
    for i, features in enumerate(events):
        try:
            event = bin_event(layout, features, LIMITS)
        except EventError as exc:
            expected_errors[i] = (exc.feature, exc.message)
            continue
        expected += event.vector(layout.width)
        unknown.update(event.unknown)
    assert expected_errors, "the random events should include invalid ones"
    assert len(expected_errors) < len(events)

    batch = bin_batch(layout, events, LIMITS)
    assert {i: (e.feature, e.message) for i, e in batch.errors.items()} == expected_errors
    assert batch.unknown == unknown
    buckets = np.full(len(events), 600, dtype=np.int64)
    deltas = batch.deltas(layout.width, buckets)
    ((bucket, (vector, count)),) = deltas.items()
    assert bucket == 600
    assert count == len(events) - len(expected_errors)
    # Every slot is an integer (moments in fixed point), so the paths agree exactly.
    assert vector[0] == count
    np.testing.assert_array_equal(vector, expected)
    np.testing.assert_array_equal(vector, np.rint(vector))


def test_batches_of_events_holding_every_feature_name_their_unknown_ones(layout: Layout) -> None:
    # Events that hold every feature skip the per-event key check when their sizes add
    # up; an event lacking one feature beside one holding an extra must not fool it.
    rng = np.random.default_rng(11)
    complete = [
        {name: event.get(name) for name in layout.features}
        for event in random_events(layout, rng, 60)
    ]
    lacking = dict(complete[0])
    lacking.pop(next(iter(layout.features)))
    extra = {**complete[1], "shoe_size": 42}
    cases = {
        "complete": (complete, set()),
        "one extra": ([*complete, extra], {"shoe_size"}),
        "sizes add up": ([*complete, lacking, extra], {"shoe_size"}),
    }
    for label, (events, unknown) in cases.items():
        batch = bin_batch(layout, events, LIMITS)
        assert batch.unknown == unknown, label
        expected = np.zeros(layout.width)
        errors = {}
        for i, features in enumerate(events):
            try:
                expected += bin_event(layout, features, LIMITS).vector(layout.width)
            except EventError as exc:
                errors[i] = (exc.feature, exc.message)
        assert {i: (e.feature, e.message) for i, e in batch.errors.items()} == errors, label
        ((vector, _),) = batch.deltas(layout.width, np.zeros(len(events), np.int64)).values()
        np.testing.assert_array_equal(vector, expected)


@pytest.mark.parametrize("seed", range(3))
def test_small_batches_bin_as_events_do(layout: Layout, seed: int) -> None:
    """Batches of up to SMALL_BATCH events take bisect and list lookups: the same counts,
    errors and event vectors as each event binned alone, values on the cuts included."""
    rng = np.random.default_rng(seed)
    events = random_events(layout, rng, 100)
    for name, feature in layout.features.items():
        if isinstance(feature.profile, NumericProfile):  # on a cut: which side counts
            events += [{name: cut} for cut in feature.profile.cuts[:4]]
    rng.shuffle(events)  # type: ignore[arg-type]
    sizes = itertools.cycle(range(1, SMALL_BATCH + 1))
    start = 0
    while start < len(events):
        chunk = events[start : start + next(sizes)]
        start += len(chunk)
        batch = bin_batch(layout, chunk, LIMITS)
        expected = np.zeros(layout.width)
        valid, errors = [], {}
        for i, features in enumerate(chunk):
            try:
                vector = bin_event(layout, features, LIMITS).vector(layout.width)
            except EventError as exc:
                errors[i] = (exc.feature, exc.message)
                continue
            expected += vector
            valid.append(i)
        assert {i: (e.feature, e.message) for i, e in batch.errors.items()} == errors
        if valid:
            buckets = np.zeros(len(chunk), dtype=np.int64)
            ((vector, count),) = batch.deltas(layout.width, buckets).values()
            assert count == len(valid)
            np.testing.assert_array_equal(vector, expected)
            np.testing.assert_array_equal(
                batch.event_vectors(layout.width, valid).sum(axis=0), expected
            )


@pytest.mark.parametrize("seed", range(3))
def test_each_event_vector_equals_the_event_binned_alone(layout: Layout, seed: int) -> None:
    # Keyed single events are claimed one vector each (driftline.engine.commit).
    rng = np.random.default_rng(seed)
    events = random_events(layout, rng, 200)
    batch = bin_batch(layout, events, LIMITS)
    valid = [i for i in range(len(events)) if i not in batch.errors]
    vectors = batch.event_vectors(layout.width, valid)
    assert vectors.shape == (len(valid), layout.width)
    for row, i in zip(vectors, valid, strict=True):
        np.testing.assert_array_equal(
            row, bin_event(layout, events[i], LIMITS).vector(layout.width)
        )


def test_batch_deltas_split_by_bucket(layout: Layout) -> None:
    events = [{"age": 30}, {"age": 40}, {"age": "old"}, {"age": 50}]
    batch = bin_batch(layout, events, LIMITS)
    deltas = batch.deltas(layout.width, np.array([0, 60, 60, 120], dtype=np.int64))
    assert {b: c for b, (_, c) in deltas.items()} == {0: 1, 60: 1, 120: 1}
    assert batch.errors[2].feature == "age"
    age = layout.features["age"]
    for bucket, value in ((0, 30), (60, 40), (120, 50)):
        single = bin_event(layout, {"age": value}, LIMITS)
        np.testing.assert_array_equal(deltas[bucket][0], single.vector(layout.width))
    assert age.missing in bin_event(layout, {}, LIMITS).slots


@pytest.mark.parametrize("seed", range(5))
def test_plainly_valid_events_are_never_refused(layout: Layout, seed: int) -> None:
    # Async predicts skip the exact check for events that look plainly valid: binning
    # must then accept every one of them, or an acknowledged event would be lost.
    rng = np.random.default_rng(100 + seed)
    events = random_events(layout, rng, 400)
    plain = [e for e in events if plainly_valid(layout, e, LIMITS)]
    assert 0 < len(plain) < len(events), "both kinds should occur"
    batch = bin_batch(layout, plain, LIMITS)
    assert batch.errors == {}
    refused = bin_batch(layout, events, LIMITS).errors
    assert refused, "the random events include invalid ones"
    assert not any(plainly_valid(layout, events[i], LIMITS) for i in refused)


# ---------------------------------------------------------- one event: bin_event

MAX_LEN = 16
EVENT_LIMITS = Limits(max_string_length=MAX_LEN)


@pytest.fixture
def small_monitor() -> Monitor:
    return make_monitor({"name": "small", "baseline": msgspec.to_builtins(small_profile())})


def bin_one(m: Monitor, features: dict[str, Any]) -> BinnedEvent:
    """Bin one event of the monitor's layout with EVENT_LIMITS."""
    return bin_event(m.layout, features, EVENT_LIMITS)


def fixed_point_moments(slots: Any, profile: NumericProfile, value: float) -> dict[int, int]:
    """The documented encoding: z = (x - mean) / std, clipped; z and z^2 in units of 2^-20."""
    z = float(np.clip((value - profile.mean) / profile.std, -1024.0, 1024.0))
    return {slots.sum: int(np.rint(z * 2**20)), slots.sum_squares: int(np.rint(z * z * 2**20))}


def _numeric(m: Monitor, name: str) -> tuple[Any, NumericProfile]:
    slots = m.layout.features[name]
    assert isinstance(slots.profile, NumericProfile)
    return slots, slots.profile


def test_numeric_value_lands_in_searchsorted_slot(small_monitor: Monitor) -> None:
    slots, profile = _numeric(small_monitor, "age")
    cuts = np.asarray(profile.cuts)
    probes = [profile.min, profile.max, *profile.cuts, *(c - 0.5 for c in profile.cuts), 50.25]
    for value in probes:
        event = bin_one(small_monitor, {"age": value})
        expected = slots.first_bin + int(np.searchsorted(cuts, value, side="right"))
        assert expected == slots.first_bin + bisect_right(profile.cuts, value)
        assert expected in event.slots
        assert slots.out_of_range not in event.slots
        sums = dict(event.sums)
        assert sums == fixed_point_moments(slots, profile, value)


def test_discrete_value_lands_in_its_own_bin(small_monitor: Monitor) -> None:
    slots, profile = _numeric(small_monitor, "kids")
    assert profile.discrete
    for k, value in enumerate([0, 1, 2, 3], start=1):
        event = bin_one(small_monitor, {"kids": value})
        assert slots.first_bin + k in event.slots


def test_full_event_slots_and_sums(small_monitor: Monitor) -> None:
    event = bin_one(small_monitor, {"age": 40, "kids": 2, "city": "rome", "vip": True})
    layout = small_monitor.layout.features
    age_slots, age = _numeric(small_monitor, "age")
    kids_slots, kids = _numeric(small_monitor, "kids")
    city = layout["city"]
    vip = layout["vip"]
    assert city.index is not None and vip.index is not None
    expected = [
        EVENTS_SLOT,
        age_slots.first_bin + int(np.searchsorted(age.cuts, 40, side="right")),
        city.index["rome"] if "rome" in city.index else city.first_bin + city.profile.bins - 1,
        kids_slots.first_bin + int(np.searchsorted(kids.cuts, 2, side="right")),
        vip.index["true"],
    ]
    assert sorted(event.slots) == sorted(expected)
    assert dict(event.sums) == {
        **fixed_point_moments(age_slots, age, 40),
        **fixed_point_moments(kids_slots, kids, 2),
    }
    assert event.unknown == []


def test_missing_feature_goes_to_missing_slot(small_monitor: Monitor) -> None:
    event = bin_one(small_monitor, {"age": None})
    expected = [EVENTS_SLOT] + [s.missing for s in small_monitor.layout.features.values()]
    assert sorted(event.slots) == sorted(expected)
    assert event.sums == []


def test_unknown_features_are_reported(small_monitor: Monitor) -> None:
    event = bin_one(small_monitor, {"age": 30, "height": 180, "zz": "x"})
    assert event.unknown == ["height", "zz"]


def test_out_of_range_is_flagged(small_monitor: Monitor) -> None:
    slots, profile = _numeric(small_monitor, "age")
    for value in (profile.min - 1, profile.max + 0.001, -1e12, 1e12):
        event = bin_one(small_monitor, {"age": value})
        assert slots.out_of_range in event.slots
        edge = slots.first_bin if value < profile.min else slots.first_bin + profile.bins - 1
        assert edge in event.slots
    kids_slots, kids = _numeric(small_monitor, "kids")
    event = bin_one(small_monitor, {"kids": 7})
    assert kids_slots.out_of_range in event.slots
    assert kids_slots.first_bin + kids.bins - 1 in event.slots  # the empty top bin
    event = bin_one(small_monitor, {"kids": -1})
    assert kids_slots.first_bin in event.slots  # the empty bottom bin


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("old", 'age: expected a number, got "old"'),
        ("42", 'age: expected a number, got "42"'),
        (True, "age: expected a number, got true"),
        (False, "age: expected a number, got false"),
        ([1], "age: expected a number, got [1]"),
        ({"v": 1}, 'age: expected a number, got {"v":1}'),
        ("x" * 60, 'age: expected a number, got "' + "x" * 36 + "..."),
    ],
)
def test_bad_numeric_values_raise_event_error(
    small_monitor: Monitor, value: Any, message: str
) -> None:
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"age": value})
    assert str(info.value) == message
    assert info.value.feature == "age"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, -(10**400)])
def test_non_finite_numbers_are_rejected(small_monitor: Monitor, value: float) -> None:
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"age": value})
    assert info.value.feature == "age"
    assert info.value.message.startswith("expected a finite number")


def test_bool_is_rejected_for_discrete_numeric(small_monitor: Monitor) -> None:
    # bool is an int subclass in Python: it must still not count as 0/1.
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"kids": True})
    assert str(info.value) == "kids: expected a number, got true"


def test_event_error_names_the_feature(small_monitor: Monitor) -> None:
    # Where the value sits in a request (events[3].features.kids) is the HTTP layer's.
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"kids": "two"})
    assert info.value.feature == "kids"
    assert info.value.message == 'expected a number, got "two"'


def test_categorical_values(small_monitor: Monitor) -> None:
    city = small_monitor.layout.features["city"]
    profile = city.profile
    assert isinstance(profile, CategoricalProfile)
    assert city.index is not None
    other = city.first_bin + profile.bins - 1
    for category in profile.categories:
        event = bin_one(small_monitor, {"city": category})
        assert city.first_bin + profile.categories.index(category) in event.slots
    pooled = next(c for c in ["oslo", "rome", "lima", "pune"] if c not in profile.categories)
    assert other in bin_one(small_monitor, {"city": pooled}).slots
    assert other in bin_one(small_monitor, {"city": "never-seen"}).slots
    vip = small_monitor.layout.features["vip"]
    assert vip.index is not None
    assert vip.index["false"] in bin_one(small_monitor, {"vip": False}).slots


def test_numbers_accepted_as_categories_via_label() -> None:
    values = [1, 2, 2, 2.5, True] * 20  # each category in both halves of the profile
    profile = build_profile({"code": values}, kinds={"code": "categorical"}, top_k=10)
    m = make_monitor({"name": "m", "baseline": msgspec.to_builtins(profile)})
    slots = m.layout.features["code"]
    assert slots.index is not None
    assert set(slots.index) == {"1", "2", "2.5", "true"}
    assert slots.index["2"] in bin_one(m, {"code": 2}).slots
    assert slots.index["2"] in bin_one(m, {"code": "2"}).slots
    assert slots.index["2.5"] in bin_one(m, {"code": 2.5}).slots
    assert slots.index["true"] in bin_one(m, {"code": True}).slots
    other = slots.first_bin + slots.profile.bins - 1
    assert other in bin_one(m, {"code": 2.0}).slots  # "2.0"


def test_category_longer_than_limit_is_rejected(small_monitor: Monitor) -> None:
    ok = "y" * MAX_LEN
    bin_one(small_monitor, {"city": ok})
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"city": ok + "y"})
    assert str(info.value) == f"city: expected at most {MAX_LEN} characters, got 17"


@pytest.mark.parametrize(("value", "shown"), [([1, 2], "[1,2]"), ({"a": "b"}, '{"a":"b"}')])
def test_structured_category_is_rejected(small_monitor: Monitor, value: Any, shown: str) -> None:
    with pytest.raises(EventError) as info:
        bin_one(small_monitor, {"city": value})
    assert str(info.value) == (
        f"city: expected a category (string, number or boolean), got {shown}"
    )


def test_nan_category_is_missing_as_in_profiles(small_monitor: Monitor) -> None:
    # A DataFrame's missing string is NaN: missing in the profile, so missing here too.
    city = small_monitor.layout.features["city"]
    assert city.missing in bin_one(small_monitor, {"city": float("nan")}).slots
    assert isinstance(city.profile, CategoricalProfile)
    known = city.profile.categories[0]
    batch = bin_columns(small_monitor.layout, {"city": [known, float("nan")]}, 2, LIMITS)
    categorical = [f for f in small_monitor.layout.features.values() if f.index is not None]
    column = batch.slots[1 + categorical.index(city)]
    assert column.tolist() == [city.first_bin, city.missing]
    assert not batch.errors


def test_coded_columns_bin_like_plain_ones(small_monitor: Monitor) -> None:
    city = small_monitor.layout.features["city"]
    assert isinstance(city.profile, CategoricalProfile)
    distinct = [city.profile.categories[0], "never-seen", "NA", "x" * 20, 3]
    codes = np.array([0, 1, -1, 2, 3, 4, 0, 3], dtype=np.intp)
    coded = CodedColumn(codes, distinct)
    plain = list(coded)
    limits = Limits(max_string_length=12)
    got = bin_columns(small_monitor.layout, {"city": coded}, len(codes), limits)
    want = bin_columns(small_monitor.layout, {"city": plain}, len(codes), limits)
    assert [s.tolist() for s in got.slots] == [s.tolist() for s in want.slots]
    assert {i: str(e) for i, e in got.errors.items()} == {i: str(e) for i, e in want.errors.items()}
    assert sorted(got.errors) == [4, 7]  # the over-long category, wherever it occurs
