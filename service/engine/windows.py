"""The window a monitor judges: the store's running totals, or its own sums of buckets.

A monitor with a rolling reference (driftline.core.reference) reads the per-bucket
vectors of its window and of its reference window after each write instead of using the
totals the write returned: those cover the whole span the store keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

from driftline.core.monitor import Monitor
from driftline.core.window import WindowTotals
from driftline.stores.protocol import WindowStore


async def judged(store: WindowStore, monitor: Monitor, totals: WindowTotals) -> WindowTotals:
    """The window to assess after a write that returned `totals`."""
    return await read(store, monitor) if monitor.choice.reads_buckets else totals


async def read(store: WindowStore, monitor: Monitor) -> WindowTotals:
    """The window to assess, read without writing."""
    choice = monitor.choice
    if not choice.reads_buckets:
        return await store.read(monitor.window)
    buckets = await store.buckets(monitor.window, choice.spans)
    return choice.view(buckets, monitor.window, monitor.policy.min_samples)


async def read_all(store: WindowStore, monitors: Sequence[Monitor]) -> list[WindowTotals]:
    """`read` of each monitor's window, in order; the plain totals in one store call."""
    plain = [m for m in monitors if not m.choice.reads_buckets]
    found = iter(await store.read_many([m.window for m in plain]))
    return [await read(store, m) if m.choice.reads_buckets else next(found) for m in monitors]
