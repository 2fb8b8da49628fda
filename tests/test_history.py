"""Drift history: record format, the ring in both stores, recording once per bucket, the API."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient
from support import EXAMPLE_CONFIG, example_monitor, fast_monitors, wait_until
from support import window_totals as example_window

from driftline.core.history import (
    FEATURE,
    HEADER,
    HistorySpec,
    decode_record,
    encode_record,
    history_spec,
)
from driftline.core.monitor import Monitor, build_monitor, read_monitor_config
from driftline.core.policy import DEFAULTS
from driftline.core.report import assess
from driftline.core.window import WindowTotals
from driftline.engine.history import MAX_WRITES, HistoryRecorder
from driftline.http.app import create_app
from driftline.settings import AlertSettings, Settings
from driftline.simulate import SCENARIOS, ProfileSampler, payload, scenario
from driftline.stores.memory import MemoryHistoryStore
from driftline.stores.protocol import HistoryStore
from driftline.stores.redis import RedisWindowStore
from driftline.stores.redis_history import RedisHistoryStore, history_key
from driftline.telemetry import Telemetry

MONITOR = "credit-risk"
WEEK = 7 * 24 * 3600


def totals_at(monitor: Monitor, now: float, *, drifted: bool) -> WindowTotals:
    """The example's baseline-like or drifted window, read at `now`."""
    base = example_window(monitor, drifted=drifted)
    return WindowTotals(base.vector, now - monitor.window.window_seconds, now)


def record_of(spec: HistorySpec, bucket: int, fill: int = 0) -> bytes:
    """A record of the spec's size for `bucket` (its body filled with one byte)."""
    return bucket.to_bytes(8, "big", signed=True) + bytes([fill]) * (spec.record_bytes - 8)


# ---------------------------------------------------------------------- record format


@pytest.mark.parametrize("drifted", [False, True])
def test_record_holds_the_verdict_of_every_feature(drifted: bool) -> None:
    monitor = example_monitor()
    totals = totals_at(monitor, 1_748_513_630.0, drifted=drifted)
    assessment = assess(monitor, totals)
    spec = history_spec(monitor, WEEK)
    record = encode_record(assessment, 1_748_513_580)
    features = len(monitor.layout.features)
    assert len(record) == spec.record_bytes == 21 + 17 * features
    assert (HEADER.itemsize, FEATURE.itemsize) == (21, 17)
    point = decode_record(monitor, spec, record)
    assert point.time == "2025-05-29T10:14:00.000Z"  # the bucket's end
    verdict = assessment.evaluation.verdict
    assert point.events == monitor.profile.rows
    assert point.severity == verdict.severity
    assert point.ready and point.drift_detected == drifted
    assert point.drift_score == pytest.approx(verdict.drift_score, rel=1e-6)
    vector = totals.vector
    for name, slots in monitor.layout.features.items():
        scored = assessment.evaluation.features[name]
        got = point.features[name]
        assert got.score == pytest.approx(scored.score, rel=1e-6, abs=1e-9)
        assert got.p_adjusted == pytest.approx(scored.p_adjusted, rel=1e-6, abs=1e-38)
        assert (got.severity, got.reasons) == (scored.severity, list(scored.reasons))
        # From the window's counts directly, not from the evaluation.
        assert got.missing_rate == pytest.approx(vector[slots.missing] / vector[0], abs=1e-7)
        if slots.kind == "numeric":
            assert got.new_category_rate is None
            n = vector[slots.first_bin : slots.first_bin + slots.profile.bins].sum()
            assert got.out_of_range_rate == pytest.approx(vector[slots.out_of_range] / n, abs=1e-7)
        else:
            assert got.out_of_range_rate is None
            n = vector[slots.first_bin : slots.first_bin + slots.profile.bins].sum()
            assert got.new_category_rate == pytest.approx(vector[slots.other] / n, abs=1e-7)
    if drifted:
        assert point.severity == "critical"
        assert any(f.severity == "critical" for f in point.features.values())


def test_spec_ranges_wrap_the_ring() -> None:
    spec = HistorySpec("m", "l", record_bytes=10, bucket_seconds=60, slots=5)
    assert spec.slot_of(0) == 0 and spec.slot_of(300) == 0 and spec.slot_of(240) == 4
    assert spec.ranges(180, 300) == [(30, 20), (0, 10)]  # slots 3, 4, then 0
    assert spec.ranges(0, 10_000) == [(0, 50)]  # longer than the ring: all of it
    assert spec.ranges(120, 60) == []


