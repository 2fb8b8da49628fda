"""Binning: events turned into increments of a monitor's window vector.

One event at a time (`bin_event`, for `/monitor/predict`) or a column at a time over a
batch (`bin_batch`, vectorised with numpy). Both use the same per-value rules
(`numeric_value`, `category_slot`), so a value is valid, missing or rejected the same
way on either path, with the same message.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from .monitor import (
    EVENTS_SLOT,
    MOMENT_CLIP,
    MOMENT_SCALE,
    FeatureSlots,
    Layout,
    NumericMatrix,
    moment_unit,
)
from .profile import NumericProfile, category_label, is_missing
from .settings import Limits
from .window import Vector

IntArray = npt.NDArray[np.int64]
IntMatrix = npt.NDArray[np.intp]
BoolMatrix = npt.NDArray[np.bool_]
Matrix = npt.NDArray[np.float64]


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
    sums: list[tuple[int, int]] = []
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
    """A batch binned a matrix at a time; events with an error are left out of `deltas`."""

    size: int
    numeric: NumericMatrix
    slots: IntMatrix  # the slot of every (event, feature)
    out_of_range: BoolMatrix  # (event, numeric feature): outside the baseline's range
    z: Matrix  # (event, numeric feature): standardised, clipped; 0 if missing or invalid
    errors: dict[int, EventError] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)

    def deltas(self, width: int, buckets: IntArray) -> dict[int, tuple[Vector, int]]:
        """Per bucket start: the summed vector of the valid events in it, and their count."""
        valid = np.ones(self.size, dtype=bool)
        valid[list(self.errors)] = False
        starts = np.unique(buckets[valid]).tolist()
        numeric = self.numeric
        deltas: dict[int, tuple[Vector, int]] = {}
        for start in starts:
            rows = valid & (buckets == start) if len(starts) > 1 else valid
            count = int(np.count_nonzero(rows))
            vector = np.bincount(self.slots[rows].ravel(), minlength=width).astype(np.float64)
            vector[EVENTS_SLOT] += count
            if numeric.names:
                # Each numeric feature has its own slots, so fancy-index += never collides.
                vector[numeric.out_of_range] += self.out_of_range[rows].sum(axis=0)
                z = self.z[rows]
                vector[numeric.sum] += np.rint(z * MOMENT_SCALE).sum(axis=0)
                vector[numeric.sum_squares] += np.rint(z * z * MOMENT_SCALE).sum(axis=0)
            deltas[int(start)] = (vector, count)
        return deltas


class _Errors:
    """Each event's first bad value in layout order, whichever column found it first."""

    def __init__(self, order: Mapping[str, int]) -> None:
        self._order = order
        self.found: dict[int, tuple[int, EventError]] = {}

    def note(self, event: int, feature: str, error: EventError) -> None:
        position = self._order[feature]
        known = self.found.get(event)
        if known is None or position < known[0]:
            self.found[event] = (position, error)


def _table(events: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """The values of `names` in every event (None where absent), a tuple per event."""
    if len(names) > 1:
        getter = itemgetter(*names)
        try:
            return [getter(features) for features in events]
        except KeyError:
            pass  # some event lacks a feature: look each one up
    return [tuple(features.get(name) for name in names) for features in events]


def _numeric_values(
    events: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    limits: Limits,
    path: Callable[[int], str],
    errors: _Errors,
) -> Matrix:
    """(event, feature) values, NaN where missing or invalid; invalid ones noted."""
    table = _table(events, names)
    if set(map(type, itertools.chain.from_iterable(table))) <= {float, int, type(None)}:
        try:
            # JSON cannot carry NaN, so NaN here can only be a None (missing).
            values = np.array(table, dtype=np.float64).reshape(len(events), len(names))
        except OverflowError:  # an int beyond float range: find it value by value
            pass
        else:
            invalid = ~np.isnan(values) & ~(np.abs(values) <= limits.max_abs_value)
            for i, j in np.argwhere(invalid).tolist():
                _check_number(table[i][j], i, names[j], limits, path, errors)
            values[invalid] = np.nan
            return values
    values = np.full((len(events), len(names)), np.nan)
    for i, row in enumerate(table):
        for j, value in enumerate(row):
            number = _check_number(value, i, names[j], limits, path, errors)
            if number is not None:
                values[i, j] = number
    return values


def _check_number(
    value: Any, event: int, name: str, limits: Limits, path: Callable[[int], str], errors: _Errors
) -> float | None:
    try:
        return numeric_value(value, f"{path(event)}.{name}", limits)
    except EventError as exc:
        errors.note(event, name, exc)
        return None


def bin_batch(
    layout: Layout,
    events: Sequence[Mapping[str, Any]],
    limits: Limits,
    path: Callable[[int], str],
) -> BinnedBatch:
    """Bin a batch a matrix at a time; an event with any invalid value gets an error.

    `path(i)` is the request path of event i's features (e.g. `events[3].features`).
    """
    size = len(events)
    known = layout.features.keys()
    unknown: set[str] = set()
    for features in events:
        if not features.keys() <= known:
            unknown.update(features.keys() - known)
    errors = _Errors({name: i for i, name in enumerate(layout.features)})
    numeric = layout.numeric
    values = _numeric_values(events, numeric.names, limits, path, errors)
    present = ~np.isnan(values)
    filled = np.where(present, values, numeric.mean)
    bins = np.empty(values.shape, dtype=np.intp)
    for j, cuts in enumerate(numeric.cuts):
        bins[:, j] = np.searchsorted(cuts, filled[:, j], side="right")
    columns = [np.where(present, numeric.first_bin + bins, numeric.missing)]
    categorical = [f for f in layout.features.values() if f.index is not None]
    table = _table(events, [f.name for f in categorical])
    for j, feature in enumerate(categorical):
        assert feature.index is not None
        lookup = feature.index.get
        column = [row[j] for row in table]
        try:
            found = [lookup(value, -1) for value in column]
        except TypeError:  # an unhashable value (object or array): the full rules decide
            found = [lookup(value, -1) if type(value) is str else -1 for value in column]
        slots = np.array(found, dtype=np.intp)
        # Only values that are not a known category need the full rules.
        for i in np.flatnonzero(slots < 0).tolist():
            try:
                slots[i] = category_slot(feature, column[i], f"{path(i)}.{feature.name}", limits)
            except EventError as exc:
                errors.note(i, feature.name, exc)
                slots[i] = feature.missing
        columns.append(slots[:, None])
    return BinnedBatch(
        size=size,
        numeric=numeric,
        slots=np.hstack(columns) if size else np.empty((0, 0), dtype=np.intp),
        out_of_range=present & ((filled < numeric.low) | (filled > numeric.high)),
        z=np.clip((filled - numeric.mean) / numeric.unit, -MOMENT_CLIP, MOMENT_CLIP),
        errors={i: error for i, (_, error) in errors.found.items()},
        unknown=unknown,
    )
