"""A monitor's sliding time window as the core sees it: what to keep, and what was kept.

A window holds a flat vector of integer counts per monitor layout (event count, bin
counts, sums ...), kept per time bucket by a store (driftline.stores). The core names
the window (`WindowSpec`) and reads its totals (`WindowTotals`); how they are kept is
the stores' business.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """What a store needs to know of one monitor's window."""

    monitor: str
    layout_id: str  # content hash of bins + layout: counts under another layout never mix
    width: int
    window_seconds: int
    bucket_seconds: int

    def bucket_of(self, timestamp: float) -> int:
        """Start (epoch seconds) of the bucket that holds an event at `timestamp`."""
        return int(timestamp // self.bucket_seconds) * self.bucket_seconds


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """The summed vector of every bucket still inside the window, read at `now`."""

    vector: Vector
    start: float  # window start: now - window_seconds (epoch seconds)
    now: float  # the store's clock when the totals were read
