"""Sliding time windows of binned counts: the store interface shared by every backend.

A window holds, per monitor, a flat float vector of fixed width (the monitor's layout:
event count, bin counts, sums ...). The store treats the vector as opaque: it adds
deltas into time buckets, slides buckets out of the window and keeps running totals, so
reading a window costs O(width), never O(buckets) or O(events).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np

from driftline.core.history import HistorySpec
from driftline.core.idempotency import ClaimOutcome, RequestKey
from driftline.core.performance import ID_BYTES
from driftline.core.window import Buckets, Span, Vector, WindowSpec, WindowTotals


class StoreUnavailableError(Exception):
    """The window store could not be reached or failed; nothing of the call was applied."""


class Claim(NamedTuple):
    """Events submitted under a key: counted at most once per key within the horizon."""

    key: RequestKey
    deltas: Mapping[int, Vector]  # bucket start -> the summed vector of its events
    events: Mapping[int, int]  # bucket start -> how many events that vector holds


@dataclass(frozen=True, slots=True)
class KeyedRows:
    """Single events under keys, one event each, counted among an apply's deltas already.

    What a flush sends for its keyed single events instead of a Claim each (made for
    every event, a Claim cost more than the event): a store records every key and
    takes an event back out, with its own vector, only when its key is known within
    the horizon or repeats in the call.
    """

    keys: Sequence[RequestKey]
    buckets: Sequence[int]  # each event's bucket start
    vector: Callable[[int], Vector]  # the i-th event's own vector, made when asked


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Totals after applying deltas, the buckets too old to be added, and each claim's fate."""

    totals: WindowTotals
    late_buckets: frozenset[int]
    claims: tuple[ClaimOutcome, ...] = ()  # in the order of the claims, then the rows
    unkept: int = 0  # pending records not kept: the embedded store's bound was reached
    unrecorded: int = 0  # keys counted but not recorded: the embedded store's bound was reached


@dataclass(frozen=True, slots=True)
class Pending:
    """Predictions that wait for their labels (driftline.core.performance), keyed by id.

    `ids` and `records` hold ID_BYTES and RECORD_BYTES per prediction, one after another;
    a record's first 8 bytes are its bucket start (big-endian). Kept `horizon_seconds`
    to twice that, in slices of the horizon on the store's clock.
    """

    horizon_seconds: int
    ids: bytes
    records: bytes

    def __len__(self) -> int:
        """How many predictions."""
        return len(self.ids) // ID_BYTES


TOMBSTONE = b"\0"
"""What a consumed pending record becomes, until its slice expires: a second label for
it is a duplicate, not unmatched."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Pending records as found at the store's time `now`: the record, TOMBSTONE or None."""

    records: list[bytes | None]
    now: float


@dataclass(frozen=True, slots=True)
class Consumed:
    """What consuming labels did: applied (`result`), or nothing because some were stale.

    `stale` numbers the consumed records (0-based) that were no longer as read: taken
    by another label meanwhile. Then nothing was applied and `result` is None.
    """

    result: ApplyResult | None
    stale: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Persistence:
    """What survives a restart of the store.

    `mode`: `aof` (Redis append-only file), `none` (neither an AOF nor the process:
    counts live in memory only) or `unknown` (the server refuses to say, e.g. CONFIG is
    disabled on a managed Redis, or it could not be reached). `fsync`: Redis's
    `appendfsync` (always, everysec, no) with an AOF, else None.
    """

    mode: Literal["aof", "none", "unknown"]
    fsync: str | None = None


