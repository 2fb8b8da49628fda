"""Durability against real processes: Redis outages, shared windows, group commit, SIGTERM.

Every test talks to a real redis-server and to the real aiohttp app over real sockets
(or to `driftline serve` as a subprocess). Nothing sleeps in place of synchronisation:
conditions are polled with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import TestClient
from redis_process import RedisProcess, free_port
from support import example_monitors, wait_until

from driftline.core.monitor import Monitor
from driftline.engine.admission import Event
from driftline.engine.registry import MonitorRegistry
from driftline.http.app import create_app
from driftline.http.keys import ENGINE
from driftline.settings import Settings, load_settings
from driftline.stores.redis import RedisWindowStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MONITORS_DIR = example_monitors()
MONITOR = "credit-risk"
PROBLEM = "application/problem+json"
DRIFTLINE = ROOT / ".venv" / "bin" / "driftline"
if not DRIFTLINE.exists():
    DRIFTLINE = Path(sys.executable).with_name("driftline")


# ------------------------------------------------------------------------- helpers


def make_settings(redis_url: str, **extra: Any) -> Settings:
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(MONITORS_DIR),
        redis_url=redis_url,
        **extra,
    )


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    """Predict payloads built from the baseline's own rows (no timestamp: counted now)."""
    rows: list[dict[str, Any]] = json.loads((EXAMPLES / "baseline_data.json").read_text())
    return [{"features": row, "model_version": "v1"} for row in rows[:300]]


async def predict(client: TestClient, payload: dict[str, Any]) -> tuple[int, Any, Any]:
    response = await client.post("/monitor/predict", json=payload)
    return response.status, await response.json(content_type=None), response.headers


async def window_events(client: TestClient, monitor: str = MONITOR) -> int:
    response = await client.get(f"/v1/monitors/{monitor}/drift")
    body = await response.json()
    assert response.status == 200, body
    count: int = body["window"]["events"]
    return count


async def evalsha_calls(url: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls: int = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    return calls


def credit_risk_monitor() -> Monitor:
    """The monitor exactly as the service builds it from the example config."""
    registry = MonitorRegistry(load_settings(environ={"DRIFTLINE_MONITORS_DIR": str(MONITORS_DIR)}))
    registry.load()
    assert not registry.errors, registry.errors
    return registry.get(MONITOR)


async def redis_window_events(url: str, monitor: Monitor) -> int:
    """Events in the monitor's window, read from Redis directly (not through a service)."""
    store = RedisWindowStore.from_url(url)
    try:
        totals = await store.read(monitor.window)
    finally:
        await store.close()
    return round(float(totals.vector[0]))


# -------------------------------------------------------------------------- tests


async def test_redis_outage_answers_503_and_loses_nothing(
    aiohttp_client: Any, own_redis: RedisProcess, events: list[dict[str, Any]]
) -> None:
    client = await aiohttp_client(create_app(make_settings(own_redis.url, redis_timeout=0.5)))

    for payload in events[:20]:
        status, body, _ = await predict(client, payload)
        assert status == 200, body
    assert (await client.get("/monitor/ready")).status == 200

    own_redis.stop()

    refused = events[20:30]
    for payload in refused:
        response = await client.post("/monitor/predict", json=payload)
        body = await response.json(content_type=None)
        assert response.status == 503, body
        assert response.content_type == PROBLEM
        assert response.headers.get("Retry-After"), dict(response.headers)
        assert body["status"] == 503
        assert body["type"].endswith("/store-unavailable"), body
    ready = await client.get("/monitor/ready")
    ready_body = await ready.json()
    assert ready.status == 503, ready_body
    assert any("unreachable" in reason for reason in ready_body["reasons"]), ready_body
    health = await client.get("/monitor/health")
    health_body = await health.json()
    assert health.status == 200, health_body
    assert health_body["status"] == "degraded"
    assert health_body["store"] == {
        "kind": "redis",
        "status": "unreachable",
        "persistence": "unknown",  # CONFIG GET cannot reach it either
        "appendfsync": None,
        "unreachable_monitors": [MONITOR],
    }

    own_redis.start()

    async def is_ready() -> bool:
        return (await client.get("/monitor/ready")).status == 200

    await wait_until(is_ready, "readiness did not return to 200 after Redis came back")
    health_body = await (await client.get("/monitor/health")).json()
    assert health_body["status"] == "healthy", health_body
    assert health_body["store"]["persistence"] == "aof", health_body
    assert health_body["store"]["appendfsync"] == "everysec", health_body

    for payload in refused:
        status, body, _ = await predict(client, payload)
        assert status == 200, body
    # 20 before the outage + the 10 retried: the refused attempts counted nothing, the
    # AOF kept the first 20 across the restart, and no retry counted twice.
    assert await window_events(client) == 30


async def test_two_instances_share_one_window(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]]
) -> None:
    settings = make_settings(redis_url)
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))

    results = await asyncio.gather(
        *(predict(a, payload) for payload in events[:150]),
        *(predict(b, payload) for payload in events[150:300]),
    )
    failed = [(status, body) for status, body, _ in results if status != 200]
    assert not failed, failed[:3]

    report_a = await (await a.get(f"/v1/monitors/{MONITOR}/drift")).json()
    report_b = await (await b.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert report_a["window"]["events"] == 300
    assert report_b["window"]["events"] == 300
    assert report_a["feature_scores"] == report_b["feature_scores"]
    assert report_a["feature_scores"], "no feature scores in the report"


async def test_group_commit_uses_far_fewer_script_calls_than_requests(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]]
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, ack_mode="durable")))
    requests = 200

    before = await evalsha_calls(redis_url)
    results = await asyncio.gather(*(predict(client, p) for p in events[:requests]))
    after = await evalsha_calls(redis_url)

    failed = [(status, body) for status, body, _ in results if status != 200]
    assert not failed, failed[:3]
    calls = after - before
    ratio = calls / requests
    print(f"group commit: {calls} EVALSHA calls for {requests} requests (ratio {ratio:.3f})")
    assert 0 < calls < requests
    assert await window_events(client) == requests


