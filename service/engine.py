"""The drift service's domain entry point: ingest events, report drift.

Ties the monitor registry, the window store, group commit and telemetry together. It
knows nothing of HTTP: handlers decode a request into `Event`s, call the engine, and
encode what it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from .alert_store import Acknowledgement, AlertRecord, AlertStore
from .alerting import snapshot_of
from .binning import BinnedEvent, EventError, bin_batch, bin_event
from .commit import GroupCommitter
from .drift import Severity
from .lifecycle import pause
from .monitor import Monitor
from .registry import MonitorRegistry, UnknownMonitorError
from .report import DriftReport, drift_report
from .settings import Settings
from .telemetry import Telemetry
from .window import StoreUnavailableError, Vector, WindowStore


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prediction's inputs, as the model server sends them."""

    features: dict[str, Any]
    model_version: str | None = None
    timestamp: datetime | None = None


log = logging.getLogger(__name__)

Submission = list[tuple[int, BinnedEvent]] | dict[int, tuple[Vector, int]]


class NoDefaultMonitorError(LookupError):
    """A request named no monitor and the service has no default one."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was not counted."""

    index: int
    field: str
    reason: str  # invalid_value | too_many_features | invalid_timestamp | future_timestamp
    message: str


@dataclass(slots=True)
class IngestResult:
    """What happened to a request's events."""

    monitor: Monitor
    accepted: int = 0
    late: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report: DriftReport | None = None


