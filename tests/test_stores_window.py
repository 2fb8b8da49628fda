"""One suite for every WindowStore backend: the memory store and Redis behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import redis.asyncio
from redis_process import RedisProcess
from support import make_monitor
from support import wait_until as poll

import driftline.stores.redis as redis_store_module
from driftline.core.idempotency import ClaimOutcome, ClaimStatus, request_key
from driftline.core.performance import RECORD, id_digest
from driftline.core.window import Span, Vector, WindowSpec
from driftline.stores.memory import MemoryWindowStore
from driftline.stores.protocol import (
    ApplyResult,
    Claim,
    KeyedRows,
    Pending,
    StoreUnavailableError,
    WindowStore,
)
from driftline.stores.redis import (
    APPEND_SCRIPT,
    DEFAULT_FUTURE_SECONDS,
    HEADER_FIELDS,
    LOG_FOLD_AT,
    LOG_FOLD_SOON,
    SCRIPT,
    RedisWindowStore,
    grace_seconds,
    log_key,
    monitor_pattern,
    pack_deltas,
    ring_slots,
    window_bytes,
    window_key,
)


class SettableClock(Protocol):
    """What the tests use of conftest's FakeClock (the `fake_clock` fixture)."""

    now: float

    def set(self, now: float) -> None: ...


PROBE = WindowSpec("probe-clock", "none", 1, 60, 60)


def make_spec(
    monitor: str = "m1",
    layout: str = "L1",
    width: int = 4,
    window: int = 3600,
    bucket: int = 60,
) -> WindowSpec:
    return WindowSpec(monitor, layout, width, window, bucket)


def vec(*values: float) -> Vector:
    return np.array(values, dtype=np.float64)


def counts(rng: np.random.Generator, width: int) -> Vector:
    # Integers, as every slot of a layout is (counts, fixed-point sums).
    return rng.integers(0, 1000, width).astype(np.float64)


def big(rng: np.random.Generator, width: int) -> Vector:
    """Signed integers up to 2**50: fixed-point sums, exact in float64 when summed."""
    return rng.integers(-(2**50), 2**50, width).astype(np.float64)


async def store_now(store: WindowStore) -> float:
    """The store's own clock (the Redis server's, or the fake clock)."""
    return (await store.read(PROBE)).now


async def wait_until(store: WindowStore, clock: SettableClock, t: float) -> None:
    """Move the store's clock to `t`: set the fake clock, or poll Redis's until it passes."""
    if isinstance(store, MemoryWindowStore):
        clock.set(max(clock.now, t))
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, t - await store_now(store)) + 3.0
    while await store_now(store) < t:
        assert loop.time() < deadline, f"redis clock never reached {t}"
        await asyncio.sleep(0.02)


async def monitor_keys(client: redis.asyncio.Redis, monitor: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=monitor_pattern(monitor))]


