"""Verdicts: the latest assessment of each monitor, made once and handed to everyone.

A flush (or a read) of a monitor's window is assessed here. The assessment is kept as
the monitor's latest, published to the metrics, and handed to the listeners (the alerts
layer offers its severity to the shared alert state). A flush that moved the window
only a little reuses the latest assessment instead (see REASSESS_FRACTION).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from driftline.core.layout import EVENTS_SLOT
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment, assess
from driftline.core.scopes import Scope
from driftline.core.window import WindowTotals
from driftline.telemetry import Telemetry

REASSESS_FRACTION = 0.005
"""A flush reuses the last assessment while the window's event count is within 0.5 % of
the one it was made on (and it is under REASSESS_SECONDS old, on the same side of
min_samples): adding 0.5 % of a window's events cannot move its scores by more than
that share, and evaluating on every flush would cost more than counting the events."""
REASSESS_SECONDS = 1.0
SCOPE_SECONDS = 5.0
"""How often a flush also assesses a monitor's declared versions and segments (for the
metrics): each is a verdict as costly as the monitor's."""

Listener = Callable[[Assessment], None]


class Verdicts:
    """The latest assessment per monitor, its reuse rule, and who hears of new ones."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._latest: dict[str, tuple[Assessment, float]] = {}  # and its monotonic time
        self._scoped: dict[str, float] = {}  # when a monitor's scopes were last assessed
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every assessment made from now on."""
        self._listeners.append(listener)

    def assess(self, monitor: Monitor, totals: WindowTotals) -> Assessment:
        """Assess the window's totals, keep the result as the latest, publish it.

        The declared versions' and segments' blocks of the totals are assessed and
        published too, at most every SCOPE_SECONDS.
        """
        now = time.monotonic()
        assessment = assess(monitor, monitor.scopes.totals(totals))
        self._latest[monitor.name] = (assessment, now)
        self._telemetry.observe(assessment)
        for listener in self._listeners:
            listener(assessment)
        if monitor.scopes.blocks > 1 and now - self._scoped.get(monitor.name, -math.inf) >= (
            SCOPE_SECONDS
        ):
            self._scoped[monitor.name] = now
            self._telemetry.observe_scopes(
                monitor.name,
                {s: scope_assessment(monitor, s, totals) for s in monitor.scopes.all()},
            )
        return assessment

    def after_flush(self, monitor: Monitor, totals: WindowTotals) -> Assessment:
        """The latest assessment while the flush barely moved the window, else a new one."""
        last = self._latest.get(monitor.name)
        if last is not None:
            previous, at = last
            events = round(float(totals.vector[EVENTS_SLOT]))
            if (
                previous.monitor is monitor
                and abs(events - previous.evaluation.events)
                <= REASSESS_FRACTION * previous.evaluation.events
                and (events >= monitor.policy.min_samples) == previous.evaluation.verdict.ready
                and time.monotonic() - at < REASSESS_SECONDS
            ):
                return previous
        return self.assess(monitor, totals)

    def latest(self, monitor: Monitor) -> Assessment | None:
        """The latest assessment of this monitor's current layout and policy, if any."""
        last = self._latest.get(monitor.name)
        return last[0] if last is not None and last[0].monitor is monitor else None

    def forget(self, name: str) -> None:
        """Drop the monitor's latest assessment (its window was deleted)."""
        self._latest.pop(name, None)
        self._scoped.pop(name, None)


def scope_assessment(monitor: Monitor, scope: Scope, totals: WindowTotals) -> Assessment:
    """The assessment of a declared version's or segment's block of the window's totals."""
    return assess(monitor.judged_as(scope), monitor.scopes.totals(totals, scope.block))
