"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import numpy as np
import pytest
from k8s_support import DRIFTLINE, Process, free_port, wait_for

from driftline.alerts.payloads import AlertSnapshot, AlertWindow, DriftedFeature
from driftline.core.monitor import (
    Monitor,
    build_monitor,
    decode_monitor_config,
    read_monitor_config,
)
from driftline.core.policy import DEFAULTS, MonitorDefaults
from driftline.core.profile import BaselineProfile, build_profile
from driftline.core.severity import Severity
from driftline.core.window import WindowTotals
from driftline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MONITOR = "credit-risk"  # the example monitor
EXAMPLES = ROOT / "examples"
EXAMPLE_CONFIG = EXAMPLES / "monitors" / "credit-risk.yaml"
# Lives as long as the test process; removed at exit.
_EXAMPLE_MONITORS = tempfile.TemporaryDirectory(prefix="driftline-example-monitors-")


@functools.cache
def example_monitors() -> Path:
    """A monitors directory holding the example monitor and nothing else.

    `make run` watches examples/monitors, the obvious place for a user's own configs, so
    the suite never loads that folder itself: a user's file there must not change a test.
    """
    directory = Path(_EXAMPLE_MONITORS.name)
    text = EXAMPLE_CONFIG.read_text()
    (directory / EXAMPLE_CONFIG.name).write_text(
        text.replace("../credit-risk-profile.json", str(EXAMPLES / "credit-risk-profile.json"))
    )
    return directory


