"""The drift service's domain entry point: ingest events, report drift.

Ties the monitor registry, the window store, group commit and telemetry together. It
knows nothing of HTTP: handlers decode a request into `Event`s, call the engine, and
encode what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from .commit import GroupCommitter
from .monitor import EventError, Monitor
from .registry import MonitorRegistry, UnknownMonitorError
from .report import DriftReport, drift_report
from .settings import Settings
from .telemetry import Telemetry
from .window import StoreUnavailableError, WindowStore


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prediction's inputs, as the model server sends them."""

    features: dict[str, Any]
    model_version: str | None = None
    timestamp: datetime | None = None


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
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.telemetry = telemetry
        self._clock = clock
        self._reports: dict[str, DriftReport] = {}
        self.committer = GroupCommitter(
            store,
            flush_interval=settings.flush_interval,
            on_report=self._remember,
            on_store_error=self._store_error,
            on_events_lost=lambda m, n: telemetry.lost_events.add({"monitor": m.name}, n),
        )

    def _remember(self, monitor: Monitor, report: DriftReport) -> None:
        self._reports[monitor.name] = report
        self.telemetry.observe_report(report)

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

    def _bin(
        self, monitor: Monitor, index: int, event: Event, path: str, now: float
    ) -> tuple[int, Any] | Rejection:
        limits = self.settings.limits
        if len(event.features) > limits.max_features:
            return Rejection(
                index,
                f"{path}features",
                "too_many_features",
                f"expected at most {limits.max_features} features, got {len(event.features)}",
            )
        timestamp = now
        if event.timestamp is not None:
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
        try:
            binned = monitor.bin_event(event.features, limits, f"{path}features")
        except EventError as exc:
            return Rejection(index, exc.field, "invalid_value", exc.message)
        return monitor.window.bucket_of(timestamp), binned

    async def ingest(
        self, monitor: Monitor, events: Sequence[Event], *, path_prefix: Callable[[int], str]
    ) -> IngestResult:
        """Validate, bin and count events; in durable mode return after they are stored.

        Invalid events are rejected one by one (the rest are counted). Raises
        StoreUnavailableError when the flush carrying the events failed: none were counted.
        """
        now = self._clock()
        result = IngestResult(monitor)
        binned: list[tuple[int, Any]] = []
        versions: list[str | None] = []
        unknown: set[str] = set()
        for index, event in enumerate(events):
            outcome = self._bin(monitor, index, event, path_prefix(index), now)
            if isinstance(outcome, Rejection):
                result.rejected.append(outcome)
                self.telemetry.invalid_events.inc(
                    {"monitor": monitor.name, "reason": outcome.reason}
                )
                continue
            binned.append(outcome)
            versions.append(event.model_version)
            unknown.update(outcome[1].unknown)
        result.warnings = [f'unknown feature "{name}" ignored' for name in sorted(unknown)]
        if not binned:
            return result
        durable = self.settings.ack_mode == "durable"
        future = self.committer.submit(monitor, binned, durable=durable)
        if future is not None:
            flushed = await future
            result.report = flushed.report
            result.late = flushed.late_events
        else:
            result.report = self._reports.get(monitor.name) or await self.report(monitor)
        result.accepted = len(binned) - result.late
        self.telemetry.count_events(monitor.name, versions)
        if result.late:
            self.telemetry.late_events.add({"monitor": monitor.name}, result.late)
            result.warnings.append(
                f"{result.late} event(s) older than the {monitor.window.window_seconds} s "
                "window: acknowledged, not counted"
            )
        return result

    async def report(self, monitor: Monitor) -> DriftReport:
        """Read the monitor's window and evaluate it."""
        try:
            totals = await self.store.read(monitor.window)
        except StoreUnavailableError:
            self._store_error("read")
            raise
        report = drift_report(monitor, totals)
        self._remember(monitor, report)
        return report

    async def close(self) -> None:
        """Flush pending events; called on shutdown before the store closes."""
        await self.committer.close()


__all__ = [
    "DriftEngine",
    "Event",
    "IngestResult",
    "NoDefaultMonitorError",
    "Rejection",
    "UnknownMonitorError",
]
