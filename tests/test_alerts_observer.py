"""Severity observation: a blip that went back is forgotten, on the shared state too."""

from __future__ import annotations

import asyncio
import time

from support import make_monitor, small_profile, wait_until, window_totals

from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.observer import SeverityObserver
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment, assess
from driftline.core.severity import Severity
from driftline.telemetry import Telemetry

HOLD = 0.3


def _assessment(monitor: Monitor, *, drifted: bool) -> Assessment:
    return assess(monitor, window_totals(monitor, drifted=drifted))


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
