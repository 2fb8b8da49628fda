"""The two binning paths agree: one event at a time and a batch column by column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.core.binning import BinnedEvent, EventError, bin_batch, bin_event, plainly_valid
from driftline.core.layout import Layout
from driftline.core.limits import Limits
from driftline.core.profile import NumericProfile, load_baseline

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


def as_vector(event: BinnedEvent, width: int) -> np.ndarray:
    vector = np.bincount(event.slots, minlength=width).astype(np.float64)
    for slot, value in event.sums:
        vector[slot] += value
    return vector


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
        expected += as_vector(event, layout.width)
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


def test_batch_deltas_split_by_bucket(layout: Layout) -> None:
    events = [{"age": 30}, {"age": 40}, {"age": "old"}, {"age": 50}]
    batch = bin_batch(layout, events, LIMITS)
    deltas = batch.deltas(layout.width, np.array([0, 60, 60, 120], dtype=np.int64))
    assert {b: c for b, (_, c) in deltas.items()} == {0: 1, 60: 1, 120: 1}
    assert batch.errors[2].feature == "age"
    age = layout.features["age"]
    for bucket, value in ((0, 30), (60, 40), (120, 50)):
        single = bin_event(layout, {"age": value}, LIMITS)
        np.testing.assert_array_equal(deltas[bucket][0], as_vector(single, layout.width))
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
