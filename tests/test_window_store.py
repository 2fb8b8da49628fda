"""One suite for every WindowStore backend: the memory store and Redis behave the same."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import numpy as np
import pytest
import redis.asyncio

from service.memory_store import MemoryWindowStore
from service.redis_store import RedisWindowStore, grace_seconds, monitor_pattern, window_keys
from service.window import StoreUnavailableError, Vector, WindowSpec, WindowStore


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
    # Small integers and quarters: every sum is exact in float64, whatever the order.
    return rng.integers(0, 1000, width).astype(np.float64) / 4


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


async def test_float_sums_match_numpy(window_store: WindowStore) -> None:
    rng = np.random.default_rng(3)
    spec = make_spec(width=8)
    current = spec.bucket_of(await store_now(window_store))
    sent = []
    for i in range(30):
        delta = rng.normal(size=spec.width) * 1e3
        sent.append(delta)
        await window_store.apply(spec, {current - (i % 3) * spec.bucket_seconds: delta})
    totals = await window_store.read(spec)
    np.testing.assert_allclose(totals.vector, np.sum(sent, axis=0), rtol=1e-12, atol=1e-9)


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
        assert len(await server_keys(request, "mx")) == 4  # totals, index, 2 buckets


async def test_drop_of_unknown_monitor_is_a_no_op(window_store: WindowStore) -> None:
    await window_store.drop("never-seen")


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


async def test_eviction_subtracts_exactly_and_empty_window_is_exact_zeros(
    window_store: WindowStore, fake_clock: SettableClock, request: pytest.FixtureRequest
) -> None:
    spec = make_spec(width=3, window=2, bucket=1)
    now = await store_now(window_store)
    current = spec.bucket_of(now)
    old, new = current - 1, current  # both live: b + B > now - W
    # Slot 0 counts events (exact); the others are float sums that drift under +/-.
    old_deltas = [vec(3, 0.1, 0.2), vec(2, 0.7, 1e-3)]
    new_deltas = [vec(5, 0.3, 0.9), vec(1, 0.6, 2.5)]
    for d_old, d_new in zip(old_deltas, new_deltas, strict=True):
        result = await window_store.apply(spec, {old: d_old, new: d_new})
        assert result.late_buckets == frozenset()
    both = np.sum(old_deltas + new_deltas, axis=0)
    np.testing.assert_allclose(result.totals.vector, both, rtol=1e-12)
    assert result.totals.vector[0] == 11

    if isinstance(window_store, MemoryWindowStore):
        # The boundary itself: `old` is live until now - W reaches old + B.
        fake_clock.set(old + spec.bucket_seconds + spec.window_seconds - 1e-3)
        assert (await window_store.read(spec)).vector[0] == 11

    await wait_until(window_store, fake_clock, old + spec.bucket_seconds + spec.window_seconds)
    partial = await window_store.read(spec)
    assert partial.vector[0] == 6
    np.testing.assert_allclose(partial.vector, np.sum(new_deltas, axis=0), rtol=1e-12)
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
    results = await asyncio.gather(*(store.apply(spec, deltas) for store, deltas in calls))
    assert all(not r.late_buckets for r in results)
    expected = np.sum([v for _, deltas in calls for v in deltas.values()], axis=0)
    assert np.array_equal((await window_store.read(spec)).vector, expected)
    assert np.array_equal((await peer_store.read(spec)).vector, expected)
    # Some apply saw the full sum: the last one to run.
    assert any(np.array_equal(r.totals.vector, expected) for r in results)


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


async def test_backends_agree_to_the_bit(redis_url: str, fake_clock: SettableClock) -> None:
    rng = np.random.default_rng(5)
    spec = make_spec(width=8, window=3600, bucket=60)
    store = RedisWindowStore.from_url(redis_url)
    try:
        fake_clock.set(await store_now(store))
        memory = MemoryWindowStore(clock=lambda: fake_clock.now)
        current = spec.bucket_of(await store_now(store))
        for i in range(40):
            deltas = {
                current - (i % 4) * 60: rng.normal(size=8) * 10,
                current - (i % 7) * 60: rng.normal(size=8),
            }
            from_redis = await store.apply(spec, deltas)
            from_memory = await memory.apply(spec, deltas)
            assert np.array_equal(from_redis.totals.vector, from_memory.totals.vector)
    finally:
        await store.close()


async def test_redis_ttls_on_every_key(redis_url: str, raw_redis: redis.asyncio.Redis) -> None:
    spec = make_spec(width=2, window=3600, bucket=60)
    grace = grace_seconds(spec)
    store = RedisWindowStore.from_url(redis_url)
    try:
        current = spec.bucket_of(await store_now(store))
        buckets = [current - k * 60 for k in (0, 5, 30)]
        await store.apply(spec, {b: vec(1, 1) for b in buckets})
        await store.apply(spec, {buckets[-1]: vec(1, 1)})  # older bucket: TTLs must not shrink
    finally:
        await store.close()

    keys = await monitor_keys(raw_redis, spec.monitor)
    assert len(keys) == 2 + len(buckets)
    for key in keys:
        pttl = await raw_redis.pttl(key)
        assert 0 < pttl <= (spec.window_seconds + spec.bucket_seconds + grace) * 1000, key
    totals_key, index_key, prefix = window_keys(spec)
    for b in buckets:
        expected = (b + spec.bucket_seconds + spec.window_seconds + grace) * 1000
        assert await raw_redis.pexpiretime(f"{prefix}{b}") == expected
    newest = (current + spec.bucket_seconds + spec.window_seconds + grace) * 1000
    assert await raw_redis.pexpiretime(totals_key) == newest
    assert await raw_redis.pexpiretime(index_key) == newest


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
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2)
    totals_key, _, _ = window_keys(spec)
    await raw_redis.hset(totals_key, "wrong", "type")  # GET on a hash: WRONGTYPE
    store = RedisWindowStore.from_url(redis_url)
    try:
        bucket = spec.bucket_of(await store_now(store))
        with pytest.raises(StoreUnavailableError, match="WRONGTYPE") as error:
            await store.apply(spec, {bucket: vec(1, 1)})
        assert error.value.__cause__ is not None
    finally:
        await store.close()
    assert await monitor_keys(raw_redis, spec.monitor) == [totals_key.encode()]


async def test_redis_reloads_script_after_flush(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=1)
    store = RedisWindowStore.from_url(redis_url)
    try:
        bucket = spec.bucket_of(await store_now(store))
        await store.apply(spec, {bucket: vec(1)})
        await raw_redis.script_flush()
        result = await store.apply(spec, {bucket: vec(2)})
        assert np.array_equal(result.totals.vector, vec(3))
    finally:
        await store.close()


async def test_redis_heals_totals_when_an_evicted_bucket_already_expired(
    redis_url: str, raw_redis: redis.asyncio.Redis, fake_clock: SettableClock
) -> None:
    spec = make_spec(width=2, window=2, bucket=1)
    _, index_key, prefix = window_keys(spec)
    store = RedisWindowStore.from_url(redis_url)
    try:
        current = spec.bucket_of(await store_now(store))
        old, new = current - 1, current
        await store.apply(spec, {old: vec(3, 0.1), new: vec(5, 0.7)})
        await raw_redis.delete(f"{prefix}{old}")  # as if its TTL had fired
        await wait_until(store, fake_clock, old + spec.bucket_seconds + spec.window_seconds)
        totals = await store.read(spec)
        # Without the rebuild the totals would keep old's (3, 0.1) forever.
        assert np.array_equal(totals.vector, vec(5, 0.7))
        assert await raw_redis.zrange(index_key, 0, -1) == [str(new).encode()]
    finally:
        await store.close()


async def test_redis_heals_lost_totals_and_lost_live_bucket(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    spec = make_spec(width=2)
    totals_key, _, prefix = window_keys(spec)
    store = RedisWindowStore.from_url(redis_url)
    try:
        current = spec.bucket_of(await store_now(store))
        await store.apply(spec, {current: vec(1, 2), current - 60: vec(10, 20)})

        await raw_redis.delete(totals_key)
        assert np.array_equal((await store.read(spec)).vector, vec(11, 22))
        assert await raw_redis.pttl(totals_key) > 0

        await raw_redis.delete(f"{prefix}{current}")  # its (1, 2) is gone for good
        result = await store.apply(spec, {current: vec(100, 100)})
        assert np.array_equal(result.totals.vector, vec(110, 120))

        await raw_redis.set(f"{prefix}{current - 60}", b"\xc1 not msgpack")
        assert np.array_equal((await store.read(spec)).vector, vec(110, 120))
        result = await store.apply(spec, {current - 60: vec(1, 1)})
        assert np.array_equal(result.totals.vector, vec(101, 101))
    finally:
        await store.close()


async def test_redis_commands_per_call_are_few_and_independent_of_width(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    async def commands_of(store: RedisWindowStore, spec: WindowSpec, bucket: int | None) -> int:
        await raw_redis.config_resetstat()
        if bucket is None:
            await store.read(spec)
        else:
            await store.apply(spec, {bucket: np.ones(spec.width)})
        stats = await raw_redis.info("commandstats")
        ignored = {"cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info"}
        return sum(int(v["calls"]) for k, v in stats.items() if k not in ignored)

    store = RedisWindowStore.from_url(redis_url)
    try:
        seen = set()
        for width in (1, 1000):
            spec = make_spec(monitor=f"w{width}", width=width)
            bucket = spec.bucket_of(await store_now(store))
            await store.apply(spec, {bucket: np.ones(width)})  # creates the window
            seen.add(
                (
                    await commands_of(store, spec, bucket),
                    await commands_of(store, spec, None),
                )
            )
        # TIME ZRANGEBYSCORE GET MGET SET ZADD ZRANGE EXPIREAT SET; read: TIME ZRANGEBYSCORE GET
        assert seen == {(9, 3)}
    finally:
        await store.close()


async def test_redis_server_does_not_persist(raw_redis: redis.asyncio.Redis) -> None:
    assert (await raw_redis.config_get("save"))["save"] == ""
    assert (await raw_redis.config_get("appendonly"))["appendonly"] == "no"


@pytest.mark.parametrize("fenced", [True, False])
async def test_redis_refuses_a_flush_that_arrives_after_its_deadline(
    redis_url: str, raw_redis: redis.asyncio.Redis, fenced: bool
) -> None:
    """A flush Redis runs only after the replica gave up on it must not count.

    CLIENT PAUSE holds the script past the fence (0.2 s) but within the socket timeout,
    so the reply still arrives: fenced, the script refuses and nothing is added;
    unfenced (the counterfactual), the same late script adds its deltas.
    """
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5)
    store = RedisWindowStore(client, fence_seconds=0.2 if fenced else None)
    spec = make_spec(width=2)
    try:
        now = (await store.read(spec)).now  # learns the Redis clock offset
        bucket = spec.bucket_of(now)
        await raw_redis.execute_command("CLIENT", "PAUSE", 600, "WRITE")
        if fenced:
            with pytest.raises(StoreUnavailableError, match="deadline passed"):
                await store.apply(spec, {bucket: vec(1, 2)})
        else:
            await store.apply(spec, {bucket: vec(1, 2)})
        totals = await store.read(spec)
        expected = [0.0, 0.0] if fenced else [1.0, 2.0]
        assert totals.vector.tolist() == expected
        # The fence holds only for late flushes: a timely one is applied.
        await store.apply(spec, {bucket: vec(1, 2)})
        assert (await store.read(spec)).vector.tolist() == [
            x + y for x, y in zip(expected, [1, 2], strict=True)
        ]
    finally:
        await raw_redis.execute_command("CLIENT", "UNPAUSE")
        await store.close()
