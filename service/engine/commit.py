"""Group commit: many events, one store call per monitor per flush.

A replica never makes a store round trip per event. Requests add their events to the
monitor's pending batch; one flusher per monitor bins the single events of the batch
column by column, sends the whole batch in a single atomic store call, has the verdict
made once on the totals it returns (driftline.engine.verdicts), and answers every
request the batch carried through one shared future. While a flush is in flight the
next batch fills up, so the batch size grows with load and the store calls per event
fall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from driftline.core.binning import EventError, bin_batch
from driftline.core.limits import Limits
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment
from driftline.core.window import Vector
from driftline.engine.verdicts import Verdicts
from driftline.stores.protocol import StoreUnavailableError, WindowStore
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)


class CommitterClosedError(Exception):
    """The committer is shutting down and takes no more events."""


@dataclass(frozen=True, slots=True)
class FlushOutcome:
    """What the flush that carried a submission returned to it."""

    assessment: Assessment | None  # None when nothing was applied (every row invalid)
    late_buckets: frozenset[int]  # buckets that had slid out of the window: not counted
    row_errors: Mapping[int, EventError]  # single events that could not be counted, by row


class Row(NamedTuple):
    """One single event waiting for its flush to be binned."""

    features: Mapping[str, Any]
    bucket: int
    tag: str | None  # model_version, handed back for telemetry
    durable: bool  # its request waits for the flush (else it was checked valid up front)


@dataclass(slots=True)
class _Batch:
    monitor: Monitor
    target: int  # durable submissions to wait for before flushing early
    rows: list[Row] = field(default_factory=list)
    vectors: dict[int, Vector] = field(default_factory=dict)  # binned batches, by bucket
    future: asyncio.Future[FlushOutcome] | None = None
    durable: int = 0  # submissions waiting on `future`
    unacknowledged: int = 0  # events submitted in async mode: nobody waits for them
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, vectors: Mapping[int, tuple[Vector, int]]) -> int:
        for start, (vector, _) in vectors.items():
            held = self.vectors.get(start)
            self.vectors[start] = vector.copy() if held is None else held + vector
        return sum(count for _, count in vectors.values())

    def deltas(self, limits: Limits) -> tuple[dict[int, Vector], dict[int, EventError]]:
        """Per bucket start the summed vector of everything queued; errors of single rows."""
        width = self.monitor.window.width
        deltas: dict[int, Vector] = {}
        errors: dict[int, EventError] = {}
        if self.rows:
            # Each single event's unknown features were warned about when it came in.
            binned = bin_batch(
                self.monitor.layout, [r.features for r in self.rows], limits, find_unknown=False
            )
            errors = binned.errors
            starts = np.fromiter((r.bucket for r in self.rows), np.int64, len(self.rows))
            deltas = {start: v for start, (v, _) in binned.deltas(width, starts).items()}
        for start, vector in self.vectors.items():
            deltas[start] = deltas[start] + vector if start in deltas else vector
        return deltas, errors


class GroupCommitter:
    """Batches events per monitor layout and flushes them to the window store."""

    def __init__(
        self,
        store: WindowStore,
        limits: Limits,
        verdicts: Verdicts,
        telemetry: Telemetry,
        *,
        flush_interval: float,
    ) -> None:
        self._store = store
        self._limits = limits
        self._verdicts = verdicts
        self._telemetry = telemetry
        self._interval = flush_interval
        self._pending: dict[tuple[str, str], _Batch] = {}
        self._flushers: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Durable submissions the last flush of each layout answered: in a steady state
        # the same clients come back, so a batch holding as many is sent without waiting.
        self._answered: dict[tuple[str, str], int] = {}
        self._closed = False

    def _batch(self, monitor: Monitor) -> _Batch:
        if self._closed:
            raise CommitterClosedError("shutting down")
        # Key by layout too: events binned under an old layout are flushed under it.
        key = (monitor.name, monitor.window.layout_id)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch(monitor, self._answered.get(key, 0))
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(self._flusher(key), name=f"flush:{key[0]}")
        return batch

    def _wait(self, batch: _Batch) -> asyncio.Future[FlushOutcome]:
        if batch.future is None:
            batch.future = asyncio.get_running_loop().create_future()
        batch.durable += 1
        if batch.durable >= batch.target:
            batch.enough.set()
        return batch.future

    def submit_row(
        self, monitor: Monitor, row: Row
    ) -> tuple[asyncio.Future[FlushOutcome] | None, int]:
        """Queue one unbinned event: its flush's future (durable) and its row number.

        Async rows must be valid (`first_error` found none): nobody would hear of an error.
        """
        batch = self._batch(monitor)
        batch.rows.append(row)
        if row.durable:
            return self._wait(batch), len(batch.rows) - 1
        batch.unacknowledged += 1
        return None, len(batch.rows) - 1

    def submit(
        self, monitor: Monitor, vectors: Mapping[int, tuple[Vector, int]], *, durable: bool
    ) -> asyncio.Future[FlushOutcome] | None:
        """Queue binned events: per bucket start, their summed vector and their count.

        Durable submissions get the future of their flush (it fails with
        StoreUnavailableError when the flush does); async ones get None.
        """
        batch = self._batch(monitor)
        count = batch.add(vectors)
        if durable:
            return self._wait(batch)
        batch.unacknowledged += count
        return None

    async def _flusher(self, key: tuple[str, str]) -> None:
        try:
            while (batch := self._pending.get(key)) is not None:
                if self._interval and not self._closed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._interval):
                            await batch.enough.wait()
                del self._pending[key]
                self._answered[key] = batch.durable
                await self._flush(batch)
        finally:
            del self._flushers[key]

    async def _flush(self, batch: _Batch) -> None:
        monitor = batch.monitor
        future = batch.future
        try:
            deltas, errors = batch.deltas(self._limits)
            assessment = None
            late: frozenset[int] = frozenset()
            if deltas:
                result = await self._store.apply(monitor.window, deltas)
                late = result.late_buckets
                counted: list[str | None] = []
                late_rows = 0
                for i, row in enumerate(batch.rows):
                    if i in errors:
                        if not row.durable:  # checked valid on arrival: a bug if reached
                            log.error("async event refused at flush: %s", errors[i])
                            self._lost(monitor, 1)
                        continue
                    if row.bucket in late:
                        late_rows += 1
                    else:
                        counted.append(row.tag)
                if counted:
                    self._telemetry.count_events(monitor.name, counted)
                if late_rows:
                    self._telemetry.late_events.add({"monitor": monitor.name}, late_rows)
                assessment = self._verdicts.after_flush(monitor, result.totals)
        except Exception as exc:
            if isinstance(exc, StoreUnavailableError):
                self._telemetry.store_errors.inc({"operation": "apply"})
                log.warning("flush failed", extra={"monitor": monitor.name, "error": str(exc)})
            else:
                log.exception("flush failed", extra={"monitor": monitor.name})
            if future is not None:
                future.set_exception(exc)
                future.exception()  # retrieved here: no warning if every waiter was cancelled
            if batch.unacknowledged:
                self._lost(monitor, batch.unacknowledged)
            return
        if future is not None:
            future.set_result(FlushOutcome(assessment, late, errors))

    def _lost(self, monitor: Monitor, events: int) -> None:
        """Count acknowledged (async) events that were never stored."""
        self._telemetry.lost_events.add({"monitor": monitor.name}, events)

    async def close(self) -> None:
        """Refuse new events and flush everything pending (SIGTERM path)."""
        self._closed = True
        for batch in self._pending.values():
            batch.enough.set()
        while self._flushers:
            await asyncio.gather(*self._flushers.values(), return_exceptions=True)
