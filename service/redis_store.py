"""Redis window store: windows shared by every replica, kept by one Lua script.

All window logic lives in `window.lua` and runs atomically on the Redis server with the
server's clock, so replicas with skewed clocks agree on what has slid out. This module
is the only one that knows the key layout:

    driftline:{<monitor>}:<layout_id>:totals       msgpack array: running sum of the window
    driftline:{<monitor>}:<layout_id>:buckets      sorted set: member = score = bucket start
    driftline:{<monitor>}:<layout_id>:b:<start>    msgpack array: one bucket

The `{<monitor>}` hash tag puts all keys of a monitor in one Redis Cluster slot.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.window import (
    ApplyResult,
    StoreUnavailableError,
    Vector,
    WindowSpec,
    WindowTotals,
    validate_deltas,
    validate_spec,
)

KEY_ROOT = "driftline"
# A single server, or Redis Cluster: every script's keys share one hash tag, one slot.
RedisClient = Redis | RedisCluster
SCRIPT = importlib.resources.files("service").joinpath("window.lua").read_text(encoding="utf-8")

_ENCODER = msgspec.msgpack.Encoder()
_VECTOR = msgspec.msgpack.Decoder(list[float])
_GLOB_SPECIAL = frozenset("*?[]\\")


def grace_seconds(spec: WindowSpec) -> int:
    """Extra lifetime of every key past the moment its bucket slides out of the window."""
    return max(60, 2 * spec.bucket_seconds)


def monitor_pattern(monitor: str) -> str:
    """SCAN pattern matching every key of one monitor, all layouts."""
    escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in monitor)
    return f"{KEY_ROOT}:{{{escaped}}}:*"


def window_keys(spec: WindowSpec) -> tuple[str, str, str]:
    """Totals key, bucket index key and bucket key prefix of one monitor layout."""
    base = f"{KEY_ROOT}:{{{spec.monitor}}}:{spec.layout_id}:"
    return base + "totals", base + "buckets", base + "b:"


class RedisWindowStore:
    """Sliding windows in Redis, shared by every replica of the service."""

    def __init__(self, client: RedisClient, *, fence_seconds: float | None = None) -> None:
        """Wrap a client; `fence_seconds` bounds how late Redis may still apply a flush.

        A flush that reaches Redis more than `fence_seconds` after it was sent (a paused
        or overloaded server) is refused by the script: by then the client's socket
        timeout is near and its requests will be answered 503 and retried. Set it below
        the socket timeout (from_url uses half of it); None disables the fence.
        """
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisWindowStore needs a client with decode_responses=False")
        self._client = client
        self._fence = fence_seconds
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
        health_check_interval: float = 30.0,
        cluster: bool = False,
        **opts: Any,
    ) -> RedisWindowStore:
        """Connect to `url` (a Redis Cluster node's when `cluster`); `opts` go to from_url.

        Retries default to none: the script is not idempotent, and re-sending it after a
        timeout could add the same deltas twice. Callers retry whole flushes instead.
        """
        opts.setdefault("retry", Retry(NoBackoff(), 0))
        opts.update(
            socket_timeout=socket_timeout,
            socket_connect_timeout=(
                socket_timeout if socket_connect_timeout is None else socket_connect_timeout
            ),
            health_check_interval=health_check_interval,
            decode_responses=False,
        )
        client: RedisClient = (
            RedisCluster.from_url(url, **opts) if cluster else Redis.from_url(url, **opts)
        )
        return cls(client, fence_seconds=socket_timeout / 2)

    @property
    def client(self) -> RedisClient:
        """The connection pool, shared with the alert store."""
        return self._client

    @property
    def kind(self) -> str:
        """Backend name for health output."""
        return "redis"

    async def apply(self, spec: WindowSpec, deltas: Mapping[int, Vector]) -> ApplyResult:
        """Evict, add per-bucket deltas (late ones are reported, not added), return totals."""
        checked = validate_deltas(spec, deltas)
        flat: list[int | list[float]] = []
        for bucket, vector in checked:
            flat.append(bucket)
            flat.append(vector.tolist())
        payload = _ENCODER.encode(flat) if flat else b""
        totals, late = await self._run(spec, payload)
        return ApplyResult(totals=totals, late_buckets=frozenset(late))

    async def read(self, spec: WindowSpec) -> WindowTotals:
        """Evict buckets that slid out and return the window totals."""
        validate_spec(spec)
        totals, _ = await self._run(spec, b"")
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

    async def _run(self, spec: WindowSpec, payload: bytes) -> tuple[WindowTotals, list[int]]:
        totals_key, index_key, prefix = window_keys(spec)
        sent = time.time()
        deadline = 0.0
        if payload and self._fence is not None and self._clock_offset is not None:
            deadline = sent + self._clock_offset + self._fence
        args = (
            spec.window_seconds,
            spec.bucket_seconds,
            spec.width,
            grace_seconds(spec),
            payload,
            repr(deadline),
        )
        try:
            reply = await self._script(keys=[totals_key, index_key, prefix], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis window script failed: {exc}") from exc
        try:
            totals, late = _parse_reply(spec, reply)
        except (ValueError, TypeError, msgspec.DecodeError) as exc:
            raise StoreUnavailableError(f"unexpected window script reply: {exc}") from exc
        # Measured from the send time, the offset errs late by at most one round trip.
        self._clock_offset = totals.now - sent
        return totals, late


def _parse_reply(spec: WindowSpec, reply: Any) -> tuple[WindowTotals, list[int]]:
    blob, seconds, micros, late = reply
    if blob:
        vector = np.asarray(_VECTOR.decode(blob), dtype=np.float64)
        if vector.shape != (spec.width,):
            raise ValueError(f"totals of width {vector.shape}, expected {spec.width}")
    else:
        vector = np.zeros(spec.width, dtype=np.float64)
    now = int(seconds) + int(micros) / 1_000_000
    totals = WindowTotals(vector=vector, start=now - spec.window_seconds, now=now)
    return totals, [int(b) for b in late]
