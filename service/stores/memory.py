"""In-process window store: the single-replica backend, and the reference for Redis.

For buckets inside the Redis ring the semantics match `RedisWindowStore` call for call,
including the order of operations (evict, then add deltas in bucket order), so both
backends return the same numbers for the same calls. One difference: Redis keeps a
fixed ring of buckets and reports a bucket further ahead of its clock than the ring
reaches (`future_seconds` plus slack) as late; this store has no ring and counts a
bucket however far ahead it starts (the engine refuses events too far in the future
before they reach a store).

Idempotency keys are kept per monitor in slices of the horizon, as in Redis: a key
lives in the slice of the moment it was recorded, and a slice is forgotten once the
next one has run out, so a key is remembered for at least the horizon and at most
twice that.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from driftline.core.history import HistorySpec
from driftline.core.idempotency import (
    DEFAULT_HORIZON_SECONDS,
    ClaimOutcome,
    counted,
    key_record_tail,
    recorded_outcome,
)
from driftline.core.performance import ID_BYTES, RECORD, RECORD_BYTES
from driftline.core.window import Buckets, Span, Vector, WindowSpec, WindowTotals
from driftline.stores.protocol import (
    TOMBSTONE,
    ApplyResult,
    Claim,
    Consumed,
    Keyed,
    KeyedRows,
    Lookup,
    Pending,
    Persistence,
    row_back,
    summed_per_bucket,
    validate_claims,
    validate_deltas,
    validate_record,
    validate_rows,
    validate_spec,
)

# Opaque fixed-size items: numpy hands them back as bytes (`tolist`), NUL bytes kept.
_ID = np.dtype(f"V{ID_BYTES}")
_RECORD_BYTES = np.dtype(f"V{RECORD_BYTES}")

DEFAULT_MAX_PENDING = 1_000_000
"""Pending predictions the embedded store keeps per monitor (about 200 MB at most)."""

DEFAULT_MAX_KEYS = 1_000_000
"""Idempotency keys the embedded store keeps per monitor (about 140 MB at most)."""


@dataclass(slots=True)
class _Window:
    buckets: dict[int, Vector] = field(default_factory=dict)
    # Min-heap of bucket starts: eviction looks at the oldest only, so a read stays
    # O(width) however many buckets the window holds.
    starts: list[int] = field(default_factory=list)
    totals: Vector | None = None


class MemoryWindowStore:
    """Sliding windows held in this process; state is lost on restart."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        idempotency_seconds: int = DEFAULT_HORIZON_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        """`idempotency_seconds`: how long a recorded key is remembered, at least.

        `max_pending`: pending predictions kept per monitor at most; more are not kept
        (`ApplyResult.unkept`) until older slices expire. `max_keys`: idempotency keys
        kept per monitor at most; past it the previous slice is forgotten early, and
        once the current one holds as many, keys are counted but not recorded
        (`ApplyResult.unrecorded`) until the next slice.
        """
        if idempotency_seconds < 1:
            raise ValueError(f"idempotency_seconds: must be >= 1, got {idempotency_seconds}")
        self._clock = clock
        self._windows: dict[str, dict[str, _Window]] = {}
        self._horizon = idempotency_seconds
        # monitor -> slice index -> key digest -> record (fingerprint, then the counts)
        self._keys: dict[str, dict[int, dict[bytes, bytes]]] = {}
        # monitor -> (layout id, horizon) -> slice index -> id digest -> pending record
        self._pending: dict[str, dict[tuple[str, int], dict[int, dict[bytes, bytes]]]] = {}
        self._max_pending = max_pending
        self._max_keys = max_keys

    @property
    def kind(self) -> str:
        """Backend name for health output."""
        return "memory"

    async def apply(
        self,
        spec: WindowSpec,
        deltas: Mapping[int, Vector],
        claims: Sequence[Claim] = (),
        pending: Pending | None = None,
        rows: KeyedRows | None = None,
        *,
        fresh: bool = True,
    ) -> ApplyResult:
        """Evict, add per-bucket deltas (late ones are reported, not added), return totals.

        The totals are always exact here (`fresh` is for shared stores). Claims and keyed
        rows are counted the same way unless their key was recorded within the horizon;
        pending records are kept unless late, held already, or past `max_pending`.
        """
        checked = validate_deltas(spec, deltas)
        keyed = validate_claims(spec, claims)
        buckets = validate_rows(spec, rows)
        # No await from here on: asyncio runs this as one atomic step.
        now = self._clock()
        result = self._apply(spec, checked, now, keyed, rows, buckets)
        if pending is None or not len(pending):
            return result
        unkept = self._keep(spec, pending, now)
        return dataclasses.replace(result, unkept=unkept)

    def _slices(
        self, spec: WindowSpec, horizon: int, now: float
    ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
        """The current and the previous slice of pending records (older ones forgotten)."""
        layouts = self._pending.setdefault(spec.monitor, {})
        slices = layouts.setdefault((spec.layout_id, horizon), {})
        current = math.floor(now) // horizon
        for old in [index for index in slices if index < current - 1]:
            del slices[old]
        return slices.setdefault(current, {}), slices.get(current - 1, {})

    def _keep(self, spec: WindowSpec, pending: Pending, now: float) -> int:
        """Keep pending records as Redis does (HSETNX into the current slice); those unkept."""
        last_out = math.floor(now - spec.window_seconds - spec.bucket_seconds)
        current, _ = self._slices(spec, pending.horizon_seconds, now)
        held = sum(
            len(records)
            for slices in self._pending[spec.monitor].values()
            for records in slices.values()
        )
        records = np.frombuffer(pending.records, dtype=RECORD)
        # Split into bytes by numpy in one pass each: slicing per record cost more.
        live = records["bucket"] > last_out
        ids = np.frombuffer(pending.ids, dtype=_ID)[live].tolist()
        kept = records.view(_RECORD_BYTES)[live].tolist()
        unkept = 0
        for key, record in zip(ids, kept, strict=True):
            if key in current:
                continue
            if held >= self._max_pending:
                unkept += 1
                continue
            current[key] = record
            held += 1
        return unkept

    async def lookup(self, spec: WindowSpec, horizon_seconds: int, ids: Sequence[bytes]) -> Lookup:
        """The pending records of `ids` (current slice first, then the previous one)."""
        validate_spec(spec)
        now = self._clock()
        current, previous = self._slices(spec, horizon_seconds, now)
        return Lookup([current.get(i, previous.get(i)) for i in ids], now)

    async def consume(
        self,
        spec: WindowSpec,
        horizon_seconds: int,
        deltas: Mapping[int, Vector],
        taken: Sequence[tuple[bytes, bytes]],
    ) -> Consumed:
        """Add labels' deltas and turn their records into tombstones, unless one is stale."""
        checked = validate_deltas(spec, deltas)
        now = self._clock()
        current, previous = self._slices(spec, horizon_seconds, now)
        stale = tuple(
            m
            for m, (key, record) in enumerate(taken)
            if (current[key] if key in current else previous.get(key)) != record
        )
        if stale:
            return Consumed(None, stale)
        for key, _ in taken:
            (current if key in current else previous)[key] = TOMBSTONE
        return Consumed(self._apply(spec, checked, now))

    def _apply(
        self,
        spec: WindowSpec,
        checked: list[tuple[int, Vector]],
        now: float,
        keyed: Sequence[Keyed] = (),
        rows: KeyedRows | None = None,
        row_buckets: Sequence[int] = (),
    ) -> ApplyResult:
        window = self._window(spec)
        self._evict(spec, window, now)
        last_out = math.floor(now - spec.window_seconds - spec.bucket_seconds)
        outcomes: list[ClaimOutcome] = []
        unrecorded = 0
        if keyed or rows is not None:
            added = len(checked)
            outcomes, unrecorded = self._claim(
                spec, now, last_out, checked, keyed, rows, row_buckets
            )
            if len(checked) > added:
                # Added in bucket order, as Redis adds them (sums are exact either way).
                checked.sort(key=lambda item: item[0])
                checked = [(b, v) for b, vs in summed_per_bucket(checked).items() for v in vs]
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
        return ApplyResult(
            totals=totals,
            late_buckets=frozenset(late),
            claims=tuple(outcomes),
            unrecorded=unrecorded,
        )

    def _claim(
        self,
        spec: WindowSpec,
        now: float,
        last_out: int,
        checked: list[tuple[int, Vector]],
        keyed: Sequence[Keyed],
        rows: KeyedRows | None,
        row_buckets: Sequence[int],
    ) -> tuple[list[ClaimOutcome], int]:
        """Check and record each claim's key, then each keyed row's: outcomes, and unrecorded.

        Unrecorded: the keys counted but not recorded, past `max_keys`. The deltas of the
        claims that count join `checked`. A keyed row's vector is in `checked` already:
        taken back out when its key is known (a second row of a key in the same call
        finds the first's record).
        """
        current = math.floor(now) // self._horizon
        slices = self._keys.setdefault(spec.monitor, {})
        for old in [index for index in slices if index < current - 1]:
            del slices[old]
        recorded = slices.setdefault(current, {})
        previous = slices.get(current - 1, {})
        arriving = len(keyed) + (0 if rows is None else len(rows.keys))
        if previous and len(recorded) + len(previous) + arriving > self._max_keys:
            # Memory is bounded: the oldest keys go first (a retry comes soon, if at all).
            del slices[current - 1]
            previous = {}
        room = self._max_keys - len(recorded)
        outcomes: list[ClaimOutcome] = []
        for (digest, fingerprint), buckets, _ in keyed:
            record = recorded.get(digest) or previous.get(digest)
            if record is not None:
                outcomes.append(recorded_outcome(record, fingerprint))
                continue
            accepted = late = 0
            for bucket, vector, events in buckets:
                if bucket <= last_out:
                    late += events
                else:
                    accepted += events
                if vector is not None:
                    checked.append((bucket, vector))
            if room > 0:
                # As Redis keeps it: bytes, which the garbage collector never walks.
                recorded[digest] = fingerprint + key_record_tail(accepted, late)
            room -= 1
            outcomes.append(counted(accepted, late))
        if rows is None:
            return outcomes, max(0, -room)
        # One event each, counted unless its key is known: the loop a flush of keyed
        # single events spends its time in, so its outcomes are made once.
        in_time, lagging = (
            (key_record_tail(1, 0), counted(1, 0)),
            (key_record_tail(0, 1), counted(0, 1)),
        )
        for i, ((digest, fingerprint), bucket) in enumerate(
            zip(rows.keys, row_buckets, strict=True)
        ):
            record = recorded.get(digest) or previous.get(digest)
            if record is not None:
                outcomes.append(recorded_outcome(record, fingerprint))
                checked.extend(row_back(spec, rows, i, bucket))
                continue
            tail, outcome = in_time if bucket > last_out else lagging
            if room > 0:
                recorded[digest] = fingerprint + tail
            room -= 1
            outcomes.append(outcome)
        return outcomes, max(0, -room)

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        validate_spec(spec)
        now = self._clock()
        window = self._window(spec)
        self._evict(spec, window, now)
        totals = self._totals(spec, window, now)
        self._forget_if_empty(spec, window)
        return totals

    async def read_many(self, specs: Sequence[WindowSpec]) -> list[WindowTotals]:
        """`read` of each window, in order."""
        return [await self.read(spec) for spec in specs]

    async def buckets(self, spec: WindowSpec, spans: Sequence[Span]) -> Buckets:
        """The per-bucket vectors of the live buckets in `spans`."""
        validate_spec(spec)
        now = self._clock()
        window = self._windows.get(spec.monitor, {}).get(spec.layout_id)
        held = window.buckets if window is not None else {}
        last_out = math.floor(now - spec.window_seconds - spec.bucket_seconds)
        found: dict[int, Vector] = {}
        for span in spans:
            after, upto = span.bounds(now, spec.bucket_seconds)
            for bucket, vector in held.items():
                if bucket > max(after, last_out) and (upto is None or bucket <= upto):
                    found[bucket] = vector.copy()
        return Buckets(found, now)

    async def drop(self, monitor: str) -> None:
        """Forget every layout of the monitor, its idempotency keys and pending predictions."""
        self._windows.pop(monitor, None)
        self._keys.pop(monitor, None)
        self._pending.pop(monitor, None)

    async def ping(self) -> bool:
        """Always true: the store is this process."""
        return True

    async def unreachable(self, specs: Sequence[WindowSpec]) -> list[str]:
        """None: the store is this process."""
        return []

    async def persistence(self) -> Persistence:
        """Nothing survives: the counts live in this process."""
        return Persistence("none")

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


