"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from driftline.alerts.payloads import AlertSnapshot, AlertWindow, DriftedFeature
from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import DEFAULTS, MonitorDefaults
from driftline.core.profile import BaselineProfile, build_profile
from driftline.core.severity import Severity
from driftline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# What the outbox keeps of the assessment that made a change: a critical "age" and a
# warning "income" on a window of 500 events.
ALERT_SNAPSHOT = msgspec.json.encode(
    AlertSnapshot(
        model="credit-risk-xgb",
        drift_score=0.83,
        drifted_features=[
            DriftedFeature("age", 0.83, Severity.CRITICAL),
            DriftedFeature("income", 0.31, Severity.WARNING),
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


def example_settings(redis_url: str | None, **extra: Any) -> Settings:
    """The service on the example monitors (credit-risk), Redis or embedded, flushing fast."""
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(ROOT / "examples" / "monitors"),
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
