"""Group commit: many events, one store call per monitor per flush.

A replica never makes a store round trip per event. Requests add their events to the
monitor's pending batch; one flusher per monitor bins the single events of the batch
column by column, sends the whole batch in a single atomic store call, has the verdict
made once on the totals it returns (driftline.engine.verdicts), and answers every
request the batch carried through one shared future. While a flush is in flight the
next batch fills up, so the batch size grows with load and the store calls per event
fall.

Events sent by column (an inference's tensors) are binned at the flush too, all of its
chunks in one call: a binning call costs ~140 µs before its first event, so binning
each small inference on its own would cost more than its events.

A submission with an idempotency key travels in the same store call as a claim of its
own (the committer does not sum its events with the others'): the store counts it only
if its key is new, in the same atomic step, and says so per claim.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from driftline.core.binning import (
    BinnedBatch,
    EventError,
    Matrix,
    bin_batch,
    bin_columns,
    bin_event,
)
from driftline.core.idempotency import ClaimOutcome, ClaimStatus, RequestKey
from driftline.core.limits import Limits
from driftline.core.monitor import Monitor
from driftline.core.performance import awaits_label, payloads
from driftline.core.performance import records as pending_records
from driftline.core.report import Assessment
from driftline.core.scopes import (
    RowBlocks,
    Scopes,
    batch_deltas,
    event_blocks,
    event_vectors,
    single_blocks,
    widen_rows,
)
from driftline.core.window import Vector
from driftline.engine.verdicts import Verdicts
from driftline.engine.windows import judged
from driftline.stores.protocol import (
    Claim,
    KeyedRows,
    Pending,
    StoreUnavailableError,
    WindowStore,
)
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
    # Per keyed submission, by its ticket's `claim`: what the store did with it (None
    # for a single event that could not be counted: it was never claimed).
    claims: Sequence[ClaimOutcome | None] = ()
    # Per column chunk (its position from `submit_columns`): its events not counted.
    chunk_errors: Sequence[Mapping[int, EventError]] = ()


class Row(NamedTuple):
    """One single event waiting for its flush to be binned."""

    features: Mapping[str, Any]
    bucket: int
    tag: str | None  # model_version, handed back for telemetry
    durable: bool  # its request waits for the flush (else it was checked valid up front)
    key: RequestKey | None = None  # counted at most once per key
    pending: bytes | None = None  # its id's digest: its prediction waits for a label


class ColumnChunk(NamedTuple):
    """Events sent as a list of values per column, waiting for their flush to be binned."""

    columns: Mapping[str, list[Any]]  # each `size` long; a feature without one is missing
    size: int
    bucket: int  # they share one timestamp, so one bucket
    tag: str | None  # model_version
    refused: Mapping[int, EventError]  # events already refused (e.g. their prediction)


class Ticket(NamedTuple):
    """Where a submission's outcome will be found."""

    future: asyncio.Future[FlushOutcome] | None  # None in async mode: nobody waits
    row: int | None  # a single event's position among the flush's rows
    claim: int | None  # a keyed submission's position in `FlushOutcome.claims`