class WindowStore(Protocol):
    """A backend that keeps sliding windows; every method is atomic per monitor."""

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
        """Add per-bucket deltas (bucket start -> vector), evict, return the new totals.

        Each claim, and each of `rows`, is counted like the deltas unless its key was
        recorded within the idempotency horizon; either way its outcome comes back in
        `ApplyResult.claims` (the claims' first, then the rows').
        The keys are checked, counted and recorded in the same atomic step. `pending`
        records are kept (unless one is held for the id, or its bucket is late) in the
        same step. Without `fresh` (no verdict is made of these totals now) a shared
        store may leave other replicas' latest writes out of the totals for longer.
        """
        ...

    async def lookup(self, spec: WindowSpec, horizon_seconds: int, ids: Sequence[bytes]) -> Lookup:
        """The pending records of `ids` (current slice first, then the previous one)."""
        ...

    async def consume(
        self,
        spec: WindowSpec,
        horizon_seconds: int,
        deltas: Mapping[int, Vector],
        taken: Sequence[tuple[bytes, bytes]],
    ) -> Consumed:
        """Add labels' deltas and turn their records (id, record as read) into tombstones.

        Atomic: when a record is no longer as read, nothing happens (see Consumed).
        """
        ...

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        ...

    async def read_many(self, specs: Sequence[WindowSpec]) -> list[WindowTotals]:
        """`read` of each window, in order, at the cost of about one (the evaluation loop's)."""
        ...

    async def buckets(self, spec: WindowSpec, spans: Sequence[Span]) -> Buckets:
        """The per-bucket vectors of the live buckets in `spans` (on the store's clock).

        Reads only: a bucket that slid out of the kept span but is not yet evicted is
        left out by its start, not by eviction.
        """
        ...

    async def drop(self, monitor: str) -> None:
        """Delete everything the monitor's windows hold, under every layout."""
        ...

    async def ping(self) -> bool:
        """Whether the backend answers."""
        ...

    async def unreachable(self, specs: Sequence[WindowSpec]) -> list[str]:
        """The monitors of `specs` whose windows cannot be reached now (never raises).

        On Redis Cluster a monitor lives on the master owning its slot: one master down
        makes its monitors unreachable while the others answer.
        """
        ...

    async def persistence(self) -> Persistence:
        """What of the counts would survive a restart of the store (never raises)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    @property
    def kind(self) -> str:
        """Backend name for health output: `memory` or `redis`."""
        ...


def validate_spec(spec: WindowSpec) -> None:
    """Reject a spec no backend can hold; raises ValueError."""
    if not spec.monitor or "{" in spec.monitor or "}" in spec.monitor:
        # Braces would end the Redis Cluster hash tag early; rejected by every backend
        # so that a monitor name valid on one is valid on the other.
        raise ValueError(f"monitor: must be non-empty without braces, got {spec.monitor!r}")
    if not spec.layout_id:
        raise ValueError("layout_id: must be non-empty")
    if spec.width < 1 or spec.window_seconds < 1 or spec.bucket_seconds < 1:
        raise ValueError(
            f"width, window_seconds and bucket_seconds must be positive, got {spec.width}, "
            f"{spec.window_seconds}, {spec.bucket_seconds}"
        )


def validate_deltas(spec: WindowSpec, deltas: Mapping[int, Vector]) -> list[tuple[int, Vector]]:
    """Check deltas against the spec; return (bucket, float64 vector) in bucket order.

    Raises ValueError, before anything is applied, on a misaligned bucket, a vector of the
    wrong shape, a non-finite value (a NaN would poison the running totals until the
    window empties), or a value that is not an integer of magnitude below 2**53: windows
    hold integer counts (the Redis store in fixed-width integers), and float64 holds
    every integer below 2**53 exactly.
    """
    validate_spec(spec)
    out = _shaped(spec, deltas)
    _check_values(out)
    out.sort(key=lambda item: item[0])
    return out


def _shaped(spec: WindowSpec, deltas: Mapping[int, Vector]) -> list[tuple[int, Vector]]:
    """Each bucket aligned and its vector float64 of the spec's width (ValueError if not)."""
    out: list[tuple[int, Vector]] = []
    for raw_bucket, raw_vector in deltas.items():
        bucket = _aligned(spec, raw_bucket)
        vector = np.asarray(raw_vector, dtype=np.float64)
        if vector.shape != (spec.width,):
            raise ValueError(
                f"bucket {bucket}: vector shape {vector.shape}, expected ({spec.width},)"
            )
        out.append((bucket, vector))
    return out


def _check_values(vectors: Sequence[tuple[int, Vector]]) -> None:
    """Every value finite, integral and of magnitude below 2**53, checked in one pass.

    One pass over all the vectors stacked: a flush of single keyed events has a vector
    per event, and numpy's fixed cost per call would dominate per vector.
    """
    if not vectors:
        return
    matrix = np.stack([vector for _, vector in vectors])
    magnitude = np.abs(matrix)
    # Every integer of smaller magnitude is exact in float64 (and in Lua's numbers); the
    # comparison is false for NaN, so it also refuses non-finite values.
    if (magnitude < 2.0**53).all() and (np.trunc(matrix) == matrix).all():
        return
    for bucket, vector in vectors:
        if not np.isfinite(vector).all():
            raise ValueError(f"bucket {bucket}: vector holds a non-finite value")
        if not (np.trunc(vector) == vector).all():
            raise ValueError(f"bucket {bucket}: vector holds a non-integral value")
        if not (np.abs(vector) < 2.0**53).all():
            raise ValueError(f"bucket {bucket}: vector holds a value of magnitude >= 2**53")


ClaimBuckets = list[tuple[int, Vector | None, int]]
"""A checked submission's (bucket, vector, events): vector None for a keyed row (its
vector is among the apply's deltas already)."""


class Keyed(NamedTuple):
    """A keyed submission as a store counts it: a checked claim, or one of the keyed rows."""

    key: RequestKey
    buckets: ClaimBuckets
    # For events already among the apply's deltas: the deltas that take them back out.
    back: Callable[[], list[tuple[int, Vector]]] | None


