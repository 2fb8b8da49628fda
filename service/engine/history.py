"""History recording: each monitor's verdict at the close of every bucket, kept for a horizon.

The recorder hears every assessment the engine makes (after flushes, reads and the
evaluation timer) and keeps the latest per monitor. When an assessment falls in a later
bucket than the one held, the held one is the verdict that closed its bucket: it is
written to the history store, once per bucket per replica, never on the predict path.
The store writes a bucket only when its slot holds an older one, so with several
replicas the first to close a bucket records it and the others' writes change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from driftline.core.history import (
    HistoryPoint,
    HistorySpec,
    decode_record,
    encode_record,
    history_spec,
    sample,
)
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment
from driftline.stores.protocol import HistoryStore, StoreUnavailableError
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_WRITES = 16
"""History writes in flight at once: every monitor closes its bucket at the same moment,
and a fleet's thousand writes at once made the Redis pool open a connection for each."""


@dataclass(frozen=True, slots=True)
class History:
    """A monitor's history between two moments, one point per step."""

    spec: HistorySpec
    start: int  # epoch seconds, the first bucket's start
    end: int  # epoch seconds, the last bucket's end
    step: int
    points: list[HistoryPoint]


class HistoryRecorder:
    """Writes each monitor's closing verdict per bucket; reads the history back."""

    def __init__(self, store: HistoryStore, horizon_seconds: int, telemetry: Telemetry) -> None:
        self._store = store
        self._horizon = horizon_seconds
        self._telemetry = telemetry
        self._held: dict[str, tuple[int, Assessment]] = {}  # monitor -> (bucket, latest)
        self._writing: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_WRITES)

    @property
    def horizon_seconds(self) -> int:
        """How far back the history reaches."""
        return self._horizon

    def spec(self, monitor: Monitor) -> HistorySpec:
        """The history ring of a monitor under this recorder's horizon."""
        return history_spec(monitor, self._horizon)

    def offer(self, assessment: Assessment) -> None:
        """Hold the assessment; write the held one when this one starts a later bucket."""
        monitor = assessment.monitor
        bucket = monitor.window.bucket_of(assessment.at)
        held = self._held.get(monitor.name)
        if held is not None and bucket < held[0]:
            return  # a read made on a clock behind the last one: its bucket has closed
        self._held[monitor.name] = (bucket, assessment)
        if held is not None and held[0] < bucket:
            task = asyncio.create_task(self._write(*held))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _write(self, bucket: int, assessment: Assessment) -> None:
        spec = self.spec(assessment.monitor)
        try:
            async with self._slots:
                await self._store.record(spec, bucket, encode_record(assessment, bucket))
        except StoreUnavailableError as exc:
            self._telemetry.store_errors.inc({"operation": "history"})
            log.warning("history write failed", extra={"error": str(exc)})

    async def read(self, monitor: Monitor, start: float, end: float, step: int) -> History:
        """The buckets that start in [start, end), one point per `step` seconds (see `sample`).

        `step` must be a whole number of the monitor's buckets.
        """
        spec = self.spec(monitor)
        first = monitor.window.bucket_of(start)
        last = monitor.window.bucket_of(end - 1e-9) if end > start else first - 1
        records = await self._store.read(spec, first, last) if last >= first else []
        points = [decode_record(monitor, spec, r) for r in sample(records, step, first)]
        return History(spec, first, last + spec.bucket_seconds, step, points)

    def forget(self, name: str) -> None:
        """Drop what is held of a monitor (it was unloaded)."""
        self._held.pop(name, None)

    async def drop(self, name: str) -> None:
        """Delete the monitor's history, every layout, and what is held of it."""
        self.forget(name)
        await self._store.drop(name)

    async def close(self) -> None:
        """Wait for the writes in flight."""
        await asyncio.gather(*self._writing, return_exceptions=True)