@dataclass(slots=True)
class _Batch:
    monitor: Monitor
    target: int  # durable submissions to wait for before flushing early
    rows: list[Row] = field(default_factory=list)
    chunks: list[ColumnChunk] = field(default_factory=list)
    vectors: dict[int, Vector] = field(default_factory=dict)  # binned batches, by bucket
    # Keyed submissions in arrival order: a row's position, or a binned batch's claim.
    keyed: list[int | Claim] = field(default_factory=list)
    future: asyncio.Future[FlushOutcome] | None = None
    durable: int = 0  # submissions waiting on `future`
    unacknowledged: int = 0  # events submitted in async mode: nobody waits for them
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    # Pending predictions of binned submissions: id digests and records, concatenated.
    pending_ids: list[bytes] = field(default_factory=list)
    pending_records: list[bytes] = field(default_factory=list)

    def pending(self, errors: Mapping[int, EventError], blocks: RowBlocks | None) -> Pending | None:
        """The predictions this flush keeps for their labels (single rows' made here).

        `blocks`: every single row's version and segment blocks (None: one-block window).
        """
        monitor = self.monitor
        if monitor.labels is None or monitor.layout.performance is None:
            return None
        ids, records = list(self.pending_ids), list(self.pending_records)
        assert monitor.decoder is not None  # labels need a declared prediction
        names = monitor.decoder.names
        positions = [
            i
            for i, row in enumerate(self.rows)
            if row.pending is not None and i not in errors and awaits_label(row.features, names)
        ]
        if positions:
            waiting = [self.rows[i] for i in positions]
            columns = [[row.features[name] for row in waiting] for name in names]
            buckets = np.fromiter((row.bucket for row in waiting), np.int64, len(waiting))
            kept = None if blocks is None else (blocks[0][positions], blocks[1][positions])
            records.append(
                pending_records(buckets, payloads(monitor.layout.performance, columns), kept)
            )
            ids.extend(row.pending for row in waiting if row.pending is not None)
        if not ids:
            return None
        return Pending(monitor.labels.horizon_seconds, b"".join(ids), b"".join(records))

    def add(self, vectors: Mapping[int, tuple[Vector, int]]) -> int:
        for start, (vector, _) in vectors.items():
            held = self.vectors.get(start)
            self.vectors[start] = vector.copy() if held is None else held + vector
        return sum(count for _, count in vectors.values())

    def deltas(self, limits: Limits) -> _Sending:
        """What the flush sends: unkeyed deltas, claims, keyed rows; the rows' blocks."""
        scopes = self.monitor.scopes
        blocks: RowBlocks | None = None
        deltas: dict[int, Vector] = {}
        errors: dict[int, EventError] = {}
        claims = [k for k in self.keyed if isinstance(k, Claim)]
        rows = None
        if len(self.rows) == 1:
            row = self.rows[0]
            deltas, errors, blocks = _one_event(self.monitor, row, limits)
            if row.key is not None and not errors:
                own = deltas[row.bucket]  # the event's own vector: its whole delta
                rows = KeyedRows([row.key], [row.bucket], lambda _: own)
        elif self.rows:
            # Each single event's unknown features were warned about when it came in.
            binned = bin_batch(
                self.monitor.layout, [r.features for r in self.rows], limits, find_unknown=False
            )
            errors = binned.errors
            starts = np.fromiter((r.bucket for r in self.rows), np.int64, len(self.rows))
            versions = [r.tag for r in self.rows]
            if scopes.blocks > 1 and self.monitor.labels is not None:  # for their records
                blocks = event_blocks(scopes, binned, versions)
            # Keyed rows are counted with the rest: a store takes one back out only when
            # its key is known, so their own vectors are rarely made.
            grouped = batch_deltas(scopes, binned, starts, versions)
            deltas = {start: v for start, (v, _) in grouped.items()}
            keyed = [k for k in self.keyed if isinstance(k, int) and k not in errors]
            if keyed:  # none when every keyed event was refused
                vectors = _RowVectors(scopes, binned, keyed, versions)
                waiting = [self.rows[k] for k in keyed]
                rows = KeyedRows(
                    [r.key for r in waiting if r.key is not None],
                    [r.bucket for r in waiting],
                    vectors.__getitem__,
                )
        added = list(self.vectors.items())
        chunk_errors: list[dict[int, EventError]] = []
        if self.chunks:
            chunked, chunk_errors = _bin_chunks(self.monitor, self.chunks, limits)
            added.extend((start, vector) for start, (vector, _) in chunked.items())
        for start, vector in added:
            deltas[start] = deltas[start] + vector if start in deltas else vector
        # Each keyed submission's place among the store's outcomes: the claims' first,
        # then the rows' (None for a keyed row refused before it was claimed).
        places: list[int | None] = []
        claimed, counted_rows = 0, len(claims)
        for k in self.keyed:
            if isinstance(k, Claim):
                places.append(claimed)
                claimed += 1
            elif k in errors:
                places.append(None)
            else:
                places.append(counted_rows)
                counted_rows += 1
        return _Sending(deltas, errors, chunk_errors, claims, rows, places, blocks)