async def test_column_requests_are_binned_together_and_answered_each_for_its_own_rows(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]]
) -> None:
    # Small columnar requests (a model server's inferences) share their flush's binning:
    # each must still hear of its own refused rows only, and count what events count.
    client = await aiohttp_client(create_app(make_settings(redis_url, ack_mode="durable")))
    rows = [dict(e["features"]) for e in events[:256]]
    requests = 16
    size = len(rows) // requests
    chunks = [rows[k * size : (k + 1) * size] for k in range(requests)]
    # One bad value per request: the first row of half of them (where one request's rows
    # meet the previous one's), elsewhere in the rest.
    bad = [0 if k % 2 == 0 else k % size for k in range(requests)]
    for k, chunk in enumerate(chunks):
        chunk[bad[k]]["age"] = f"old-{k}"
    names = sorted({name for row in rows for name in row})

    async def columns(chunk: list[dict[str, Any]]) -> tuple[int, Any]:
        body = {"columns": {name: [row.get(name) for row in chunk] for name in names}}
        response = await client.post(f"/v1/monitors/{MONITOR}/columns", json=body)
        return response.status, await response.json()

    before = await evalsha_calls(redis_url)
    answers = await asyncio.gather(*(columns(chunk) for chunk in chunks))
    calls = await evalsha_calls(redis_url) - before
    for k, (status, body) in enumerate(answers):
        assert status == 200, body
        assert (body["accepted"], body["rejected"]) == (size - 1, 1), body
        assert body["errors"][0]["field"] == f"columns.age[{bad[k]}]", body
        assert body["errors"][0]["message"] == f'expected a number, got "old-{k}"'
    print(f"column requests: {calls} EVALSHA calls for {requests} requests")
    assert 0 < calls < requests
    by_columns = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204

    # The same rows as one batch of events, on the emptied window: the same counts.
    response = await client.post(
        f"/v1/monitors/{MONITOR}/events", json=[{"features": row} for row in rows]
    )
    assert response.status == 200, await response.text()
    by_events = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert by_columns["window"]["events"] == by_events["window"]["events"] == len(rows) - requests
    for name, feature in by_events["features"].items():
        mine = by_columns["features"][name]
        assert mine["window_count"] == feature["window_count"], name
        assert mine["window_proportions"] == feature["window_proportions"], name
        assert mine["missing_rate"] == feature["missing_rate"], name


async def test_async_mode_answers_at_once_and_counts_reach_the_window(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]]
) -> None:
    client = await aiohttp_client(create_app(make_settings(redis_url, ack_mode="async")))

    results = await asyncio.gather(*(predict(client, p) for p in events[:50]))
    failed = [(status, body) for status, body, _ in results if status != 200]
    assert not failed, failed[:3]

    seen: list[int] = []

    async def counted() -> bool:
        seen.append(await window_events(client))
        return seen[-1] == 50

    await wait_until(counted, lambda: f"window holds {seen[-1:]} events, expected 50")


