"""A monitor's sliding time window as the core sees it: what to keep, and what was kept.

A window holds a flat vector of integer counts per monitor layout (event count, bin
counts, sums ...), kept per time bucket by a store (driftline.stores). The core names
the window (`WindowSpec`) and reads its totals (`WindowTotals`); how they are kept is
the stores' business.

A monitor whose reference is a window of its own history, or whose window is a number
of events, reads per-bucket vectors (`Buckets`) of the spans it needs instead of the
totals, and sums them itself (driftline.core.reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.policy import ReferenceKind

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """What a store needs to know of one monitor's window."""

    monitor: str
    layout_id: str  # content hash of bins + layout: counts under another layout never mix
    width: int
    # The span the store keeps: the monitor's window, and its reference window's too.
    window_seconds: int
    bucket_seconds: int

    def bucket_of(self, timestamp: float) -> int:
        """Start (epoch seconds) of the bucket that holds an event at `timestamp`."""
        return int(timestamp // self.bucket_seconds) * self.bucket_seconds


class ReferenceInfo(msgspec.Struct, frozen=True):
    """What a window was compared with: the baseline, or a rolling reference.

    `fallback`: a rolling reference held fewer than min_samples events (`events`), and
    the baseline stood in.
    """

    kind: ReferenceKind = "baseline"
    fallback: bool = False
    events: int | None = None  # the reference window's events; None for the baseline


BASELINE = ReferenceInfo()
"""The reference of a window compared with the training baseline."""


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """The summed vector of every bucket still inside the window, read at `now`."""

    vector: Vector
    start: float  # window start: now - window_seconds (epoch seconds)
    now: float  # the store's clock when the totals were read
    # A rolling reference's counts, compared in place of the baseline's (None: baseline).
    reference: Vector | None = None
    reference_info: ReferenceInfo = BASELINE


@dataclass(frozen=True, slots=True)
class Span:
    """A run of buckets `offset` seconds back, `length` long.

    The live buckets b with cut(offset + length) < b, and b <= cut(offset) unless
    offset is 0 (no upper bound), where cut(x) is the newest bucket start at or before
    floor(now) - x - bucket_seconds: the current window is Span(0, window_seconds), as
    the store's eviction counts it.
    """

    offset: int
    length: int

    def bounds(self, now: float, bucket_seconds: int) -> tuple[int, int | None]:
        """(after, upto): the span holds the buckets after < b <= upto (upto None: any)."""

        def cut(back: int) -> int:
            edge = math.floor(now) - back - bucket_seconds
            return edge - edge % bucket_seconds

        return cut(self.offset + self.length), None if self.offset == 0 else cut(self.offset)


@dataclass(frozen=True, slots=True)
class Buckets:
    """The per-bucket vectors of the live buckets in the spans asked for, read at `now`."""

    vectors: dict[int, Vector]  # bucket start -> its vector
    now: float
