"""Shared fixtures: a real redis-server and Kubernetes API server for the session, stores."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient
from k8s_support import KubeTarget, Process
from pytest_redis import factories
from redis_process import RedisProcess
from support import Service, example_settings

from bench.kubecluster import control_plane
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.stores.memory import MemoryWindowStore
from driftline.stores.protocol import WindowStore
from driftline.stores.redis import RedisWindowStore

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if shutil.which("/usr/bin/redis-server") else None
)

# One redis-server for the whole session on a free port of 127.0.0.1. `save ""` turns
# RDB snapshots off; append-only is off by default: nothing touches the disk.
redis_server = factories.redis_proc(
    executable=REDIS_SERVER or "redis-server",
    host="127.0.0.1",
    port=None,  # type: ignore[arg-type]  # None = any free port (port_for), untyped upstream
    save='""',
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    """A failed test's report carries the log tail of each process fixture it used."""
    report: pytest.TestReport = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Process):
                report.sections.append((f"{value.name} log (tail)", value.tail()))
    return report


class FakeClock:
    """A settable clock for `MemoryWindowStore(clock=...)`."""

    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the session's redis-server, flushed so every test starts from nothing."""
    if REDIS_SERVER is None:
        pytest.fail(
            "redis-server is not installed (not on PATH): the Redis tests need a real server. "
            "Install it with `make redis-server` or `apt-get install redis-server`.",
            pytrace=False,
        )
    # Requested here rather than as an argument, so the check above runs first.
    server = request.getfixturevalue("redis_server")
    client = redis.Redis(host=server.host, port=server.port, db=0)
    try:
        client.flushall()
    finally:
        client.close()
    return f"redis://{server.host}:{server.port}/0"


@pytest.fixture(params=["memory", "redis"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """The service on the example monitors, on each store."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return example_settings(url)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    """The real app of `settings` over a real socket."""
    app_client: TestClient = await aiohttp_client(create_app(settings))
    return app_client


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own (append-only), to pause, kill and restart."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["memory", "redis"])
async def window_store(
    request: pytest.FixtureRequest, fake_clock: FakeClock
) -> AsyncIterator[WindowStore]:
    """A fresh store of each kind; the memory store runs on `fake_clock`."""
    store: WindowStore
    if request.param == "memory":
        store = MemoryWindowStore(clock=fake_clock)
    else:
        store = RedisWindowStore.from_url(request.getfixturevalue("redis_url"))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Service]:
    """A real `driftline serve` of the example monitor on the embedded store."""
    with Service(tmp_path, None).running() as running:
        yield running


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeTarget]:
    """The Kubernetes API server of the live suites.

    KUBECONFIG set: that cluster (kind, k3d, ...). Else KUBEBUILDER_ASSETS set (the envtest
    convention): a throwaway control plane on 127.0.0.1 for the session. Else skipped,
    saying so.
    """
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH: the live Kubernetes suites drive it", pytrace=False)
    configured = os.environ.get("KUBECONFIG")
    if configured:
        yield KubeTarget(Path(configured.split(os.pathsep)[0]), True, f"KUBECONFIG={configured}")
        return
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        reason = (
            "no Kubernetes API server: set KUBEBUILDER_ASSETS to envtest binaries "
            "(`setup-envtest use 1.28.x -p path`) or KUBECONFIG to a cluster"
        )
        print(f"\n[k8s] skipped: {reason}")
        pytest.skip(reason)
    with control_plane(Path(assets), tmp_path_factory.mktemp("k8s")) as plane:
        where = f"envtest control plane at {plane.server} from {assets}"
        print(f"\n[k8s] {where}")
        yield KubeTarget(plane.kubeconfig, plane.controller_manager, where)