def summed_per_bucket(deltas: Iterable[tuple[int, Vector]]) -> dict[int, list[Vector]]:
    """Each bucket's vectors summed into one; a sum reaching 2**53 keeps them apart (exact).

    A flush of keyed single events holds a vector per event (and taken-back ones):
    summed once per bucket, a store adds one vector per bucket.
    """
    grouped: dict[int, list[Vector]] = {}
    for bucket, vector in deltas:
        grouped.setdefault(bucket, []).append(vector)
    summed: dict[int, list[Vector]] = {}
    for bucket, vectors in grouped.items():
        total = vectors[0] if len(vectors) == 1 else np.sum(vectors, axis=0)
        summed[bucket] = [total] if (np.abs(total) < 2.0**53).all() else vectors
    return summed


def validate_claims(spec: WindowSpec, claims: Sequence[Claim]) -> list[Keyed]:
    """Check every claim like `validate_deltas`; raises ValueError before anything is applied.

    A claim is refused when it has no buckets, or its event counts do not match its
    buckets or are negative.
    """
    validate_spec(spec)
    out: list[Keyed] = []
    every: list[tuple[int, Vector]] = []
    for claim in claims:
        events = claim.events
        if not events:
            raise ValueError("claim: at least one bucket of deltas expected")
        if len(events) != len(claim.deltas) or any(b not in claim.deltas for b in events):
            raise ValueError("claim: events must name the same buckets as deltas")
        if min(events.values()) < 0:
            raise ValueError(f"claim buckets {sorted(events)}: negative event count")
        shaped = _shaped(spec, claim.deltas)
        every += shaped
        buckets: ClaimBuckets = [(b, v, int(events[b])) for b, v in shaped]
        if len(buckets) > 1:
            buckets.sort(key=lambda item: item[0])
        out.append(Keyed(claim.key, buckets, None))
    _check_values(every)
    return out


def validate_rows(spec: WindowSpec, rows: KeyedRows | None) -> list[int]:
    """Each keyed row's bucket start, checked (their vectors are not read: see `row_back`).

    Raises ValueError when a bucket is not aligned, or the rows' keys and buckets differ
    in number.
    """
    if rows is None:
        return []
    if len(rows.keys) != len(rows.buckets):
        raise ValueError(f"keyed rows: {len(rows.keys)} keys for {len(rows.buckets)} buckets")
    aligned = {b: _aligned(spec, b) for b in set(rows.buckets)}
    return [aligned[b] for b in rows.buckets]


def keyed_rows(spec: WindowSpec, rows: KeyedRows | None, buckets: list[int]) -> list[Keyed]:
    """The keyed rows as `Keyed` submissions, after the claims' (see `validate_rows`)."""
    if rows is None:
        return []
    return [
        Keyed(key, [(b, None, 1)], functools.partial(row_back, spec, rows, i, b))
        for i, (key, b) in enumerate(zip(rows.keys, buckets, strict=True))
    ]


def _aligned(spec: WindowSpec, raw_bucket: int) -> int:
    """A bucket start that is a multiple of the spec's bucket, else ValueError."""
    bucket = int(raw_bucket)
    if bucket != raw_bucket or bucket % spec.bucket_seconds:
        raise ValueError(
            f"bucket {raw_bucket!r}: not a multiple of bucket_seconds={spec.bucket_seconds}"
        )
    return bucket


def row_back(spec: WindowSpec, rows: KeyedRows, i: int, bucket: int) -> list[tuple[int, Vector]]:
    """The delta that takes keyed row `i` back out of the apply's deltas (its key was known)."""
    return [(b, -vector) for b, vector in validate_deltas(spec, {bucket: rows.vector(i)})]


class HistoryStore(Protocol):
    """A backend that keeps each monitor's ring of per-bucket verdict records.

    Records are opaque bytes of `spec.record_bytes` whose first 8 bytes are their bucket
    start (big-endian); see driftline.core.history.
    """

    async def record(self, spec: HistorySpec, bucket: int, record: bytes) -> bool:
        """Write the bucket's record unless its slot holds this bucket or a later one.

        True when written: of several replicas closing the same bucket, one writes.
        """
        ...

    async def read(self, spec: HistorySpec, first: int, last: int) -> list[bytes]:
        """The records of buckets `first`..`last` (bucket starts), in bucket order."""
        ...

    async def drop(self, monitor: str) -> None:
        """Delete the monitor's history, every layout."""
        ...


def validate_record(spec: HistorySpec, bucket: int, record: bytes) -> None:
    """Reject a record that does not fit the spec's ring; raises ValueError."""
    if len(record) != spec.record_bytes:
        raise ValueError(f"record: {len(record)} bytes, expected {spec.record_bytes}")
    if bucket % spec.bucket_seconds or int.from_bytes(record[:8], "big", signed=True) != bucket:
        raise ValueError(f"record: bucket {bucket} is not the record's own, aligned bucket")
