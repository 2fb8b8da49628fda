"""Redis window store: windows shared by every replica, kept by one Lua script.

All window logic lives in `window.lua` and runs atomically on the Redis server with the
server's clock, so replicas with skewed clocks agree on what has slid out. This module
is the only one that knows the key layout: one string per monitor layout,

    driftline:{<monitor>}:<layout_id>:window:<R>

of signed 64-bit big-endian integers (BITFIELD `i64`): a header of HEADER_FIELDS (width,
bucket seconds, ring slots R, evicted_through, newest bucket), R ring ids (the bucket
start each slot holds, 0 = empty), the running totals (width V), then R ring slots of V
counts each; bucket b lives in slot (b / bucket_seconds) mod R. R covers the window plus
`future_seconds` ahead (`ring_slots`), so the key is `window_bytes(spec, future_seconds)`
long whatever the traffic: fixed-width integers never widen as counts grow.

Beside it, `<window key>:log`, a list of the deltas appended since the window was last
folded: under load most writes only append there, and a fold adds the log's deltas to
the window in one pass, summed per bucket and element (window.lua says why). Totals are
exact after a fold; between folds this replica answers with its last folded totals plus
the deltas it appended itself (`FOLD_SECONDS` old at most, `LAGGING_FOLD_SECONDS` for
writes whose verdict waits).

R is in the name because it depends on more than the layout (the window length and the
future allowance): replicas that disagree on it for a while (a rolling deploy, a monitor
edit reloaded at different moments) each keep a consistent window of their own, instead
of taking turns wiping a key whose ring does not match theirs. The old one expires.

Idempotency keys live beside the window, in hashes of one slice of the horizon each,

    driftline:{<monitor>}:idem:<S>:<slice index>

(S the horizon in seconds), checked and recorded by the same script call that counts.
Predictions waiting for their labels (docs/labels.md) live in slices of the label
horizon L the same way,

    driftline:{<monitor>}:<layout_id>:pending3:<L>:<slice index>

written and consumed by the same script call (window.lua), looked up by pending.lua.

The `{<monitor>}` hash tag puts all keys of a monitor in one Redis Cluster slot.

Every write carries a deadline on the Redis server's clock, set from a lower bound of
that clock (`ServerClock`) so that it has passed before this replica reports the write
as failed: a write Redis runs late (a paused or overloaded server) is refused rather
than counted after its requests were answered 503. docs/durability.md has the argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import math
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from driftline.core.idempotency import (
    DEFAULT_HORIZON_SECONDS,
    FINGERPRINT_BYTES,
    ClaimOutcome,
    ClaimStatus,
    counted,
    recorded_outcome,
)
from driftline.core.limits import Limits
from driftline.core.performance import ID_BYTES, RECORD_BYTES
from driftline.core.window import Buckets, Span, Vector, WindowSpec, WindowTotals
from driftline.stores.protocol import (
    ApplyResult,
    Claim,
    Consumed,
    Keyed,
    KeyedRows,
    Lookup,
    Pending,
    Persistence,
    StoreUnavailableError,
    keyed_rows,
    summed_per_bucket,
    validate_claims,
    validate_deltas,
    validate_rows,
    validate_spec,
)
from driftline.stores.redis_client import (
    KEY_ROOT,
    REDIS_FAILURES,
    RedisClient,
    StoredScript,
    connect,
)


def _lua(name: str) -> str:
    return importlib.resources.files("driftline.stores").joinpath(name).read_text(encoding="utf-8")


# The window's scripts share its header's and its log's functions (window_log.lua).
SCRIPT = _lua("window_log.lua") + _lua("window.lua")
APPEND_SCRIPT = _lua("window_log.lua") + _lua("append.lua")
LOOKUP_SCRIPT = _lua("pending.lua")
BUCKETS_SCRIPT = _lua("window_log.lua") + _lua("buckets.lua")
READ_SCRIPT = _lua("window_log.lua") + _lua("read.lua")

HEADER_FIELDS = 5  # window.lua's header: width, bucket, ring slots, evicted_through, newest
DEFAULT_FUTURE_SECONDS = Limits().max_future_seconds
_GLOB_SPECIAL = frozenset("*?[]\\")
# One nonzero delta element as window.lua unpacks it: struct format ">I4i8".
_PAIR = np.dtype([("index", ">u4"), ("value", ">i8")])
_TOTALS = np.dtype(">i8")
_SPAN = struct.Struct(">qI")  # a claim's bucket start and its events, as window.lua reads it
_SHAPE = struct.Struct(">4I")  # a window's W, B, V and R, as read.lua reads them
# The script's reply: REFUSED past the deadline, APPLIED, KNOWN when a claim's key was
# recorded before (nothing changed either way but APPLIED).
REFUSED, APPLIED, KNOWN, STALE, HANDED_ON = 0, 1, 2, 3, 4
# A window's log (window.lua) is folded when this replica's totals are older than this,
# and by the script itself at LOG_FOLD_AT entries: the log holds at most LOG_FOLD_AT
# entries of at most 16 + 12 * width bytes each. A fold costs three commands more than an
# append: once a second per monitor keeps a full-load flush near three commands, and
# matches how long verdicts are cached anyway (driftline.engine.verdicts).
FOLD_SECONDS = 1.0
# ... and when this old, for a write whose totals no verdict is made of now (verdicts are
# over their share of the replica: driftline.engine.verdicts). A busy fleet replica visits
# each monitor's window every few seconds, so FOLD_SECONDS alone folded at every write:
# ~1 ms of Redis per one-event flush of a 50-feature monitor, against ~0.15 ms to append.
# Other replicas' writes reach such a replica's verdicts this late at most.
LAGGING_FOLD_SECONDS = 10.0
LOG_FOLD_AT = 128
# A replica folds next when an append leaves the log this full: late enough that a
# replica flushing ~100 times a second folds about once a second (a fold costs ~10
# appends in Redis time), early enough that the script's own fold is rare.
LOG_FOLD_SOON = LOG_FOLD_AT * 3 // 4
# Window reads in flight at once on Redis Cluster (the evaluation loop reads every
# monitor's window each round): one at a time, 1,000 monitors took 1,000 round trips.
CLUSTER_READS = 16
# How far Redis's clock may run slower than this process's monotonic clock, relatively.
# NTP slews a clock by at most 5e-4; twice that leaves room.
CLOCK_DRIFT = 1e-3


def grace_seconds(spec: WindowSpec) -> int:
    """Extra lifetime of every key past the moment its bucket slides out of the window."""
    return max(60, 2 * spec.bucket_seconds)


def monitor_pattern(monitor: str, rest: str = "*") -> str:
    """SCAN pattern matching every key of one monitor (all layouts), or those named `rest`."""
    escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in monitor)
    return f"{KEY_ROOT}:{{{escaped}}}:{rest}"


async def delete_matching(client: RedisClient, pattern: str) -> None:
    """UNLINK every key SCAN finds for `pattern`, 500 at a time."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern):
        batch.append(key)
        if len(batch) >= 500:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)


