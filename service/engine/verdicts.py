"""Verdicts: the latest assessment of each monitor, made once and handed to everyone.

A flush (or a read) of a monitor's window is assessed here. The assessment is kept as
the monitor's latest, published to the metrics, and handed to the listeners (the alerts
layer offers its severity to the shared alert state).

A flush that moved the window only a little answers with the latest verdict instead
(REASSESS_FRACTION), and so does every flush while verdicts take more than VERDICT_SHARE
of the replica's time. Either way the flush's totals wait, and `catch_up` assesses them:
a little-moved window once its verdict is REASSESS_SECONDS old, an over-budget one as
soon as the share allows, oldest first. A fleet of busy monitors thus costs a bounded
share of the replica, and the price is staleness, published as
`driftline_verdict_lag_seconds` (docs/performance.md has the figures).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from driftline.core.layout import EVENTS_SLOT
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment, assess
from driftline.core.scopes import Scope
from driftline.core.window import WindowTotals
from driftline.lifecycle import pause
from driftline.telemetry import Telemetry

REASSESS_FRACTION = 0.005
"""A flush reuses the last assessment while the window's event count is within 0.5 % of
the one it was made on (and it is under REASSESS_SECONDS old, on the same side of
min_samples): adding 0.5 % of a window's events cannot move its scores by more than
that share, and evaluating on every flush would cost more than counting the events."""
REASSESS_SECONDS = 1.0
VERDICT_SHARE = 0.25
"""The share of the replica's time verdicts may take, averaged over BUDGET_SECONDS; past
it flushes answer with the latest verdict and their totals wait for `catch_up`, until
the spending falls to half the share. A 1,000-monitor fleet's windows are young, so
nearly every flush moves one by more than REASSESS_FRACTION: without the share, the
replica spent half its time assessing."""
BUDGET_SECONDS = 1.0
CATCH_UP_SECONDS = 0.1
"""How often `catch_up_forever` assesses what waits."""
SCOPE_SECONDS = 5.0
"""How often a flush also assesses a monitor's declared versions and segments (for the
metrics): each is a verdict as costly as the monitor's."""

Listener = Callable[[Assessment], None]


@dataclass(slots=True)
class _Waiting:
    """A monitor's flushed totals that its latest verdict does not cover yet."""

    monitor: Monitor
    totals: WindowTotals
    since: float  # monotonic time of the first flush the verdict does not cover
    due: float  # when `catch_up` assesses them (budget allowing)


