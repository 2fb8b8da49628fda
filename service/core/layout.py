"""The slot layout: where every (feature, bin) and per-feature extra sits in a window vector.

A window keeps one flat vector of integer counts per monitor. The layout, fixed by the
baseline profile, assigns each feature its bins' slots, a missing-value slot and, for
numeric features, slots for out-of-range values and the fixed-point moments. Its id
(`layout_id`) names the window's keys, so counts kept under other bins never mix.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from driftline.core.profile import (
    BaselineProfile,
    CategoricalProfile,
    FeatureKind,
    NumericProfile,
)

LAYOUT_VERSION = 1


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where one feature's counts sit in the window vector."""

    name: str
    profile: NumericProfile | CategoricalProfile
    first_bin: int
    missing: int
    # numeric only (-1 otherwise): values outside the baseline's [min, max], and the sum and
    # sum of squares of the standardised value in fixed point (see MOMENT_SCALE).
    out_of_range: int = -1
    sum: int = -1
    sum_squares: int = -1
    index: Mapping[str, int] | None = None  # categorical: category -> slot
    # Fixed by the baseline: computed once here, not in every report.
    bin_labels: tuple[str, ...] = ()
    baseline_proportions: tuple[float, ...] = ()
    baseline_counts: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def other(self) -> int:
        """Categorical: the slot of categories not kept from training."""
        return self.first_bin + self.profile.bins - 1

    @property
    def kind(self) -> FeatureKind:
        """`numeric` or `categorical`."""
        return "numeric" if isinstance(self.profile, NumericProfile) else "categorical"


EVENTS_SLOT = 0

MOMENT_SCALE = 2.0**20
"""Numeric moments are kept in fixed point, so every slot of a window is an integer.

A value adds round(z * MOMENT_SCALE) to its feature's `sum` slot and round(z^2 *
MOMENT_SCALE) to `sum_squares`, with z = (x - baseline mean) / baseline std. Integers
let the Redis window use fixed-width counters (constant memory, exact sums in any
order); 2^-20 of a standard deviation is far below what a report shows.
"""

MOMENT_CLIP = 2.0**10
"""|z| is clipped at 1024 standard deviations, so one event adds at most 2^40 to
`sum_squares` and 2^23 such events still fit a signed 64-bit counter. Values that far
out are also counted in `out_of_range`."""


def moment_unit(profile: NumericProfile) -> float:
    """The baseline standard deviation moments are measured in (1 for a constant)."""
    return profile.std if profile.std > 0 else 1.0


def _bin_labels(feature: NumericProfile | CategoricalProfile) -> tuple[str, ...]:
    """How a report names each bin: `[lo, hi)` intervals, or the categories and `other`."""
    if not isinstance(feature, NumericProfile):
        return (*feature.categories, "other")
    edges = ["-inf", *(f"{c:.6g}" for c in feature.cuts), "inf"]
    return tuple(f"[{lo}, {hi})" for lo, hi in itertools.pairwise(edges))


@dataclass(frozen=True, slots=True)
class NumericMatrix:
    """Every numeric feature as arrays, so binning and verdicts take one numpy pass.

    Entry i of every array belongs to feature `names[i]`. `index` row i holds its bins'
    slots in the window vector, padded with `width` (a zero appended to the vector);
    `baseline` its counts, padded with zeros: padding adds nothing to PSI or the
    degrees of freedom.
    """

    names: tuple[str, ...]
    index: npt.NDArray[np.intp]
    baseline: npt.NDArray[np.float64]
    cuts: tuple[npt.NDArray[np.float64], ...]
    first_bin: npt.NDArray[np.intp]
    missing: npt.NDArray[np.intp]
    out_of_range: npt.NDArray[np.intp]
    sum: npt.NDArray[np.intp]
    sum_squares: npt.NDArray[np.intp]
    mean: npt.NDArray[np.float64]
    unit: npt.NDArray[np.float64]  # see moment_unit
    low: npt.NDArray[np.float64]  # baseline min
    high: npt.NDArray[np.float64]  # baseline max

    @classmethod
    def of(cls, features: Mapping[str, FeatureSlots], width: int) -> NumericMatrix:
        """The arrays of the numeric features among `features`, in their order."""
        numeric = [
            (f, f.profile) for f in features.values() if isinstance(f.profile, NumericProfile)
        ]
        bins = max((p.bins for _, p in numeric), default=0)
        index = np.full((len(numeric), bins), width, dtype=np.intp)
        baseline = np.zeros((len(numeric), bins), dtype=np.float64)
        for row, (feature, profile) in enumerate(numeric):
            index[row, : profile.bins] = np.arange(
                feature.first_bin, feature.first_bin + profile.bins
            )
            baseline[row, : profile.bins] = profile.counts

        def ints(values: list[int]) -> npt.NDArray[np.intp]:
            return np.array(values, dtype=np.intp)

        def floats(values: list[float]) -> npt.NDArray[np.float64]:
            return np.array(values, dtype=np.float64)

        return cls(
            names=tuple(f.name for f, _ in numeric),
            index=index,
            baseline=baseline,
            cuts=tuple(floats(p.cuts) for _, p in numeric),
            first_bin=ints([f.first_bin for f, _ in numeric]),
            missing=ints([f.missing for f, _ in numeric]),
            out_of_range=ints([f.out_of_range for f, _ in numeric]),
            sum=ints([f.sum for f, _ in numeric]),
            sum_squares=ints([f.sum_squares for f, _ in numeric]),
            mean=floats([p.mean for _, p in numeric]),
            unit=floats([moment_unit(p) for _, p in numeric]),
            low=floats([p.min for _, p in numeric]),
            high=floats([p.max for _, p in numeric]),
        )


@dataclass(frozen=True, slots=True)
class Layout:
    """The flat vector a monitor's window keeps: slot 0 counts events."""

    features: Mapping[str, FeatureSlots]
    width: int
    numeric: NumericMatrix

    @classmethod
    def of(cls, profile: BaselineProfile) -> Layout:
        """Assign slots to every feature of the profile in its (sorted) order."""
        slots: dict[str, FeatureSlots] = {}
        cursor = EVENTS_SLOT + 1
        for name, feature in profile.features.items():
            first = cursor
            cursor += feature.bins
            missing = cursor
            cursor += 1
            total = sum(feature.counts)
            labels = _bin_labels(feature)
            expected = tuple(c / total if total else 0.0 for c in feature.counts)
            if isinstance(feature, NumericProfile):
                slots[name] = FeatureSlots(
                    name,
                    feature,
                    first,
                    missing,
                    cursor,
                    cursor + 1,
                    cursor + 2,
                    bin_labels=labels,
                    baseline_proportions=expected,
                    baseline_counts=np.asarray(feature.counts, dtype=np.float64),
                )
                cursor += 3
            else:
                index = {category: first + i for i, category in enumerate(feature.categories)}
                slots[name] = FeatureSlots(
                    name,
                    feature,
                    first,
                    missing,
                    index=index,
                    bin_labels=labels,
                    baseline_proportions=expected,
                    baseline_counts=np.asarray(feature.counts, dtype=np.float64),
                )
        return cls(slots, cursor, NumericMatrix.of(slots, cursor))


def layout_id(profile: BaselineProfile, bucket_seconds: int) -> str:
    """The id of a profile's layout with a bucket size: part of every window key's name."""
    key = f"{LAYOUT_VERSION}:{profile.content_hash}:{bucket_seconds}".encode()
    return hashlib.sha256(key).hexdigest()[:16]
