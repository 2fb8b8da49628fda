"""Binning: events turned into increments of a monitor's window vector.

One event at a time (`bin_event`: a flush of a single event, and `first_error`, which
checks an event that is answered before its batch is binned) or a column at a time over
a batch (`bin_batch` for events, `bin_columns` for one value list per feature;
vectorised with numpy, what every larger flush uses). All of them use the same
per-value rules (`numeric_value`, `category_slot`), so a value is valid, missing or
rejected the same way on every path, with the same message. A refused value is named
by its event's index and its feature; where that sits in a request is the HTTP layer's
business.
"""

from __future__ import annotations

import contextlib
import itertools
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.fixedpoint import MOMENT_CLIP, MOMENT_SCALE
from driftline.core.layout import (
    EVENTS_SLOT,
    FeatureSlots,
    Layout,
    NumericMatrix,
    moment_unit,
)
from driftline.core.limits import Limits
from driftline.core.profile import CodedColumn, NumericProfile
from driftline.core.values import category_label, is_missing
from driftline.core.window import Vector

SMALL_BATCH = 8
"""Batches of at most this many events are binned with Python's bisect and list lookups
rather than a numpy call per feature: numpy's ~2 µs per call, times every feature and
part, was most of the cost of a flush of one event (355 µs for 50 features, 1 event)."""

IntArray = npt.NDArray[np.int64]
IntMatrix = npt.NDArray[np.intp]
BoolMatrix = npt.NDArray[np.bool_]
Matrix = npt.NDArray[np.float64]


class EventError(ValueError):
    """One feature value that cannot be counted: the feature, and what is wrong with it."""

    def __init__(self, feature: str, message: str) -> None:
        super().__init__(f"{feature}: {message}")
        self.feature = feature
        self.message = message


