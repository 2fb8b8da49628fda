"""Inferences: a model server's request rows joined with its response's predictions, and counted.

KServe's InferenceService logger sends every inference as two CloudEvents with one id:
the request (the features) and, once the model answered, the response (the
prediction). A pool of workers sends them, so either may arrive first. A half waits in
this replica's pending table for the other; the pair is counted as events with their
predictions (`DriftEngine.ingest_inference`: by column for V2 tensors). A request whose
response does not come within the pairing timeout is counted without a prediction (a
missing prediction, which no rule alerts on); a response whose request does not come is
dropped, since an event without its features would count every feature as missing.
Both are counted in `driftline_inference_unpaired_total`. The table is bounded in halves
and in bytes; past either bound the oldest half is settled early in the same way.

The table lives in the process: both halves must reach the same replica
(docs/model-servers.md says how to route them there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from driftline.core.inference import Inputs, input_rows, input_size
from driftline.core.monitor import Monitor
from driftline.engine.admission import Event, inference_events
from driftline.engine.facade import DriftEngine, IngestResult
from driftline.engine.registry import UnknownMonitorError
from driftline.settings import InferenceSettings
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)

Half = Literal["request", "response"]
Reason = Literal["timeout", "overflow", "duplicate", "shutdown"]


@dataclass(slots=True)
class Waiting:
    """One half of an inference waiting for the other."""

    monitor: str
    half: Half
    inputs: Inputs | None  # a request's
    predictions: list[Any] | None  # a response's
    timestamp: datetime | None  # the request's moment
    model_version: str | None  # the response's
    size: int  # body bytes, for the table's bound
    deadline: float


@dataclass(frozen=True, slots=True)
class Parked:
    """A half now waiting for its other half."""

    rows: int
    expires_in: float


class InferencePairing:
    """The replica's table of inference halves waiting for their other half."""

    def __init__(
        self,
        engine: DriftEngine,
        settings: InferenceSettings,
        telemetry: Telemetry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._telemetry = telemetry
        self._clock = clock
        self._pending: OrderedDict[tuple[str, str], Waiting] = OrderedDict()
        self._bytes = 0
        self._settling: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Halves waiting now."""
        return len(self._pending)

    async def request(
        self,
        monitor: Monitor,
        inference_id: str,
        inputs: Inputs,
        timestamp: datetime | None,
        size: int,
    ) -> IngestResult | Parked:
        """A logged request: counted with its waiting response, else parked for it.

        A monitor that declares no prediction has nothing to wait for: counted at once.
        """
        if monitor.decoder is None:
            return await self._engine.ingest_inference(
                monitor, inputs, None, timestamp=timestamp, model_version=None
            )
        other = self._take(monitor.name, inference_id, "response")
        if other is None:
            waiting = Waiting(monitor.name, "request", inputs, None, timestamp, None, size, 0.0)
            return self._park(monitor.name, inference_id, waiting)
        return await self._engine.ingest_inference(
            monitor,
            inputs,
            other.predictions,
            timestamp=timestamp,
            model_version=other.model_version,
        )

    async def response(
        self,
        monitor: Monitor,
        inference_id: str,
        predictions: list[Any],
        model_version: str | None,
        size: int,
    ) -> IngestResult | Parked:
        """A logged response (its monitor declares a prediction): paired, or parked."""
        other = self._take(monitor.name, inference_id, "request")
        if other is None:
            waiting = Waiting(
                monitor.name, "response", None, predictions, None, model_version, size, 0.0
            )
            return self._park(monitor.name, inference_id, waiting)
        assert other.inputs is not None
        return await self._engine.ingest_inference(
            monitor,
            other.inputs,
            predictions,
            timestamp=other.timestamp,
            model_version=model_version,
        )

    def _take(self, monitor: str, inference_id: str, half: Half) -> Waiting | None:
        """The waiting `half` of this inference, taken from the table (a duplicate is settled)."""
        waiting = self._pending.get((monitor, inference_id))
        if waiting is None:
            return None
        del self._pending[(monitor, inference_id)]
        self._bytes -= waiting.size
        self._telemetry.pending_inferences.set({}, len(self._pending))
        if waiting.half != half:
            # The same half sent twice under one id: the earlier one is settled alone.
            self._settle_soon([waiting], "duplicate")
            return None
        return waiting

    def _park(self, monitor: str, inference_id: str, waiting: Waiting) -> Parked:
        timeout = self._settings.pair_timeout
        waiting.deadline = self._clock() + timeout
        self._pending[(monitor, inference_id)] = waiting
        self._bytes += waiting.size
        pushed: list[Waiting] = []
        while len(self._pending) > self._settings.max_pending or (
            self._bytes > self._settings.max_pending_bytes
        ):
            _, oldest = self._pending.popitem(last=False)
            self._bytes -= oldest.size
            pushed.append(oldest)
        self._telemetry.pending_inferences.set({}, len(self._pending))
        if pushed:
            self._settle_soon(pushed, "overflow")
        if waiting.inputs is not None:
            rows = input_size(waiting.inputs)
        else:
            rows = len(waiting.predictions or ())
        return Parked(rows, timeout)

    def _settle_soon(self, halves: list[Waiting], reason: Reason) -> None:
        # Off the request's path: the caller is answered without waiting for the flush.
        task = asyncio.create_task(self._settle(halves, reason))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, halves: list[Waiting], reason: Reason) -> None:
        """Count lone requests without predictions (a batch per monitor); drop lone responses."""
        requests: dict[str, list[Event]] = {}
        for waiting in halves:
            labels = {"monitor": waiting.monitor, "half": waiting.half, "reason": reason}
            self._telemetry.unpaired.inc(labels)
            if waiting.inputs is not None:
                rows = input_rows(waiting.inputs)
                events = inference_events(rows, None, waiting.timestamp, None)
                requests.setdefault(waiting.monitor, []).extend(events)
        for name, events in requests.items():
            try:
                monitor = self._engine.monitor(name)
            except UnknownMonitorError:
                log.warning("inference requests dropped: monitor %r is no longer loaded", name)
                continue
            try:
                await self._engine.ingest(monitor, events)
            except Exception:
                # Nobody waits for these: log, as an async acknowledgement's failed flush is.
                log.exception("unpaired inference requests not counted", extra={"monitor": name})

    def _expired(self) -> list[Waiting]:
        now = self._clock()
        expired: list[Waiting] = []
        # Every half waits the same timeout: the table is in deadline order.
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if oldest.deadline > now:
                break
            del self._pending[key]
            self._bytes -= oldest.size
            expired.append(oldest)
        if expired:
            self._telemetry.pending_inferences.set({}, len(self._pending))
        return expired

    async def expire_forever(self, stopping: asyncio.Event) -> None:
        """Settle halves whose pairing timeout passed, until `stopping` is set."""
        tick = min(1.0, self._settings.pair_timeout / 4)
        while not stopping.is_set():
            expired = self._expired()
            if expired:
                await self._settle(expired, "timeout")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), tick)

    async def close(self) -> None:
        """Settle every waiting half (requests counted, responses dropped)."""
        halves = list(self._pending.values())
        self._pending.clear()
        self._bytes = 0
        self._telemetry.pending_inferences.set({}, 0)
        if halves:
            await self._settle(halves, "shutdown")
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
