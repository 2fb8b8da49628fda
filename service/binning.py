"""Binning: events turned into increments of a monitor's window vector.

One event at a time (`bin_event`, for `/monitor/predict`) or a column at a time over a
batch (`bin_batch`, vectorised with numpy). Both use the same per-value rules
(`numeric_value`, `category_slot`), so a value is valid, missing or rejected the same
way on either path, with the same message.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from .monitor import EVENTS_SLOT, MOMENT_CLIP, MOMENT_SCALE, FeatureSlots, Layout, moment_unit
from .profile import NumericProfile, category_label, is_missing
from .settings import Limits
from .window import Vector

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class EventError(ValueError):
    """One feature value that cannot be counted; `field` is its path in the request."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _describe(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def numeric_value(value: Any, path: str, limits: Limits) -> float | None:
    """The number a raw value stands for, None when missing; EventError when invalid."""
    if value is None or (type(value) is str and is_missing(value)):
        return None
    if type(value) is not float and type(value) is not int:
        raise EventError(path, f"expected a number, got {_describe(value)}")
    # Also false for NaN; compares huge ints exactly, without converting them.
    if not -limits.max_abs_value <= value <= limits.max_abs_value:
        raise EventError(
            path,
            f"expected a finite number within ±{limits.max_abs_value:g}, got {_describe(value)}",
        )
    return float(value)


def category_slot(feature: FeatureSlots, value: Any, path: str, limits: Limits) -> int:
    """The slot of a categorical value: its category, `other`, or missing."""
    assert feature.index is not None
    slot = feature.index.get(value) if type(value) is str else None
    if slot is not None:
        return slot
    if value is None or (type(value) is str and is_missing(value)):
        return feature.missing
    if isinstance(value, dict | list):
        raise EventError(
            path, f"expected a category (string, number or boolean), got {_describe(value)}"
        )
    label = value if type(value) is str else category_label(value)
    if len(label) > limits.max_string_length:
        raise EventError(
            path, f"expected at most {limits.max_string_length} characters, got {len(label)}"
        )
    return feature.index.get(label, feature.other)


# ---------------------------------------------------------------------- one event


@dataclass(slots=True)
class BinnedEvent:
    """One event as increments of the window vector."""

    slots: list[int]  # each +1
    sums: list[tuple[int, int]]  # (slot, fixed-point moment) added
    unknown: list[str]


def bin_event(
    layout: Layout, features: Mapping[str, Any], limits: Limits, path: str = "features"
) -> BinnedEvent:
    """Bin one event; a missing feature counts as missing data.

    Raises EventError naming the first value (in feature order) that cannot be counted.
    """
    slots = [EVENTS_SLOT]
    sums: list[tuple[int, float]] = []
    for name, feature in layout.features.items():
        value = features.get(name)
        profile = feature.profile
        if not isinstance(profile, NumericProfile):
            slots.append(category_slot(feature, value, f"{path}.{name}", limits))
            continue
        number = numeric_value(value, f"{path}.{name}", limits)
        if number is None:
            slots.append(feature.missing)
            continue
        slots.append(feature.first_bin + bisect_right(profile.cuts, number))
        if number < profile.min or number > profile.max:
            slots.append(feature.out_of_range)
        z = min(max((number - profile.mean) / moment_unit(profile), -MOMENT_CLIP), MOMENT_CLIP)
        # round() and numpy's rint both round half to even: the batch path agrees exactly.
        sums.append((feature.sum, round(z * MOMENT_SCALE)))
        sums.append((feature.sum_squares, round(z * z * MOMENT_SCALE)))
    unknown = [name for name in features if name not in layout.features]
    return BinnedEvent(slots, sums, unknown)


# -------------------------------------------------------------------- a batch