def window_key(spec: WindowSpec, future_seconds: float) -> str:
    """The key holding one monitor layout's whole window, for a ring of this size."""
    ring = ring_slots(spec, future_seconds)
    return f"{KEY_ROOT}:{{{spec.monitor}}}:{spec.layout_id}:window:{ring}"


def log_key(spec: WindowSpec, future_seconds: float) -> str:
    """The key of the deltas appended to a window since its last fold (window.lua)."""
    return window_key(spec, future_seconds) + ":log"


def idempotency_prefix(monitor: str, horizon: int) -> str:
    """The name of a monitor's idempotency slices, but for the slice index window.lua adds."""
    return f"{KEY_ROOT}:{{{monitor}}}:idem:{horizon}:"


def pending_prefix(spec: WindowSpec, horizon: int) -> str:
    """The name of a layout's pending-prediction slices, but for the slice index."""
    return f"{KEY_ROOT}:{{{spec.monitor}}}:{spec.layout_id}:pending3:{horizon}:"


def ring_slots(spec: WindowSpec, future_seconds: float) -> int:
    """Ring slots R of a window: every live bucket, `future_seconds` ahead, and slack.

    A bucket is live while it overlaps the window: ceil(W / B) + 1 of them at most. The
    ring also holds buckets up to `future_seconds` ahead of the server clock, plus one
    more, so that a bucket just past that (a replica clock ahead of Redis by less than a
    bucket) still fits.
    """
    ahead = math.ceil(future_seconds / spec.bucket_seconds)
    return -(-spec.window_seconds // spec.bucket_seconds) + ahead + 2


def window_bytes(spec: WindowSpec, future_seconds: float) -> int:
    """Length of the window key's string: 8 bytes per field, fixed for the layout."""
    ring = ring_slots(spec, future_seconds)
    return 8 * (HEADER_FIELDS + ring + spec.width + ring * spec.width)


def pack_deltas(vector: Vector) -> bytes:
    """The nonzero elements of an integral vector as window.lua reads them."""
    index = np.flatnonzero(vector)
    packed = np.empty(index.size, dtype=_PAIR)
    packed["index"] = index
    packed["value"] = vector[index]
    return packed.tobytes()


class ServerClock:
    """A lower bound of each Redis server's clock, in terms of this process's monotonic one.

    A script reply carries the server's TIME t, read at some moment x between sending the
    call and receiving its reply at monotonic r, so at any later monotonic moment m the
    server's clock reads at least t + (1 - CLOCK_DRIFT) * (m - r). Measured at the
    receipt, not at the send: a slow reply makes the bound looser, never too high (the
    old estimate, TIME minus the send time, erred late by a whole stall). Of several
    replies the one with the highest bound is kept; the bound of a server is forgotten
    when a call to it fails (it may come back as another server, with another clock).
    """

    def __init__(self) -> None:
        self._best: dict[str | None, tuple[float, float]] = {}  # node -> (t, r)

    def learn(self, node: str | None, server_time: float, received: float) -> None:
        """Note a reply: the server's time it carried and the monotonic time it came in."""
        best = self._best.get(node)
        if (
            best is None
            or server_time - (1 - CLOCK_DRIFT) * received > best[0] - (1 - CLOCK_DRIFT) * best[1]
        ):
            self._best[node] = (server_time, received)

    def at_least(self, node: str | None, moment: float) -> float | None:
        """The least the server's clock reads at monotonic `moment`; None if unknown."""
        best = self._best.get(node)
        if best is None:
            return None
        server_time, received = best
        elapsed = moment - received
        # Before the reply came in, the server's clock may have read less than t.
        rate = 1 - CLOCK_DRIFT if elapsed >= 0 else 1 + CLOCK_DRIFT
        return server_time + rate * elapsed

    def knows(self, node: str | None) -> bool:
        """Whether a reply of this server has been seen since it was last forgotten."""
        return node in self._best

    def forget(self, node: str | None) -> None:
        """Drop what is known of a server's clock."""
        self._best.pop(node, None)


class RedisWindowStore:
    """Sliding windows in Redis, shared by every replica of the service."""

    def __init__(
        self,
        client: RedisClient,
        *,
        fence_seconds: float | None = None,
        future_seconds: float = DEFAULT_FUTURE_SECONDS,
        idempotency_seconds: int = DEFAULT_HORIZON_SECONDS,
        fold_seconds: float = FOLD_SECONDS,
    ) -> None:
        """Wrap a client; `fence_seconds` bounds how late Redis may still apply a write.

        A write sent at monotonic s carries a deadline no later than what Redis's clock
        reads when this process's clock reads s + `fence_seconds`, and the script
        refuses it from then on. A failed write is reported no earlier than that moment
        (a socket timeout above the fence is: from_url uses half the timeout), so a write
        reported failed is never applied afterwards. None disables the fence.

        `future_seconds` is how far ahead of the clock a bucket may start (pass the
        engine's `Limits.max_future_seconds`): the ring of every window holds that many
        seconds beyond the window, and a bucket further ahead is reported late. Replicas
        sharing a Redis should pass the same value: it sizes the ring, which names the
        key, so replicas with different values count into different keys.

        `idempotency_seconds`: a recorded key is remembered for at least this long (and
        at most twice as long). Replicas sharing a Redis should pass the same value: it
        names the slices the keys are kept in.

        `fold_seconds`: a write folds the window's log (and answers exact totals) when
        this replica's last fold of it is older than this; 0 folds on every write.
        """
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisWindowStore needs a client with decode_responses=False")
        if not math.isfinite(future_seconds) or future_seconds < 0:
            raise ValueError(f"future_seconds: must be finite and >= 0, got {future_seconds}")
        if idempotency_seconds < 1:
            raise ValueError(f"idempotency_seconds: must be >= 1, got {idempotency_seconds}")
        self._client = client
        self._fence = fence_seconds
        self._future = future_seconds
        self._horizon = idempotency_seconds
        self._fold_seconds = fold_seconds
        # Per window key: this replica's view of it since its last fold of it.
        self._views: dict[str, _View] = {}
        # Names this replica's log entries (window.lua skips parsing those it sums itself).
        self._writer = os.urandom(8)
        self._clock = ServerClock()
        self._learning: dict[str | None, asyncio.Future[Any]] = {}
        self._cluster = isinstance(client, RedisCluster)
        # EVALSHA, reloading the script on NOSCRIPT (server restart, SCRIPT FLUSH, failover).
        self._script = StoredScript(client, SCRIPT)
        self._append = StoredScript(client, APPEND_SCRIPT)
        self._lookup = StoredScript(client, LOOKUP_SCRIPT)
        self._buckets = StoredScript(client, BUCKETS_SCRIPT)
        self._read = StoredScript(client, READ_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float | None = None,
        cluster: bool = False,
        future_seconds: float = DEFAULT_FUTURE_SECONDS,
        idempotency_seconds: int = DEFAULT_HORIZON_SECONDS,
        fold_seconds: float = FOLD_SECONDS,
        **opts: Any,
    ) -> RedisWindowStore:
        """Connect to `url` (see `redis_client.connect`); the seconds: see `__init__`."""
        client = connect(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            cluster=cluster,
            **opts,
        )
        return cls(
            client,
            fence_seconds=socket_timeout / 2,
            future_seconds=future_seconds,
            idempotency_seconds=idempotency_seconds,
            fold_seconds=fold_seconds,
        )

    @property
    def client(self) -> RedisClient:
        """The connection pool, shared with the alert store."""
        return self._client

    @property
    def kind(self) -> str:
        """Backend name for health output."""
        return "redis"

    def window_key(self, spec: WindowSpec) -> str:
        """The key that holds the window of `spec` for this store."""
        return window_key(spec, self._future)

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

        The write folds the window's log when this replica's view of it is FOLD_SECONDS
        old, or LAGGING_FOLD_SECONDS without `fresh`. Buckets more than `future_seconds`
        (plus up to one bucket of slack) ahead of the Redis clock do not fit the ring:
        they are reported late too. Claims and keyed rows are counted the same way
        unless their key was recorded within the horizon. Pending records go in the same
        call (HSETNX into the current slice, in-time buckets only).

        Every keyed submission's deltas go in summed with the unkeyed ones (a keyed row's
        are among them already), betting that its key is new (a repeat is rare: a retry
        of a request that was counted); the script then only looks keys up and records
        them. When a key is known the script changes nothing and returns its record, and
        the flush goes again without that submission (a keyed row taken back out).
        """
        checked = validate_deltas(spec, deltas)
        keyed = validate_claims(spec, claims) + keyed_rows(spec, rows, validate_rows(spec, rows))
        labels = None
        if pending is not None and len(pending):
            labels = _Labels(pending.horizon_seconds, _joined(pending.ids, pending.records))
        outcomes: dict[int, ClaimOutcome] = {}
        # A key given twice in one call: the first goes to Redis, the others follow it.
        first: dict[bytes, int] = {}
        sending = [i for i, k in enumerate(keyed) if first.setdefault(k.key.digest, i) == i]
        recorded: dict[bytes, bytes] = {}  # digest -> fingerprint of its record

        def back(indices: Iterable[int]) -> list[tuple[int, Vector]]:
            # Included events not counted: they come back out of the deltas.
            backs = (keyed[i].back for i in indices)
            return [d for b in backs if b is not None for d in b()]

        leading = set(sending)
        checked += back(i for i in range(len(keyed)) if i not in leading)
        view = self._views.get(self.window_key(spec))
        fold = view is None or time.monotonic() - view.at >= (
            self._fold_seconds if fresh else max(self._fold_seconds, LAGGING_FOLD_SECONDS)
        )
        while True:
            sent = [keyed[i] for i in sending]
            packed, pairs, summed = _pack(checked, sent)
            reply, now = await self._run(spec, packed, pairs, len(sent), labels, fold=fold)
            if int(reply[0]) != KNOWN:
                break
            known = reply[3]
            for c, record in zip(known[::2], known[1::2], strict=True):
                i = sending[int(c) - 1]
                outcomes[i] = recorded_outcome(record, keyed[i].key.fingerprint)
                recorded[keyed[i].key.digest] = record[:FINGERPRINT_BYTES]
            taken = {sending[int(c) - 1] for c in known[::2]}
            sending = [i for i in sending if i not in taken]
            checked += back(taken)
        vector, late, counts, logged = _parse_reply(spec, reply, len(sending))
        totals = await self._totals(spec, now, vector, summed, late)
        if logged >= LOG_FOLD_SOON:  # folded next, with this replica's own sums
            self._views[self.window_key(spec)].at = -math.inf
        for i, (accepted, lagging) in zip(sending, counts, strict=True):
            outcomes[i] = counted(accepted, lagging)
            recorded[keyed[i].key.digest] = keyed[i].key.fingerprint
        for i, (key, _, _) in enumerate(keyed):
            if i not in outcomes:  # followed the first of its key
                lead = outcomes[first[key.digest]]
                same = recorded[key.digest] == key.fingerprint
                status = ClaimStatus.REPLAYED if same else ClaimStatus.CONFLICT
                outcomes[i] = ClaimOutcome(status, lead.accepted, lead.late)
        return ApplyResult(
            totals=totals,
            late_buckets=frozenset(late),
            claims=tuple(outcomes[i] for i in range(len(keyed))),
        )

    async def lookup(self, spec: WindowSpec, horizon_seconds: int, ids: Sequence[bytes]) -> Lookup:
        """The pending records of `ids` (current slice first, then the previous one)."""
        validate_spec(spec)
        args: list[bytes | str | int] = [
            pending_prefix(spec, horizon_seconds),
            horizon_seconds,
            b"".join(ids),
        ]
        try:
            reply = await self._lookup(keys=[self.window_key(spec)], args=args)
            now = int(reply[0]) + int(reply[1]) / 1_000_000
            found = [r if isinstance(r, bytes) else None for r in reply[2]]
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"redis pending lookup failed: {exc}") from exc
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreUnavailableError(f"unexpected pending lookup reply: {exc}") from exc
        if len(found) != len(ids):
            raise StoreUnavailableError(f"{len(found)} pending records for {len(ids)} ids")
        return Lookup(found, now)

    async def consume(
        self,
        spec: WindowSpec,
        horizon_seconds: int,
        deltas: Mapping[int, Vector],
        taken: Sequence[tuple[bytes, bytes]],
    ) -> Consumed:
        """Add labels' deltas and turn their records into tombstones, in one script call."""
        checked = validate_deltas(spec, deltas)
        packed, pairs, summed = _pack(checked, [])
        labels = _Labels(horizon_seconds, consumed=b"".join(k + r for k, r in taken))
        reply, now = await self._run(spec, packed, pairs, 0, labels)
        if int(reply[0]) == STALE:
            return Consumed(None, tuple(int(m) - 1 for m in reply[3]))
        vector, late, _, _ = _parse_reply(spec, reply, 0)
        totals = await self._totals(spec, now, vector, summed, late)
        return Consumed(ApplyResult(totals=totals, late_buckets=frozenset(late)))

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        validate_spec(spec)
        reply, now = await self._run(spec, [], 0, 0)
        return await self._totals(spec, now, _parse_reply(spec, reply, 0)[0])

    async def read_many(self, specs: Sequence[WindowSpec]) -> list[WindowTotals]:
        """Evict and read several windows in one pipelined round trip, in order.

        In Redis Cluster they are read as separate calls, CLUSTER_READS at a time: its
        pipelines split per node and do not load a script a node lacks.
        """
        if len(specs) < 2:
            return [await self.read(spec) for spec in specs]
        if self._cluster:
            reads = asyncio.Semaphore(CLUSTER_READS)

            async def read(spec: WindowSpec) -> WindowTotals:
                async with reads:
                    return await self.read(spec)

            return list(await asyncio.gather(*(read(spec) for spec in specs)))
        for spec in specs:
            validate_spec(spec)
        out = await self._read_stored(specs)
        due = [spec for spec, totals in zip(specs, out, strict=True) if totals is None]
        if not due:
            return [totals for totals in out if totals is not None]
        pipe: Any = self._client.pipeline(transaction=False)
        for spec in due:
            args = self._args(spec, 0.0, [], 0, 0, _Labels(1), fold=True)
            await self._script(keys=self._keys(spec), args=args, client=pipe)
        with self._failures("redis window script"):
            replies = await pipe.execute()
        received = time.monotonic()
        scripted = iter(replies)
        for i, spec in enumerate(specs):
            if out[i] is None:
                reply = next(scripted)
                _, server_time = _status(reply)
                self._clock.learn(None, server_time, received)
                out[i] = await self._totals(spec, server_time, _parse_reply(spec, reply, 0)[0])
        return [totals for totals in out if totals is not None]

    async def _read_stored(self, specs: Sequence[WindowSpec]) -> list[WindowTotals | None]:
        """The windows with nothing due read as stored, in one call; None where window.lua must.

        read.lua returns a window's stored totals while its log is empty and no bucket is
        due to slide out, which is every window of an idle monitor. Its two keys and 16
        bytes per window cost ~4x less to send and parse than window.lua's 20 arguments
        per window, for an evaluation loop that reads every window each round. It changes
        nothing, so this replica's view of a window (its base for appends) stays.
        """
        keys: list[str] = []
        shapes = bytearray()
        for spec in specs:
            keys += self._keys(spec)
            ring = ring_slots(spec, self._future)
            shapes += _SHAPE.pack(spec.window_seconds, spec.bucket_seconds, spec.width, ring)
        with self._failures("redis window read"):
            reply = await self._read(keys=keys, args=[bytes(shapes)])
        received = time.monotonic()
        try:
            now = int(reply[0]) + int(reply[1]) / 1_000_000
            found = reply[2:]
            if len(found) != len(specs):
                raise ValueError(f"{len(found)} windows read for {len(specs)}")
            # 0 (not bytes): window.lua reads that window.
            vectors = [
                _packed_totals(spec, raw) if isinstance(raw, bytes) else None
                for spec, raw in zip(specs, found, strict=True)
            ]
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreUnavailableError(f"unexpected window read reply: {exc}") from exc
        self._clock.learn(None, now, received)
        return [
            None
            if vector is None
            else WindowTotals(vector=vector, start=now - spec.window_seconds, now=now)
            for spec, vector in zip(specs, vectors, strict=True)
        ]

    async def buckets(self, spec: WindowSpec, spans: Sequence[Span]) -> Buckets:
        """The per-bucket vectors of the live buckets in `spans`, read by buckets.lua.

        A span without an upper bound (the current window) reaches as far ahead as the
        ring accepts buckets.
        """
        validate_spec(spec)
        await self.read(spec)  # folds the log into the ring first
        bucket = spec.bucket_seconds
        ahead = -(math.ceil(self._future / bucket) + 2) * bucket
        args: list[int] = [spec.width, bucket, ring_slots(spec, self._future)]
        for span in spans:
            args += [span.offset + span.length, span.offset if span.offset else ahead]
        try:
            reply = await self._buckets(keys=[self.window_key(spec)], args=args)
            now = int(reply[0]) + int(reply[1]) / 1_000_000
            found: dict[int, Vector] = {}
            for span, (ids, slots) in zip(spans, reply[2:], strict=True):
                starts = np.frombuffer(ids, dtype=_TOTALS)
                vectors = np.frombuffer(slots, dtype=_TOTALS).reshape(starts.size, spec.width)
                after, upto = span.bounds(now, bucket)
                for start, vector in zip(starts.tolist(), vectors, strict=True):
                    if start > after and (upto is None or start <= upto):
                        found[start] = vector.astype(np.float64)
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"redis bucket read failed: {exc}") from exc
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreUnavailableError(f"unexpected bucket read reply: {exc}") from exc
        return Buckets(found, now)

    async def drop(self, monitor: str) -> None:
        """Delete every key of the monitor, all layouts."""
        own = f"{KEY_ROOT}:{{{monitor}}}:"
        for key in [k for k in self._views if k.startswith(own)]:
            del self._views[key]
        try:
            await delete_matching(self._client, monitor_pattern(monitor))
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"redis drop of {monitor!r} failed: {exc}") from exc

    async def ping(self) -> bool:
        """Whether Redis answers; never raises."""
        try:
            return bool(await self._client.ping())
        except REDIS_FAILURES:
            return False

    async def unreachable(self, specs: Sequence[WindowSpec]) -> list[str]:
        """The monitors whose Redis node does not answer a PING (on one server: all or none)."""
        client = self._client
        if not isinstance(client, RedisCluster):
            return [] if not specs or await self.ping() else sorted({s.monitor for s in specs})
        by_node: dict[str, list[str]] = {}
        nodes: dict[str, Any] = {}
        for spec in specs:
            try:
                await client.initialize()
                node = client.get_node_from_key(self.window_key(spec))
            except REDIS_FAILURES:
                node = None
            if node is None:  # no slot map yet: the cluster never answered
                return sorted({s.monitor for s in specs})
            nodes[node.name] = node
            by_node.setdefault(node.name, []).append(spec.monitor)
        down: set[str] = set()
        for name, node in nodes.items():
            try:
                # Through the cluster client: a failure marks its slot map for refreshing,
                # so a promoted replica is found on the next call.
                await client.execute_command("PING", target_nodes=node)
            except REDIS_FAILURES:
                down.update(by_node[name])
        return sorted(down)

    async def persistence(self) -> Persistence:
        """Whether Redis keeps an append-only file (every master, on a cluster)."""
        client = self._client
        try:
            if isinstance(client, RedisCluster):
                replies = await client.execute_command(
                    "CONFIG", "GET", "append*", target_nodes=RedisCluster.PRIMARIES
                )
                configs = [_config(reply) for reply in replies.values()]
            else:
                reply = await client.execute_command("CONFIG", "GET", "append*")  # type: ignore[no-untyped-call]
                configs = [_config(reply)]
        except REDIS_FAILURES:
            # A managed Redis may disable CONFIG; or the server is down.
            return Persistence("unknown")
        if any(c.get("appendonly") != "yes" for c in configs):
            return Persistence("none")
        fsyncs = {c.get("appendfsync", "unknown") for c in configs}
        # The weakest setting of any master is the promise of all of them.
        for fsync in ("no", "everysec", "always"):
            if fsync in fsyncs:
                return Persistence("aof", fsync)
        return Persistence("aof", "unknown")

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._client.aclose()

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Redis's errors as StoreUnavailableError; a failed connection forgets the clock."""
        try:
            yield
        except ResponseError as exc:
            raise StoreUnavailableError(f"{what} failed: {exc}") from exc
        except REDIS_FAILURES as exc:
            self._clock.forget(None)
            raise StoreUnavailableError(f"{what} failed: {exc}") from exc

    def _keys(self, spec: WindowSpec) -> list[str]:
        """window.lua's KEYS: the window and its log."""
        return [window_key(spec, self._future), log_key(spec, self._future)]

    async def _totals(
        self,
        spec: WindowSpec,
        now: float,
        vector: Vector | None,
        summed: Mapping[int, Sequence[Vector]] | None = None,
        late: Sequence[int] = (),
    ) -> WindowTotals:
        """The totals a reply read (a fold), or the last fold's plus the deltas appended."""
        key = self.window_key(spec)
        if vector is None:
            view = self._views.get(key)
            if view is None:  # forgotten meanwhile (a failed call, a drop): read
                return await self.read(spec)
            view.appended_to(summed or {}, frozenset(late))
        else:
            out = int(now) - spec.window_seconds - spec.bucket_seconds
            view = _View(time.monotonic(), out - out % spec.bucket_seconds, vector)
            self._views[key] = view
        return WindowTotals(vector=view.totals, start=now - spec.window_seconds, now=now)

    async def _node(self, key: str) -> str | None:
        """The name of the cluster node a key lives on (None while the slot map is unknown)."""
        client = self._client
        assert isinstance(client, RedisCluster)
        try:
            await client.initialize()  # the slot map, once
            node = client.get_node_from_key(key)
        except REDIS_FAILURES:
            return None
        return None if node is None else str(node.name)

    async def _learn_clock(self, spec: WindowSpec, node: str | None) -> None:
        """Read once to learn a server's clock before writing to it (one read in flight)."""
        learning = self._learning.get(node)
        if learning is None:
            learning = asyncio.ensure_future(self._run(spec, [], 0, 0))
            self._learning[node] = learning

            def done(future: asyncio.Future[Any]) -> None:
                self._learning.pop(node, None)
                if not future.cancelled():
                    future.exception()  # retrieved: the callers that waited have it

            learning.add_done_callback(done)
        # Shielded: a caller cancelled meanwhile leaves the read to the others.
        await asyncio.shield(learning)

    async def _run(
        self,
        spec: WindowSpec,
        deltas: list[int | bytes],
        pairs: int,
        claims: int,
        labels: _Labels | None = None,
        *,
        fold: bool = True,
    ) -> tuple[Any, float]:
        """Run the script: its reply (applied, keys known, stale) and the server's time.

        Without `fold`, in-time deltas are appended to the window's log (totals not read)
        while no bucket has slid out since this replica last folded it.
        """
        key = window_key(spec, self._future)
        labels = labels or _Labels(1)
        node = await self._node(key) if self._cluster else None
        writes = bool(deltas)
        if writes and self._fence is not None and not self._clock.knows(node):
            await self._learn_clock(spec, node)
        sent = time.monotonic()
        deadline = 0.0
        if writes and self._fence is not None:
            bound = self._clock.at_least(node, sent + self._fence)
            if bound is None:  # learnt above, and forgotten since: a call to it failed
                raise StoreUnavailableError("redis failed a call just now: nothing was sent")
            deadline = bound
        args = self._args(spec, deadline, deltas, pairs, claims, labels, fold=fold)
        keys = self._keys(spec)
        # A plain append (most calls under load) goes to the small script first.
        plain = (
            not fold
            and key in self._views
            and pairs > 0
            and not (claims or labels.pending or labels.consumed)
        )
        try:
            reply = await (self._append if plain else self._script)(keys=keys, args=args)
            if plain and _status(reply)[0] == HANDED_ON:
                reply = await self._script(keys=keys, args=args)
        except ResponseError as exc:
            # The script ran and refused (or Redis refused it): nothing was written.
            raise StoreUnavailableError(f"redis window script failed: {exc}") from exc
        except REDIS_FAILURES as exc:
            self._clock.forget(node)
            # The log may hold an entry no view counts: the next fold parses it all.
            self._views.pop(key, None)
            if writes and self._fence is not None and not _never_sent(exc):
                # The call may still be in Redis's hands: answer no earlier than the
                # moment Redis's clock has certainly passed its deadline.
                await asyncio.sleep(max(0.0, sent + self._fence - time.monotonic()))
            raise StoreUnavailableError(f"redis window script failed: {exc}") from exc
        received = time.monotonic()
        status, server_time = _status(reply)
        if self._cluster:  # a MOVED reply may have taken the call elsewhere
            node = await self._node(key)
        self._clock.learn(node, server_time, received)
        if status == REFUSED:
            late = server_time - deadline
            raise StoreUnavailableError(
                f"redis ran the window script {late:.3f} s after its deadline "
                f"({received - sent:.3f} s after it was sent): deltas not applied"
            )
        return reply, server_time

    def _args(
        self,
        spec: WindowSpec,
        deadline: float,
        deltas: list[int | bytes],
        pairs: int,
        claims: int,
        labels: _Labels,
        *,
        fold: bool,
    ) -> list[bytes | str | int | float]:
        """window.lua's ARGV (its header says what each is).

        A fold carries this replica's sums of what it appended since its last fold; an
        append, the `last_out` of that fold.
        """
        view = self._views.get(window_key(spec, self._future))
        known, sums = (-1, []) if view is None or not fold else view.sums()
        append_while = 0 if view is None or fold else view.last_out
        return [
            spec.window_seconds,
            spec.bucket_seconds,
            spec.width,
            grace_seconds(spec),
            ring_slots(spec, self._future),
            repr(deadline),
            self._horizon,
            idempotency_prefix(spec.monitor, self._horizon),
            pairs,
            claims,
            pending_prefix(spec, labels.horizon),
            labels.horizon,
            len(labels.pending) // PENDING_PAIR_BYTES,
            len(labels.consumed) // PENDING_PAIR_BYTES,
            append_while,
            LOG_FOLD_AT,
            self._writer,
            known,
            len(sums) // 2,
            *deltas[: 2 * pairs],
            *sums,
            *deltas[2 * pairs :],
            *(part for part in (labels.pending, labels.consumed) if part),
        ]


