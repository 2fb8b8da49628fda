"""In-process window store: the single-replica backend, and the reference for Redis.

For buckets inside the Redis ring the semantics match `RedisWindowStore` call for call,
including the order of operations (evict, then add deltas in bucket order), so both
backends return the same numbers for the same calls. One difference: Redis keeps a
fixed ring of buckets and reports a bucket further ahead of its clock than the ring
reaches (`future_seconds` plus slack) as late; this store has no ring and counts a
bucket however far ahead it starts (the engine refuses events too far in the future
before they reach a store).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from driftline.core.window import Vector, WindowSpec, WindowTotals
from driftline.stores.protocol import ApplyResult, validate_deltas, validate_spec


@dataclass(slots=True)
class _Window:
    buckets: dict[int, Vector] = field(default_factory=dict)
    # Min-heap of bucket starts: eviction looks at the oldest only, so a read stays
    # O(width) however many buckets the window holds.
    starts: list[int] = field(default_factory=list)
    totals: Vector | None = None


class MemoryWindowStore:
    """Sliding windows held in this process; state is lost on restart."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, dict[str, _Window]] = {}

    @property
    def kind(self) -> str:
        """Backend name for health output."""
        return "memory"

    async def apply(self, spec: WindowSpec, deltas: Mapping[int, Vector]) -> ApplyResult:
        """Evict, add per-bucket deltas (late ones are reported, not added), return totals."""
        checked = validate_deltas(spec, deltas)
        # No await from here on: asyncio runs this as one atomic step.
        now = self._clock()
        window = self._window(spec)
        self._evict(spec, window, now)
        last_out = math.floor(now - spec.window_seconds - spec.bucket_seconds)
        late: set[int] = set()
        for bucket, delta in checked:
            if bucket <= last_out:
                late.add(bucket)
                continue
            held = window.buckets.get(bucket)
            if held is None:
                window.buckets[bucket] = delta.copy()
                heapq.heappush(window.starts, bucket)
            else:
                held += delta
        live = [delta for bucket, delta in checked if bucket > last_out]
        if live and window.totals is None:
            # A new window's totals are the sum of its buckets, as Redis rebuilds them.
            window.totals = np.zeros(spec.width, dtype=np.float64)
            for bucket in sorted(window.buckets):
                window.totals += window.buckets[bucket]
        elif window.totals is not None:
            for delta in live:
                window.totals += delta
        totals = self._totals(spec, window, now)
        self._forget_if_empty(spec, window)
        return ApplyResult(totals=totals, late_buckets=frozenset(late))

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        validate_spec(spec)
        now = self._clock()
        window = self._window(spec)
        self._evict(spec, window, now)
        totals = self._totals(spec, window, now)
        self._forget_if_empty(spec, window)
        return totals

    async def drop(self, monitor: str) -> None:
        """Forget every layout of the monitor."""
        self._windows.pop(monitor, None)

    async def ping(self) -> bool:
        """Always true: the store is this process."""
        return True

    async def close(self) -> None:
        """Nothing to release."""

    def _window(self, spec: WindowSpec) -> _Window:
        layouts = self._windows.setdefault(spec.monitor, {})
        return layouts.setdefault(spec.layout_id, _Window())

    def _evict(self, spec: WindowSpec, window: _Window, now: float) -> None:
        last_out = math.floor(now - spec.window_seconds - spec.bucket_seconds)
        while window.starts and window.starts[0] <= last_out:
            vector = window.buckets.pop(heapq.heappop(window.starts))
            if window.totals is not None:
                window.totals -= vector
        if not window.buckets:
            # Exact zeros, not the float residue of add-then-subtract.
            window.totals = None

    def _totals(self, spec: WindowSpec, window: _Window, now: float) -> WindowTotals:
        vector = (
            np.zeros(spec.width, dtype=np.float64)
            if window.totals is None
            else window.totals.copy()
        )
        return WindowTotals(vector=vector, start=now - spec.window_seconds, now=now)

    def _forget_if_empty(self, spec: WindowSpec, window: _Window) -> None:
        # Memory stays bounded by live windows, not by every monitor ever read.
        if window.buckets:
            return
        layouts = self._windows.get(spec.monitor)
        if layouts is not None:
            layouts.pop(spec.layout_id, None)
            if not layouts:
                del self._windows[spec.monitor]