async def server_keys(request: pytest.FixtureRequest, monitor: str) -> list[bytes]:
    """Every key the monitor holds on the test's redis-server."""
    client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        return await monitor_keys(client, monitor)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which backend a test that builds its own stores runs on."""
    kind: str = request.param
    return kind


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisWindowStore]:
    """A Redis window store with the default settings, closed after the test."""
    store = RedisWindowStore.from_url(redis_url)
    yield store
    await store.close()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def peer_store(
    window_store: WindowStore, request: pytest.FixtureRequest
) -> AsyncIterator[WindowStore]:
    """A second client on the same backend (the same object for the in-process store)."""
    if isinstance(window_store, RedisWindowStore):
        peer = RedisWindowStore.from_url(request.getfixturevalue("redis_url"))
        yield peer
        await peer.close()
    else:
        yield window_store


# --- both backends -------------------------------------------------------------------


async def test_kind_and_ping(window_store: WindowStore) -> None:
    assert window_store.kind == (
        "redis" if isinstance(window_store, RedisWindowStore) else "memory"
    )
    assert await window_store.ping() is True


async def test_empty_window_reads_zeros(window_store: WindowStore) -> None:
    spec = make_spec(width=5)
    totals = await window_store.read(spec)
    assert totals.vector.dtype == np.float64
    assert np.array_equal(totals.vector, np.zeros(5))
    assert totals.start == totals.now - spec.window_seconds


async def test_add_and_read_back_exact_sums(window_store: WindowStore) -> None:
    rng = np.random.default_rng(1)
    spec = make_spec(width=6)
    now = await store_now(window_store)
    bucket = spec.bucket_of(now)
    sent = [counts(rng, spec.width) for _ in range(10)]
    for delta in sent:
        result = await window_store.apply(spec, {bucket: delta})
        assert result.late_buckets == frozenset()
    expected = np.sum(sent, axis=0)
    assert np.array_equal(result.totals.vector, expected)
    totals = await window_store.read(spec)
    assert np.array_equal(totals.vector, expected)
    assert totals.now >= now
    assert totals.start == totals.now - spec.window_seconds


async def test_several_buckets(window_store: WindowStore) -> None:
    rng = np.random.default_rng(2)
    spec = make_spec(width=3)
    current = spec.bucket_of(await store_now(window_store))
    buckets = [current - k * spec.bucket_seconds for k in range(6)]
    sent: list[Vector] = []
    for _ in range(4):
        deltas = {b: counts(rng, spec.width) for b in buckets}
        sent.extend(deltas.values())
        await window_store.apply(spec, deltas)
    totals = await window_store.read(spec)
    assert np.array_equal(totals.vector, np.sum(sent, axis=0))


async def test_large_signed_integer_sums_are_exact(window_store: WindowStore) -> None:
    rng = np.random.default_rng(3)
    spec = make_spec(width=8)
    current = spec.bucket_of(await store_now(window_store))
    sent = []
    for i in range(30):
        delta = big(rng, spec.width)
        sent.append(delta)
        await window_store.apply(spec, {current - (i % 3) * spec.bucket_seconds: delta})
    totals = await window_store.read(spec)
    expected = np.sum(np.array(sent, dtype=np.int64), axis=0)  # exact integer sums
    assert np.array_equal(totals.vector, expected.astype(np.float64))


async def test_sums_past_2_53_across_buckets_of_one_flush(
    window_store: WindowStore, request: pytest.FixtureRequest
) -> None:
    # Each delta is below 2**53, their sum is not: float64 rounds what both backends
    # return, but Redis must store the exact sum (not a sum of the buckets' deltas taken
    # in Lua doubles), or the rounding would stay in the totals after evictions.
    spec = make_spec(width=2)
    current = spec.bucket_of(await store_now(window_store))
    # Both buckets exist first, so that the big flush takes Redis's common path.
    await window_store.apply(spec, {current - 60: vec(0, 1), current: vec(0, 1)})
    deltas = {current - 60: vec(2**52 + 1, 1), current: vec(2**52 + 2, 2)}
    result = await window_store.apply(spec, deltas)
    assert result.totals.vector.tolist() == [float(2**53 + 3), 5]
    if isinstance(window_store, RedisWindowStore):
        key = await stored_key(request, spec)
        assert key.totals.tolist() == [2**53 + 3, 5]
        assert_consistent(key)


async def test_layouts_isolated(window_store: WindowStore) -> None:
    a = make_spec(layout="layout-a", width=3)
    b = make_spec(layout="layout-b", width=5)
    bucket = a.bucket_of(await store_now(window_store))
    await window_store.apply(a, {bucket: vec(1, 2, 3)})
    await window_store.apply(b, {bucket: vec(10, 20, 30, 40, 50)})
    await window_store.apply(a, {bucket: vec(1, 1, 1)})
    assert np.array_equal((await window_store.read(a)).vector, vec(2, 3, 4))
    assert np.array_equal((await window_store.read(b)).vector, vec(10, 20, 30, 40, 50))


async def test_monitors_isolated(window_store: WindowStore) -> None:
    one, two = make_spec(monitor="one", width=2), make_spec(monitor="two", width=2)
    bucket = one.bucket_of(await store_now(window_store))
    await window_store.apply(one, {bucket: vec(1, 2)})
    await window_store.apply(two, {bucket: vec(7, 9)})
    assert np.array_equal((await window_store.read(one)).vector, vec(1, 2))
    assert np.array_equal((await window_store.read(two)).vector, vec(7, 9))


async def test_drop_removes_every_layout_of_the_monitor(
    window_store: WindowStore, request: pytest.FixtureRequest
) -> None:
    # "m*" is also a SCAN glob: dropping it must not touch "mx".
    a1 = make_spec(monitor="m*", layout="a", width=2)
    a2 = make_spec(monitor="m*", layout="b", width=3)
    other = make_spec(monitor="mx", layout="a", width=2)
    current = a1.bucket_of(await store_now(window_store))
    for spec in (a1, a2, other):
        await window_store.apply(
            spec, {current: np.ones(spec.width), current - 60: np.ones(spec.width)}
        )

    await window_store.drop(a1.monitor)

    assert np.array_equal((await window_store.read(a1)).vector, np.zeros(2))
    assert np.array_equal((await window_store.read(a2)).vector, np.zeros(3))
    assert np.array_equal((await window_store.read(other)).vector, vec(2, 2))
    if isinstance(window_store, RedisWindowStore):
        assert await server_keys(request, "m*") == []
        assert len(await server_keys(request, "mx")) == 1  # one key per layout


async def test_drop_of_unknown_monitor_is_a_no_op(
    window_store: WindowStore, request: pytest.FixtureRequest
) -> None:
    kept = make_spec(monitor="kept", width=2)
    bucket = kept.bucket_of(await store_now(window_store))
    await window_store.apply(kept, {bucket: vec(3, 4)})

    await window_store.drop("never-seen")

    if isinstance(window_store, RedisWindowStore):
        assert await server_keys(request, "never-seen") == []
        assert len(await server_keys(request, "kept")) == 1
    assert np.array_equal((await window_store.read(kept)).vector, vec(3, 4))
    never_seen = make_spec(monitor="never-seen", width=2)
    assert np.array_equal((await window_store.read(never_seen)).vector, vec(0, 0))


async def test_late_deltas_reported_and_not_added(window_store: WindowStore) -> None:
    spec = make_spec(width=2)
    now = await store_now(window_store)
    current = spec.bucket_of(now)
    # Slid out: b + B <= now - W.
    late = spec.bucket_of(now - spec.window_seconds) - spec.bucket_seconds
    oldest_live = current - spec.window_seconds + spec.bucket_seconds
    result = await window_store.apply(
        spec, {late: vec(100, 100), current: vec(1, 2), oldest_live: vec(3, 4)}
    )
    assert result.late_buckets == frozenset({late})
    assert np.array_equal(result.totals.vector, vec(4, 6))
    assert np.array_equal((await window_store.read(spec)).vector, vec(4, 6))

    only_late = await window_store.apply(spec, {late - spec.bucket_seconds: vec(5, 5)})
    assert only_late.late_buckets == frozenset({late - spec.bucket_seconds})
    assert np.array_equal(only_late.totals.vector, vec(4, 6))


async def test_future_buckets_count(window_store: WindowStore) -> None:
    spec = make_spec(width=2)
    now = await store_now(window_store)
    current = spec.bucket_of(now)
    furthest = spec.bucket_of(now + 300)  # the engine admits events up to 300 s ahead
    deltas = {current: vec(5, 6), current + 60: vec(3, 4), furthest: vec(1, 2)}
    result = await window_store.apply(spec, deltas)
    assert result.late_buckets == frozenset()
    assert result.totals.vector.tolist() == [9, 12]
    result = await window_store.apply(spec, {furthest: vec(1, 1)})
    assert result.totals.vector.tolist() == [10, 13]
    assert (await window_store.read(spec)).vector.tolist() == [10, 13]


async def test_eviction_subtracts_exactly_and_empty_window_is_exact_zeros(
    window_store: WindowStore, fake_clock: SettableClock, request: pytest.FixtureRequest
) -> None:
    spec = make_spec(width=3, window=2, bucket=1)
    now = await store_now(window_store)
    current = spec.bucket_of(now)
    old, new = current - 1, current  # both live: b + B > now - W
    # Slot 0 counts events; the others are fixed-point sums, signed and large.
    old_deltas = [vec(3, 2**51 + 1, -7), vec(2, 2**51 - 3, 2**40)]
    new_deltas = [vec(5, -(2**50), 9), vec(1, 17, -(2**45))]
    for d_old, d_new in zip(old_deltas, new_deltas, strict=True):
        result = await window_store.apply(spec, {old: d_old, new: d_new})
        assert result.late_buckets == frozenset()
    both = np.sum(old_deltas + new_deltas, axis=0)
    assert np.array_equal(result.totals.vector, both)
    assert result.totals.vector[0] == 11

    if isinstance(window_store, MemoryWindowStore):
        # The boundary itself: `old` is live until now - W reaches old + B.
        fake_clock.set(old + spec.bucket_seconds + spec.window_seconds - 1e-3)
        assert (await window_store.read(spec)).vector[0] == 11

    await wait_until(window_store, fake_clock, old + spec.bucket_seconds + spec.window_seconds)
    partial = await window_store.read(spec)
    assert partial.vector[0] == 6
    assert np.array_equal(partial.vector, np.sum(new_deltas, axis=0))
    late = await window_store.apply(spec, {old: vec(9, 9, 9)})
    assert late.late_buckets == frozenset({old})
    assert late.totals.vector[0] == 6

    await wait_until(window_store, fake_clock, new + spec.bucket_seconds + spec.window_seconds)
    empty = await window_store.read(spec)
    assert np.array_equal(empty.vector, np.zeros(3))
    assert not np.signbit(empty.vector).any()
    if isinstance(window_store, RedisWindowStore):
        assert await server_keys(request, spec.monitor) == []


async def test_concurrent_applies_lose_nothing(
    window_store: WindowStore, peer_store: WindowStore
) -> None:
    rng = np.random.default_rng(4)
    spec = make_spec(width=16)
    current = spec.bucket_of(await store_now(window_store))
    buckets = [current - k * spec.bucket_seconds for k in range(3)]
    calls: list[tuple[WindowStore, dict[int, Vector]]] = []
    for i in range(200):
        chosen = random.Random(i).sample(buckets, k=1 + i % 3)
        calls.append(
            (
                window_store if i % 2 else peer_store,
                {b: counts(rng, spec.width) for b in chosen},
            )
        )
    outcomes = await asyncio.gather(
        *(store.apply(spec, deltas) for store, deltas in calls), return_exceptions=True
    )
    # Two hundred calls at once open as many Redis connections: on a busy host a write
    # may reach Redis after its deadline (fence) and be refused. Refused, it counts
    # nothing; every other counts exactly once.
    refused = [r for r in outcomes if isinstance(r, BaseException)]
    assert all(isinstance(r, StoreUnavailableError) and "deadline" in str(r) for r in refused)
    assert len(refused) < len(calls) // 2, refused[:3]
    applied = [(c, r) for c, r in zip(calls, outcomes, strict=True) if isinstance(r, ApplyResult)]
    assert all(not r.late_buckets for _, r in applied)
    expected = np.sum([v for (_, deltas), _ in applied for v in deltas.values()], axis=0)
    assert np.array_equal((await window_store.read(spec)).vector, expected)
    assert np.array_equal((await peer_store.read(spec)).vector, expected)
    # Some apply saw the full sum: the last one to run.
    assert any(np.array_equal(r.totals.vector, expected) for _, r in applied)


async def test_returned_vectors_are_copies(window_store: WindowStore) -> None:
    spec = make_spec(width=2)
    bucket = spec.bucket_of(await store_now(window_store))
    delta = vec(1, 1)
    result = await window_store.apply(spec, {bucket: delta})
    delta += 100
    result.totals.vector[:] = -1
    assert np.array_equal((await window_store.read(spec)).vector, vec(1, 1))


@pytest.mark.parametrize(
    ("deltas", "message"),
    [
        ({0: vec(1, 2, 3)}, "shape"),
        ({30: vec(1, 2)}, "multiple"),
        ({0: vec(1, float("nan"))}, "non-finite"),
        ({0: vec(1, 0.5)}, "non-integral"),
        ({0: vec(1, -(2.0**53))}, "2\\*\\*53"),
    ],
)
async def test_invalid_deltas_rejected_and_nothing_applied(
    window_store: WindowStore, deltas: Mapping[int, Vector], message: str
) -> None:
    spec = make_spec(width=2)
    bucket = spec.bucket_of(await store_now(window_store))
    shifted = {bucket + b: v for b, v in deltas.items()}
    with pytest.raises(ValueError, match=message):
        await window_store.apply(spec, {bucket: vec(1, 1), **shifted})
    assert np.array_equal((await window_store.read(spec)).vector, np.zeros(2))


async def test_monitor_with_braces_rejected(window_store: WindowStore) -> None:
    with pytest.raises(ValueError, match="braces"):
        await window_store.read(make_spec(monitor="a}b"))


# --- Redis only ----------------------------------------------------------------------


class Key:
    """A window key decoded the way window.lua lays it out."""

    def __init__(self, raw: bytes, spec: WindowSpec, future_seconds: float = 300.0) -> None:
        ring, width = ring_slots(spec, future_seconds), spec.width
        fields = np.frombuffer(raw, dtype=">i8").astype(np.int64)
        assert fields.size == HEADER_FIELDS + ring + width + ring * width
        self.header = fields[:HEADER_FIELDS].tolist()
        self.ids = fields[HEADER_FIELDS : HEADER_FIELDS + ring]
        self.totals = fields[HEADER_FIELDS + ring : HEADER_FIELDS + ring + width]
        self.slots = fields[HEADER_FIELDS + ring + width :].reshape(ring, width)
        self.ring = ring
        self.bucket = spec.bucket_seconds

    def slot(self, bucket: int) -> int:
        return (bucket // self.bucket) % self.ring


async def key_of(
    client: redis.asyncio.Redis, spec: WindowSpec, future_seconds: float = 300.0
) -> Key:
    """The window key after a read, which folds the deltas appended to its log."""
    await RedisWindowStore(client, future_seconds=future_seconds).read(spec)
    raw = await client.get(window_key(spec, future_seconds))
    assert isinstance(raw, bytes)
    return Key(raw, spec, future_seconds)


async def stored_key(request: pytest.FixtureRequest, spec: WindowSpec) -> Key:
    """The window key of `spec` on the test's redis-server, decoded."""
    client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        return await key_of(client, spec)
    finally:
        await client.aclose()


def assert_consistent(key: Key) -> None:
    """The totals are the sum of the occupied slots; empty slots hold zeros."""
    occupied = key.ids != 0
    assert not key.slots[~occupied].any()
    assert np.array_equal(key.totals, key.slots[occupied].sum(axis=0))


async def test_backends_agree_to_the_bit(
    redis_store: RedisWindowStore, fake_clock: SettableClock
) -> None:
    rng, keys = np.random.default_rng(5), np.random.default_rng(50)
    spec = make_spec(width=8, window=3600, bucket=60)
    memory = MemoryWindowStore(clock=lambda: fake_clock.now)
    seen: set[tuple[ClaimStatus, bool]] = set()
    current = spec.bucket_of(await store_now(redis_store))
    for i in range(40):
        deltas = {
            current - (i % 4) * 60: big(rng, 8),
            current - (i % 7) * 60: counts(rng, 8),
            current + (i % 5) * 60: counts(rng, 8),  # up to 4 minutes ahead
        }
        # Keys from a small pool, so that some repeat (same body) or conflict (another);
        # their own generator keeps the sums of `big` below 2**53 (float64 exact).
        claims = [
            claim(
                f"k{keys.integers(0, 12)}",
                f"body{keys.integers(0, 2)}",
                {current - int(keys.integers(0, 90)) * 60: counts(keys, 8)},
                int(keys.integers(1, 9)),
            )
            for _ in range(int(keys.integers(0, 4)))
        ]
        from_redis = await redis_store.apply(spec, deltas, claims)
        fake_clock.set(from_redis.totals.now)  # the memory store at Redis's moment
        from_memory = await memory.apply(spec, deltas, claims)
        assert np.array_equal(from_redis.totals.vector, from_memory.totals.vector)
        assert from_redis.late_buckets == from_memory.late_buckets
        assert from_redis.claims == from_memory.claims
        seen.update((c.status, c.late > 0) for c in from_redis.claims)
    assert {status for status, _ in seen} == set(ClaimStatus)
    assert {late for _, late in seen} == {True, False}


