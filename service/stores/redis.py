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

R is in the name because it depends on more than the layout (the window length and the
future allowance): replicas that disagree on it for a while (a rolling deploy, a monitor
edit reloaded at different moments) each keep a consistent window of their own, instead
of taking turns wiping a key whose ring does not match theirs. The old one expires.

The `{<monitor>}` hash tag puts all keys of a monitor in one Redis Cluster slot.
"""

from __future__ import annotations

import importlib.resources
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from driftline.core.limits import Limits
from driftline.core.window import Vector, WindowSpec, WindowTotals
from driftline.stores.protocol import (
    ApplyResult,
    StoreUnavailableError,
    validate_deltas,
    validate_spec,
)
from driftline.stores.redis_client import KEY_ROOT, RedisClient, connect

SCRIPT = (
    importlib.resources.files("driftline.stores").joinpath("window.lua").read_text(encoding="utf-8")
)

HEADER_FIELDS = 5  # window.lua's header: width, bucket, ring slots, evicted_through, newest
DEFAULT_FUTURE_SECONDS = Limits().max_future_seconds
_GLOB_SPECIAL = frozenset("*?[]\\")
# One nonzero delta element as window.lua unpacks it: struct format ">I4i8".
_PAIR = np.dtype([("index", ">u4"), ("value", ">i8")])
_TOTALS = np.dtype(">i8")


def grace_seconds(spec: WindowSpec) -> int:
    """Extra lifetime of every key past the moment its bucket slides out of the window."""
    return max(60, 2 * spec.bucket_seconds)


def monitor_pattern(monitor: str) -> str:
    """SCAN pattern matching every key of one monitor, all layouts."""
    escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in monitor)
    return f"{KEY_ROOT}:{{{escaped}}}:*"


def window_key(spec: WindowSpec, future_seconds: float) -> str:
    """The key holding one monitor layout's whole window, for a ring of this size."""
    ring = ring_slots(spec, future_seconds)
    return f"{KEY_ROOT}:{{{spec.monitor}}}:{spec.layout_id}:window:{ring}"


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


class RedisWindowStore:
    """Sliding windows in Redis, shared by every replica of the service."""

    def __init__(
        self,
        client: RedisClient,
        *,
        fence_seconds: float | None = None,
        future_seconds: float = DEFAULT_FUTURE_SECONDS,
    ) -> None:
        """Wrap a client; `fence_seconds` bounds how late Redis may still apply a flush.

        A flush that reaches Redis more than `fence_seconds` after it was sent (a paused
        or overloaded server) is refused by the script: by then the client's socket
        timeout is near and its requests will be answered 503 and retried. Set it below
        the socket timeout (from_url uses half of it); None disables the fence.

        `future_seconds` is how far ahead of the clock a bucket may start (pass the
        engine's `Limits.max_future_seconds`): the ring of every window holds that many
        seconds beyond the window, and a bucket further ahead is reported late. Replicas
        sharing a Redis should pass the same value: it sizes the ring, which names the
        key, so replicas with different values count into different keys.
        """
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisWindowStore needs a client with decode_responses=False")
        if not math.isfinite(future_seconds) or future_seconds < 0:
            raise ValueError(f"future_seconds: must be finite and >= 0, got {future_seconds}")
        self._client = client
        self._fence = fence_seconds
        self._future = future_seconds
        self._clock_offset: float | None = None  # Redis TIME minus local time, last seen
        # EVALSHA, reloading the script on NOSCRIPT (server restart, SCRIPT FLUSH, failover).
        self._script = client.register_script(SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float | None = None,
        cluster: bool = False,
        future_seconds: float = DEFAULT_FUTURE_SECONDS,
        **opts: Any,
    ) -> RedisWindowStore:
        """Connect to `url` (see `redis_client.connect`); `future_seconds`: see `__init__`."""
        client = connect(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            cluster=cluster,
            **opts,
        )
        return cls(client, fence_seconds=socket_timeout / 2, future_seconds=future_seconds)

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

    async def apply(self, spec: WindowSpec, deltas: Mapping[int, Vector]) -> ApplyResult:
        """Evict, add per-bucket deltas (late ones are reported, not added), return totals.

        Buckets more than `future_seconds` (plus up to one bucket of slack) ahead of the
        Redis clock do not fit the ring: they are reported late too.
        """
        checked = validate_deltas(spec, deltas)
        packed: list[int | bytes] = []
        for bucket, vector in checked:
            packed.append(bucket)
            packed.append(pack_deltas(vector))
        totals, late = await self._run(spec, packed)
        return ApplyResult(totals=totals, late_buckets=frozenset(late))

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        validate_spec(spec)
        totals, _ = await self._run(spec, [])
        return totals

    async def drop(self, monitor: str) -> None:
        """Delete every key of the monitor, all layouts."""
        try:
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=monitor_pattern(monitor)):
                batch.append(key)
                if len(batch) >= 500:
                    await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                await self._client.unlink(*batch)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis drop of {monitor!r} failed: {exc}") from exc

    async def ping(self) -> bool:
        """Whether Redis answers; never raises."""
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._client.aclose()

    async def _run(
        self, spec: WindowSpec, deltas: list[int | bytes]
    ) -> tuple[WindowTotals, list[int]]:
        sent = time.time()
        deadline = 0.0
        if deltas and self._fence is not None and self._clock_offset is not None:
            deadline = sent + self._clock_offset + self._fence
        args = [
            spec.window_seconds,
            spec.bucket_seconds,
            spec.width,
            grace_seconds(spec),
            ring_slots(spec, self._future),
            repr(deadline),
            *deltas,
        ]
        try:
            reply = await self._script(keys=[window_key(spec, self._future)], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis window script failed: {exc}") from exc
        try:
            totals, late = _parse_reply(spec, reply)
        except (ValueError, TypeError) as exc:
            raise StoreUnavailableError(f"unexpected window script reply: {exc}") from exc
        # Measured from the send time, the offset errs late by at most one round trip.
        self._clock_offset = totals.now - sent
        return totals, late


def _parse_reply(spec: WindowSpec, reply: Any) -> tuple[WindowTotals, list[int]]:
    raw, seconds, micros, late = reply
    vector: Vector
    if isinstance(raw, bytes):
        if raw:
            # The totals region of the key, as stored: exact whatever the magnitude.
            vector = np.frombuffer(raw, dtype=_TOTALS).astype(np.float64)
        else:
            vector = np.zeros(spec.width, dtype=np.float64)
    else:
        vector = np.array(raw, dtype=np.float64)
    if vector.shape != (spec.width,):
        raise ValueError(f"totals of shape {vector.shape}, expected ({spec.width},)")
    now = int(seconds) + int(micros) / 1_000_000
    totals = WindowTotals(vector=vector, start=now - spec.window_seconds, now=now)
    return totals, [int(b) for b in late]
