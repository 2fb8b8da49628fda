"""The slot layout: where every (feature, bin) and per-feature extra sits in a window vector.

A window keeps one flat vector of integer counts per monitor. The layout, fixed by the
baseline profile, assigns each feature its bins' slots, a missing-value slot and, for
numeric features, slots for out-of-range values and the fixed-point moments. Its id
(`layout_id`) names the window's keys, so counts kept under other bins never mix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from driftline.core.drift import PoolingOrder, StackedPooling
from driftline.core.performance import PerformanceSlots
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
    # numeric only (-1 otherwise): values beyond the baseline's tail cuts (NumericProfile.
    # tail_cuts), and the sum and sum of squares of the standardised value in fixed point
    # (see driftline.core.fixedpoint).
    out_of_range: int = -1
    sum: int = -1
    sum_squares: int = -1
    index: Mapping[str, int] | None = None  # categorical: category -> slot
    # Fixed by the baseline: computed once here, not in every report.
    bin_labels: tuple[str, ...] = ()
    baseline_proportions: tuple[float, ...] = ()
    baseline_counts: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    # categorical only: how its bins are pooled for the test (by the held-out selection
    # counts; by the baseline counts in a profile without them, see `calibrated`).
    pooling: PoolingOrder | None = None

    @property
    def calibrated(self) -> bool:
        """Whether the feature's tests hold their level.

        False for a categorical feature of a profile without a held-out split (version
        1), whose counts are those that chose the categories.
        """
        return not isinstance(self.profile, CategoricalProfile) or self.profile.calibrated

    @property
    def other(self) -> int:
        """Categorical: the slot of categories not kept from training."""
        return self.first_bin + self.profile.bins - 1

    @property
    def kind(self) -> FeatureKind:
        """`numeric` or `categorical`."""
        return "numeric" if isinstance(self.profile, NumericProfile) else "categorical"


EVENTS_SLOT = 0


def moment_unit(profile: NumericProfile) -> float:
    """The baseline standard deviation moments are measured in (1 for a constant)."""
    return profile.std if profile.std > 0 else 1.0


def _bin_labels(feature: NumericProfile | CategoricalProfile) -> tuple[str, ...]:
    """How a report names each bin: intervals, or the categories and `other`.

    Cuts are shown rounded (6 significant digits, more where two would look alike), and
    each interval says which side is closed for the values a person would write: a cut
    shown below its real value (5 for 5.000000000000001, the cut just above the value 5
    of a per-value bin) puts that shown value in the lower bin, `[4.5, 5]` then `(5, inf)`.
    """
    if not isinstance(feature, NumericProfile):
        return (*feature.categories, "other")
    cuts = feature.cuts
    digits = next((d for d in range(6, 17) if len({f"{c:.{d}g}" for c in cuts}) == len(cuts)), 17)
    shown = [f"{c:.{digits}g}" for c in cuts]
    # Shown below the cut: the shown value itself is < cut, so it belongs to the lower bin.
    lower = [float(text) < cut for text, cut in zip(shown, cuts, strict=True)]
    labels = []
    for i in range(len(cuts) + 1):
        start = "(-inf" if i == 0 else ("(" if lower[i - 1] else "[") + shown[i - 1]
        end = "inf)" if i == len(cuts) else shown[i] + ("]" if lower[i] else ")")
        labels.append(f"{start}, {end}")
    return tuple(labels)


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
    cut_lists: tuple[list[float], ...]  # the same cuts as lists, for bisect (a few events)
    first_bin: npt.NDArray[np.intp]
    missing: npt.NDArray[np.intp]
    out_of_range: npt.NDArray[np.intp]
    sum: npt.NDArray[np.intp]
    sum_squares: npt.NDArray[np.intp]
    mean: npt.NDArray[np.float64]
    unit: npt.NDArray[np.float64]  # see moment_unit
    low: npt.NDArray[np.float64]  # tail cuts: a value below low or above high is out of range
    high: npt.NDArray[np.float64]
    tail_rank: npt.NDArray[np.float64]  # the rank of the tail cuts among the baseline values
    positions: npt.NDArray[np.float64]  # where each bin sits (padding repeats the last)

    @classmethod
    def of(cls, features: Mapping[str, FeatureSlots], width: int) -> NumericMatrix:
        """The arrays of the numeric features among `features`, in their order."""
        numeric = [
            (f, f.profile) for f in features.values() if isinstance(f.profile, NumericProfile)
        ]
        bins = max((p.bins for _, p in numeric), default=0)
        index = np.full((len(numeric), bins), width, dtype=np.intp)
        baseline = np.zeros((len(numeric), bins), dtype=np.float64)
        positions = np.zeros((len(numeric), bins), dtype=np.float64)
        for row, (feature, profile) in enumerate(numeric):
            index[row, : profile.bins] = np.arange(
                feature.first_bin, feature.first_bin + profile.bins
            )
            baseline[row, : profile.bins] = profile.counts
            positions[row, : profile.bins] = profile.positions
            positions[row, profile.bins :] = profile.positions[-1]

        def ints(values: list[int]) -> npt.NDArray[np.intp]:
            return np.array(values, dtype=np.intp)

        def floats(values: list[float]) -> npt.NDArray[np.float64]:
            return np.array(values, dtype=np.float64)

        cuts = tuple(floats(p.cuts) for _, p in numeric)
        return cls(
            names=tuple(f.name for f, _ in numeric),
            index=index,
            baseline=baseline,
            cuts=cuts,
            cut_lists=tuple(c.tolist() for c in cuts),
            first_bin=ints([f.first_bin for f, _ in numeric]),
            missing=ints([f.missing for f, _ in numeric]),
            out_of_range=ints([f.out_of_range for f, _ in numeric]),
            sum=ints([f.sum for f, _ in numeric]),
            sum_squares=ints([f.sum_squares for f, _ in numeric]),
            mean=floats([p.mean for _, p in numeric]),
            unit=floats([moment_unit(p) for _, p in numeric]),
            low=floats([p.tail_cuts[0] for _, p in numeric]),
            high=floats([p.tail_cuts[1] for _, p in numeric]),
            tail_rank=floats([p.tail_rank for _, p in numeric]),
            positions=positions,
        )


@dataclass(frozen=True, slots=True)
class CategoricalMatrix:
    """Every categorical feature as arrays (see NumericMatrix), so verdicts take one pass."""

    names: tuple[str, ...]
    index: npt.NDArray[np.intp]  # bins' slots, padded with `width`
    baseline: npt.NDArray[np.float64]  # counts, padded with zeros
    other: npt.NDArray[np.intp]  # the `other` bin's slot
    # Each feature's PoolingOrder (`stacked.orders`), and all of them over the padded rows.
    stacked: StackedPooling

    @classmethod
    def of(cls, features: Mapping[str, FeatureSlots], width: int) -> CategoricalMatrix:
        """The arrays of the categorical features among `features`, in their order."""
        chosen = [f for f in features.values() if f.pooling is not None]
        bins = max((f.profile.bins for f in chosen), default=0)
        index = np.full((len(chosen), bins), width, dtype=np.intp)
        baseline = np.zeros((len(chosen), bins), dtype=np.float64)
        for row, feature in enumerate(chosen):
            index[row, : feature.profile.bins] = np.arange(
                feature.first_bin, feature.first_bin + feature.profile.bins
            )
            baseline[row, : feature.profile.bins] = feature.baseline_counts
        return cls(
            names=tuple(f.name for f in chosen),
            index=index,
            baseline=baseline,
            other=np.array([f.other for f in chosen], dtype=np.intp),
            stacked=StackedPooling.of([f.pooling for f in chosen if f.pooling is not None], bins),
        )


@dataclass(frozen=True, slots=True)
class Layout:
    """The flat vector a monitor's window keeps: slot 0 counts events."""

    features: Mapping[str, FeatureSlots]
    width: int
    numeric: NumericMatrix
    categorical: CategoricalMatrix
    # Delayed labels' counts, after the features (driftline.core.performance).
    performance: PerformanceSlots | None = None

    @classmethod
    def of(
        cls,
        profile: BaselineProfile,
        performance: Callable[[int], PerformanceSlots] | None = None,
    ) -> Layout:
        """Assign slots to every feature of the profile in its (sorted) order.

        `performance` (a monitor that takes delayed labels) lays out the performance
        slots from the first slot after the features.
        """
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
                    pooling=PoolingOrder.of(
                        feature.counts if feature.selection is None else feature.selection,
                        feature.counts,
                    ),
                )
        laid = None
        if performance is not None:
            laid = performance(cursor)
            cursor += laid.width
        return cls(
            slots,
            cursor,
            NumericMatrix.of(slots, cursor),
            CategoricalMatrix.of(slots, cursor),
            laid,
        )


def layout_id(
    profile: BaselineProfile,
    bucket_seconds: int,
    layout: Layout | None = None,
    scopes: str | None = None,
) -> str:
    """The id of a profile's layout with a bucket size: part of every window key's name.

    Performance slots (a `layout` with them) change it: counts kept without them, or
    under other classes or score ranges, never mix with theirs; so do declared versions
    and segments (`scopes`, their signature): a block never holds another one's counts.
    """
    key = f"{LAYOUT_VERSION}:{profile.content_hash}:{bucket_seconds}"
    if layout is not None and layout.performance is not None:
        key += ":" + layout.performance.signature
    if scopes is not None:
        key += ":" + scopes
    return hashlib.sha256(key.encode()).hexdigest()[:16]