def _status(reply: Any) -> tuple[int, float]:
    """A window script reply's status and the server time it carries; else unavailable."""
    try:
        status, server_time = int(reply[0]), int(reply[1]) + int(reply[2]) / 1_000_000
    except (ValueError, TypeError, IndexError) as exc:
        raise StoreUnavailableError(f"unexpected window script reply: {exc}") from exc
    if status not in (REFUSED, APPLIED, KNOWN, STALE, HANDED_ON):
        raise StoreUnavailableError(f"unexpected window script reply status {status}")
    return status, server_time


PENDING_PAIR_BYTES = ID_BYTES + RECORD_BYTES  # an id digest and its record, as window.lua reads


@dataclass(slots=True)
class _View:
    """A replica's view of one window since it last folded it.

    The totals of that fold plus every delta the replica appended since, and those deltas
    per bucket with the number of log entries they went in as: window.lua takes these
    sums instead of parsing the replica's own entries when the count still matches.
    """

    at: float  # monotonic time of the fold
    last_out: int  # the newest bucket that had slid out then (window.lua's last_out)
    totals: Vector
    own: dict[int, Vector] = field(default_factory=dict)
    appended: int = 0  # -1 once a sum may not be exact (it reached 2**53)

    def appended_to(self, summed: Mapping[int, Sequence[Vector]], late: frozenset[int]) -> None:
        """Add what an append carried (its late buckets were not appended)."""
        for bucket, vectors in summed.items():
            if bucket in late:
                continue
            for delta in vectors:
                self.totals = self.totals + delta
                if self.appended < 0 or not delta.any():
                    continue  # an empty delta is not appended
                own = self.own.get(bucket)
                own = delta.copy() if own is None else own + delta
                self.own[bucket] = own
                self.appended = self.appended + 1 if (np.abs(own) < 2.0**53).all() else -1

    def sums(self) -> tuple[int, list[int | bytes]]:
        """window.lua's K and its pairs of sums (none when unknown)."""
        if self.appended < 0:
            return -1, []
        pairs: list[int | bytes] = []
        for bucket in sorted(self.own):
            pairs += [bucket, pack_deltas(self.own[bucket])]
        return self.appended, pairs