async def test_redis_ttl_of_the_window_key(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2, window=3600, bucket=60)
    grace = grace_seconds(spec)
    current = spec.bucket_of(await store_now(redis_store))
    buckets = [current - k * 60 for k in (0, 5, 30)]
    await redis_store.apply(spec, {b: vec(1, 1) for b in buckets})
    await redis_store.apply(spec, {buckets[-1]: vec(1, 1)})  # older bucket: TTL must not shrink

    header = (await key_of(raw_redis, spec)).header  # folds the log: one key left
    assert await monitor_keys(raw_redis, spec.monitor) == [window_key(spec, 300).encode()]
    # The key lives until its newest bucket has slid out, plus grace.
    newest = (current + spec.bucket_seconds + spec.window_seconds + grace) * 1000
    assert await raw_redis.pexpiretime(window_key(spec, 300)) == newest
    assert header[:3] == [2, 60, ring_slots(spec, 300)] and header[4] == current


async def test_redis_key_layout(redis_url: str, raw_redis: redis.asyncio.Redis) -> None:
    spec = make_spec(width=3, window=3600, bucket=60)
    store = RedisWindowStore.from_url(redis_url, future_seconds=120)
    try:
        result = await store.apply(spec, {0: vec(0, 0, 0)})  # only evicts: no key
        assert await raw_redis.exists(store.window_key(spec)) == 0
        current = spec.bucket_of(result.totals.now)
        ahead = current + 120
        result = await store.apply(
            spec, {current: vec(1, 0, 3), current - 600: vec(0, 5, 0), ahead: vec(7, 0, 0)}
        )
    finally:
        await store.close()
    ring = ring_slots(spec, 120)
    assert ring == 60 + 2 + 2
    assert window_key(spec, 120) == f"driftline:{{m1}}:L1:window:{ring}"
    key = await key_of(raw_redis, spec, 120)  # folds the log: one key left
    assert await monitor_keys(raw_redis, spec.monitor) == [window_key(spec, 120).encode()]
    assert await raw_redis.strlen(window_key(spec, 120)) == window_bytes(spec, 120)
    last_out = spec.bucket_of(result.totals.now) - spec.window_seconds - spec.bucket_seconds
    assert key.header == [3, 60, ring, last_out, ahead]
    assert sorted(key.ids[key.ids != 0].tolist()) == [current - 600, current, ahead]
    for bucket, content in ((current, (1, 0, 3)), (current - 600, (0, 5, 0)), (ahead, (7, 0, 0))):
        assert key.ids[key.slot(bucket)] == bucket
        assert key.slots[key.slot(bucket)].tolist() == list(content)
    assert key.totals.tolist() == [8, 5, 3]
    assert_consistent(key)


async def test_redis_unavailable_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisWindowStore.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5)
    spec = make_spec(width=2)
    try:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailableError) as apply_error:
            await store.apply(spec, {0: vec(1, 1)})
        assert apply_error.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError):
            await store.read(spec)
        with pytest.raises(StoreUnavailableError):
            await store.drop(spec.monitor)
    finally:
        await store.close()


