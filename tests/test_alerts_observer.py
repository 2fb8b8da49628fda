"""Severity observation: a blip that went back is forgotten, on the shared state too."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from support import make_monitor, small_profile, wait_until

from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.observer import SeverityObserver
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment, assess
from driftline.core.severity import Severity
from driftline.core.window import WindowTotals
from driftline.telemetry import Telemetry

HOLD = 0.3


def _assessment(monitor: Monitor, *, drifted: bool) -> Assessment:
    """The baseline's own counts (none), or every value in the first bin (critical)."""
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
    return assess(monitor, WindowTotals(vector=vector, start=0.0, now=3600.0))


async def test_a_change_that_went_back_restarts_the_hold() -> None:
    monitor = make_monitor(
        {
            "name": "m",
            "baseline": small_profile(),
            "alert_hold_seconds": HOLD,
            "alert_cooldown_seconds": 0,
        }
    )
    critical, calm = _assessment(monitor, drifted=True), _assessment(monitor, drifted=False)
    assert critical.evaluation.verdict.severity is Severity.CRITICAL
    assert calm.evaluation.verdict.severity is Severity.NONE
    store = MemoryAlertStore()
    observer = SeverityObserver(store, Telemetry())

    async def offer(assessment: Assessment) -> None:
        observer.offer(assessment)
        await observer.close()  # the compare-and-set it started

    await offer(critical)  # a blip ...
    await offer(calm)  # ... gone at once: the shared state must forget it
    await asyncio.sleep(HOLD)  # longer than the hold: the time rule is what is tested
    started = time.monotonic()
    await offer(critical)  # a new episode: its hold starts now, not at the blip
    assert await store.history("m", 10) == []

    async def announced() -> bool:
        await offer(critical)
        return bool(await store.history("m", 10))

    await wait_until(announced, "the critical episode was never announced")
    assert time.monotonic() - started >= HOLD - 0.05