async def test_a_stalled_redis_never_counts_a_request_answered_503(
    aiohttp_client: Any, own_redis: RedisProcess, events: list[dict[str, Any]]
) -> None:
    """Redis stopped (SIGSTOP) at many points around the fence and the timeout.

    Socket timeout 1 s, fence 0.5 s. Each round holds Redis while ten predicts wait for
    their flush, then lets it run the queued script (SIGCONT): before the fence it
    counts and the requests get 200; between the fence and the timeout the script
    refuses and they get 503; past the timeout the replica has already answered 503 and
    the script, run late, refuses. Every other round first holds a read for 0.9 s (it
    returns within the timeout): the reproduction of a slow read that made a later
    write's deadline fall after its 503. Whatever the stall, the window holds exactly
    the acknowledged events.
    """
    client = await aiohttp_client(create_app(make_settings(own_redis.url, redis_timeout=1.0)))
    loop = asyncio.get_running_loop()
    status, body, _ = await predict(client, events[0])
    assert status == 200, body
    acknowledged, refused = 1, 0
    stalls = (0.3, 0.45, 0.5, 0.55, 0.7, 0.95, 1.05, 1.3)
    for i, stall in enumerate(stalls):
        if i % 2:
            own_redis.pause()
            loop.call_later(0.9, own_redis.resume)
            await window_events(client)
        own_redis.pause()
        loop.call_later(stall, own_redis.resume)
        sent = events[10 * i + 1 : 10 * i + 11]
        results = await asyncio.gather(*(predict(client, payload) for payload in sent))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503}, results
        acknowledged += statuses.count(200)
        refused += statuses.count(503)
        print(f"stall {stall:.2f} s: {statuses.count(200)} answered 200, {statuses.count(503)} 503")
    # Two reads in turn: by the second, Redis has run whatever it held (a stopped
    # server runs every queued connection's input in its first loop after SIGCONT).
    await window_events(client)
    counted = await window_events(client)
    print(f"acknowledged {acknowledged}, refused {refused}, counted {counted}")
    assert acknowledged > 1 and refused > 0, "the stalls never reached one side of the fence"
    assert counted == acknowledged


@pytest.mark.parametrize("keyed", [True, False])
async def test_a_cancelled_request_retried_counts_once_with_its_key(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]], keyed: bool
) -> None:
    """A client gives up while its flush waits in Redis, then retries.

    The flush runs (the pause is within the fence) and counts the abandoned attempt.
    With an Idempotency-Key the retry is answered from that count and adds nothing;
    without one the event is counted twice: at least once, the README's warning.
    """
    client = await aiohttp_client(create_app(make_settings(redis_url)))
    raw = redis.asyncio.Redis.from_url(redis_url)
    headers = {"Idempotency-Key": "cancelled-1"} if keyed else {}
    try:
        status, body, _ = await predict(client, events[1])  # the store knows Redis's clock
        assert status == 200, body
        await raw.execute_command("CLIENT", "PAUSE", 300, "WRITE")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.post("/monitor/predict", json=events[0], headers=headers)

        async def abandoned_counted() -> bool:
            return await window_events(client) == 2

        await wait_until(abandoned_counted, "the abandoned attempt was never counted")
        retry = await client.post("/monitor/predict", json=events[0], headers=headers)
        assert retry.status == 200, await retry.text()
        assert retry.headers.get("Idempotent-Replayed") == ("true" if keyed else None)
        assert await window_events(client) == (2 if keyed else 3)
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
        await raw.aclose()