class Verdicts:
    """The latest assessment per monitor, when to make the next, and who hears of new ones."""

    def __init__(
        self, telemetry: Telemetry, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._telemetry = telemetry
        self._clock = clock
        self._latest: dict[str, tuple[Assessment, float]] = {}  # and its monotonic time
        self._scoped: dict[str, float] = {}  # when a monitor's scopes were last assessed
        # In the order they started waiting: dict order is the catch-up's order.
        self._waiting: dict[str, _Waiting] = {}
        self._listeners: list[Listener] = []
        # Seconds of verdicts spent, decayed over BUDGET_SECONDS (a leaky bucket).
        self._spent = 0.0
        self._spent_at = clock()
        self._behind = False  # flushes leave their verdicts to catch_up (see _lagging)

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every assessment made from now on."""
        self._listeners.append(listener)

    def assess(self, monitor: Monitor, totals: WindowTotals) -> Assessment:
        """Assess the window's totals, keep the result as the latest, publish it.

        The declared versions' and segments' blocks of the totals are assessed and
        published too, at most every SCOPE_SECONDS.
        """
        now = self._clock()
        self._waiting.pop(monitor.name, None)
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
        self._spend(self._clock() - now)
        return assessment

    def after_flush(self, monitor: Monitor, totals: WindowTotals) -> Assessment:
        """A new assessment, or the latest one (the totals wait for `catch_up`).

        The latest while the flush barely moved the window, or while verdicts are over
        their share of the replica.
        """
        last = self._latest.get(monitor.name)
        if last is not None:
            previous, at = last
            events = round(float(totals.vector[EVENTS_SLOT]))
            now = self._clock()
            # Crossing min_samples changes what the answer says: never wait for it.
            if (
                previous.monitor is monitor
                and (events >= monitor.policy.min_samples) == previous.evaluation.verdict.ready
            ):
                barely = (
                    abs(events - previous.evaluation.events)
                    <= REASSESS_FRACTION * previous.evaluation.events
                    and now - at < REASSESS_SECONDS
                )
                if barely or self._lagging(now):
                    self._wait(monitor, totals, now, at + REASSESS_SECONDS if barely else now)
                    return previous
        return self.assess(monitor, totals)

    def _wait(self, monitor: Monitor, totals: WindowTotals, now: float, due: float) -> None:
        waiting = self._waiting.get(monitor.name)
        if waiting is None:
            self._waiting[monitor.name] = _Waiting(monitor, totals, now, due)
        else:
            waiting.monitor, waiting.totals = monitor, totals
            waiting.due = min(waiting.due, due)

    def catch_up(self) -> int:
        """Assess the waiting monitors that are due, oldest first, within the budget.

        Returns how many were assessed.
        """
        now = self._clock()
        made = 0
        for name, waiting in list(self._waiting.items()):
            if self._over_budget(self._clock()):
                break
            if self.latest(waiting.monitor) is None:
                del self._waiting[name]  # reloaded or forgotten: its next flush assesses
            elif now >= waiting.due:
                self.assess(waiting.monitor, waiting.totals)
                made += 1
        oldest = min((w.since for w in self._waiting.values()), default=now)
        self._telemetry.verdict_lag.set({}, now - oldest)
        return made

    def settle(self) -> None:
        """Assess every waiting monitor now, whatever the time and budget (at shutdown)."""
        for waiting in list(self._waiting.values()):
            if self.latest(waiting.monitor) is not None:
                self.assess(waiting.monitor, waiting.totals)
        self._waiting.clear()

    async def catch_up_forever(self, stopping: asyncio.Event) -> None:
        """`catch_up` every CATCH_UP_SECONDS until `stopping`."""
        while not await pause(stopping, CATCH_UP_SECONDS):
            self.catch_up()

    def within_share(self) -> bool:
        """Whether flushes are assessed now (verdicts are within their share of the replica)."""
        return not self._lagging(self._clock())

    def _lagging(self, now: float) -> bool:
        # Once over the share, flushes leave their verdicts to `catch_up` until the spending
        # falls to half of it: without that margin the spending hovers at the line and
        # most flushes would be assessed (and fold their window) after all.
        spent = self._decayed(now)
        if spent > VERDICT_SHARE * BUDGET_SECONDS:
            self._behind = True
        elif spent < VERDICT_SHARE * BUDGET_SECONDS / 2:
            self._behind = False
        return self._behind

    def _spend(self, seconds: float) -> None:
        self._spent = self._decayed(self._clock()) + seconds

    def _decayed(self, now: float) -> float:
        spent = self._spent * math.exp(-(now - self._spent_at) / BUDGET_SECONDS)
        self._spent, self._spent_at = spent, now
        return spent

    def _over_budget(self, now: float) -> bool:
        return self._decayed(now) > VERDICT_SHARE * BUDGET_SECONDS

    def latest(self, monitor: Monitor) -> Assessment | None:
        """The latest assessment of this monitor's current layout and policy, if any."""
        last = self._latest.get(monitor.name)
        return last[0] if last is not None and last[0].monitor is monitor else None

    def forget(self, name: str) -> None:
        """Drop the monitor's latest assessment (its window was deleted)."""
        self._latest.pop(name, None)
        self._scoped.pop(name, None)
        self._waiting.pop(name, None)


def scope_assessment(monitor: Monitor, scope: Scope, totals: WindowTotals) -> Assessment:
    """The assessment of a declared version's or segment's block of the window's totals."""
    return assess(monitor.judged_as(scope), monitor.scopes.totals(totals, scope.block))
