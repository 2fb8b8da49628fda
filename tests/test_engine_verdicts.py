"""When a flush gets a new verdict, and when it answers with the latest while its totals wait.

The clock is the test's: a listener advances it while a verdict is made, which is how a
verdict's cost is simulated (Verdicts measures its cost with the same clock).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support import example_monitor

from driftline.core.layout import EVENTS_SLOT
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment
from driftline.core.window import WindowTotals
from driftline.engine.verdicts import (
    BUDGET_SECONDS,
    REASSESS_SECONDS,
    VERDICT_SHARE,
    Verdicts,
)
from driftline.telemetry import Telemetry


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def totals(monitor: Monitor, events: int) -> WindowTotals:
    """A window of `events` events, every value of every feature in its first bin."""
    vector = np.zeros(monitor.window.width)
    vector[EVENTS_SLOT] = events
    for slots in monitor.layout.features.values():
        vector[slots.first_bin] = events
    return WindowTotals(vector=vector, start=0.0, now=3600.0)


def lag(telemetry: Telemetry) -> float:
    return float(telemetry.verdict_lag.get({}))


@pytest.fixture
def monitor() -> Monitor:
    return example_monitor()


def verdicts_costing(seconds: float) -> tuple[Verdicts, Clock, list[Assessment], Telemetry]:
    """Verdicts whose every assessment takes `seconds` of the clock; and what they made."""
    clock, made, telemetry = Clock(), [], Telemetry()
    verdicts = Verdicts(telemetry, clock=clock)

    def costly(assessment: Assessment) -> None:
        made.append(assessment)
        clock.now += seconds

    verdicts.subscribe(costly)
    return verdicts, clock, made, telemetry


def test_a_flush_that_barely_moved_the_window_answers_with_the_latest_until_catch_up(
    monitor: Monitor,
) -> None:
    verdicts, clock, made, telemetry = verdicts_costing(0.0)
    first = verdicts.after_flush(monitor, totals(monitor, 1000))
    assert first.window.events == 1000
    clock.now += 0.4
    assert verdicts.after_flush(monitor, totals(monitor, 1002)) is first
    clock.now += 0.3
    assert verdicts.after_flush(monitor, totals(monitor, 1005)) is first  # 0.5 %: still
    assert len(made) == 1
    assert verdicts.catch_up() == 0  # the latest verdict is 0.7 s old: not due
    assert lag(telemetry) == pytest.approx(0.3)  # the first uncovered flush's age
    clock.now += REASSESS_SECONDS - 0.7
    assert verdicts.catch_up() == 1
    caught = verdicts.latest(monitor)
    assert caught is not None and caught is made[-1]
    assert caught.window.events == 1005  # the last flush's totals, not the first waiting
    assert lag(telemetry) == 0
    assert verdicts.catch_up() == 0  # nothing waits any more


def test_a_flush_that_moved_the_window_more_or_a_second_later_is_assessed_at_once(
    monitor: Monitor,
) -> None:
    verdicts, clock, made, _ = verdicts_costing(0.0)
    verdicts.after_flush(monitor, totals(monitor, 1000))
    clock.now += 0.1
    assert verdicts.after_flush(monitor, totals(monitor, 1006)).window.events == 1006
    clock.now += REASSESS_SECONDS
    assert verdicts.after_flush(monitor, totals(monitor, 1007)).window.events == 1007
    assert len(made) == 3


def test_crossing_min_samples_is_never_left_waiting(monitor: Monitor) -> None:
    verdicts, clock, _, _ = verdicts_costing(0.0)
    below = monitor.policy.min_samples - 1
    assert not verdicts.after_flush(monitor, totals(monitor, below)).evaluation.verdict.ready
    clock.now += 0.01
    ready = verdicts.after_flush(monitor, totals(monitor, below + 1))
    assert ready.evaluation.verdict.ready
    assert ready.window.events == below + 1


def test_a_reloaded_monitor_gets_its_own_verdict_and_drops_what_waited(monitor: Monitor) -> None:
    verdicts, clock, made, _ = verdicts_costing(0.0)
    verdicts.after_flush(monitor, totals(monitor, 1000))
    verdicts.after_flush(monitor, totals(monitor, 1001))  # waits
    reloaded = dataclasses.replace(monitor)
    clock.now += 0.1
    fresh = verdicts.after_flush(reloaded, totals(reloaded, 1002))
    assert fresh.monitor is reloaded and fresh.window.events == 1002
    clock.now += REASSESS_SECONDS
    assert verdicts.catch_up() == 0  # the old layout's totals are not assessed
    assert len(made) == 2


def test_past_the_budget_flushes_wait_and_catch_up_keeps_to_the_share(monitor: Monitor) -> None:
    # Each verdict costs one second: the first alone is four times the share.
    verdicts, clock, made, telemetry = verdicts_costing(1.0)
    verdicts.after_flush(monitor, totals(monitor, 500))
    ended = clock.now
    clock.now += 0.5  # the window nearly doubled and the verdict is due, but over budget
    waited = verdicts.after_flush(monitor, totals(monitor, 900))
    assert waited.window.events == 500
    assert verdicts.catch_up() == 0  # still over budget
    assert lag(telemetry) == pytest.approx(0.0)  # the waiting flush is 0 s old
    clock.now += 0.5
    assert verdicts.catch_up() == 0
    assert lag(telemetry) == pytest.approx(0.5)
    # The spent second decays as e^(-t / BUDGET_SECONDS): it is under the share this long
    # after the verdict ended.
    under = BUDGET_SECONDS * np.log(1.0 / (VERDICT_SHARE * BUDGET_SECONDS))
    clock.now = ended + under - 0.01
    assert verdicts.catch_up() == 0
    clock.now = ended + under + 0.01
    assert verdicts.catch_up() == 1
    assert made[-1].window.events == 900
    assert len(made) == 2


def test_flushes_are_assessed_again_once_the_spending_fell_to_half_the_share(
    monitor: Monitor,
) -> None:
    verdicts, clock, made, _ = verdicts_costing(1.0)
    verdicts.after_flush(monitor, totals(monitor, 500))
    ended = clock.now
    assert not verdicts.within_share()  # the store may leave the totals lagging
    share = VERDICT_SHARE * BUDGET_SECONDS
    clock.now = ended + BUDGET_SECONDS * np.log(1.0 / share) + 0.01  # under the share...
    assert not verdicts.within_share()
    assert verdicts.after_flush(monitor, totals(monitor, 900)).window.events == 500
    clock.now = ended + BUDGET_SECONDS * np.log(2.0 / share) + 0.01  # ...and under half
    assert verdicts.within_share()
    assert verdicts.after_flush(monitor, totals(monitor, 901)).window.events == 901
    assert len(made) == 2


def test_over_budget_waiting_windows_are_assessed_oldest_first(monitor: Monitor) -> None:
    verdicts, clock, made, _ = verdicts_costing(0.2)
    others = [dataclasses.replace(monitor, name=f"m{i}") for i in range(3)]
    for m in others:
        verdicts.after_flush(m, totals(m, 500))  # 0.6 s of verdicts: over the share
    for m in reversed(others):
        clock.now += 0.01
        assert verdicts.after_flush(m, totals(m, 800)).window.events == 500
    caught: list[str] = []
    for _ in range(10):
        clock.now += 1.0
        verdicts.catch_up()
        caught = [a.monitor.name for a in made[3:]]
        if len(caught) == 3:
            break
    assert caught == ["m2", "m1", "m0"]  # in the order they started waiting


def test_settle_assesses_every_waiting_monitor_whatever_the_budget(monitor: Monitor) -> None:
    verdicts, _, made, telemetry = verdicts_costing(1.0)
    verdicts.after_flush(monitor, totals(monitor, 500))
    verdicts.after_flush(monitor, totals(monitor, 800))  # over budget: waits
    verdicts.settle()
    assert [a.window.events for a in made] == [500, 800]
    verdicts.catch_up()
    assert lag(telemetry) == 0