@dataclass(frozen=True, slots=True)
class _Labels:
    """window.lua's pending-prediction arguments: an id and its record per prediction."""

    horizon: int
    pending: bytes = b""
    consumed: bytes = b""


def _joined(ids: bytes, records: bytes) -> bytes:
    """Each id digest followed by its record, as window.lua reads them."""
    keys = np.frombuffer(ids, dtype=f"V{ID_BYTES}")
    values = np.frombuffer(records, dtype=f"V{RECORD_BYTES}")
    both = np.empty(len(keys), dtype=[("id", keys.dtype), ("record", values.dtype)])
    both["id"], both["record"] = keys, values
    return both.tobytes()


def _never_sent(exc: BaseException) -> bool:
    """Whether a failure happened before the command left: the connection was refused."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _config(reply: Any) -> dict[str, str]:
    """CONFIG GET's reply (a flat list, or a map over RESP3) as a dict of strings."""
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
    return {_text(k): _text(v) for k, v in items}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pack(
    checked: list[tuple[int, Vector]],
    claims: list[Keyed],
) -> tuple[list[int | bytes], int, dict[int, list[Vector]]]:
    """window.lua's trailing arguments, their delta pairs' count, the deltas per bucket."""
    own = [(b, v) for _, buckets, _ in claims for b, v, _ in buckets if v is not None]
    # A keyed row's vector is among `checked`. Sums stay below 2**53 (exact in
    # the script's doubles); past it, a bucket goes out in one pair per vector.
    summed = summed_per_bucket([*checked, *own])
    packed: list[int | bytes] = []
    for bucket in sorted(summed):
        for vector in summed[bucket]:
            packed.append(bucket)
            packed.append(pack_deltas(vector))
    pairs = len(packed) // 2
    if claims:
        heads, spans = bytearray(), bytearray()
        counts = np.array([len(buckets) for _, buckets, _ in claims], dtype=">u4")
        for key, buckets, _ in claims:
            if any(events >= 2**32 for _, _, events in buckets):
                raise ValueError("claim: fewer than 2**32 events per bucket expected")
            heads += key.digest + key.fingerprint
            for bucket, _, events in buckets:
                spans += _SPAN.pack(bucket, events)
        packed.extend((bytes(heads), counts.tobytes(), bytes(spans)))
    return packed, pairs, summed


