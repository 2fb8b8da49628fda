"""The clients against a real `driftline serve` process, on the embedded store and on Redis.

Every test reads back what the service counted (`GET /v1/monitors/{name}/drift`) and
compares it with the client's own counters: events are sent once each, the service can
be down when the client starts, killed and restarted mid-stream, and nothing the caller
does makes `log()` raise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiohttp import ClientSession, web
from k8s_support import free_port
from support import EXAMPLES, MONITOR, Service, wait_until

from driftline.client import AsyncDriftClient, DriftClient

ROWS: list[dict[str, Any]] = json.loads((EXAMPLES / "baseline_data.json").read_text())
NUMERIC = ["age", "income", "tenure_months", "credit_score", "num_products"]


@pytest.fixture(params=["embedded", "redis"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with Service(tmp_path, redis_url).running() as running:
        yield running


def sync_client(service: Service, **options: Any) -> DriftClient:
    """A client that sends small batches quickly (the tests' traffic is small)."""
    settings: dict[str, Any] = {"batch_size": 200, "max_delay": 0.05, "backoff_cap": 0.5}
    return DriftClient(service.url, MONITOR, **(settings | options))


# --------------------------------------------------------------------------- sending


def test_dicts_frames_and_arrays_are_each_counted_once(service: Service) -> None:
    frame = pd.DataFrame(ROWS[300:800])
    matrix = np.array([[row[n] for n in NUMERIC] for row in ROWS[800:1000]], dtype=np.float64)
    with sync_client(service) as client:
        for row in ROWS[:300]:
            client.log(row, model_version="v1")
        client.log_batch(frame)
        client.log_batch(matrix, columns=NUMERIC)
        assert client.flush(timeout=30)
        stats = client.stats()
    assert (stats.logged, stats.sent, stats.pending) == (1000, 1000, 0)
    assert stats.dropped == stats.failed == stats.rejected == stats.retries == 0
    assert stats.batches >= 3  # rows, then the frame and the array (other columns)
    report = service.report()
    assert report["window"]["events"] == 1000
    # Values arrive as sent: the window's mean age and channel shares from numpy.
    ages = np.array([row["age"] for row in ROWS[:1000]], dtype=np.float64)
    age = report["features"]["age"]
    assert age["mean"] == pytest.approx(np.nanmean(ages), abs=1e-3)
    assert age["missing_rate"] == pytest.approx(np.isnan(ages).mean())
    channel = report["features"]["channel"]
    # The array has no channel: its 200 events count as missing.
    sent = [row["channel"] for row in ROWS[:800] if row["channel"] is not None]
    assert channel["missing_rate"] == pytest.approx((1000 - len(sent)) / 1000)
    shares = {b: sent.count(b) / len(sent) for b in channel["bins"] if b != "other"}
    got = dict(zip(channel["bins"], channel["window_proportions"], strict=True))
    assert {b: got[b] for b in shares} == pytest.approx(shares)


def test_the_service_down_at_first_counts_everything_once_it_is_up(service: Service) -> None:
    service.process.stop()
    with sync_client(service) as client:
        for row in ROWS[:400]:
            client.log(row)
        client.log_batch(pd.DataFrame(ROWS[400:700]))

        async def tried() -> bool:
            return client.stats().retries >= 2

        asyncio.run(wait_until(tried, "the client to try the stopped service"))
        assert client.stats().sent == 0
        assert not client.flush(timeout=0.2)  # nothing can be sent yet
        service.start()
        assert client.flush(timeout=30)
        stats = client.stats()
    assert (stats.sent, stats.dropped, stats.failed, stats.pending) == (700, 0, 0, 0)
    assert service.counted() == 700


def test_killed_and_restarted_mid_stream(service: Service, request: pytest.FixtureRequest) -> None:
    redis = request.node.callspec.params["service"] == "redis"
    client = sync_client(service, overflow="block", block_timeout=60, capacity=5_000)
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            client.log(ROWS[i % len(ROWS)])
            if i % 50 == 0:
                client.log_batch(pd.DataFrame(ROWS[:50]))
            i += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:

        def sent_at_least(n: int) -> Any:
            async def check() -> bool:
                return client.stats().sent >= n

            return check

        asyncio.run(wait_until(sent_at_least(3000), "the stream to flow", within=30))
        retries = client.stats().retries
        service.process.kill()

        async def noticed() -> bool:
            return client.stats().retries > retries

        # Once an attempt at the dead service failed, every answer it gave was read (one
        # batch in flight at a time): nothing more can be acknowledged until it restarts.
        asyncio.run(wait_until(noticed, "the client to notice the kill"))
        before_restart = client.stats().sent
        service.start()
        asyncio.run(wait_until(sent_at_least(before_restart + 3000), "the stream to flow again"))
    finally:
        stop.set()
        producer.join()
    assert client.close(timeout=30)
    stats = client.stats()
    assert stats.logged == stats.sent > before_restart
    assert stats.dropped == stats.failed == stats.rejected == stats.pending == 0
    counted = service.counted()
    if not redis:
        # The embedded window died with the process: the new one holds what came after.
        assert counted == stats.sent - before_restart
    elif service.deduplicates("events") and service.deduplicates("columns"):
        assert counted == stats.sent
    else:
        # At least once: a batch the service counted as it was killed, before it could
        # answer, is sent again. One batch is in flight at a time.
        assert stats.sent <= counted <= stats.sent + client.config.batch_size


# ----------------------------------------------------------- retries and idempotency


class Proxy:
    """Forwards to the service, recording each POST's Idempotency-Key; the answers to the
    first `lose` POSTs are lost: the connection drops after the service counted them."""

    def __init__(self, upstream: str, lose: int) -> None:
        self.upstream = upstream
        self.lose = lose
        self.keys: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            payload = await answer.read()
            status = answer.status
        if request.method == "POST":
            self.keys.append(request.headers.get("Idempotency-Key"))
            if len(self.keys) <= self.lose:
                assert request.transport is not None
                request.transport.abort()
        return web.Response(body=payload, status=status, content_type="application/json")


@asynccontextmanager
async def proxied(upstream: str, lose: int = 0) -> AsyncIterator[tuple[Proxy, str]]:
    """A Proxy on a free port of 127.0.0.1, and its URL."""
    proxy = Proxy(upstream, lose)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("columnar", [False, True], ids=["events", "columns"])
async def test_a_retried_batch_carries_its_key_and_is_counted_as_the_service_allows(
    service: Service, columnar: bool
) -> None:
    async with (
        proxied(service.url, lose=1) as (proxy, url),
        AsyncDriftClient(url, MONITOR, max_delay=0.05, backoff_cap=0.2) as client,
    ):
        if columnar:
            await client.log_batch(pd.DataFrame(ROWS[:250]))
        else:
            for row in ROWS[:250]:
                await client.log(row)
        assert await client.flush(timeout=30)
        stats = client.stats()
    assert (stats.sent, stats.retries, stats.failed) == (250, 1, 0)
    assert len(proxy.keys) == 2 and proxy.keys[0] == proxy.keys[1]
    assert proxy.keys[0] is not None and len(proxy.keys[0]) == 32
    route = "columns" if columnar else "events"
    if service.deduplicates(route):
        assert service.counted() == 250
    else:
        # This service does not record keys: the lost answer's batch counts twice.
        assert service.counted() == 500


async def test_each_batch_gets_its_own_key(embedded: Service) -> None:
    async with (
        proxied(embedded.url) as (proxy, url),
        AsyncDriftClient(url, MONITOR, batch_size=100, max_delay=0.05) as client,
    ):
        for row in ROWS[:450]:
            await client.log(row)
        assert await client.flush(timeout=30)
    assert len(proxy.keys) == 5 and len(set(proxy.keys)) == 5
    assert embedded.counted() == 450


# ------------------------------------------------------------------ queue and overflow


def test_drop_oldest_keeps_the_newest_and_counts_the_rest(embedded: Service) -> None:
    embedded.process.stop()
    with sync_client(embedded, capacity=300, batch_size=100) as client:
        for i in range(100):
            client.log({**ROWS[i], "age": i})

        async def in_flight() -> bool:
            return client.stats().retries >= 1

        # The sender took a first batch (some of ages 0-99) and retries it.
        asyncio.run(wait_until(in_flight, "the first batch to be tried"))
        for i in range(100, 1000):
            client.log({**ROWS[i], "age": i})
        embedded.start()
        assert client.flush(timeout=30)
        stats = client.stats()
    assert stats.sent + stats.dropped == 1000
    assert stats.failed == stats.rejected == 0
    assert embedded.counted() == stats.sent
    # Sent: the batch in flight (the first `first` ages) and the 300 newest (700-999).
    first = stats.sent - 300
    assert 1 <= first <= 100
    kept = np.concatenate([np.arange(first), np.arange(700, 1000)])
    assert embedded.report()["features"]["age"]["mean"] == pytest.approx(kept.mean(), abs=1e-3)


def test_block_waits_for_room_then_drops_and_counts(embedded: Service) -> None:
    embedded.process.stop()
    with sync_client(embedded, capacity=200, batch_size=100, overflow="block") as client:
        for row in ROWS[:300]:  # a batch in flight, the queue full
            client.log(row)
        waited = client.stats()
        assert waited.dropped == 0
        client.log(ROWS[300])  # no room for block_timeout (1 s): dropped, no exception
        assert client.stats().dropped == 1
        embedded.start()
        assert client.flush(timeout=30)
        stats = client.stats()
    assert (stats.sent, stats.dropped) == (300, 1)
    assert embedded.counted() == 300


# --------------------------------------------------------------- never into the caller


def test_nothing_a_caller_logs_raises(embedded: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "driftline.client")
    with sync_client(embedded) as client:
        client.log(None)  # type: ignore[arg-type]
        client.log({"age": 30}, timestamp=__import__("datetime").datetime(2025, 1, 1))
        client.log_batch("not a frame")
        client.log_batch({"age": [1, 2, 3], "income": [1.0]})  # ragged: 3 events
        client.log_batch(np.ones((4, 3)), columns=["age"])  # 4 events, names do not fit
        client.log({**ROWS[0], "income": object()})  # cannot be encoded: rejected here
        client.log({**ROWS[1], "age": "old"})  # the service refuses it
        for row in ROWS[2:12]:
            client.log(row)
        assert client.flush(timeout=30)
        stats = client.stats()
    assert stats.dropped == 1 + 1 + 1 + 3 + 4
    assert stats.rejected == 2
    assert stats.sent == 10
    assert stats.logged == stats.sent + stats.rejected + stats.dropped
    assert embedded.counted() == 10
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "a datetime needs a time zone" in messages
    assert "columns have different lengths" in messages
    assert "cannot send a value of type object" in messages
    assert "features.age" in messages and "expected a number" in messages
    # After close: counted as dropped, still no exception.
    client.log(ROWS[0])
    assert client.stats().dropped == stats.dropped + 1


def test_an_unknown_monitor_fails_its_batches_with_the_reason(
    embedded: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "driftline.client")
    with DriftClient(embedded.url, "no-such-model", max_delay=0.05) as client:
        client.log(ROWS[0])
        client.log_batch(pd.DataFrame(ROWS[:5]))
        assert client.flush(timeout=30)
        stats = client.stats()
    assert (stats.failed, stats.sent, stats.retries) == (6, 0, 0)
    assert "monitor 'no-such-model' is not loaded" in caplog.text
    assert "HTTP 404" in caplog.text


def test_close_stops_on_time_and_counts_what_was_left(embedded: Service) -> None:
    embedded.process.stop()
    client = sync_client(embedded, batch_size=100)
    for row in ROWS[:250]:
        client.log(row)
    assert not client.close(timeout=0.3)
    stats = client.stats()
    assert stats.pending == stats.sent == 0
    assert stats.failed + stats.dropped == 250
    assert 1 <= stats.failed <= 100  # the batch being retried; the rest never left the queue


def test_settings_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(ValueError, match="overflow: expected one of"):
        DriftClient("http://127.0.0.1:1", MONITOR, overflow="drop_newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="url: expected http"):
        DriftClient("127.0.0.1:8080", MONITOR)
    with pytest.raises(ValueError, match="capacity"):
        DriftClient("http://127.0.0.1:1", MONITOR, capacity=10, batch_size=100)


# ------------------------------------------------------------------------ asyncio


async def test_the_async_client_sends_and_blocks_without_blocking_the_loop(
    embedded: Service,
) -> None:
    async with AsyncDriftClient(
        embedded.url, MONITOR, batch_size=100, capacity=200, overflow="block", max_delay=0.05
    ) as client:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        for row in ROWS[:2000]:
            await client.log(row)  # waits for room now and then: the loop keeps running
        # More than the queue holds at once: it goes in batch-sized pieces.
        matrix = np.array([[r[n] for n in NUMERIC] for r in ROWS[:500]], dtype=np.float64)
        await client.log_batch(matrix, columns=NUMERIC)
        assert await client.flush(timeout=30)
        beat.cancel()
        stats = client.stats()
    assert (stats.sent, stats.dropped, stats.failed) == (2500, 0, 0)
    assert ticks > 0
    assert embedded.counted() == 2500


def test_a_frame_that_cannot_be_encoded_leaves_out_only_its_own_events(
    embedded: Service, caplog: pytest.LogCaptureFixture
) -> None:
    # Both frames wait for one batch (a long max_delay, then flush): the one whose column
    # cannot be packed is rejected with the reason, the other is sent.
    caplog.set_level(logging.WARNING, "driftline.client")
    frame = pd.DataFrame(ROWS[:3]).assign(channel=[object(), object(), object()])
    with sync_client(embedded, max_delay=30) as client:
        client.log_batch(frame)
        client.log_batch(pd.DataFrame(ROWS[3:8]))
        assert client.flush(timeout=30)
        stats = client.stats()
    assert (stats.rejected, stats.sent, stats.failed) == (3, 5, 0)
    assert embedded.counted() == 5
    assert "3 events have values that cannot be sent" in caplog.text