@dataclass(slots=True)
class BinnedBatch:
    """A batch binned column by column; events with an error are left out of `deltas`."""

    size: int
    errors: dict[int, EventError] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    slots: list[IntArray] = field(default_factory=list)  # one slot per event, per feature
    out_of_range: list[tuple[int, BoolArray]] = field(default_factory=list)
    # (sum slot, squares slot, z): standardised and clipped, 0 where missing or invalid
    sums: list[tuple[int, int, Vector]] = field(default_factory=list)

    def deltas(self, width: int, buckets: IntArray) -> dict[int, tuple[Vector, int]]:
        """Per bucket start: the summed vector of the valid events in it, and their count."""
        valid = np.ones(self.size, dtype=bool)
        valid[list(self.errors)] = False
        matrix = np.stack(self.slots, axis=1) if self.slots else None
        deltas: dict[int, tuple[Vector, int]] = {}
        for bucket in np.unique(buckets[valid]).tolist():
            rows = valid & (buckets == bucket)
            count = int(np.count_nonzero(rows))
            vector = np.zeros(width, dtype=np.float64)
            if matrix is not None:
                vector += np.bincount(matrix[rows].ravel(), minlength=width)
            vector[EVENTS_SLOT] += count
            for slot, mask in self.out_of_range:
                vector[slot] += np.count_nonzero(mask & rows)
            for sum_slot, squares_slot, z in self.sums:
                chosen = z[rows]
                vector[sum_slot] += np.rint(chosen * MOMENT_SCALE).sum()
                vector[squares_slot] += np.rint(chosen * chosen * MOMENT_SCALE).sum()
            deltas[int(bucket)] = (vector, count)
        return deltas


def _numeric_column(
    column: list[Any],
    limits: Limits,
    path: Callable[[int], str],
    errors: dict[int, EventError],
) -> tuple[Vector, BoolArray]:
    """Values (NaN where missing or invalid) and the missing mask of one numeric column."""
    kinds = set(map(type, column))
    if kinds <= {float, int, type(None)}:
        try:
            # JSON cannot carry NaN, so NaN here can only be a None (missing).
            values = np.array(column, dtype=np.float64)
        except OverflowError:  # an int beyond float range: find it value by value
            pass
        else:
            missing = np.isnan(values)
            invalid = ~missing & ~(np.abs(values) <= limits.max_abs_value)
            for i in np.flatnonzero(invalid).tolist():
                try:
                    numeric_value(column[i], path(i), limits)
                except EventError as exc:
                    errors.setdefault(i, exc)
            return values, missing | invalid
    values = np.full(len(column), np.nan)
    for i, value in enumerate(column):
        try:
            number = numeric_value(value, path(i), limits)
        except EventError as exc:
            errors.setdefault(i, exc)
            continue
        if number is not None:
            values[i] = number
    return values, np.isnan(values)


def _under(path: Callable[[int], str], name: str) -> Callable[[int], str]:
    return lambda i: f"{path(i)}.{name}"


def bin_batch(
    layout: Layout,
    events: Sequence[Mapping[str, Any]],
    limits: Limits,
    path: Callable[[int], str],
) -> BinnedBatch:
    """Bin a batch column by column; an event with any invalid value gets an error.

    `path(i)` is the request path of event i's features (e.g. `events[3].features`).
    """
    batch = BinnedBatch(size=len(events))
    known = layout.features.keys()
    for features in events:
        if features.keys() - known:
            batch.unknown.update(features.keys() - known)
    for name, feature in layout.features.items():
        column = [features.get(name) for features in events]
        profile = feature.profile
        field_path = _under(path, name)
        if isinstance(profile, NumericProfile):
            values, missing = _numeric_column(column, limits, field_path, batch.errors)
            present = ~missing
            filled = np.where(present, values, profile.mean)
            bins = feature.first_bin + np.searchsorted(profile.cuts, filled, side="right")
            batch.slots.append(np.where(present, bins, feature.missing).astype(np.int64))
            outside = present & ((filled < profile.min) | (filled > profile.max))
            batch.out_of_range.append((feature.out_of_range, outside))
            z = np.clip((filled - profile.mean) / moment_unit(profile), -MOMENT_CLIP, MOMENT_CLIP)
            batch.sums.append((feature.sum, feature.sum_squares, z))
        else:
            assert feature.index is not None
            lookup = feature.index.get
            slots = np.fromiter(
                (lookup(v, -1) if type(v) is str else -1 for v in column),
                dtype=np.int64,
                count=len(column),
            )
            # Only values that are not a known category need the full rules.
            for i in np.flatnonzero(slots < 0).tolist():
                try:
                    slots[i] = category_slot(feature, column[i], field_path(i), limits)
                except EventError as exc:
                    batch.errors.setdefault(i, exc)
                    slots[i] = feature.missing
            batch.slots.append(slots)
    return batch