def _describe(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def numeric_value(value: Any, feature: str, limits: Limits) -> float | None:
    """The number a raw value of `feature` stands for, None when missing; else EventError."""
    if value is None or (type(value) is str and is_missing(value)):
        return None
    if type(value) is not float and type(value) is not int:
        raise EventError(feature, f"expected a number, got {_describe(value)}")
    # Also false for NaN; compares huge ints exactly, without converting them.
    if not -limits.max_abs_value <= value <= limits.max_abs_value:
        raise EventError(
            feature,
            f"expected a finite number within ±{limits.max_abs_value:g}, got {_describe(value)}",
        )
    return float(value)


def category_slot(feature: FeatureSlots, value: Any, limits: Limits) -> int:
    """The slot of a categorical value: its category, `other`, or missing; else EventError."""
    assert feature.index is not None
    slot = feature.index.get(value) if type(value) is str else None
    if slot is not None:
        return slot
    if is_missing(value):  # None, a missing-value string, or NaN (as profiles count it)
        return feature.missing
    if isinstance(value, dict | list):
        raise EventError(
            feature.name,
            f"expected a category (string, number or boolean), got {_describe(value)}",
        )
    label = value if type(value) is str else category_label(value)
    if len(label) > limits.max_string_length:
        raise EventError(
            feature.name,
            f"expected at most {limits.max_string_length} characters, got {len(label)}",
        )
    return feature.index.get(label, feature.other)


# ---------------------------------------------------------------------- one event


def plainly_valid(layout: Layout, features: Mapping[str, Any], limits: Limits) -> bool:
    """Whether every value is valid on its face, so that binning cannot refuse it.

    That is a number in range for a numeric feature, a short string for a categorical
    one, or null. False does not mean invalid: `bin_event` decides then, with the exact
    message.
    """
    if len(features) > limits.max_features:
        return False
    limit = limits.max_abs_value
    longest = limits.max_string_length
    known = layout.features
    for name, value in features.items():
        feature = known.get(name)
        if feature is None or value is None:
            continue
        kind = type(value)
        if feature.index is None:
            if not ((kind is float or kind is int) and -limit <= value <= limit):
                return False
        elif kind is not str or len(value) > longest:
            return False
    return True


@dataclass(slots=True)
class BinnedEvent:
    """One event as increments of the window vector."""

    slots: list[int]  # each +1
    sums: list[tuple[int, int]]  # (slot, fixed-point moment) added
    unknown: list[str]

    def vector(self, width: int) -> Vector:
        """The event as increments of a window vector `width` slots wide."""
        vector = np.bincount(self.slots, minlength=width).astype(np.float64)
        for slot, value in self.sums:
            vector[slot] += value
        return vector


def bin_event(layout: Layout, features: Mapping[str, Any], limits: Limits) -> BinnedEvent:
    """Bin one event; a missing feature counts as missing data.

    Raises EventError naming the first value (in feature order) that cannot be counted.
    """
    slots = [EVENTS_SLOT]
    sums: list[tuple[int, int]] = []
    for name, feature in layout.features.items():
        value = features.get(name)
        profile = feature.profile
        if not isinstance(profile, NumericProfile):
            slots.append(category_slot(feature, value, limits))
            continue
        number = numeric_value(value, name, limits)
        if number is None:
            slots.append(feature.missing)
            continue
        slots.append(feature.first_bin + bisect_right(profile.cuts, number))
        low, high = profile.tail_cuts
        if number < low or number > high:
            slots.append(feature.out_of_range)
        z = min(max((number - profile.mean) / moment_unit(profile), -MOMENT_CLIP), MOMENT_CLIP)
        # round() and numpy's rint both round half to even: the batch path agrees exactly.
        sums.append((feature.sum, round(z * MOMENT_SCALE)))
        sums.append((feature.sum_squares, round(z * z * MOMENT_SCALE)))
    unknown = [name for name in features if name not in layout.features]
    return BinnedEvent(slots, sums, unknown)


def first_error(layout: Layout, features: Mapping[str, Any], limits: Limits) -> EventError | None:
    """The first value (in feature order) binning would refuse; None when it takes them all.

    Cheap for the usual event (`plainly_valid`); the exact rules decide the rest.
    """
    if plainly_valid(layout, features, limits):
        return None
    try:
        bin_event(layout, features, limits)
    except EventError as exc:
        return exc
    return None


# -------------------------------------------------------------------- a batch


@dataclass(slots=True)
class BinnedBatch:
    """A batch binned a matrix at a time; events with an error are left out of `deltas`."""

    size: int
    numeric: NumericMatrix
    # The slot of every (event, feature), in parts: the numeric features' matrix, then
    # one array per categorical feature (no copy into one matrix).
    slots: list[IntMatrix]
    out_of_range: BoolMatrix  # (event, numeric feature): beyond the baseline's tail cuts
    z: Matrix  # (event, numeric feature): standardised, clipped; 0 if missing or invalid
    errors: dict[int, EventError] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)

    def deltas(
        self, width: int, buckets: IntArray, *, leave_out: Sequence[int] = ()
    ) -> dict[int, tuple[Vector, int]]:
        """Per bucket start: the summed vector of the valid events in it, and their count.

        Events in `leave_out` are left out as if invalid (they are counted on their own).
        """
        valid = np.ones(self.size, dtype=bool)
        valid[list(self.errors)] = False
        valid[list(leave_out)] = False
        starts = np.unique(buckets[valid]).tolist()
        numeric = self.numeric
        deltas: dict[int, tuple[Vector, int]] = {}
        for start in starts:
            rows = valid & (buckets == start) if len(starts) > 1 else valid
            count = int(np.count_nonzero(rows))
            every = count == self.size  # the usual case: no copies of the matrices
            parts = self.slots if every else [part[rows] for part in self.slots]
            if self.size <= SMALL_BATCH:  # one bincount of every slot
                joined = np.concatenate([part.ravel() for part in parts])
                vector = np.bincount(joined, minlength=width).astype(np.float64)
            else:
                vector = np.zeros(width, dtype=np.float64)
                for part in parts:
                    vector += np.bincount(part.ravel(order="K"), minlength=width)
            vector[EVENTS_SLOT] += count
            if numeric.names:
                # Each numeric feature has its own slots, so fancy-index += never collides.
                outside = self.out_of_range if every else self.out_of_range[rows]
                vector[numeric.out_of_range] += outside.sum(axis=0)
                z = self.z if every else self.z[rows]
                fixed = z * MOMENT_SCALE
                vector[numeric.sum] += np.rint(fixed, out=fixed).sum(axis=0)
                np.multiply(z, z, out=fixed)
                fixed *= MOMENT_SCALE
                vector[numeric.sum_squares] += np.rint(fixed, out=fixed).sum(axis=0)
            deltas[int(start)] = (vector, count)
        return deltas

    def event_vectors(self, width: int, events: Sequence[int]) -> Matrix:
        """The vector of each of `events` (valid ones) on its own, one row per event."""
        chosen = np.asarray(events, dtype=np.intp)
        count = chosen.size
        # Each event's slots shifted into its own row of one flat array: one bincount.
        offsets = (np.arange(count, dtype=np.intp) * width)[:, None]
        picked = np.hstack([part[chosen].reshape(count, -1) for part in self.slots])
        flat = np.bincount((picked + offsets).ravel(), minlength=count * width)
        vectors = flat.astype(np.float64).reshape(count, width)
        vectors[:, EVENTS_SLOT] += 1
        numeric = self.numeric
        if numeric.names:
            vectors[:, numeric.out_of_range] += self.out_of_range[chosen]
            z = self.z[chosen]
            vectors[:, numeric.sum] += np.rint(z * MOMENT_SCALE)
            vectors[:, numeric.sum_squares] += np.rint(z * z * MOMENT_SCALE)
        return vectors