class MemoryHistoryStore:
    """History rings held in this process, one preallocated buffer per monitor layout.

    The same semantics as the Redis ring (driftline.stores.redis_history): a record is
    written unless its slot holds that bucket or a later one.
    """

    def __init__(self) -> None:
        # monitor -> (layout_id, slots) -> ring of slots * record_bytes bytes
        self._rings: dict[str, dict[tuple[str, int], bytearray]] = {}

    def _ring(self, spec: HistorySpec) -> bytearray:
        rings = self._rings.setdefault(spec.monitor, {})
        ring = rings.get((spec.layout_id, spec.slots))
        if ring is None or len(ring) != spec.slots * spec.record_bytes:
            ring = rings[(spec.layout_id, spec.slots)] = bytearray(spec.slots * spec.record_bytes)
        return ring

    async def record(self, spec: HistorySpec, bucket: int, record: bytes) -> bool:
        """Write the bucket's record unless its slot holds this bucket or a later one."""
        validate_record(spec, bucket, record)
        ring = self._ring(spec)
        offset = spec.slot_of(bucket) * spec.record_bytes
        if int.from_bytes(ring[offset : offset + 8], "big", signed=True) >= bucket:
            return False
        ring[offset : offset + spec.record_bytes] = record
        return True

    async def read(self, spec: HistorySpec, first: int, last: int) -> list[bytes]:
        """The records of buckets `first`..`last`, in bucket order."""
        ring = self._rings.get(spec.monitor, {}).get((spec.layout_id, spec.slots))
        if ring is None:
            return []
        chunks = [bytes(ring[o : o + n]) for o, n in spec.ranges(first, last)]
        return spec.records_in(chunks, first, last)

    async def drop(self, monitor: str) -> None:
        """Forget the monitor's history, every layout."""
        self._rings.pop(monitor, None)