def _one_event(
    monitor: Monitor, row: Row, limits: Limits
) -> tuple[dict[int, Vector], dict[int, EventError], RowBlocks | None]:
    """A flush's only event binned on its own: its delta and blocks, or its error.

    The error is row 0's; the blocks (version, segment) are None for a one-block window.

    A monitor with many quiet windows flushes one event at a time. bin_event takes ~70 µs
    for 50 features where a batch of one costs ~190 µs (a numpy call per feature and
    part); both apply the same per-value rules, so the counts are the same.
    """
    try:
        event = bin_event(monitor.layout, row.features, limits)
    except EventError as exc:
        return {}, {0: exc}, None
    scopes = monitor.scopes
    vector = event.vector(scopes.block_width)
    if scopes.blocks == 1:
        return {row.bucket: vector}, {}, None
    blocks = single_blocks(scopes, event, row.tag)
    return {row.bucket: widen_rows(scopes, vector[None, :], blocks)[0]}, {}, blocks


def _bin_chunks(
    monitor: Monitor, chunks: Sequence[ColumnChunk], limits: Limits
) -> tuple[dict[int, tuple[Vector, int]], list[dict[int, EventError]]]:
    """Column chunks binned as one: per bucket their deltas, and each chunk's refused events."""
    sizes = [chunk.size for chunk in chunks]
    names = {name: None for chunk in chunks for name in chunk.columns}
    joined: dict[str, list[Any]] = {}
    for name in names:
        values: list[Any] = []
        for chunk in chunks:
            column = chunk.columns.get(name)
            values.extend([None] * chunk.size if column is None else column)
        joined[name] = values
    binned = bin_columns(monitor.layout, joined, sum(sizes), limits)
    offsets = np.cumsum([0, *sizes]).tolist()
    for offset, chunk in zip(offsets, chunks, strict=False):
        for i, error in chunk.refused.items():
            binned.errors.setdefault(offset + i, error)
    errors: list[dict[int, EventError]] = [{} for _ in chunks]
    if binned.errors:
        for k, error in binned.errors.items():
            c = bisect.bisect_right(offsets, k) - 1
            errors[c][k - offsets[c]] = error
    buckets = np.repeat(np.array([chunk.bucket for chunk in chunks], dtype=np.int64), sizes)
    versions = [chunk.tag for chunk in chunks for _ in range(chunk.size)]
    return batch_deltas(monitor.scopes, binned, buckets, versions), errors


class _Sending(NamedTuple):
    deltas: dict[int, Vector]  # per bucket start, the summed vector of the unkeyed events
    errors: dict[int, EventError]  # single rows that cannot be counted
    chunk_errors: list[dict[int, EventError]]  # per column chunk, its events not counted
    claims: list[Claim]  # binned keyed submissions
    rows: KeyedRows | None  # keyed single events
    places: list[int | None]  # per keyed submission, its outcome's index in the store's
    blocks: RowBlocks | None  # the single rows' version and segment blocks, when kept