# ---------------------------------------------------------------------- the stores


@pytest.fixture(params=["memory", "redis"])
async def history_store(request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    """A fresh history store of each kind (Redis: the session's server, flushed)."""
    if request.param == "memory":
        yield MemoryHistoryStore()
        return
    window = RedisWindowStore.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisHistoryStore(window.client)
    finally:
        await window.close()


async def test_a_bucket_is_written_once_and_never_by_an_older_one(
    history_store: HistoryStore,
) -> None:
    spec = HistorySpec(MONITOR, "layout", record_bytes=29, bucket_seconds=60, slots=4)
    assert await history_store.record(spec, 600, record_of(spec, 600, 1))
    # Another replica closing the same bucket changes nothing.
    assert not await history_store.record(spec, 600, record_of(spec, 600, 2))
    # A bucket one ring earlier maps to the same slot: stale, refused.
    assert not await history_store.record(spec, 360, record_of(spec, 360, 3))
    assert await history_store.read(spec, 0, 10_000) == [record_of(spec, 600, 1)]
    for bucket in (660, 720, 780):
        assert await history_store.record(spec, bucket, record_of(spec, bucket, 4))
    got = await history_store.read(spec, 600, 780)
    assert [int.from_bytes(r[:8], "big") for r in got] == [600, 660, 720, 780]
    # One ring later the slot of 600 is taken over: 600 is gone, 840 is there.
    assert await history_store.record(spec, 840, record_of(spec, 840, 5))
    got = await history_store.read(spec, 540, 900)
    assert [int.from_bytes(r[:8], "big") for r in got] == [660, 720, 780, 840]
    assert await history_store.read(spec, 700, 790) == [
        record_of(spec, 720, 4),
        record_of(spec, 780, 4),
    ]


async def test_bad_records_are_refused(history_store: HistoryStore) -> None:
    spec = HistorySpec(MONITOR, "layout", record_bytes=29, bucket_seconds=60, slots=4)
    with pytest.raises(ValueError, match="30 bytes, expected 29"):
        await history_store.record(spec, 600, record_of(spec, 600) + b"x")
    with pytest.raises(ValueError, match="bucket 660"):
        await history_store.record(spec, 660, record_of(spec, 600))
    assert await history_store.read(spec, 0, 10_000) == []


async def test_redis_ring_memory_is_fixed_from_the_first_write(redis_url: str) -> None:
    """MEMORY USAGE of the example monitor's week of history, empty and full."""
    monitor = example_monitor()
    spec = history_spec(monitor, WEEK)
    window = RedisWindowStore.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        store = RedisHistoryStore(window.client)
        start = 1_748_000_000 // 60 * 60
        assert await store.record(spec, start, record_of(spec, start))
        first = await client.memory_usage(history_key(spec))
        for i in range(1, spec.slots + 50):  # every slot, and round the ring again
            bucket = start + 60 * i
            assert await store.record(spec, bucket, record_of(spec, bucket, 7))
        full = await client.memory_usage(history_key(spec))
        ttl = await client.ttl(history_key(spec))
    finally:
        await client.aclose()
        await window.close()
    payload = spec.slots * spec.record_bytes
    print(
        f"\n[history] {MONITOR}: {len(monitor.layout.features)} features, "
        f"{spec.slots} slots x {spec.record_bytes} B = {payload} B; "
        f"MEMORY USAGE {first} B after one write, {full} B full"
    )
    assert first == full
    # jemalloc rounds a large allocation up to its size class: four per power of two.
    assert payload <= full <= payload * 1.25
    assert WEEK < ttl <= WEEK + 180


class CountingStore:
    """A real history store that counts the writes it is asked for and how many landed."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self.asked = 0
        self.written = 0

    async def record(self, spec: HistorySpec, bucket: int, record: bytes) -> bool:
        self.asked += 1
        written = await self.store.record(spec, bucket, record)
        self.written += written
        return written

    async def read(self, spec: HistorySpec, first: int, last: int) -> list[bytes]:
        return await self.store.read(spec, first, last)

    async def drop(self, monitor: str) -> None:
        await self.store.drop(monitor)


async def test_replicas_record_each_bucket_once(history_store: HistoryStore) -> None:
    monitor = example_monitor()
    shared = CountingStore(history_store)
    replicas = [HistoryRecorder(shared, WEEK, Telemetry()) for _ in range(2)]
    start = 1_748_000_000 // 60 * 60
    # Each replica assesses many times per bucket; buckets 0-2 baseline-like, 3-4 drifted.
    for i in range(5):
        for offset in (1.0, 20.0, 59.5):
            for replica in replicas:
                at = start + 60 * i + offset
                replica.offer(assess(monitor, totals_at(monitor, at, drifted=i >= 3)))
    for replica in replicas:
        await replica.close()
    # The fifth bucket is still open; each replica offered each closed bucket once.
    assert shared.asked == 2 * 4
    assert shared.written == 4
    history = await replicas[0].read(monitor, start, start + 300, 60)
    assert [p.severity for p in history.points] == ["none", "none", "none", "critical"]
    assert history.points[0].time == "2025-05-23T11:34:00.000Z"
    # A coarser step keeps the last verdict of each step.
    coarse = await replicas[1].read(monitor, start, start + 300, 120)
    assert [p.severity for p in coarse.points] == ["none", "critical"]
    await replicas[0].drop(MONITOR)
    assert (await replicas[1].read(monitor, start, start + 300, 60)).points == []


class GatedStore(CountingStore):
    """Holds every write until released, counting how many wait at once."""

    def __init__(self, store: HistoryStore) -> None:
        super().__init__(store)
        self.release = asyncio.Event()
        self.waiting = 0
        self.most = 0

    async def record(self, spec: HistorySpec, bucket: int, record: bytes) -> bool:
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        await self.release.wait()
        self.waiting -= 1
        return await super().record(spec, bucket, record)


async def test_a_fleet_closing_its_buckets_at_once_writes_a_few_at_a_time(
    history_store: HistoryStore,
) -> None:
    """Every monitor closes its bucket at the same moment: MAX_WRITES writes in flight."""
    config = read_monitor_config(EXAMPLE_CONFIG, EXAMPLE_CONFIG.name)
    monitors = [
        build_monitor(
            msgspec.structs.replace(config, name=f"fleet-{i}"),
            DEFAULTS,
            base_dir=EXAMPLE_CONFIG.parent,
            source=EXAMPLE_CONFIG.name,
        )
        for i in range(3 * MAX_WRITES)
    ]
    gated = GatedStore(history_store)
    recorder = HistoryRecorder(gated, WEEK, Telemetry())
    start = 1_748_000_000 // 60 * 60
    for at in (start + 30, start + 90):  # the second closes every monitor's first bucket
        for monitor in monitors:
            recorder.offer(assess(monitor, totals_at(monitor, at, drifted=False)))

    async def full() -> bool:
        return gated.waiting == MAX_WRITES

    await wait_until(full, lambda: f"{gated.waiting} writes in flight")
    gated.release.set()
    await recorder.close()
    assert gated.most == MAX_WRITES
    assert gated.asked == gated.written == len(monitors)


# ---------------------------------------------------------------------- the API


def fast_settings(directory: Path, redis_url: str | None, **extra: Any) -> Settings:
    """The example monitor on 1 s buckets, re-evaluated every 0.2 s: a point per second."""
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(fast_monitors(directory)),
        redis_url=redis_url,
        flush_interval=0.001,
        alerts=AlertSettings(evaluation_interval=0.2),
        **{"history_horizon": 3600, **extra},
    )


@pytest.fixture(params=["memory", "redis"])
async def fast_client(
    request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path
) -> TestClient:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    app_client: TestClient = await aiohttp_client(create_app(fast_settings(tmp_path, url)))
    return app_client


async def _points(client: TestClient, **query: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/v1/monitors/{MONITOR}/history", params=query)
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    points: list[dict[str, Any]] = body["points"]
    return points


async def test_history_follows_the_traffic_json_and_csv(fast_client: TestClient) -> None:
    monitor = example_monitor()
    sampler = ProfileSampler(monitor.profile, np.random.default_rng(3))
    url = f"/v1/monitors/{MONITOR}/events"
    since = str(int(time.time()) - 5)  # epoch seconds: a minute at 1 s steps
    baseline = [payload(e, monitor.prediction) for e in sampler.events(400, SCENARIOS["baseline"])]
    answer = await fast_client.post(url, json=baseline)
    assert answer.status == 200, (await answer.text())[:300]

    async def has(severity: str) -> bool:
        return any(p["severity"] == severity for p in await _points(fast_client, **{"from": since}))

    await wait_until(lambda: has("none"), "a point of the baseline-like window")
    drifted = [
        payload(e, monitor.prediction) for e in sampler.events(2000, scenario("feature:age"))
    ]
    answer = await fast_client.post(url, json=drifted)
    assert answer.status == 200, (await answer.text())[:300]
    await wait_until(lambda: has("critical"), "a critical point after drifted traffic")
    answer = await fast_client.get(f"/v1/monitors/{MONITOR}/history", params={"from": since})
    body = await answer.json()
    assert body["bucket_seconds"] == 1 and body["step"] == 1
    assert body["horizon_seconds"] == 3600
    assert list(body["features"]) == list(monitor.layout.features)
    points = body["points"]
    times = [p["time"] for p in points]
    assert times == sorted(times) and len(set(times)) == len(times)
    last = points[-1]
    assert last["features"]["age"]["severity"] == "critical"
    assert "distribution" in last["features"]["age"]["reasons"]
    assert last["features"]["age"]["score"] > 0.5
    assert last["events"] == 2400
    # CSV: by header, and by ?format=; one row per point and feature.
    for headers, params in (({"Accept": "text/csv"}, {}), ({}, {"format": "csv"})):
        answer = await fast_client.get(
            f"/v1/monitors/{MONITOR}/history",
            headers=headers,
            params={"from": since, "to": body["end"], **params},
        )
        assert answer.status == 200
        assert answer.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await answer.text())))
        assert len(rows) == len(points) * len(monitor.layout.features)
        age = [r for r in rows if r["feature"] == "age"]
        assert age[-1]["feature_severity"] == "critical"
        assert float(age[-1]["score"]) == pytest.approx(last["features"]["age"]["score"])


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"from": "yesterday"}, "from", "expected an RFC 3339 timestamp"),
        ({"to": "2025-05-29T10:30:00"}, "to", "with a zone"),
        ({"from": "2025-05-29T11:00:00Z", "to": "2025-05-29T10:00:00Z"}, "from", "before to"),
        ({"from": "-5"}, "from", "after 1970"),
        ({"step": "90"}, "step", "multiple of the monitor's bucket (60 s)"),
        ({"step": "0"}, "step", "positive multiple"),
        ({"step": "1.5"}, "step", "expected seconds"),
        ({"step": "60"}, "step", "more than 2000 points"),  # a week at 60 s: 10080
        ({"format": "xml"}, "format", "expected json or csv"),
    ],
)
async def test_bad_history_queries_are_problems_naming_the_parameter(
    client: TestClient, query: dict[str, str], field: str, message: str
) -> None:
    answer = await client.get(f"/v1/monitors/{MONITOR}/history", params=query)
    assert answer.status == 400, await answer.text()
    assert answer.content_type == "application/problem+json"
    body = await answer.json()
    assert body["errors"][0]["field"] == field
    assert message in body["detail"] and body["detail"].startswith(f"{field}: ")


async def test_history_of_an_unknown_monitor_and_with_history_off(
    client: TestClient, aiohttp_client: Any, tmp_path: Path
) -> None:
    answer = await client.get("/v1/monitors/nope/history")
    assert answer.status == 404
    off = await aiohttp_client(create_app(fast_settings(tmp_path, None, history_horizon=0)))
    answer = await off.get(f"/v1/monitors/{MONITOR}/history")
    assert answer.status == 404
    body = await answer.json()
    assert "DRIFTLINE_HISTORY_HORIZON" in body["detail"]


async def test_history_is_in_the_openapi_document(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/monitors/{name}/history"]["get"]
    assert operation["x-driftline-scope"] == "read"
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    names = {p["name"] for p in operation["parameters"]}
    assert {"name", "from", "to", "step", "format"} <= names
    assert "400" in operation["responses"]