async def test_a_caller_cancelled_mid_flush_harms_neither_its_batch_nor_the_next(
    aiohttp_client: Any, redis_url: str, events: list[dict[str, Any]]
) -> None:
    """Callers share their batch's flush: one that gives up must not cancel it.

    Cancelling the shared flush failed the other callers of the batch and stopped the
    monitor's flusher, so every later event waited forever.
    """
    app = create_app(make_settings(redis_url))
    client = await aiohttp_client(app)
    engine = app[ENGINE]
    monitor = engine.monitors()[0]
    raw = redis.asyncio.Redis.from_url(redis_url)
    event = msgspec.convert(events[0], Event)
    try:
        await engine.predict(monitor, event)  # the store knows Redis's clock
        await raw.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
        leaving = asyncio.create_task(engine.predict(monitor, event))
        staying = asyncio.create_task(engine.predict(monitor, event))

        async def flush_waits_in_redis() -> bool:
            info = await raw.info("clients")
            return int(info["blocked_clients"]) > 0

        await wait_until(flush_waits_in_redis, "the flush never reached Redis")
        leaving.cancel()
        await raw.execute_command("CLIENT", "UNPAUSE")
        async with asyncio.timeout(5):
            await staying
            await engine.predict(monitor, event)  # the flusher still runs
        assert leaving.cancelled()
        assert await window_events(client) == 4
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
        await raw.aclose()


# ------------------------------------------------------------------ SIGTERM / CLI


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`driftline serve` in async mode with a 30 s flush interval: events stay pending."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DRIFTLINE_", "DRIFT_"))
        and k not in {"REDIS_URL", "BASELINE_DATA_PATH"}
    }
    env.update(
        REDIS_URL=redis_url,
        DRIFTLINE_ACK_MODE="async",
        DRIFTLINE_FLUSH_INTERVAL="30",
    )
    stderr_path = tmp_path / "driftline.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                str(DRIFTLINE),
                "serve",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--monitors-dir",
                str(MONITORS_DIR),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield process, port, stderr_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_sigterm_flushes_pending_counts(
    served: tuple[subprocess.Popen[bytes], int, Path],
    redis_url: str,
    events: list[dict[str, Any]],
) -> None:
    process, port, stderr_path = served
    base = f"http://127.0.0.1:{port}"

    def stderr_text() -> str:
        return stderr_path.read_text(errors="replace")[-3000:]

    async with aiohttp.ClientSession() as session:

        async def is_ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"driftline exited with {process.returncode}:\n{stderr_text()}")
            try:
                async with session.get(f"{base}/monitor/ready") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(
            is_ready, lambda: f"/monitor/ready never answered 200:\n{stderr_text()}", within=15
        )
        for payload in events[:40]:
            async with session.post(f"{base}/monitor/predict", json=payload) as response:
                assert response.status == 200, await response.text()

    monitor = credit_risk_monitor()
    # Acknowledged but pending: the flush interval has not come round yet.
    assert await redis_window_events(redis_url, monitor) == 0

    process.send_signal(signal.SIGTERM)

    async def exited() -> bool:
        return process.poll() is not None

    await wait_until(
        exited,
        lambda: f"driftline did not exit within 10 s of SIGTERM:\n{stderr_text()}",
        within=10,
        interval=0.05,
    )
    assert process.returncode == 0, stderr_text()
    assert await redis_window_events(redis_url, monitor) == 40

    lines = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    assert lines, "driftline logged nothing"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
    messages = [record.get("message") for record in records]
    assert "service started" in messages, messages
    assert any(str(m).startswith("service stopped") for m in messages), messages


# ------------------------------------------------------------ Redis persistence


@pytest.mark.parametrize(
    ("appendonly", "extra", "persistence", "fsync"),
    [
        (True, ("--appendfsync", "always"), "aof", "always"),
        (False, (), "none", None),
        # A managed Redis that disables CONFIG: the service cannot tell.
        (True, ("--rename-command", "CONFIG", ""), "unknown", None),
    ],
)
async def test_health_and_metrics_say_what_survives_a_redis_restart(
    aiohttp_client: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    appendonly: bool,
    extra: tuple[str, ...],
    persistence: str,
    fsync: str | None,
) -> None:
    server = RedisProcess(tmp_path / "redis", appendonly=appendonly, extra=extra)
    server.start()
    try:
        with caplog.at_level("WARNING", logger="driftline.http.app"):
            client = await aiohttp_client(create_app(make_settings(server.url)))
        health = await (await client.get("/monitor/health")).json()
        assert health["store"]["persistence"] == persistence, health
        assert health["store"]["appendfsync"] == fsync, health
        text = await (await client.get("/monitor/metrics")).text()
        series = [line for line in text.splitlines() if line.startswith("driftline_store_pers")]
        assert series == [
            f'driftline_store_persistence{{appendfsync="{fsync or "none"}",mode="{persistence}"}} 1'
        ]
        warned = [r.getMessage() for r in caplog.records if "Redis persistence" in r.getMessage()]
        assert bool(warned) == (persistence != "aof"), warned
    finally:
        server.kill()