def fast_monitors(directory: Path) -> Path:
    """A monitors directory with the example monitor on a 60 s window of 1 s buckets.

    History keeps one record per bucket: with 1 s buckets a test sees points within
    seconds instead of minutes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = (example_monitors() / EXAMPLE_CONFIG.name).read_text()
    text = text.replace("window_seconds: 3600", "window_seconds: 60")
    text = text.replace("bucket_seconds: 60", "bucket_seconds: 1")
    assert "bucket_seconds: 1 " in text, "the example monitor's window lines changed"
    (directory / EXAMPLE_CONFIG.name).write_text(text)
    return directory


# What the outbox keeps of the assessment that made a change: a critical "age" (its
# distribution and range) and a warning "income" (missing values) on a window of 500 events.
ALERT_SNAPSHOT = msgspec.json.encode(
    AlertSnapshot(
        model="credit-risk-xgb",
        drift_score=0.83,
        drifted_features=[
            DriftedFeature("age", 0.83, Severity.CRITICAL, ["distribution", "range"]),
            DriftedFeature("income", 0.31, Severity.WARNING, ["missing"]),
        ],
        window=AlertWindow(500, "2025-05-29T09:30:00.000Z", "2025-05-29T10:30:00.000Z"),
    )
)


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    message: Callable[[], str] | str,
    *,
    within: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Poll `condition` until it holds; fail with `message` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {within} s: {text}", pytrace=False)
        await asyncio.sleep(interval)


def example_monitor() -> Monitor:
    """The example monitor as `make run` loads it (1 h window, 60 s buckets)."""
    config = read_monitor_config(EXAMPLE_CONFIG, EXAMPLE_CONFIG.name)
    return build_monitor(
        config, DEFAULTS, base_dir=EXAMPLE_CONFIG.parent, source=EXAMPLE_CONFIG.name
    )


def example_settings(redis_url: str | None, **extra: Any) -> Settings:
    """The service on the example monitors (credit-risk), Redis or embedded, flushing fast."""
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(example_monitors()),
        redis_url=redis_url,
        flush_interval=0.001,
        **extra,
    )


def make_monitor(
    data: dict[str, Any], *, base_dir: Path = ROOT, defaults: MonitorDefaults = DEFAULTS
) -> Monitor:
    """A monitor from a config document, as if read from `test.yaml` in `base_dir`."""
    config = decode_monitor_config(data, "test.yaml")
    return build_monitor(config, defaults, base_dir=base_dir, source="test.yaml")


def small_profile() -> BaselineProfile:
    """Four features of 300 seeded rows: numeric age, discrete kids, city and vip categories."""
    rng = np.random.default_rng(5)
    return build_profile(
        {
            "age": rng.integers(18, 90, size=300).astype(float).tolist(),
            "kids": [int(v) for v in rng.integers(0, 4, size=300)],
            "city": [["oslo", "rome", "lima", "pune"][int(v)] for v in rng.integers(0, 4, 300)],
            "vip": [bool(v) for v in rng.integers(0, 2, size=300)],
        },
        bins=5,
        top_k=3,
    )


def serve_command(port: int, monitors_dir: Path, log: Path, **environment: str) -> Process:
    """`driftline serve` on 127.0.0.1:`port` as a Process (not started).

    Settings come from a clean environment (no DRIFTLINE_ or REDIS_ variables of the
    caller's) plus `environment`; its output goes to `log`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "REDIS_"))}
    env["DRIFTLINE_LOG_LEVEL"] = "WARNING"
    env.update(environment)
    argv = [DRIFTLINE, "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--monitors-dir", str(monitors_dir)]
    return Process("driftline serve", argv, env, log)


def wait_serving(process: Process, url: str, path: str = "/monitor/ready") -> None:
    """Wait until the service answers 200 on `path`, failing with its log if it died."""

    def answered() -> bool | None:
        process.check_alive()
        return True if httpx2.get(f"{url}{path}").status_code == 200 else None

    wait_for(f"driftline serve to answer {path}", answered, timeout=60)


@contextmanager
def driftline_serve(
    log: Path,
    *,
    monitors_dir: Path | None = None,
    ready_path: str = "/monitor/ready",
    **environment: str,
) -> Iterator[str]:
    """A real `driftline serve` (the example monitors unless `monitors_dir`): its base URL.

    `environment` adds settings variables; stopped (SIGTERM) when the block ends.
    """
    port = free_port()
    process = serve_command(port, monitors_dir or example_monitors(), log, **environment)
    url = f"http://127.0.0.1:{port}"
    process.start()
    try:
        wait_serving(process, url, ready_path)
        yield url
    finally:
        process.stop()


class Service:
    """`driftline serve` of the example monitor on a fixed port: started, stopped, killed
    and started again."""

    def __init__(self, directory: Path, redis_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = {"REDIS_URL": redis_url} if redis_url else {}
        self.process = serve_command(
            self.port, example_monitors(), directory / "serve.log", **extra
        )

    def start(self) -> None:
        """Start it and wait until it is ready."""
        self.process.start()
        wait_serving(self.process, self.url)

    @contextmanager
    def running(self) -> Iterator[Service]:
        """Started for the block, stopped after it."""
        self.start()
        try:
            yield self
        finally:
            self.process.stop()

    def report(self) -> dict[str, Any]:
        """The monitor's full drift report."""
        answer = httpx2.get(f"{self.url}/v1/monitors/{MONITOR}/drift", timeout=10)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def counted(self) -> int:
        """Events in the monitor's window."""
        events: int = self.report()["window"]["events"]
        return events

    def deduplicates(self, route: str) -> bool:
        """Whether the service documents the Idempotency-Key header on a route."""
        document = httpx2.get(f"{self.url}/openapi.json").json()
        operation = document["paths"][f"/v1/monitors/{{name}}/{route}"]["post"]
        return "idempotency-key" in json.dumps(operation).lower()


def window_totals(monitor: Monitor, *, drifted: bool) -> WindowTotals:
    """A window of the baseline's own counts (no drift), or of every value in one bin."""
    vector = np.zeros(monitor.layout.width)
    events = monitor.profile.rows
    vector[0] = events
    for slots in monitor.layout.features.values():
        profile = slots.profile
        counts = np.zeros(profile.bins) if drifted else np.asarray(profile.counts, float)
        if drifted:
            counts[0] = events
        vector[slots.first_bin : slots.first_bin + profile.bins] = counts
        vector[slots.missing] = 0 if drifted else profile.missing
    return WindowTotals(vector=vector, start=1_748_510_000.0, now=1_748_513_600.0)