async def test_redis_script_error_applies_nothing(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    """A script that fails is not rolled back: its first write must be where it fails.

    With Redis full (maxmemory, noeviction) the first write of a script is refused; the
    window's first write is the BITFIELD that adds the deltas, so nothing is added, to an
    existing window or a new one, and reads still work.
    """
    spec, fresh = make_spec(width=2), make_spec(monitor="fresh", width=2)
    bucket = spec.bucket_of(await store_now(redis_store))
    await redis_store.apply(spec, {bucket: vec(1, 2)})
    before = await raw_redis.get(window_key(spec, 300))
    await raw_redis.config_set("maxmemory", 1)
    try:
        for target in (spec, fresh):
            with pytest.raises(StoreUnavailableError, match="maxmemory") as error:
                await redis_store.apply(target, {bucket: vec(5, 5)})
            assert error.value.__cause__ is not None
        assert (await redis_store.read(spec)).vector.tolist() == [1, 2]
    finally:
        await raw_redis.config_set("maxmemory", 0)
    assert await raw_redis.get(window_key(spec, 300)) == before
    assert await raw_redis.exists(window_key(fresh, 300)) == 0
    assert (await redis_store.apply(spec, {bucket: vec(5, 5)})).totals.vector.tolist() == [6, 7]


async def test_redis_reloads_script_after_flush(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=1)
    bucket = spec.bucket_of(await store_now(redis_store))
    await redis_store.apply(spec, {bucket: vec(1)})
    await raw_redis.script_flush()
    result = await redis_store.apply(spec, {bucket: vec(2)})
    assert np.array_equal(result.totals.vector, vec(3))


def corruptions(spec: WindowSpec) -> dict[str, bytes]:
    """Values of a window key that the script must not trust, by what is wrong."""
    ring, width = ring_slots(spec, 300), spec.width
    size = HEADER_FIELDS + ring + width + ring * width

    def layout(header: list[int], length: int = size, ids: dict[int, int] | None = None) -> bytes:
        fields = np.zeros(length, dtype=">i8")
        fields[: len(header)] = header
        for slot, bucket in (ids or {}).items():
            fields[HEADER_FIELDS + slot] = bucket
        return fields.tobytes()

    return {
        "not a layout": b"\xc1 not a window",
        "short": b"\x00\x01",
        "other width": layout([width + 1, 60, ring, 0, 0], size + ring + 1),
        "other ring": layout([width, 60, ring + 1, 0, 0], size + width + 1),
        "truncated": layout([width, 60, ring, 0, 0], size - 1),
        "misplaced id": layout([width, 60, ring, 0, 0], ids={0: 60}),
        "unaligned id": layout([width, 60, ring, 0, 0], ids={0: 7}),
    }


@pytest.mark.parametrize("damage", list(corruptions(make_spec(width=2))))
async def test_redis_heals_a_damaged_key(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis, damage: str
) -> None:
    spec = make_spec(width=2)
    current = spec.bucket_of(await store_now(redis_store))
    await redis_store.apply(spec, {current: vec(1, 2)})
    await raw_redis.set(window_key(spec, 300), corruptions(spec)[damage])
    # A read drops what it cannot trust; it never fails.
    assert (await redis_store.read(spec)).vector.tolist() == [0, 0]
    assert await raw_redis.exists(window_key(spec, 300)) == 0

    await raw_redis.set(window_key(spec, 300), corruptions(spec)[damage])
    result = await redis_store.apply(spec, {current: vec(10, 20), current - 60: vec(1, 1)})
    assert result.totals.vector.tolist() == [11, 21]
    assert (await redis_store.read(spec)).vector.tolist() == [11, 21]
    assert await raw_redis.strlen(window_key(spec, 300)) == window_bytes(spec, 300)
    assert await raw_redis.pttl(window_key(spec, 300)) > 0
    assert_consistent(await key_of(raw_redis, spec))


async def test_redis_heals_a_key_of_another_type(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2)
    await raw_redis.hset(window_key(spec, 300), "wrong", "type")
    assert (await redis_store.read(spec)).vector.tolist() == [0, 0]
    assert await raw_redis.exists(window_key(spec, 300)) == 0
    await raw_redis.hset(window_key(spec, 300), "wrong", "type")
    bucket = spec.bucket_of(await store_now(redis_store))
    result = await redis_store.apply(spec, {bucket: vec(1, 2)})
    assert result.totals.vector.tolist() == [1, 2]
    assert (await redis_store.read(spec)).vector.tolist() == [1, 2]  # folded in
    assert await raw_redis.type(window_key(spec, 300)) == b"string"
    # A log of another type is replaced too: by an append, and by a fold.
    log = log_key(spec, 300)
    appending = RedisWindowStore(raw_redis, fold_seconds=math.inf)
    assert (await appending.read(spec)).vector.tolist() == [1, 2]
    await raw_redis.hset(log, "wrong", "type")
    assert (await appending.apply(spec, {bucket: vec(1, 2)})).totals.vector.tolist() == [2, 4]
    assert await raw_redis.type(log) == b"list"
    await raw_redis.delete(log)
    await raw_redis.hset(log, "wrong", "type")
    assert (await appending.read(spec)).vector.tolist() == [1, 2]
    assert await raw_redis.exists(log) == 0


async def test_redis_starts_afresh_when_the_key_expired(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2)
    current = spec.bucket_of(await store_now(redis_store))
    await redis_store.apply(spec, {current: vec(1, 2), current - 60: vec(10, 20)})
    await raw_redis.delete(window_key(spec, 300))  # as if its TTL had fired
    assert (await redis_store.read(spec)).vector.tolist() == [0, 0]
    result = await redis_store.apply(spec, {current: vec(100, 100)})
    assert result.totals.vector.tolist() == [100, 100]


async def command_calls(raw: redis.asyncio.Redis, call: Awaitable[object]) -> dict[str, int]:
    """The commands Redis ran for `call`, as INFO commandstats counts them."""
    await raw.config_resetstat()
    await call
    stats = await raw.info("commandstats")
    ignored = {"cmdstat_config|resetstat", "cmdstat_info"}
    return {k[8:]: int(v["calls"]) for k, v in stats.items() if k not in ignored}


async def test_redis_appends_cost_three_commands_and_a_fold_one_bitfield(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """An append is EVALSHA, TIME and RPUSH (EXPIREAT when it starts the log); a fold of
    any number of appends is one BITFIELD and one GETRANGE of the totals, with LRANGE and
    DEL of the log.

    Counted as `INFO commandstats` counts them (the script's commands and the EVALSHA),
    after a first apply that created the window and gave the bucket its slot. Widths up
    to ~990 fit one BITFIELD when every element changes (Lua's stack bounds one call).
    """
    store = RedisWindowStore.from_url(redis_url, fold_seconds=math.inf)

    def commands(call: Awaitable[object]) -> Awaitable[dict[str, int]]:
        return command_calls(raw_redis, call)

    try:
        for width in (1, 900):
            spec = make_spec(monitor=f"w{width}", width=width)
            for _ in range(3):  # again if a bucket boundary passes in between
                bucket = spec.bucket_of(await store_now(store))
                first = await commands(store.apply(spec, {bucket: np.ones(width)}))
                started = await commands(store.apply(spec, {bucket: np.ones(width)}))
                appended = await commands(store.apply(spec, {bucket: np.ones(width)}))
                for _ in range(5):
                    await store.apply(spec, {bucket: np.ones(width)})
                folded = await commands(store.read(spec))
                read = await commands(store.read(spec))
                if spec.bucket_of(await store_now(store)) == bucket:
                    break
            # A new window: the optimistic BITFIELD, then SET, BITFIELD, GETRANGE.
            new = {"evalsha": 1, "time": 1, "lrange": 1, "bitfield": 2, "set": 1, "getrange": 1}
            assert first == new
            assert started == {"evalsha": 1, "time": 1, "rpush": 1, "expireat": 1}
            assert appended == {"evalsha": 1, "time": 1, "rpush": 1}
            assert folded == {
                "evalsha": 1,
                "time": 1,
                "lrange": 1,
                "bitfield": 1,
                "getrange": 1,
                "del": 1,
            }
            assert read == {"evalsha": 1, "time": 1, "lrange": 1, "getrange": 1}
            assert (await store.read(spec)).vector.tolist() == [8.0] * width
    finally:
        await store.close()


def appending_store(redis_url: str, future_seconds: float = 300.0) -> RedisWindowStore:
    """A store that folds only when it reads (or its log is full): every write appends."""
    return RedisWindowStore.from_url(
        redis_url, future_seconds=future_seconds, fold_seconds=math.inf
    )


async def test_redis_log_sums_what_it_holds_exactly(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """Appends leave the window as it was; a fold adds them per bucket and element, exactly,
    also where a sum passes 2**53 (it goes out in parts)."""
    rng = np.random.default_rng(11)
    spec = make_spec(width=6)
    store = appending_store(redis_url)
    try:
        current = spec.bucket_of(await store_now(store))
        buckets = (current - 120, current)
        exact = {b: [0] * 6 for b in buckets}
        small = {b: counts(rng, 6) for b in buckets}
        await store.apply(spec, small)  # no view of the window yet: a fold
        for b in buckets:
            exact[b] = [int(x) for x in small[b]]
        before = await raw_redis.get(window_key(spec, 300))
        for n in range(20):
            deltas = {b: counts(rng, 6) for b in buckets}
            if n % 5 == 4:  # element 5 grows past 2**53 over the appends
                deltas[current][5] = 2**52 - 1 - n
            result = await store.apply(spec, deltas)
            for b in buckets:
                exact[b] = [x + int(d) for x, d in zip(exact[b], deltas[b], strict=True)]
            expected = [float(x + y) for x, y in zip(*exact.values(), strict=True)]
            if n < 4:  # this replica's view: the last fold plus what it appended since
                assert result.totals.vector.tolist() == expected
        assert await raw_redis.llen(log_key(spec, 300)) == 40  # an entry per bucket
        assert await raw_redis.get(window_key(spec, 300)) == before
        key = await key_of(raw_redis, spec)  # a read: the fold
        assert await raw_redis.exists(log_key(spec, 300)) == 0
        for b in buckets:
            assert key.slots[key.slot(b)].tolist() == exact[b]
        assert key.totals.tolist() == [x + y for x, y in zip(*exact.values(), strict=True)]
        assert key.totals[5] > 2**53
        assert_consistent(key)
    finally:
        await store.close()


async def test_redis_log_is_bounded_and_outlives_its_buckets(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """A replica folds a log it finds three quarters full, with its own sums; the script folds one
    of LOG_FOLD_AT entries itself. The log's first entry gives it a lifetime past the
    furthest bucket the ring accepts."""
    spec = make_spec(width=3)
    store = appending_store(redis_url)
    log = log_key(spec, 300)
    try:
        now = await store_now(store)
        current = spec.bucket_of(now)
        await store.apply(spec, {current: vec(1, 1, 1)})
        lengths = []
        for _ in range(LOG_FOLD_AT):
            result = await store.apply(spec, {current: vec(1, 2, 3)})
            lengths.append(await raw_redis.llen(log))
            if lengths[-1] == 1:
                sec = int(result.totals.now)
                out = sec - spec.window_seconds - spec.bucket_seconds
                horizon = out - out % spec.bucket_seconds + ring_slots(spec, 300) * 60
                lives = horizon + spec.bucket_seconds + spec.window_seconds + grace_seconds(spec)
                assert await raw_redis.expiretime(log) == lives
        soon = LOG_FOLD_SOON
        assert max(lengths) == soon and lengths[soon] == 0  # folded by the next write
        # Another writer's entries up to the bound: the next append makes the script fold.
        other = b"elsewhere"[:8] + struct.pack(">q", current) + pack_deltas(vec(1, 0, 0))
        await raw_redis.rpush(log, *[other] * (LOG_FOLD_AT - 1 - lengths[-1]))
        result = await store.apply(spec, {current: vec(1, 2, 3)})
        assert await raw_redis.exists(log) == 0
        expected = [1 + (LOG_FOLD_AT + 1) * x for x in (1, 2, 3)]
        expected[0] += LOG_FOLD_AT - 1 - lengths[-1]
        assert result.totals.vector.tolist() == expected  # the fold's totals
        assert (await key_of(raw_redis, spec)).totals.tolist() == expected
    finally:
        await store.close()


async def test_redis_fold_drops_appends_whose_bucket_slid_out(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    """An entry whose bucket slid out before the fold is not counted, as eviction would not."""
    spec = make_spec(width=2, window=1, bucket=1)
    store = appending_store(redis_url, future_seconds=1)
    peer = RedisWindowStore.from_url(redis_url, future_seconds=1)
    try:
        current = spec.bucket_of(await store_now(store))
        await store.apply(spec, {current: vec(1, 0)})
        result = await store.apply(spec, {current: vec(0, 1), current + 1: vec(5, 5)})
        assert result.late_buckets == frozenset()
        assert await raw_redis.llen(log_key(spec, 1)) == 2
        await wait_until(store, fake_clock, current + 2)  # `current` slid out, not current + 1
        totals = await peer.read(spec)
        if spec.bucket_of(totals.now) == current + 2:  # else current + 1 slid out as well
            assert totals.vector.tolist() == [5, 5]
        assert await raw_redis.exists(log_key(spec, 1)) == 0
        assert_consistent(await key_of(raw_redis, spec, 1))
    finally:
        await store.close()
        await peer.close()


async def test_redis_fold_drops_a_malformed_entry_and_keeps_the_rest(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """An entry that is not the replica's (an element past the width, a misaligned bucket)
    is dropped; the sums start over without it, so none of it stays behind."""
    spec = make_spec(width=2)
    store = appending_store(redis_url)
    log = log_key(spec, 300)
    try:
        current = spec.bucket_of(await store_now(store))
        await store.apply(spec, {current: vec(1, 1)})
        await store.apply(spec, {current: vec(2, 2)})
        pair = np.dtype([("index", ">u4"), ("value", ">i8")])
        past_width = np.array([(0, 100), (2, 1)], dtype=pair).tobytes()
        await raw_redis.rpush(log, struct.pack(">q", current) + past_width)
        await raw_redis.rpush(log, struct.pack(">q", current + 1) + past_width[:12])
        await raw_redis.rpush(log, b"short")
        await store.apply(spec, {current: vec(4, 4)})
        assert (await store.read(spec)).vector.tolist() == [7, 7]
        assert await raw_redis.exists(log) == 0
    finally:
        await store.close()


async def test_redis_fold_takes_a_replicas_own_sums_only_while_its_count_holds(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """A replica's fold sends the sums of the entries it appended since its last fold; the
    script takes them instead of parsing those entries only while it finds all of them.
    """
    spec = make_spec(width=3)
    a, b = appending_store(redis_url), appending_store(redis_url)
    log = log_key(spec, 300)
    try:
        current = spec.bucket_of(await store_now(a))
        await a.read(spec)
        await b.read(spec)
        for _ in range(3):
            await a.apply(spec, {current: vec(1, 0, 0)})
        for _ in range(2):
            await b.apply(spec, {current: vec(0, 1, 0)})
        # Proof that the sums stand in for the entries: b's own entries are rewritten
        # (a valid entry, other counts), and b's fold still counts what b appended.
        entries = await raw_redis.lrange(log, 0, -1)
        mine = [i for i, e in enumerate(entries) if e.startswith(entries[-1][:8])]
        assert len(mine) == 2
        other = entries[-1][:16] + pack_deltas(vec(0, 50, 0))
        await raw_redis.lset(log, mine[0], other)
        assert (await b.read(spec)).vector.tolist() == [3, 2, 0]
        # a's three entries went in with b's fold: a's count no longer holds, so a's next
        # fold parses its new entry rather than adding its sums of four.
        await a.apply(spec, {current: vec(0, 0, 1)})
        assert (await a.read(spec)).vector.tolist() == [3, 2, 1]
        assert await raw_redis.exists(log) == 0
    finally:
        await a.close()
        await b.close()


async def test_redis_memory_is_fixed_by_the_layout(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    rng = np.random.default_rng(6)
    spec = make_spec(width=16, window=1, bucket=1)
    store = RedisWindowStore.from_url(redis_url, future_seconds=1)
    key = store.window_key(spec)
    try:
        current = spec.bucket_of(await store_now(store))
        await store.apply(spec, {current: np.ones(16)})
        usage = await raw_redis.memory_usage(key, samples=0)
        for _ in range(50):  # the same bucket, ever larger counts
            await store.apply(spec, {current: big(rng, 16)})
        assert await raw_redis.memory_usage(key, samples=0) == usage
        # New buckets, evicting old ones, reusing slots (a ring of 4 wraps in a second).
        await wait_until(store, fake_clock, current + 2)
        now = await store_now(store)
        later = spec.bucket_of(now)
        await store.apply(spec, {later - 1: big(rng, 16), later + 1: big(rng, 16)})
        assert await raw_redis.memory_usage(key, samples=0) == usage
        assert await raw_redis.strlen(key) == window_bytes(spec, 1)
        assert_consistent(await key_of(raw_redis, spec, 1))
    finally:
        await store.close()


async def test_redis_ring_wraps_around_and_evicts_like_the_memory_store(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    """A ring of 4 one-second slots, written for 5 seconds, one to two ahead of now.

    Every second the bucket two ahead lands on the slot of one that just slid out (the
    fix-up evicts it, optimistic increments included, and adds them back), so slots are
    reused several times over; totals must match the memory store and an independent sum.
    """
    rng = np.random.default_rng(7)
    spec = make_spec(width=5, window=1, bucket=1)
    store = RedisWindowStore.from_url(redis_url, future_seconds=1)
    memory = MemoryWindowStore(clock=lambda: fake_clock.now)
    assert ring_slots(spec, 1) == 4
    sent: dict[int, Vector] = {}
    try:
        start = spec.bucket_of(await store_now(store))
        for second in range(5):
            await wait_until(store, fake_clock, start + second)
            current = spec.bucket_of(await store_now(store))
            for offset in (-1, 0, 1, 2):
                deltas = {current + offset: big(rng, 5), current: counts(rng, 5)}
                result = await store.apply(spec, deltas)
                fake_clock.set(result.totals.now)
                mirror = await memory.apply(spec, deltas)
                assert result.late_buckets == mirror.late_buckets
                for bucket, delta in deltas.items():
                    if bucket not in result.late_buckets:
                        sent[bucket] = sent.get(bucket, np.zeros(5)) + delta
                live = [v for b, v in sent.items() if b + 1 > result.totals.now - 1]
                expected = np.sum(live, axis=0) if live else np.zeros(5)
                assert np.array_equal(result.totals.vector, expected)
                assert np.array_equal(result.totals.vector, mirror.totals.vector)
            key = await key_of(raw_redis, spec, 1)
            assert_consistent(key)
            assert set(key.ids[key.ids != 0].tolist()) <= set(sent)
        assert len(sent) > 4  # more buckets than slots: the ring wrapped
    finally:
        await store.close()


async def test_redis_older_live_bucket_lands_in_its_slot_and_leaves_on_time(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    store = RedisWindowStore.from_url(redis_url, future_seconds=0)
    try:
        for attempt in range(3):  # again if the second turns between two calls
            spec = make_spec(monitor=f"older-{attempt}", width=3, window=2, bucket=1)
            current = spec.bucket_of(await store_now(store))
            oldest = current - 2  # the oldest live bucket: live while oldest + B > now - W
            result = await store.apply(spec, {current: vec(1, 1, 1), oldest: vec(10, 20, 30)})
            if not result.late_buckets:
                break
        assert result.totals.vector.tolist() == [11, 21, 31]
        key = await key_of(raw_redis, spec, 0)
        assert key.ids[key.slot(oldest)] == oldest
        assert key.slots[key.slot(oldest)].tolist() == [10, 20, 30]
        assert key.totals.tolist() == [11, 21, 31]

        # Whatever the moment of a read, the bucket counts exactly while now < leaves.
        leaves = oldest + spec.bucket_seconds + spec.window_seconds
        for moment in (leaves - 0.3, leaves):
            await wait_until(store, fake_clock, moment)
            totals = await store.read(spec)
            expected = [11, 21, 31] if totals.now < leaves else [1, 1, 1]
            assert totals.vector.tolist() == expected, totals
        assert totals.now >= leaves
        key = await key_of(raw_redis, spec, 0)
        assert key.ids[key.slot(oldest)] == 0
        assert not key.slots[key.slot(oldest)].any()
        assert key.header[3] == oldest  # evicted_through
        assert key.ids[key.slot(current)] == current
        assert_consistent(key)
    finally:
        await store.close()


async def test_redis_evicts_counts_past_2_53_exactly(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    """A slot past 2**53 is subtracted from the totals exactly (as two 32-bit halves).

    Read as one double, 2**53 + 3 would round to 2**53 + 4 and the totals would keep
    the difference for as long as the window lives.
    """
    spec = make_spec(width=2, window=1, bucket=1)
    store = RedisWindowStore.from_url(redis_url, future_seconds=1)
    try:
        current = spec.bucket_of(await store_now(store))
        big_one = {current: vec(2**52 + 1, -(2**52) - 1), current + 1: vec(5, 7)}
        await store.apply(spec, big_one)
        await store.apply(spec, {current: vec(2**52 + 2, -(2**52) - 2)})
        key = await key_of(raw_redis, spec, 1)
        assert key.slots[key.slot(current)].tolist() == [2**53 + 3, -(2**53) - 3]
        await wait_until(store, fake_clock, current + spec.bucket_seconds + spec.window_seconds)
        assert (await store.read(spec)).vector.tolist() == [5, 7]
        key = await key_of(raw_redis, spec, 1)
        assert key.totals.tolist() == [5, 7]
        assert_consistent(key)
    finally:
        await store.close()


async def test_redis_bucket_past_the_ring_is_reported_late(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2, window=3600, bucket=60)
    store = RedisWindowStore.from_url(redis_url, future_seconds=300)
    try:
        for _ in range(3):  # again if a bucket boundary passes between two calls
            await store.drop(spec.monitor)
            now = await store_now(store)
            current = spec.bucket_of(now)
            last_out = current - spec.window_seconds - spec.bucket_seconds
            horizon = last_out + ring_slots(spec, 300) * spec.bucket_seconds
            assert horizon >= now + 300
            result = await store.apply(
                spec, {current: vec(1, 1), horizon: vec(2, 2), horizon + 60: vec(100, 100)}
            )
            if spec.bucket_of(result.totals.now) == current:
                break
        assert result.late_buckets == frozenset({horizon + 60})
        assert result.totals.vector.tolist() == [3, 3]
        assert_consistent(await key_of(raw_redis, spec))
    finally:
        await store.close()


async def test_redis_never_overwrites_a_live_bucket_of_another_window(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """Two replicas whose windows differ but whose rings match share one key.

    Window 3 s ahead 1 s and window 1 s ahead 3 s both make a ring of 6 one-second
    slots; to the first, a bucket 3 s old is live, and its slot is the one the second
    gave a bucket 3 s ahead. The optimistic increments are undone and the bucket is
    reported late rather than mixed into the other's counts.
    """
    long = make_spec(monitor="mixed", width=2, window=3, bucket=1)
    short = make_spec(monitor="mixed", width=2, window=1, bucket=1)
    assert ring_slots(long, 1) == ring_slots(short, 3) == 6
    store_long = RedisWindowStore.from_url(redis_url, future_seconds=1)
    store_short = RedisWindowStore.from_url(redis_url, future_seconds=3)
    try:
        for _ in range(3):  # again if the second turns between the calls
            await store_short.drop("mixed")
            current = long.bucket_of(await store_now(store_short))
            ahead = await store_short.apply(short, {current + 3: vec(1, 1)})
            result = await store_long.apply(long, {current - 3: vec(5, 5), current: vec(2, 3)})
            if long.bucket_of(result.totals.now) == long.bucket_of(ahead.totals.now) == current:
                break
        assert result.late_buckets == frozenset({current - 3})
        assert result.totals.vector.tolist() == [3, 4]
        key = await key_of(raw_redis, long, 1)
        assert key.slots[key.slot(current + 3)].tolist() == [1, 1]
        assert_consistent(key)
    finally:
        await store_long.close()
        await store_short.close()


async def test_redis_replicas_with_other_rings_do_not_wipe_each_other(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """A rolling change of the future allowance (or of a monitor's window length).

    The ring size names the key: old and new replicas each keep a whole window of their
    own while both run, instead of rebuilding a key shaped for the other on every flush.
    """
    spec = make_spec(width=2)
    old = RedisWindowStore.from_url(redis_url, future_seconds=300)
    new = RedisWindowStore.from_url(redis_url, future_seconds=600)
    try:
        assert old.window_key(spec) != new.window_key(spec)
        bucket = spec.bucket_of(await store_now(old))
        for _ in range(3):
            await old.apply(spec, {bucket: vec(1, 0)})
            await new.apply(spec, {bucket: vec(0, 1)})
        assert (await old.read(spec)).vector.tolist() == [3, 0]
        assert (await new.read(spec)).vector.tolist() == [0, 3]
        assert len(await monitor_keys(raw_redis, spec.monitor)) == 2
        await old.drop(spec.monitor)
        assert await monitor_keys(raw_redis, spec.monitor) == []
    finally:
        await old.close()
        await new.close()


async def test_redis_wide_windows_go_out_in_slices(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    """Past ~8000 arguments a BITFIELD is split (Lua's stack); the numbers do not change.

    Width 2500, several buckets touching every element: the optimistic BITFIELD, the
    rebuild and the eviction of a slot all take more than one command.
    """
    rng = np.random.default_rng(8)
    spec = make_spec(width=2500, window=1, bucket=1)
    store = RedisWindowStore.from_url(redis_url, future_seconds=1)
    memory = MemoryWindowStore(clock=lambda: fake_clock.now)
    try:
        current = spec.bucket_of(await store_now(store))
        for when in (current, current + 1):
            await wait_until(store, fake_clock, when)
            now = spec.bucket_of(await store_now(store))
            for _ in range(2):
                deltas = {now + k: big(rng, 2500) for k in (-1, 0, 1, 2)}
                result = await store.apply(spec, deltas)
                fake_clock.set(result.totals.now)
                mirror = await memory.apply(spec, deltas)
                assert result.late_buckets == mirror.late_buckets
                assert np.array_equal(result.totals.vector, mirror.totals.vector)
            assert_consistent(await key_of(raw_redis, spec, 1))
        assert np.array_equal((await store.read(spec)).vector, mirror.totals.vector)
    finally:
        await store.close()


async def test_redis_server_does_not_persist(raw_redis: redis.asyncio.Redis) -> None:
    assert (await raw_redis.config_get("save"))["save"] == ""
    assert (await raw_redis.config_get("appendonly"))["appendonly"] == "no"


@contextlib.asynccontextmanager
async def pausable_store(
    redis_url: str, raw_redis: redis.asyncio.Redis, fence_seconds: float | None
) -> AsyncIterator[RedisWindowStore]:
    """A store whose replies outlast a CLIENT PAUSE (5 s timeout); writes unpaused after."""
    store = RedisWindowStore(
        redis.asyncio.Redis.from_url(redis_url, socket_timeout=5), fence_seconds=fence_seconds
    )
    try:
        yield store
    finally:
        await raw_redis.execute_command("CLIENT", "UNPAUSE")
        await store.close()


@pytest.mark.parametrize("fenced", [True, False])
async def test_redis_refuses_a_flush_that_arrives_after_its_deadline(
    redis_url: str, raw_redis: redis.asyncio.Redis, fenced: bool
) -> None:
    """A flush Redis runs only after the replica gave up on it must not count.

    CLIENT PAUSE holds the script past the fence (0.2 s) but within the socket timeout,
    so the reply still arrives: fenced, the script refuses and nothing is added;
    unfenced (the counterfactual), the same late script adds its deltas.
    """
    spec = make_spec(width=2)
    async with pausable_store(redis_url, raw_redis, 0.2 if fenced else None) as store:
        now = (await store.read(spec)).now  # learns the Redis clock offset
        bucket = spec.bucket_of(now)
        keyed = claim("held", "body", {bucket: vec(10, 10)})
        await raw_redis.execute_command("CLIENT", "PAUSE", 600, "WRITE")
        if fenced:
            with pytest.raises(StoreUnavailableError, match="after its deadline"):
                await store.apply(spec, {bucket: vec(1, 2)}, [keyed])
        else:
            await store.apply(spec, {bucket: vec(1, 2)}, [keyed])
        totals = await store.read(spec)
        expected = [0.0, 0.0] if fenced else [11.0, 12.0]
        assert totals.vector.tolist() == expected
        # The fence holds only for late flushes: a timely one is applied. The key of a
        # refused flush was not recorded: its retry counts.
        retried = await store.apply(spec, {bucket: vec(1, 2)}, [keyed])
        status = ClaimStatus.COUNTED if fenced else ClaimStatus.REPLAYED
        assert retried.claims[0].status is status
        assert (await store.read(spec)).vector.tolist() == [
            x + y for x, y in zip(expected, [11 if fenced else 1, 12 if fenced else 2], strict=True)
        ]


async def test_redis_a_write_no_verdict_is_made_of_appends_until_its_view_lags(
    redis_url: str, raw_redis: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `fresh`, a write folds only once its view is LAGGING_FOLD_SECONDS old."""
    store = RedisWindowStore.from_url(redis_url, fold_seconds=0)  # fresh writes always fold
    spec = make_spec(width=2)
    log = log_key(spec, DEFAULT_FUTURE_SECONDS)
    try:
        bucket = spec.bucket_of((await store.read(spec)).now)
        await store.apply(spec, {bucket: vec(1, 2)})
        assert await raw_redis.llen(log) == 0  # folded
        result = await store.apply(spec, {bucket: vec(1, 2)}, fresh=False)
        assert await raw_redis.llen(log) == 1  # appended
        assert result.totals.vector.tolist() == [2, 4]  # its view and its own deltas
        monkeypatch.setattr(redis_store_module, "LAGGING_FOLD_SECONDS", 0.0)
        result = await store.apply(spec, {bucket: vec(1, 2)}, fresh=False)
        assert await raw_redis.llen(log) == 0  # the view lagged: folded
        assert result.totals.vector.tolist() == [3, 6]
        assert (await store.read(spec)).vector.tolist() == [3, 6]
    finally:
        await store.close()


async def test_redis_refuses_a_plain_append_that_arrives_after_its_deadline(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """The same for an append without keys, the common call under load (append.lua)."""
    spec = make_spec(width=2)
    log = log_key(spec, DEFAULT_FUTURE_SECONDS)
    async with pausable_store(redis_url, raw_redis, 0.2) as store:
        bucket = spec.bucket_of((await store.read(spec)).now)  # a fresh view: writes append
        await raw_redis.execute_command("CLIENT", "PAUSE", 600, "WRITE")
        with pytest.raises(StoreUnavailableError, match="after its deadline"):
            await store.apply(spec, {bucket: vec(1, 2)})
        assert await raw_redis.exists(log) == 0
        assert (await store.read(spec)).vector.tolist() == [0.0, 0.0]
        await store.apply(spec, {bucket: vec(1, 2)})  # in time: appended
        assert await raw_redis.llen(log) == 1
        assert (await store.read(spec)).vector.tolist() == [1.0, 2.0]


async def test_redis_plain_appends_run_the_small_script_and_everything_else_window_lua(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """Which script each call ran, from Redis's SLOWLOG (every command logged)."""
    append_sha = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()
    window_sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    spec = make_spec(width=2)
    store = appending_store(redis_url)
    slower_than = (await raw_redis.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]
    try:
        bucket = spec.bucket_of(await store_now(store))
        await store.apply(spec, {bucket: vec(1, 1)})  # no view yet: window.lua folds
        await raw_redis.config_set("slowlog-log-slower-than", 0)
        await raw_redis.slowlog_reset()
        await store.apply(spec, {bucket: vec(1, 2)})  # plain: append.lua
        await store.apply(spec, {bucket: vec(1, 2)}, [claim("k", "b", {bucket: vec(3, 3)})])
        await store.read(spec)
        await raw_redis.config_set("slowlog-log-slower-than", slower_than)
        ran = [
            entry["command"].split()[1].decode()
            for entry in reversed(await raw_redis.slowlog_get(1000))
            if entry["command"].upper().startswith(b"EVALSHA")
        ]
        assert ran == [append_sha, window_sha, window_sha]
        assert (await store.read(spec)).vector.tolist() == [6.0, 8.0]
    finally:
        await raw_redis.config_set("slowlog-log-slower-than", slower_than)
        await store.close()


async def evalsha_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_redis_a_slow_read_does_not_move_the_deadline_past_the_timeout(
    own_redis: RedisProcess,
) -> None:
    """The reproduction of a 503 that was counted, at the store.

    A read held 1.8 s (SIGSTOP, SIGCONT) returned within the 2 s socket timeout; the
    write after it, held 2.5 s, timed out at 2 s (its requests get 503), and Redis ran
    it at 2.5 s. Its deadline must have passed by then, whatever the read made the
    store believe about Redis's clock.
    """
    store = RedisWindowStore.from_url(own_redis.url, socket_timeout=2.0)
    raw = redis.asyncio.Redis.from_url(own_redis.url)
    spec = make_spec(width=2)
    loop = asyncio.get_running_loop()
    try:
        bucket = spec.bucket_of((await store.read(spec)).now)
        own_redis.pause()
        loop.call_later(1.8, own_redis.resume)
        await store.read(spec)
        calls = await evalsha_calls(raw)
        own_redis.pause()
        loop.call_later(2.5, own_redis.resume)
        with pytest.raises(StoreUnavailableError):
            await store.apply(spec, {bucket: vec(1, 1)})

        async def ran() -> bool:
            return await evalsha_calls(raw) > calls  # the held script, run late

        await poll(ran, "the held script never ran")
        assert (await store.read(spec)).vector.tolist() == [0, 0]
    finally:
        own_redis.resume()
        await raw.aclose()
        await store.close()


# --- idempotency keys (claims) --------------------------------------------------------


def claim(key: str, body: str, deltas: Mapping[int, Vector], events: int = 1) -> Claim:
    """A claim of `deltas` under `key`, each bucket holding `events` events."""
    return Claim(request_key("request", key, body.encode()), deltas, dict.fromkeys(deltas, events))


async def test_a_claim_counts_once_and_repeats_get_the_first_outcome(
    window_store: WindowStore,
) -> None:
    spec = make_spec(width=3)
    bucket = spec.bucket_of(await store_now(window_store))
    first = await window_store.apply(spec, {}, [claim("k1", "a", {bucket: vec(2, 1, 1)}, 2)])
    assert first.claims == (ClaimOutcome(ClaimStatus.COUNTED, 2, 0),)
    assert first.totals.vector.tolist() == [2, 1, 1]

    again = await window_store.apply(
        spec,
        {bucket: vec(1, 0, 0)},  # unkeyed deltas of the same flush still count
        [
            claim("k1", "a", {bucket: vec(2, 1, 1)}, 2),  # a retry
            claim("k1", "other body", {bucket: vec(5, 5, 5)}, 5),  # a key reused
            claim("k2", "b", {bucket: vec(1, 0, 1)}),  # a new key
            claim("k2", "b", {bucket: vec(1, 0, 1)}),  # and its retry in the same flush
        ],
    )
    assert again.claims == (
        ClaimOutcome(ClaimStatus.REPLAYED, 2, 0),
        ClaimOutcome(ClaimStatus.CONFLICT, 2, 0),
        ClaimOutcome(ClaimStatus.COUNTED, 1, 0),
        ClaimOutcome(ClaimStatus.REPLAYED, 1, 0),
    )
    assert again.totals.vector.tolist() == [4, 1, 2]
    assert (await window_store.read(spec)).vector.tolist() == [4, 1, 2]
    # Keys are per monitor.
    other = make_spec(monitor="m2", width=3)
    elsewhere = await window_store.apply(other, {}, [claim("k1", "a", {bucket: vec(2, 1, 1)}, 2)])
    assert elsewhere.claims[0].status is ClaimStatus.COUNTED


async def test_keyed_rows_are_taken_back_only_when_their_key_is_known(
    window_store: WindowStore,
) -> None:
    # A flush of keyed single events sends them summed with the rest: a store takes one
    # back out, reading its own vector, only when its key was recorded or repeats in
    # the same call. Outcomes come after the claims'.
    spec = make_spec(width=3)
    bucket = spec.bucket_of(await store_now(window_store))
    reads: list[int] = []

    def rows(*sent: tuple[str, Vector]) -> KeyedRows:
        def vector(i: int) -> Vector:
            reads.append(i)
            return sent[i][1]

        keys = [request_key("event", key, key.encode()) for key, _ in sent]
        return KeyedRows(keys, [bucket] * len(sent), vector)

    a, b, c = vec(1, 1, 0), vec(1, 0, 1), vec(1, 1, 1)
    first = await window_store.apply(spec, {bucket: a + b}, rows=rows(("a", a), ("b", b)))
    assert first.claims == (ClaimOutcome(ClaimStatus.COUNTED, 1, 0),) * 2
    assert first.totals.vector.tolist() == [2, 1, 1]
    assert reads == [], "new keys: no vector of their own was needed"
    binned = claim("k", "x", {bucket: vec(2, 2, 2)}, 2)
    second = await window_store.apply(
        spec,
        {bucket: a + c + c},  # a again (a retry), c twice in one flush
        [binned],
        rows=rows(("a", a), ("c", c), ("c", c)),
    )
    assert [o.status for o in second.claims] == [
        ClaimStatus.COUNTED,  # the claim first
        ClaimStatus.REPLAYED,
        ClaimStatus.COUNTED,
        ClaimStatus.REPLAYED,
    ]
    assert sorted(reads) == [0, 2]
    assert second.totals.vector.tolist() == [5, 4, 4]
    assert (await window_store.read(spec)).vector.tolist() == [5, 4, 4]
    with pytest.raises(ValueError, match="2 keys for 1 buckets"):
        await window_store.apply(
            spec, {}, rows=KeyedRows(rows(("d", a), ("e", a)).keys, [bucket], lambda i: a)
        )


async def test_a_late_claim_is_recorded_late_and_replayed_late(window_store: WindowStore) -> None:
    spec = make_spec(width=2)
    now = await store_now(window_store)
    gone = spec.bucket_of(now - spec.window_seconds) - spec.bucket_seconds
    current = spec.bucket_of(now)
    sent = claim("late", "x", {gone: vec(4, 4), current: vec(1, 1)}, 3)
    first = await window_store.apply(spec, {}, [sent])
    assert first.claims == (ClaimOutcome(ClaimStatus.COUNTED, 3, 3),)
    assert first.late_buckets == frozenset({gone})
    assert first.totals.vector.tolist() == [1, 1]
    again = await window_store.apply(spec, {}, [sent])
    assert again.claims == (ClaimOutcome(ClaimStatus.REPLAYED, 3, 3),)
    assert again.totals.vector.tolist() == [1, 1]


async def test_claims_and_deltas_sum_exactly_past_2_53(
    window_store: WindowStore, request: pytest.FixtureRequest
) -> None:
    # Two claims of one bucket and element, each below 2**53, their sum not: Redis
    # merges claims in Lua doubles only while the sum stays exact.
    spec = make_spec(width=2)
    current = spec.bucket_of(await store_now(window_store))
    await window_store.apply(spec, {current: vec(0, 1)})
    result = await window_store.apply(
        spec,
        {current: vec(3, 0)},
        [
            claim("big-1", "1", {current: vec(2**52 + 1, 1)}),
            claim("big-2", "2", {current: vec(2**52 + 2, 1)}),
            claim("small", "3", {current + 60: vec(5, 0)}),
        ],
    )
    assert [c.status for c in result.claims] == [ClaimStatus.COUNTED] * 3
    if isinstance(window_store, RedisWindowStore):
        key = await stored_key(request, spec)
        assert key.totals.tolist() == [2**53 + 11, 3]
        assert_consistent(key)
    else:
        assert result.totals.vector.tolist() == [float(2**53 + 11), 3]


async def test_keys_are_remembered_for_the_horizon_and_then_forgotten(
    request: pytest.FixtureRequest, fake_clock: SettableClock, store_kind: str
) -> None:
    """A key lives in the slice of its moment; a slice goes once the next one has ended."""
    horizon = 1
    store: WindowStore
    if store_kind == "memory":
        store = MemoryWindowStore(clock=fake_clock, idempotency_seconds=horizon)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisWindowStore.from_url(url, idempotency_seconds=horizon)
    spec = make_spec(width=1, window=60, bucket=1)
    try:
        start = await store_now(store)
        sent = claim("once", "body", {spec.bucket_of(start): vec(1)})
        counted = await store.apply(spec, {}, [sent])
        assert counted.claims[0].status is ClaimStatus.COUNTED
        recorded = counted.totals.now
        forgotten = (int(recorded) // horizon + 2) * horizon  # the next slice's end
        assert forgotten >= recorded + horizon
        # Within the horizon (and until the next slice ends): a repeat is a replay.
        await wait_until(store, fake_clock, recorded + 0.5 * horizon)
        retry = claim("once", "body", {spec.bucket_of(await store_now(store)): vec(1)})
        within = await store.apply(spec, {}, [retry])
        assert within.totals.now < forgotten, "the store stalled past the horizon"
        assert within.claims[0].status is ClaimStatus.REPLAYED
        await wait_until(store, fake_clock, forgotten)
        retry = claim("once", "body", {spec.bucket_of(await store_now(store)): vec(1)})
        assert (await store.apply(spec, {}, [retry])).claims[0].status is ClaimStatus.COUNTED
    finally:
        await store.close()


async def test_the_embedded_store_bounds_its_keys_oldest_first(fake_clock: SettableClock) -> None:
    """Past `max_keys` per monitor the previous slice goes early; once the current slice is
    full, keys are counted without being recorded (a retry of those counts again)."""
    horizon = 60
    store = MemoryWindowStore(clock=fake_clock, idempotency_seconds=horizon, max_keys=4)
    spec = make_spec(width=1, window=600, bucket=60)
    start = fake_clock.now // horizon * horizon + 1  # early in a slice
    fake_clock.set(start)

    async def rows(*keys: str) -> ApplyResult:
        sent = [request_key("event", k, k.encode()) for k in keys]
        bucket = spec.bucket_of(fake_clock.now)
        return await store.apply(
            spec,
            {bucket: vec(len(keys))},
            rows=KeyedRows(sent, [bucket] * len(keys), lambda i: vec(1)),
        )

    assert (await rows("a", "b", "c")).unrecorded == 0
    fake_clock.set(start + horizon)  # the next slice: a, b, c are in the previous one
    assert [o.status for o in (await rows("a")).claims] == [ClaimStatus.REPLAYED]
    # Four held and two arriving: the previous slice is forgotten to make room.
    assert (await rows("d", "e")).unrecorded == 0
    assert [o.status for o in (await rows("a")).claims] == [ClaimStatus.COUNTED]
    assert [o.status for o in (await rows("d")).claims] == [ClaimStatus.REPLAYED]
    # The current slice holds d, e and a: one more fits, the next two are not recorded.
    full = await rows("f", "g", "h")
    assert full.unrecorded == 2
    assert [o.status for o in full.claims] == [ClaimStatus.COUNTED] * 3
    again = await rows("f", "g", "h")
    assert [o.status for o in again.claims] == [
        ClaimStatus.REPLAYED,
        ClaimStatus.COUNTED,
        ClaimStatus.COUNTED,
    ]
    assert again.unrecorded == 2
    # Every event was counted: 3 + 2 + 1 (a again) + 3 + 2 (g, h again); replays were not.
    assert (await store.read(spec)).vector.tolist() == [11.0]


async def test_invalid_claims_are_refused_and_nothing_applied(window_store: WindowStore) -> None:
    spec = make_spec(width=2)
    bucket = spec.bucket_of(await store_now(window_store))
    good = claim("good", "g", {bucket: vec(1, 1)})
    for bad in (
        Claim(good.key, {bucket: vec(1, 1)}, {bucket + 60: 1}),
        Claim(good.key, {bucket: vec(1, 1)}, {bucket: -1}),
        Claim(good.key, {}, {}),
        claim("shape", "s", {bucket: vec(1, 1, 1)}),
    ):
        with pytest.raises(ValueError, match=r"claim|shape"):
            await window_store.apply(spec, {bucket: vec(1, 1)}, [good, bad])
    assert (await window_store.read(spec)).vector.tolist() == [0, 0]
    assert (await window_store.apply(spec, {}, [good])).claims[0].status is ClaimStatus.COUNTED


async def test_redis_keys_cost_four_commands_per_flush_whatever_their_number(
    raw_redis: redis.asyncio.Redis,
) -> None:
    """Keys add two HMGETs (this slice, the previous one), one HSET and one EXPIREAT.

    However many keyed requests a flush carries. A flush holding a repeated key takes a
    second call: the first finds the key and changes nothing, the second goes without
    that claim (here: nothing left, so a read, which folds the log). Without keys an
    append stays at three.
    """
    spec = make_spec(monitor="keyed", width=4)
    redis_store = RedisWindowStore(raw_redis, fold_seconds=math.inf)
    for attempt in range(3):  # again if a bucket boundary passes in between
        bucket = spec.bucket_of(await store_now(redis_store))
        await redis_store.apply(spec, {bucket: vec(1, 0, 0, 1)})  # the bucket has its slot
        await redis_store.apply(spec, {bucket: vec(1, 0, 0, 1)})  # the log is started
        plain = await command_calls(raw_redis, redis_store.apply(spec, {bucket: vec(1, 0, 0, 1)}))
        costs = {}
        for n in (1, 64):
            claims = [claim(f"{attempt}-{n}-{i}", "b", {bucket: vec(1, 0, 1, 0)}) for i in range(n)]
            costs[n] = await command_calls(
                raw_redis, redis_store.apply(spec, {bucket: vec(1, 0, 0, 1)}, claims)
            )
        replays = await command_calls(raw_redis, redis_store.apply(spec, {}, claims))
        if spec.bucket_of(await store_now(redis_store)) == bucket:
            break
    assert plain == {"evalsha": 1, "time": 1, "rpush": 1}
    keyed = {"evalsha": 1, "time": 1, "rpush": 1, "hmget": 2, "hset": 1, "expireat": 1}
    assert costs[1] == costs[64] == keyed
    fold = {"lrange": 1, "bitfield": 1, "getrange": 1, "del": 1}
    assert replays == {"evalsha": 2, "time": 2, "hmget": 2, **fold}
    # Per attempt: five unkeyed flushes of (1, 0, 0, 1), 65 keys of (1, 0, 1, 0) once each.
    per_attempt = np.array([70, 0, 65, 5])
    assert (await redis_store.read(spec)).vector.tolist() == (per_attempt * (attempt + 1)).tolist()


async def test_redis_idempotency_keys_live_beside_the_window(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """One hash per slice of the horizon, in the monitor's hash tag, expiring after the next."""
    horizon = 600
    store = RedisWindowStore.from_url(redis_url, idempotency_seconds=horizon)
    spec = make_spec(monitor="tagged", width=2)
    try:
        now = await store_now(store)
        sent = claim("key-1", "body", {spec.bucket_of(now): vec(1, 1)})
        result = await store.apply(spec, {}, [sent])
    finally:
        await store.close()
    current = int(result.totals.now) // horizon
    name = f"driftline:{{tagged}}:idem:{horizon}:{current}"
    assert sorted(await monitor_keys(raw_redis, "tagged")) == sorted(
        [name.encode(), store.window_key(spec).encode()]
    )
    assert await raw_redis.expiretime(name) == (current + 2) * horizon
    stored = await raw_redis.hgetall(name)
    assert stored == {sent.key.digest: sent.key.fingerprint + struct.pack(">II", 1, 0)}


async def bytes_per_field(
    client: redis.asyncio.Redis, monitor: str, kind: bytes, fields: int
) -> float:
    """MEMORY USAGE of the monitor's slices of one kind (`:idem:`...) per field they hold."""
    slices = [k for k in await monitor_keys(client, monitor) if kind in k]
    # Usually one slice; two if a slice boundary passed meanwhile.
    assert sum([await client.hlen(name) for name in slices]) == fields
    return sum([await client.memory_usage(name, samples=0) for name in slices]) / fields


# The bytes per key docs/durability.md states (measured: ~108 in a slice of 20,000).
MEMORY_PER_KEY = 112


async def test_redis_memory_per_idempotency_key(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    """What a key costs in Redis: its slice's MEMORY USAGE over the keys it holds."""
    spec = make_spec(monitor="memory-per-key", width=2)
    bucket = spec.bucket_of(await store_now(redis_store))
    keys = 20_000
    for first in range(0, keys, 1000):
        claims = [
            claim(f"key-{i:08d}", "b", {bucket: vec(1, 1)}) for i in range(first, first + 1000)
        ]
        result = await redis_store.apply(spec, {}, claims)
        assert all(c.status is ClaimStatus.COUNTED for c in result.claims)
    per_key = await bytes_per_field(raw_redis, spec.monitor, b":idem:", keys)
    print(f"\nRedis memory per idempotency key: {per_key:.1f} bytes ({keys} keys in a slice)")
    assert per_key <= MEMORY_PER_KEY


# The bound on bytes per pending prediction docs/labels.md states (measured: 98.5 in a
# slice of 100,000, 101 in one of 20,000: the hash table's fill moves it a few bytes).
MEMORY_PER_PENDING = 112


async def test_redis_memory_per_pending_prediction(
    redis_store: RedisWindowStore, raw_redis: redis.asyncio.Redis
) -> None:
    """What a prediction waiting for its label costs in Redis: its slice's MEMORY USAGE."""
    spec = make_spec(monitor="memory-per-pending", width=2)
    bucket = spec.bucket_of(await store_now(redis_store))
    held = 20_000
    for first in range(0, held, 2000):
        kept = np.zeros(2000, dtype=RECORD)
        kept["bucket"] = bucket
        kept["payload"] = np.arange(first, first + 2000)
        ids = b"".join(id_digest(f"event-{i:08d}") for i in range(first, first + 2000))
        result = await redis_store.apply(
            spec, {bucket: vec(2000, 2000)}, (), Pending(86_400, ids, kept.tobytes())
        )
        assert result.unkept == 0
    per_record = await bytes_per_field(raw_redis, spec.monitor, b":pending3:", held)
    print(f"\nRedis memory per pending prediction: {per_record:.1f} bytes ({held} in a slice)")
    assert per_record <= MEMORY_PER_PENDING


async def test_read_many_reads_each_window_in_order(window_store: WindowStore) -> None:
    """One call for several windows (the evaluation loop's) answers what `read` answers."""
    rng = np.random.default_rng(11)
    specs = [make_spec(monitor=f"many-{i}", width=3 + i % 2) for i in range(5)]
    now = await store_now(window_store)
    for spec in specs[:4]:  # the last one stays empty
        await window_store.apply(spec, {spec.bucket_of(now): counts(rng, spec.width)})
    together = await window_store.read_many(specs)
    alone = [await window_store.read(spec) for spec in specs]
    assert [t.vector.tolist() for t in together] == [a.vector.tolist() for a in alone]
    assert not together[-1].vector.any() and together[0].vector.any()
    assert all(abs(t.now - a.now) < 5 for t, a in zip(together, alone, strict=True))
    assert await window_store.read_many([]) == []


async def test_redis_read_many_reads_idle_windows_as_stored_and_lets_the_script_read_the_rest(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    """An idle window (empty log, nothing due to slide out) is read without window.lua.

    The others go to window.lua, which folds, evicts or rebuilds: a log holding another
    replica's entry, a header whose eviction is due, a key of no window. Every window
    reads what `read` reads afterwards, and only those three ran window.lua (LRANGE).
    """
    store = RedisWindowStore.from_url(redis_url)
    other = appending_store(redis_url, future_seconds=DEFAULT_FUTURE_SECONDS)
    rng = np.random.default_rng(5)
    idle, logged, due, junk, empty = (make_spec(monitor=f"stored-{i}") for i in range(5))
    sent = {spec.monitor: np.zeros(4) for spec in (idle, logged, due)}

    async def apply(via: RedisWindowStore, spec: WindowSpec, now: float) -> None:
        delta = counts(rng, spec.width)
        await via.apply(spec, {spec.bucket_of(now): delta})
        sent[spec.monitor] += delta

    try:
        for _ in range(3):  # again if a bucket boundary passes in between
            now = await store_now(store)
            for spec in (idle, logged, due):
                await apply(store, spec, now)
                await store.read(spec)  # folded: an empty log
            await apply(other, logged, now)  # its first write to it folds
            await apply(other, logged, now)  # appends
            assert await raw_redis.llen(log_key(logged, DEFAULT_FUTURE_SECONDS)) == 1
            # evicted_through (header field 3) long past: an eviction scan is due.
            await raw_redis.setrange(window_key(due, DEFAULT_FUTURE_SECONDS), 24, bytes(8))
            await raw_redis.set(window_key(junk, DEFAULT_FUTURE_SECONDS), b"not a window")
            specs = [idle, logged, due, junk, empty]
            calls = await command_calls(raw_redis, store.read_many(specs))
            together = await store.read_many(specs)  # the same, once the script has read
            if idle.bucket_of(await store_now(store)) == idle.bucket_of(now):
                break
        assert calls["llen"] == 5 and calls.get("lrange") == 3
        alone = [await store.read(spec) for spec in specs]
        assert [t.vector.tolist() for t in together] == [a.vector.tolist() for a in alone]
        assert [t.vector.tolist() for t in together[:3]] == [
            sent[spec.monitor].tolist() for spec in (idle, logged, due)
        ]
        assert not together[3].vector.any() and not together[4].vector.any()
    finally:
        await store.close()
        await other.close()


# --- per-bucket reads (rolling references) ----------------------------------------------


async def test_buckets_reads_each_span_bucket_by_bucket(window_store: WindowStore) -> None:
    # A window of 10 minutes keeping 20 (a previous-window reference) plus one more.
    spec = make_spec(monitor="spans", width=3, window=1260, bucket=60)
    now = await store_now(window_store)
    here = spec.bucket_of(now)
    previous = {here - 900: vec(1, 2, 3), here - 1020: vec(4, 5, 6)}
    current = {here: vec(7, 8, 9), here - 120: vec(1, 1, 1)}
    older = {here - 1260: vec(100, 100, 100)}  # kept, but in neither span
    result = await window_store.apply(spec, {**previous, **current, **older})
    assert not result.late_buckets
    # Span bounds are on the store's clock: read until no bucket boundary passed meanwhile.
    for _ in range(3):
        read = await window_store.buckets(spec, [Span(0, 600), Span(600, 600)])
        if spec.bucket_of(read.now) == here:
            break
        here = spec.bucket_of(read.now)
    else:
        pytest.fail("a bucket boundary passed on every read")
    after, _ = Span(0, 600).bounds(read.now, 60)
    ref_after, ref_upto = Span(600, 600).bounds(read.now, 60)
    expected = {
        b: v
        for b, v in {**previous, **current, **older}.items()
        if b > after or ref_after < b <= (ref_upto or 0)
    }
    assert set(read.vectors) == set(expected) and here - 1260 not in read.vectors
    for bucket, vector in expected.items():
        np.testing.assert_array_equal(read.vectors[bucket], vector)
    # The current span alone: no reference buckets.
    alone = await window_store.buckets(spec, [Span(0, 600)])
    assert set(alone.vectors) == {b for b in read.vectors if b > after} == set(current)


async def test_buckets_of_an_empty_window_are_none(window_store: WindowStore) -> None:
    spec = make_spec(monitor="spans-empty", width=3, window=1200, bucket=60)
    read = await window_store.buckets(spec, [Span(0, 600), Span(600, 600)])
    assert read.vectors == {}


async def test_redis_memory_of_each_reference(
    redis_url: str, raw_redis: redis.asyncio.Redis, tmp_path: Path
) -> None:
    """MEMORY USAGE of a monitor's window key with 8 numeric features and 1-minute
    buckets, per reference (the figures in docs/metrics.md, "Reference and window
    choices"): the ring keeps every bucket of the window and of its reference."""
    rng = np.random.default_rng(8)
    columns = [f"f{i}" for i in range(8)]
    rows = "\n".join(",".join(f"{v:.4f}" for v in row) for row in rng.normal(size=(500, 8)))
    (tmp_path / "baseline.csv").write_text(",".join(columns) + "\n" + rows + "\n")
    references: dict[str, dict[str, Any]] = {
        "baseline": {"kind": "baseline"},
        "previous_window": {"kind": "previous_window"},
        "day": {"kind": "period", "period_seconds": 86400},
        "week": {"kind": "period", "period_seconds": 604800},
    }
    store = RedisWindowStore.from_url(redis_url)
    try:
        for label, reference in references.items():
            config = {"name": f"mem-{label}", "baseline": "baseline.csv", "reference": reference}
            spec = make_monitor(config, base_dir=tmp_path).window
            bucket = spec.bucket_of(await store_now(store))
            await store.apply(spec, {bucket: np.ones(spec.width)})
            usage = await raw_redis.memory_usage(store.window_key(spec), samples=0)
            size = window_bytes(spec, DEFAULT_FUTURE_SECONDS)
            print(
                f"\n[memory] reference {label}: width {spec.width}, ring "
                f"{ring_slots(spec, DEFAULT_FUTURE_SECONDS)} buckets, {size} B of string, "
                f"MEMORY USAGE {usage} B"
            )
            # The string itself, plus Redis's allocation rounding and key overhead.
            assert size <= usage <= size * 1.3 + 256
    finally:
        await store.close()
