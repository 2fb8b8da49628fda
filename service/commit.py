"""Group commit: many events, one store call per monitor per flush.

A replica never makes a store round trip per event. Requests add their binned counts
to the monitor's pending batch; one flusher per monitor sends the whole batch in a
single atomic store call, evaluates the drift report once on the totals it returns,
and answers every request the batch carried. While a flush is in flight the next batch
fills up, so the batch size grows with load and the store calls per event fall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .binning import BinnedEvent
from .monitor import Monitor
from .report import DriftReport, drift_report
from .window import StoreUnavailableError, Vector, WindowStore

log = logging.getLogger(__name__)


class CommitterClosedError(Exception):
    """The committer is shutting down and takes no more events."""


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    """What the flush that carried a submission's events returned to it."""

    report: DriftReport
    late_events: int  # events of this submission whose bucket had slid out of the window


@dataclass(slots=True)
class _Bucket:
    # Single events append indices (cheap per event); batches add whole vectors.
    slots: list[int] = field(default_factory=list)
    sum_slots: list[int] = field(default_factory=list)
    sum_values: list[float] = field(default_factory=list)
    dense: Vector | None = None


@dataclass(slots=True)
class _Batch:
    monitor: Monitor
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    waiters: list[tuple[asyncio.Future[FlushOutcome], dict[int, int]]] = field(default_factory=list)
    unacknowledged: int = 0  # events submitted in async mode: nobody waits for them

    def bucket(self, start: int) -> _Bucket:
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = _Bucket()
        return bucket

    def add(self, events: Iterable[tuple[int, BinnedEvent]]) -> dict[int, int]:
        per_bucket: dict[int, int] = {}
        for bucket_start, event in events:
            bucket = self.bucket(bucket_start)
            bucket.slots.extend(event.slots)
            for slot, value in event.sums:
                bucket.sum_slots.append(slot)
                bucket.sum_values.append(value)
            per_bucket[bucket_start] = per_bucket.get(bucket_start, 0) + 1
        return per_bucket

    def deltas(self) -> dict[int, Vector]:
        width = self.monitor.window.width
        deltas: dict[int, Vector] = {}
        for start, bucket in self.buckets.items():
            # Two bincounts per bucket per flush instead of a numpy call per event.
            vector = np.bincount(bucket.slots, minlength=width).astype(np.float64)
            if bucket.sum_slots:
                vector += np.bincount(bucket.sum_slots, bucket.sum_values, minlength=width)
            if bucket.dense is not None:
                vector += bucket.dense
            deltas[start] = vector
        return deltas

    def add_dense(self, vectors: Mapping[int, tuple[Vector, int]]) -> dict[int, int]:
        for start, (vector, _) in vectors.items():
            bucket = self.bucket(start)
            bucket.dense = vector.copy() if bucket.dense is None else bucket.dense + vector
        return {start: count for start, (_, count) in vectors.items()}


ReportListener = Callable[[Monitor, DriftReport], None]


class GroupCommitter:
    """Batches binned events per monitor layout and flushes them to the window store."""

    def __init__(
        self,
        store: WindowStore,
        *,
        flush_interval: float,
        on_report: ReportListener,
        on_store_error: Callable[[str], None],
        on_events_lost: Callable[[Monitor, int], None],
    ) -> None:
        self._store = store
        self._interval = flush_interval
        self._on_report = on_report
        self._on_store_error = on_store_error
        self._on_events_lost = on_events_lost
        self._pending: dict[tuple[str, str], _Batch] = {}
        self._flushers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._closed = False
        self._closing = asyncio.Event()  # wakes flushers gathering a batch: flush now

    def submit(
        self,
        monitor: Monitor,
        events: list[tuple[int, BinnedEvent]] | Mapping[int, tuple[Vector, int]],
        *,
        durable: bool,
    ) -> asyncio.Future[FlushOutcome] | None:
        """Queue events for the next flush of their monitor.

        `events` is a list of (bucket start, binned event), or per bucket start a summed
        vector and its event count (a binned batch). Durable submissions get a future
        that resolves once the flush carrying them succeeded (or fails with
        StoreUnavailableError); async ones get None.
        """
        if self._closed:
            raise CommitterClosedError("shutting down")
        # Key by layout too: events binned under an old layout are flushed under it.
        key = (monitor.name, monitor.window.layout_id)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch(monitor)
        per_bucket = batch.add(events) if isinstance(events, list) else batch.add_dense(events)
        future: asyncio.Future[FlushOutcome] | None = None
        if durable:
            future = asyncio.get_running_loop().create_future()
            batch.waiters.append((future, per_bucket))
        else:
            batch.unacknowledged += sum(per_bucket.values())
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flusher(key), name=f"flush:{key[0]}")
        return future

    async def _flusher(self, key: tuple[str, str]) -> None:
        try:
            while True:
                if self._interval and not self._closed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._interval):
                            await self._closing.wait()
                batch = self._pending.pop(key, None)
                if batch is None:
                    return
                await self._flush(batch)
        finally:
            del self._flushers[key]

    async def _flush(self, batch: _Batch) -> None:
        monitor = batch.monitor
        try:
            result = await self._store.apply(monitor.window, batch.deltas())
            report = drift_report(monitor, result.totals)
        except Exception as exc:
            if isinstance(exc, StoreUnavailableError):
                self._on_store_error("apply")
                log.warning("flush failed", extra={"monitor": monitor.name, "error": str(exc)})
            else:
                log.exception("flush failed", extra={"monitor": monitor.name})
            for future, _ in batch.waiters:
                if not future.done():
                    future.set_exception(exc)
            if batch.unacknowledged:
                self._on_events_lost(monitor, batch.unacknowledged)
            return
        self._on_report(monitor, report)
        late = result.late_buckets
        for future, per_bucket in batch.waiters:
            if not future.done():
                late_events = sum(n for start, n in per_bucket.items() if start in late)
                future.set_result(FlushOutcome(report, late_events))

    async def close(self) -> None:
        """Refuse new events and flush everything pending (SIGTERM path)."""
        self._closed = True
        self._closing.set()
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)
