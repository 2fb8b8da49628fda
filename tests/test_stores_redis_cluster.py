"""The Redis backends on a real three-master Redis Cluster: one slot per monitor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from support import example_monitors, wait_until

from bench.rediscluster import redis_cluster
from driftline.alerts.redis import RedisAlertStore
from driftline.alerts.store import FlapGuard
from driftline.core.severity import Severity
from driftline.core.window import Span, WindowSpec
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.stores.redis import RedisWindowStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.url


@pytest.fixture
async def store(cluster_url: str) -> AsyncIterator[RedisWindowStore]:
    window = RedisWindowStore.from_url(cluster_url, cluster=True)
    yield window
    await window.close()


async def keys_by_node(client: Any, pattern: str) -> dict[str, list[bytes]]:
    """Which cluster node holds each key matching `pattern`."""
    nodes: dict[str, list[bytes]] = {}
    async for key in client.scan_iter(match=pattern):
        node = client.get_node_from_key(key)
        nodes.setdefault(node.name, []).append(key)
    return nodes


async def test_window_store_spreads_monitors_and_keeps_each_on_one_slot(
    store: RedisWindowStore,
) -> None:
    rng = np.random.default_rng(3)
    specs = [WindowSpec(f"cluster-m{i}", "L", 6, 3600, 60) for i in range(12)]
    sent: dict[str, np.ndarray] = {}
    for spec in specs:
        now = (await store.read(spec)).now
        deltas = {
            spec.bucket_of(now) - 60 * k: rng.integers(0, 50, 6).astype(float) for k in range(3)
        }
        await store.apply(spec, deltas)
        sent[spec.monitor] = sum(deltas.values())
    for spec in specs:
        assert (await store.read(spec)).vector.tolist() == sent[spec.monitor].tolist()
    client: Any = store.client
    assert isinstance(client, RedisCluster)

    def connections() -> int:
        # Clients connected to the masters (one each while calls go one at a time).
        total = 0
        for node in client.get_nodes():
            with redis.Redis(host=node.host, port=node.port) as direct:
                total += sum(1 for c in direct.client_list() if c["cmd"] != "client|list")
        return total

    before = connections()
    together = await store.read_many(specs)  # over several masters, overlapping
    assert [t.vector.tolist() for t in together] == [sent[s.monitor].tolist() for s in specs]
    assert connections() > before
    everywhere = await keys_by_node(client, "driftline:{cluster-m*")
    assert len(everywhere) >= 2, "12 monitors should land on more than one master"
    for spec in specs:
        slots = {
            client.keyslot(k)
            async for k in client.scan_iter(match=f"driftline:{{{spec.monitor}}}:*")
        }
        assert len(slots) == 1, f"{spec.monitor} keys span slots {slots}"
    await store.drop("cluster-m0")
    assert [k async for k in client.scan_iter(match="driftline:{cluster-m0}:*")] == []
    assert (await store.read(specs[1])).vector.tolist() == sent["cluster-m1"].tolist()


async def test_bucket_reads_go_to_each_monitors_master(store: RedisWindowStore) -> None:
    # A rolling reference's read (buckets.lua) runs where the monitor's window lives.
    specs = [WindowSpec(f"cluster-ref{i}", "L", 4, 1200, 60) for i in range(8)]
    for i, spec in enumerate(specs):
        now = (await store.read(spec)).now
        current, previous = spec.bucket_of(now), spec.bucket_of(now) - 900
        await store.apply(spec, {current: np.full(4, i + 1.0), previous: np.full(4, 10.0 * i + 5)})
        read = await store.buckets(spec, [Span(0, 600), Span(600, 600)])
        assert {b: v.tolist() for b, v in read.vectors.items()} == {
            current: [i + 1.0] * 4,
            previous: [10.0 * i + 5] * 4,
        }


async def test_alert_store_on_cluster(store: RedisWindowStore) -> None:
    alerts = RedisAlertStore(store.client)
    at_once = FlapGuard(hold=0, cooldown=0)
    severity, entry = await alerts.transition("cluster-a", Severity.CRITICAL, at_once, b"{}")
    assert severity is Severity.CRITICAL and entry is not None
    assert (await alerts.transition("cluster-a", Severity.CRITICAL, at_once, b"{}"))[1] is None
    found = await alerts.fetch(["cluster-a", "cluster-b"], "c1", count=10, stale_after=60)
    (fetched,) = found["cluster-a"]
    assert found["cluster-b"] == []
    assert fetched.seq == entry.seq
    await alerts.ack("cluster-a", fetched.entry_id)
    (record,) = await alerts.history("cluster-a", 10)
    assert record.entry.severity is Severity.CRITICAL


async def test_two_service_instances_share_a_window_on_cluster(
    aiohttp_client: Any, cluster_url: str
) -> None:
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(example_monitors()),
        redis_url=cluster_url,
        redis_cluster=True,
        flush_interval=0.001,
    )
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))
    assert (await a.delete("/v1/monitors/credit-risk/window")).status == 204
    for client, age in ((a, 30), (b, 40), (a, 50)):
        response = await client.post("/monitor/predict", json={"features": {"age": age}})
        assert response.status == 200, await response.text()
    for client in (a, b):
        report = await (await client.get("/v1/monitors/credit-risk/drift")).json()
        assert report["window"]["events"] == 3
        assert report["features"]["age"]["mean"] == pytest.approx(40.0)
    ready = await (await b.get("/monitor/ready")).json()
    assert ready["status"] == "ready"


async def test_readiness_follows_the_masters_of_the_loaded_monitors(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A master down takes its monitors with it: readiness says so; other masters do not.

    Within cluster-node-timeout (15 s) of the stop, while the rest of the cluster still
    serves its slots.
    """
    with redis_cluster(tmp_path / "cluster") as cluster:
        settings = Settings(
            host="127.0.0.1",
            monitors_dir=str(EXAMPLES / "monitors"),
            redis_url=cluster.url,
            redis_cluster=True,
            redis_timeout=0.5,
            flush_interval=0.001,
        )
        client = await aiohttp_client(create_app(settings))
        owner = cluster.node_of("driftline:{credit-risk}:window")
        other = next(port for port in cluster.ports if port != owner)
        payload = {"features": {"age": 30}}

        async def ready() -> int:
            return (await client.get("/monitor/ready")).status

        assert await ready() == 200
        assert (await client.post("/monitor/predict", json=payload)).status == 200

        cluster.stop(other)  # owns none of the loaded monitors' slots
        assert await ready() == 200
        assert (await client.post("/monitor/predict", json=payload)).status == 200
        # The owner loses its scripts (a restart, a failover to a replica without them)
        # while the other master is down: the script goes to the owner alone, not to
        # every master (which failed while any was down).
        owner_node = redis.Redis(host="127.0.0.1", port=owner)
        try:
            owner_node.script_flush()
        finally:
            owner_node.close()
        assert (await client.post("/monitor/predict", json=payload)).status == 200
        assert (await client.get("/v1/monitors/credit-risk/drift")).status == 200
        cluster.start(other)
        cluster.wait_ok()

        cluster.stop(owner)

        async def unready() -> bool:
            return await ready() == 503

        await wait_until(unready, "readiness stayed 200 with the monitor's master down")
        body = await (await client.get("/monitor/ready")).json()
        assert body["reasons"] == ["redis store unreachable for monitors: credit-risk"], body
        health = await (await client.get("/monitor/health")).json()
        assert health["status"] == "degraded", health
        assert health["store"]["status"] == "unreachable", health
        assert health["store"]["unreachable_monitors"] == ["credit-risk"], health
        assert (await client.post("/monitor/predict", json=payload)).status == 503

        cluster.start(owner)
        cluster.wait_ok()

        async def back() -> bool:
            return await ready() == 200

        await wait_until(back, "readiness did not return once the master was back")
        assert (await client.post("/monitor/predict", json=payload)).status == 200
        assert (await client.get("/monitor/health")).status == 200