def _packed_totals(spec: WindowSpec, raw: bytes) -> Vector:
    """A window's totals as the scripts answer them: its totals region, or "" when empty."""
    if not raw:
        return np.zeros(spec.width, dtype=np.float64)
    # The totals region of the key, as stored: exact whatever the magnitude.
    vector = np.frombuffer(raw, dtype=_TOTALS).astype(np.float64)
    if vector.shape != (spec.width,):
        raise ValueError(f"totals of shape {vector.shape}, expected ({spec.width},)")
    return vector


def _parse_reply(
    spec: WindowSpec, reply: Any, claims: int
) -> tuple[Vector | None, list[int], list[tuple[int, int]], int]:
    """An applied reply's totals (None: appended), late buckets, claim counts, log length."""
    try:
        _, _, _, raw, late, flat, logged = reply
        vector: Vector | None
        if isinstance(raw, bytes):
            vector = _packed_totals(spec, raw)
        elif raw == -1:
            vector = None
        else:
            raise ValueError(f"totals {raw!r}, expected packed totals or -1")
        if len(flat) != 2 * claims:
            raise ValueError(f"{len(flat) // 2} claim outcomes for {claims} claims")
        counts = [(int(a), int(b)) for a, b in zip(flat[::2], flat[1::2], strict=True)]
        return vector, [int(b) for b in late], counts, int(logged)
    except (ValueError, TypeError, IndexError) as exc:
        raise StoreUnavailableError(f"unexpected window script reply: {exc}") from exc
