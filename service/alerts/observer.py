"""Observation: a monitor's severity offered to the alert state shared by every replica.

The engine hands every assessment it makes to `SeverityObserver.offer`. When the
severity differs from the one this replica last saw announced (or a change is being
held back), the observer asks the alert store to compare-and-set it; the store
announces a change once it has held for the monitor's alert_hold_seconds and its
cool-down since the last announcement is over. A change it decides lands in the
outbox, and the dispatcher is woken to deliver it. A timer re-offers every monitor's
assessment even without traffic, so a window that slides back to normal resolves its
alert and a cool-down ends on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from driftline.alerts.payloads import snapshot_of
from driftline.alerts.store import AlertStore, FlapGuard
from driftline.core.report import Assessment
from driftline.core.severity import Severity
from driftline.engine.facade import DriftEngine
from driftline.lifecycle import pause
from driftline.stores.protocol import StoreUnavailableError
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)

MAX_TRANSITIONS = 16
"""Compare-and-sets in flight at once: a round's batch offers hundreds together, and
each holds a Redis connection (redis-py's pool refuses past 100)."""
ROUND_BATCH = 256
"""Monitors whose windows a round reads in one store call (a pipeline on Redis): a round
trip per monitor was most of the loop's cost on a replica of many monitors."""
RECHECK_ROUNDS = 10
RECHECK_MAX_SECONDS = 30.0
"""The evaluation loop re-reads the shared alert state of every monitor (a
compare-and-set even when this replica's severity agrees with what it last saw
announced) every RECHECK_ROUNDS rounds, and at least every RECHECK_MAX_SECONDS: that
recheck only catches a change another replica made and can no longer undo, which its
hold and cool-down (a minute, five by default) make slow anyway, while a round trip
per monitor every round was most of an idle fleet replica's CPU."""


class SeverityObserver:
    """Offers assessments to the shared alert state; one per replica."""

    def __init__(
        self,
        store: AlertStore,
        telemetry: Telemetry,
        *,
        on_alert: Callable[[str], None] = lambda monitor: None,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._on_alert = on_alert
        # Severity last announced per monitor, as this replica knows it: an assessment
        # that agrees needs no round trip to the shared state.
        self._announced: dict[str, Severity] = {}
        # Monitors whose shared state holds a change back (not held long enough, or in
        # its cool-down): every assessment goes to the store, even one that agrees with
        # the announced severity, so the pending change is dropped when it does not hold.
        self._held: set[str] = set()
        self._observing: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_TRANSITIONS)

    def offer(self, assessment: Assessment, *, recheck: bool = False) -> None:
        """Start a compare-and-set when the severity may have changed (one per monitor).

        `recheck` skips the cache: another replica may have moved the shared state.
        """
        name = assessment.monitor.name
        stale = (
            recheck
            or name in self._held
            or self._announced.get(name) is not assessment.evaluation.verdict.severity
        )
        if stale and name not in self._observing:
            self._observing[name] = asyncio.create_task(self._transition(assessment))

    async def _transition(self, assessment: Assessment) -> None:
        """Compare-and-set the assessment's severity in the alert store."""
        monitor = assessment.monitor
        observed = assessment.evaluation.verdict.severity
        policy = monitor.policy
        try:
            async with self._slots:
                severity, entry = await self._store.transition(
                    monitor.name,
                    observed,
                    FlapGuard(policy.alert_hold_seconds, policy.alert_cooldown_seconds),
                    snapshot_of(assessment),
                )
        except StoreUnavailableError as exc:
            self._telemetry.store_errors.inc({"operation": "alert_transition"})
            log.warning("alert state unavailable", extra={"error": str(exc)})
            return
        finally:
            del self._observing[monitor.name]
        self._announced[monitor.name] = severity
        if severity is observed:
            self._held.discard(monitor.name)
        else:
            self._held.add(monitor.name)
        if entry is not None:
            self._telemetry.alert_transitions.inc(
                {"monitor": monitor.name, "severity": str(entry.severity)}
            )
            log.info(
                "severity changed",
                extra={
                    "monitor": monitor.name,
                    "severity": str(entry.severity),
                    "previous": str(entry.previous),
                    "alert": entry.seq,
                },
            )
            self._on_alert(monitor.name)

    async def evaluate_forever(
        self, engine: DriftEngine, interval: float, stopping: asyncio.Event
    ) -> None:
        """Re-assess every monitor each `interval` seconds until `stopping`, and offer it.

        Windows keep sliding without traffic: a monitor that goes quiet must still
        resolve its alert, and a cool-down must end even when no event arrives. The
        shared state is rechecked on some rounds only (RECHECK_ROUNDS).
        """
        every = min(RECHECK_ROUNDS * interval, RECHECK_MAX_SECONDS)
        rechecked = -math.inf
        while not await pause(stopping, interval):
            now = time.monotonic()
            recheck = now - rechecked >= every
            if recheck:
                rechecked = now
            monitors = engine.monitors()
            for start in range(0, len(monitors), ROUND_BATCH):
                with contextlib.suppress(StoreUnavailableError):
                    batch = monitors[start : start + ROUND_BATCH]
                    for assessment in await engine.assessments(batch):
                        self.offer(assessment, recheck=recheck)

    async def close(self) -> None:
        """Wait for the compare-and-sets in flight (after the engine's last flush)."""
        await asyncio.gather(*self._observing.values(), return_exceptions=True)