class DriftEngine:
    """Counts events into shared windows and evaluates drift on them."""

    def __init__(
        self,
        settings: Settings,
        registry: MonitorRegistry,
        store: WindowStore,
        telemetry: Telemetry,
        alerts: AlertStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.telemetry = telemetry
        self.alerts = alerts
        self._clock = clock
        self._reports: dict[str, DriftReport] = {}
        # Severity last announced per monitor, as this replica knows it: a report that
        # agrees needs no round trip to the shared state.
        self._announced: dict[str, Severity] = {}
        self._observing: dict[str, asyncio.Task[None]] = {}
        self.on_alert: Callable[[], None] = lambda: None
        self.committer = GroupCommitter(
            store,
            flush_interval=settings.flush_interval,
            on_report=self._remember,
            on_store_error=self._store_error,
            on_events_lost=lambda m, n: telemetry.lost_events.add({"monitor": m.name}, n),
        )

    def _remember(self, monitor: Monitor, report: DriftReport, *, recheck: bool = False) -> None:
        self._reports[monitor.name] = report
        self.telemetry.observe_report(report)
        # `recheck` skips the cache: another replica may have moved the shared state.
        stale = recheck or self._announced.get(monitor.name) is not report.severity
        if stale and monitor.name not in self._observing:
            task = asyncio.create_task(self._observe(monitor, report))
            self._observing[monitor.name] = task

    async def _observe(self, monitor: Monitor, report: DriftReport) -> None:
        """Offer the report's severity to the shared alert state (compare-and-set)."""
        try:
            severity, entry = await self.alerts.transition(
                monitor.name,
                report.severity,
                monitor.policy.alert_cooldown_seconds,
                snapshot_of(report),
            )
        except StoreUnavailableError as exc:
            self._store_error("alert_transition")
            log.warning("alert state unavailable", extra={"error": str(exc)})
            return
        finally:
            del self._observing[monitor.name]
        self._announced[monitor.name] = severity
        if entry is not None:
            self.telemetry.alert_transitions.inc(
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
            self.on_alert()

    async def evaluate_forever(self, stopping: asyncio.Event) -> None:
        """Re-evaluate every monitor on a timer until `stopping`.

        Windows keep sliding without traffic: a monitor that goes quiet must still
        resolve its alert, and a cool-down must end even when no event arrives.
        """
        while not await pause(stopping, self.settings.alerts.evaluation_interval):
            for monitor in list(self.registry):
                with contextlib.suppress(StoreUnavailableError):
                    await self.report(monitor, recheck=True)

    async def alert_history(self, monitor: Monitor, limit: int) -> list[AlertRecord]:
        """The monitor's latest alerts, newest first."""
        return await self.alerts.history(monitor.name, limit)

    async def acknowledge(
        self, monitor: Monitor, seq: int, by: str, comment: str
    ) -> AlertRecord | None:
        """Record that someone has seen an alert; None when it is unknown."""
        ack = Acknowledgement(by=by, at=self._clock(), comment=comment)
        return await self.alerts.acknowledge(
            monitor.name, seq, ack, self.settings.alerts.history_seconds
        )

    def _store_error(self, operation: str) -> None:
        self.telemetry.store_errors.inc({"operation": operation})

    def monitor(self, name: str | None) -> Monitor:
        """The named monitor, or the default one when `name` is None."""
        if name is None:
            name = self.registry.default_name
            if name is None:
                raise NoDefaultMonitorError(
                    "no default monitor: name one of "
                    + (", ".join(m.name for m in self.registry) or "(none loaded)")
                )
        return self.registry.get(name)

    def _admit(self, index: int, event: Event, path: str, now: float) -> float | Rejection:
        """The event's timestamp (the server's when absent), or why it is refused."""
        limits = self.settings.limits
        if len(event.features) > limits.max_features:
            return Rejection(
                index,
                f"{path}features",
                "too_many_features",
                f"expected at most {limits.max_features} features, got {len(event.features)}",
            )
        if event.timestamp is None:
            return now
        if event.timestamp.tzinfo is None:
            return Rejection(
                index,
                f"{path}timestamp",
                "invalid_timestamp",
                "expected an RFC 3339 timestamp with a time zone (e.g. 2025-05-29T10:30:00Z)",
            )
        timestamp = event.timestamp.timestamp()
        if timestamp > now + limits.max_future_seconds:
            return Rejection(
                index,
                f"{path}timestamp",
                "future_timestamp",
                f"is {timestamp - now:.0f} s in the future; at most "
                f"{limits.max_future_seconds:.0f} s allowed",
            )
        return timestamp

    def _bin(
        self,
        monitor: Monitor,
        events: Sequence[Event],
        admitted: list[tuple[int, float]],
        path_prefix: Callable[[int], str],
        result: IngestResult,
    ) -> tuple[Submission, list[int], set[str]]:
        """Bin the admitted events: one by one for a single event, by column for a batch."""
        limits = self.settings.limits
        window = monitor.window
        if len(admitted) == 1:
            index, timestamp = admitted[0]
            try:
                event = bin_event(
                    monitor.layout, events[index].features, limits, f"{path_prefix(index)}features"
                )
            except EventError as exc:
                result.rejected.append(Rejection(index, exc.field, "invalid_value", exc.message))
                return [], [], set()
            return [(window.bucket_of(timestamp), event)], [index], set(event.unknown)
        batch = bin_batch(
            monitor.layout,
            [events[index].features for index, _ in admitted],
            limits,
            lambda j: f"{path_prefix(admitted[j][0])}features",
        )
        for j, error in batch.errors.items():
            result.rejected.append(
                Rejection(admitted[j][0], error.field, "invalid_value", error.message)
            )
        buckets = (
            np.array([t for _, t in admitted], dtype=np.float64) // window.bucket_seconds
        ).astype(np.int64) * window.bucket_seconds
        accepted = [index for j, (index, _) in enumerate(admitted) if j not in batch.errors]
        return batch.deltas(window.width, buckets), accepted, batch.unknown

    async def ingest(
        self, monitor: Monitor, events: Sequence[Event], *, path_prefix: Callable[[int], str]
    ) -> IngestResult:
        """Validate, bin and count events; in durable mode return after they are stored.

        Invalid events are rejected one by one (the rest are counted). Raises
        StoreUnavailableError when the flush carrying the events failed: none were counted.
        """
        now = self._clock()
        result = IngestResult(monitor)
        admitted: list[tuple[int, float]] = []
        for index, event in enumerate(events):
            outcome = self._admit(index, event, path_prefix(index), now)
            if isinstance(outcome, Rejection):
                result.rejected.append(outcome)
            else:
                admitted.append((index, outcome))
        submission, accepted, unknown = (
            self._bin(monitor, events, admitted, path_prefix, result)
            if admitted
            else ([], [], set())
        )
        result.rejected.sort(key=lambda r: r.index)
        for rejection in result.rejected:
            self.telemetry.invalid_events.inc({"monitor": monitor.name, "reason": rejection.reason})
        result.warnings = [f'unknown feature "{name}" ignored' for name in sorted(unknown)]
        if not accepted:
            return result
        durable = self.settings.ack_mode == "durable"
        future = self.committer.submit(monitor, submission, durable=durable)
        if future is not None:
            flushed = await future
            result.report = flushed.report
            result.late = flushed.late_events
        else:
            result.report = self._reports.get(monitor.name) or await self.report(monitor)
        result.accepted = len(accepted) - result.late
        self.telemetry.count_events(monitor.name, [events[i].model_version for i in accepted])
        if result.late:
            self.telemetry.late_events.add({"monitor": monitor.name}, result.late)
            result.warnings.append(
                f"{result.late} event(s) older than the {monitor.window.window_seconds} s "
                "window: acknowledged, not counted"
            )
        return result

    async def report(self, monitor: Monitor, *, recheck: bool = False) -> DriftReport:
        """Read the monitor's window and evaluate it (`recheck`: offer it to the alert state)."""
        try:
            totals = await self.store.read(monitor.window)
        except StoreUnavailableError:
            self._store_error("read")
            raise
        report = drift_report(monitor, totals)
        self._remember(monitor, report, recheck=recheck)
        return report

    async def forget(self, name: str) -> None:
        """Delete a monitor's window data (every layout), loaded or not.

        The operator's finalizer calls this when a DriftMonitor is deleted.
        """
        try:
            await self.store.drop(name)
        except StoreUnavailableError:
            self._store_error("drop")
            raise
        self._reports.pop(name, None)

    async def close(self) -> None:
        """Flush pending events and settle alert decisions; called before stores close."""
        await self.committer.close()
        await asyncio.gather(*self._observing.values(), return_exceptions=True)


__all__ = [
    "DriftEngine",
    "Event",
    "IngestResult",
    "NoDefaultMonitorError",
    "Rejection",
    "UnknownMonitorError",
]