class _RowVectors:
    """The own vectors of a flush's keyed single events, made on the first ask."""

    def __init__(
        self,
        scopes: Scopes,
        binned: BinnedBatch,
        rows: list[int],
        versions: list[str | None],
    ) -> None:
        self._made: Callable[[], Matrix] = lambda: event_vectors(scopes, binned, rows, versions)
        self._vectors: Matrix | None = None

    def __getitem__(self, position: int) -> Vector:
        if self._vectors is None:
            self._vectors = self._made()
        vector: Vector = self._vectors[position]
        return vector


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

    def submit_row(self, monitor: Monitor, row: Row) -> Ticket:
        """Queue one unbinned event; durable rows get their flush's future.

        Async rows must be valid (`first_error` found none): nobody would hear of an error.
        """
        batch = self._batch(monitor)
        batch.rows.append(row)
        position = len(batch.rows) - 1
        claim = None
        if row.key is not None:
            claim = len(batch.keyed)
            batch.keyed.append(position)
        if row.durable:
            return Ticket(self._wait(batch), position, claim)
        batch.unacknowledged += 1
        return Ticket(None, position, claim)

    def submit_columns(
        self, monitor: Monitor, chunk: ColumnChunk
    ) -> tuple[asyncio.Future[FlushOutcome], int]:
        """Queue events sent by column, binned at the flush (durable: errors come then).

        Returns the flush's future and the chunk's position in `FlushOutcome.chunk_errors`.
        """
        batch = self._batch(monitor)
        batch.chunks.append(chunk)
        return self._wait(batch), len(batch.chunks) - 1

    def submit(
        self,
        monitor: Monitor,
        vectors: Mapping[int, tuple[Vector, int]],
        *,
        durable: bool,
        key: RequestKey | None = None,
        pending: tuple[bytes, bytes] | None = None,
    ) -> Ticket:
        """Queue binned events: per bucket start, their summed vector and their count.

        Durable submissions get the future of their flush (it fails with
        StoreUnavailableError when the flush does). With a key, the events are counted
        only if the key is new (see the ticket's claim). `pending`: the id digests and
        records of their predictions that wait for labels, kept by the same flush.
        """
        batch = self._batch(monitor)
        if pending is not None:
            batch.pending_ids.append(pending[0])
            batch.pending_records.append(pending[1])
        claim = None
        if key is None:
            count = batch.add(vectors)
        else:
            claim = len(batch.keyed)
            batch.keyed.append(
                Claim(
                    key,
                    {start: vector for start, (vector, _) in vectors.items()},
                    {start: n for start, (_, n) in vectors.items()},
                )
            )
            count = sum(n for _, n in vectors.values())
        if durable:
            return Ticket(self._wait(batch), None, claim)
        batch.unacknowledged += count
        return Ticket(None, None, claim)

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
            sending = batch.deltas(self._limits)
            errors = sending.errors
            assessment = None
            late: frozenset[int] = frozenset()
            outcomes: list[ClaimOutcome | None] = []
            if sending.deltas or sending.claims or sending.rows:
                pending = batch.pending(errors, sending.blocks)
                result = await self._store.apply(
                    monitor.window,
                    sending.deltas,
                    sending.claims,
                    pending,
                    sending.rows,
                    fresh=self._verdicts.within_share(),
                )
                if result.unkept:
                    self._telemetry.unkept_predictions.add({"monitor": monitor.name}, result.unkept)
                if result.unrecorded:
                    self._telemetry.unrecorded_keys.add(
                        {"monitor": monitor.name}, result.unrecorded
                    )
                late = result.late_buckets
                outcomes = [None if i is None else result.claims[i] for i in sending.places]
                self._tally(batch, errors, late, outcomes)
                totals = await judged(self._store, monitor, result.totals)
                assessment = self._verdicts.after_flush(monitor, totals)
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
            future.set_result(
                FlushOutcome(assessment, late, errors, outcomes, sending.chunk_errors)
            )

    def _tally(
        self,
        batch: _Batch,
        errors: Mapping[int, EventError],
        late: frozenset[int],
        outcomes: Sequence[ClaimOutcome | None],
    ) -> None:
        """Telemetry of a flush's single events: counted (by version), late, or refused.

        Events of binned batches are tallied by whoever submitted them (the engine).
        """
        monitor = batch.monitor
        # A keyed row that was replayed (or conflicted) counted nothing now.
        repeated = {
            k
            for k, outcome in zip(batch.keyed, outcomes, strict=True)
            # The common outcome (counted) decides first.
            if outcome is not None
            and outcome.status is not ClaimStatus.COUNTED
            and isinstance(k, int)
        }
        counted: list[str | None] = []
        late_rows = 0
        for i, row in enumerate(batch.rows):
            if i in errors:
                if not row.durable:  # checked valid on arrival: a bug if reached
                    log.error("async event refused at flush: %s", errors[i])
                    self._lost(monitor, 1)
                continue
            if i in repeated:
                continue
            if row.bucket in late:
                late_rows += 1
            else:
                counted.append(row.tag)
        if counted:
            self._telemetry.count_events(monitor.name, counted)
        if late_rows:
            self._telemetry.late_events.add({"monitor": monitor.name}, late_rows)

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