class _Errors:
    """Each event's first bad value in layout order, whichever column found it first."""

    def __init__(self, layout: Layout) -> None:
        self._order = {name: i for i, name in enumerate(layout.features)}
        self.found: dict[int, tuple[int, EventError]] = {}

    def note(self, event: int, feature: str, error: EventError) -> None:
        position = self._order[feature]
        known = self.found.get(event)
        if known is None or position < known[0]:
            self.found[event] = (position, error)


def _table(
    events: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> tuple[list[tuple[Any, ...]], bool]:
    """The values of `names` in every event (None where absent), a tuple per event.

    Also whether every event held every name.
    """
    if len(names) > 1:
        getter = itemgetter(*names)
        try:
            return [getter(features) for features in events], True
        except KeyError:
            pass  # some event lacks a feature: look each one up
    return [tuple(features.get(name) for name in names) for features in events], False


def _as_numbers(
    table: Sequence[Sequence[Any]],
    names: Sequence[str],
    limits: Limits,
    errors: _Errors,
    *,
    by_column: bool,
) -> Matrix:
    """(event, feature) floats, NaN where missing or invalid; invalid values noted.

    `table` holds a tuple per event (`by_column` false) or a sequence per feature.
    """
    shape = (len(table[0]), len(names)) if by_column else (len(table), len(names))
    if set(map(type, itertools.chain.from_iterable(table))) <= {float, int, type(None)}:
        try:
            # JSON cannot carry NaN, so NaN here can only be a None (missing).
            values = np.array(table, dtype=np.float64)
        except OverflowError:  # an int beyond float range: find it value by value
            pass
        else:
            values = values.T if by_column else values
            invalid = ~np.isnan(values) & ~(np.abs(values) <= limits.max_abs_value)
            for i, j in np.argwhere(invalid).tolist():
                value = table[j][i] if by_column else table[i][j]
                _check_number(value, i, names[j], limits, errors)
            values[invalid] = np.nan
            return values.reshape(shape)
    values = np.full(shape, np.nan)
    for i in range(shape[0]):
        for j, name in enumerate(names):
            value = table[j][i] if by_column else table[i][j]
            number = _check_number(value, i, name, limits, errors)
            if number is not None:
                values[i, j] = number
    return values


def _check_number(
    value: Any, event: int, name: str, limits: Limits, errors: _Errors
) -> float | None:
    try:
        return numeric_value(value, name, limits)
    except EventError as exc:
        errors.note(event, name, exc)
        return None


def bin_batch(
    layout: Layout,
    events: Sequence[Mapping[str, Any]],
    limits: Limits,
    *,
    find_unknown: bool = True,
) -> BinnedBatch:
    """Bin a batch of events (feature mappings); an event with an invalid value gets an error.

    `find_unknown`: collect features the layout does not know (skip when already done).
    """
    names = layout.numeric.names
    categorical = [f.name for f in layout.features.values() if f.index is not None]
    listed = [*names, *categorical]
    table, complete = _table(events, listed)
    unknown: set[str] = set()
    # Events holding every feature hold no other when their sizes add up to the table's.
    if find_unknown and not (complete and sum(map(len, events)) == len(events) * len(listed)):
        known = layout.features.keys()
        for features in events:
            if not features.keys() <= known:
                unknown.update(features.keys() - known)
    # One column per feature, transposed in C; numeric ones first, as `listed` is.
    columns = list(zip(*table, strict=True)) if events else [()] * len(listed)
    errors = _Errors(layout)
    values = (
        _as_numbers(columns[: len(names)], names, limits, errors, by_column=True)
        if names and events
        else np.full((len(events), len(names)), np.nan)
    )
    return _bin(layout, values, columns[len(names) :], limits, errors, unknown)


def bin_columns(
    layout: Layout, columns: Mapping[str, Sequence[Any] | Vector], size: int, limits: Limits
) -> BinnedBatch:
    """Bin a batch sent as one value list per feature, each `size` long (checked before).

    A numeric column may also be a float64 array (NaN where missing). A feature without
    a column is missing in every event.
    """
    errors = _Errors(layout)
    names = layout.numeric.names
    values = np.full((size, len(names)), np.nan, order="F")
    listed: list[Sequence[Any]] = []
    positions: list[int] = []
    for j, name in enumerate(names):
        column = columns.get(name, [None] * size)
        if not isinstance(column, np.ndarray):
            listed.append(column)
            positions.append(j)
    if listed and size:
        values[:, positions] = _as_numbers(
            listed,
            [names[j] for j in positions],
            limits,
            errors,
            by_column=True,
        )
    for j, name in enumerate(names):
        packed = columns.get(name)
        if isinstance(packed, np.ndarray):
            invalid = ~np.isnan(packed) & ~(np.abs(packed) <= limits.max_abs_value)
            for i in np.flatnonzero(invalid).tolist():
                message = (
                    f"expected a finite number within ±{limits.max_abs_value:g}, got {packed[i]!r}"
                )
                errors.note(i, name, EventError(name, message))
            values[:, j] = np.where(invalid, np.nan, packed)
    categorical = [f.name for f in layout.features.values() if f.index is not None]
    missing = [None] * size
    lists: list[Sequence[Any]] = []
    for name in categorical:
        column = columns.get(name, missing)
        # Packed (float64) columns are numeric only: the API refuses them for categories.
        assert not isinstance(column, np.ndarray), name
        lists.append(column)
    return _bin(layout, values, lists, limits, errors, set(columns.keys() - layout.features.keys()))


def _category_slots(
    feature: FeatureSlots, column: Sequence[Any], limits: Limits
) -> tuple[IntArray, dict[int, EventError]]:
    """The slot of every value of a categorical column, and the values refused (missing)."""
    assert feature.index is not None
    lookup = feature.index.get
    slots: IntArray | None = None
    if len(column) > SMALL_BATCH:
        # An unhashable value (object or array) raises: the full rules decide it below.
        with contextlib.suppress(TypeError):
            slots = np.fromiter(map(lookup, column, repeat(-1)), np.intp, len(column))
    # Only values that are not a known category need the full rules (-1 here).
    if slots is None:  # a few values, or an unhashable one: looked up in a list
        found = [lookup(value, -1) if type(value) is str else -1 for value in column]
        slots = np.array(found, dtype=np.intp)
        unknown = [i for i, slot in enumerate(found) if slot < 0]
    else:
        unknown = np.flatnonzero(slots < 0).tolist()
    refused: dict[int, EventError] = {}
    for i in unknown:
        try:
            slots[i] = category_slot(feature, column[i], limits)
        except EventError as exc:
            refused[i] = exc
            slots[i] = feature.missing
    return slots, refused


def _bin(
    layout: Layout,
    values: Matrix,
    categorical_columns: Sequence[Sequence[Any]],
    limits: Limits,
    errors: _Errors,
    unknown: set[str],
) -> BinnedBatch:
    """Bin numeric values (NaN where missing or invalid) and categorical columns."""
    size = values.shape[0]
    numeric = layout.numeric
    # Column-major: each feature's values are contiguous for its searchsorted.
    values = np.asfortranarray(values)
    present = ~np.isnan(values)
    filled = np.where(present, values, numeric.mean)
    if size <= SMALL_BATCH:  # bisect_right is searchsorted(side="right") on a list
        found = [
            [bisect_right(cuts, v) for cuts, v in zip(numeric.cut_lists, row, strict=True)]
            for row in filled.tolist()
        ]
        bins = np.array(found, dtype=np.intp).reshape(values.shape)
    else:
        bins = np.empty(values.shape, dtype=np.intp, order="F")
        for j, cuts in enumerate(numeric.cuts):
            bins[:, j] = np.searchsorted(cuts, filled[:, j], side="right")
    bins += numeric.first_bin
    np.copyto(bins, np.broadcast_to(numeric.missing, bins.shape), where=~present)
    z = filled - numeric.mean
    z /= numeric.unit
    np.clip(z, -MOMENT_CLIP, MOMENT_CLIP, out=z)
    columns = [bins]
    categorical = [f for f in layout.features.values() if f.index is not None]
    for feature, column in zip(categorical, categorical_columns, strict=True):
        if not isinstance(column, CodedColumn):
            slots, refused = _category_slots(feature, column, limits)
            for i, error in refused.items():
                errors.note(i, feature.name, error)
            columns.append(slots)
            continue
        # Each distinct value once; code -1 (null) takes the missing slot appended.
        distinct, refused = _category_slots(feature, column.values, limits)
        for k, error in refused.items():
            for i in np.flatnonzero(column.codes == k).tolist():
                errors.note(i, feature.name, error)
        columns.append(np.append(distinct, feature.missing)[column.codes])
    return BinnedBatch(
        size=size,
        numeric=numeric,
        slots=columns,
        # A missing value is filled with the mean (z = 0), which a skewed feature's tail
        # cuts need not contain: only present values can be out of range.
        out_of_range=present & ((filled < numeric.low) | (filled > numeric.high)),
        z=z,
        errors={i: error for i, (_, error) in errors.found.items()},
        unknown=unknown,
    )
