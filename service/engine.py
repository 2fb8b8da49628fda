"""The drift service's domain entry point: ingest events, report drift.

Ties the monitor registry, the window store, group commit and telemetry together. It
knows nothing of HTTP: handlers decode a request into `Event`s, call the engine, and
encode what it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from driftline.alert_store import Acknowledgement, AlertRecord, AlertStore
from driftline.alerting import snapshot_of
from driftline.commit import GroupCommitter, Row
from driftline.core.binning import (
    BinnedBatch,
    EventError,
    bin_batch,
    bin_columns,
    bin_event,
    plainly_valid,
)
from driftline.core.layout import EVENTS_SLOT
from driftline.core.monitor import Monitor
from driftline.core.report import Assessment, DriftReport, assess, drift_report
from driftline.core.severity import Severity
from driftline.core.window import Vector, WindowTotals
from driftline.lifecycle import pause
from driftline.registry import MonitorRegistry, UnknownMonitorError
from driftline.settings import Settings
from driftline.stores.protocol import StoreUnavailableError, WindowStore
from driftline.telemetry import Telemetry


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One prediction's inputs, as the model server sends them."""

    features: dict[str, Any]
    model_version: str | None = None
    timestamp: datetime | None = None


log = logging.getLogger(__name__)

REASSESS_FRACTION = 0.005
"""A flush reuses the last assessment while the window's event count is within 0.5 % of
the one it was made on (and it is under REASSESS_SECONDS old, on the same side of
min_samples): adding 0.5 % of a window's events cannot move its scores by more than
that share, and evaluating on every flush would cost more than counting the events."""
REASSESS_SECONDS = 1.0


class NoDefaultMonitorError(LookupError):
    """A request named no monitor and the service has no default one."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was not counted."""

    index: int
    field: str
    reason: str  # invalid_value | too_many_features | invalid_timestamp | future_timestamp
    message: str


class RejectedEventError(Exception):
    """A single event that cannot be counted."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.field}: {rejection.message}")
        self.rejection = rejection


@dataclass(frozen=True, slots=True)
class Prediction:
    """A counted single event: the verdict that covers it, and warnings."""

    assessment: Assessment
    warnings: list[str]


@dataclass(slots=True)
class IngestResult:
    """What happened to a request's events."""

    monitor: Monitor
    accepted: int = 0
    late: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    assessment: Assessment | None = None


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
        self._assessments: dict[str, tuple[Assessment, float]] = {}  # and its monotonic time
        # Severity last announced per monitor, as this replica knows it: a report that
        # agrees needs no round trip to the shared state.
        self._announced: dict[str, Severity] = {}
        self._observing: dict[str, asyncio.Task[None]] = {}
        self.on_alert: Callable[[], None] = lambda: None
        self.committer = GroupCommitter(
            store,
            settings.limits,
            flush_interval=settings.flush_interval,
            on_flushed=self._flushed,
            on_store_error=self._store_error,
            on_events_lost=lambda m, n: telemetry.lost_events.add({"monitor": m.name}, n),
        )

    def _flushed(
        self, monitor: Monitor, totals: WindowTotals, tags: list[str | None], late: int
    ) -> Assessment:
        """Count a flush's single events in telemetry and assess the window it left."""
        if tags:
            self.telemetry.count_events(monitor.name, tags)
        if late:
            self.telemetry.late_events.add({"monitor": monitor.name}, late)
        last = self._assessments.get(monitor.name)
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
        return self._assess(monitor, totals)

    def _assess(
        self, monitor: Monitor, totals: WindowTotals, *, recheck: bool = False
    ) -> Assessment:
        """Assess the totals, publish the result and offer its severity to the alerts."""
        assessment = assess(monitor, totals)
        self._assessments[monitor.name] = (assessment, time.monotonic())
        self.telemetry.observe(assessment)
        severity = assessment.evaluation.verdict.severity
        # `recheck` skips the cache: another replica may have moved the shared state.
        stale = recheck or self._announced.get(monitor.name) is not severity
        if stale and monitor.name not in self._observing:
            task = asyncio.create_task(self._observe(monitor, assessment))
            self._observing[monitor.name] = task
        return assessment

    async def _observe(self, monitor: Monitor, assessment: Assessment) -> None:
        """Offer the assessment's severity to the shared alert state (compare-and-set)."""
        try:
            severity, entry = await self.alerts.transition(
                monitor.name,
                assessment.evaluation.verdict.severity,
                monitor.policy.alert_cooldown_seconds,
                snapshot_of(assessment),
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
                    await self.assessment(monitor, recheck=True)

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

    def _reject(self, monitor: Monitor, rejection: Rejection) -> RejectedEventError:
        self.telemetry.invalid_events.inc({"monitor": monitor.name, "reason": rejection.reason})
        return RejectedEventError(rejection)

    async def predict(self, monitor: Monitor, event: Event) -> Prediction:
        """Count one event; in durable mode return once it is stored, with that verdict.

        Raises RejectedEventError when the event cannot be counted, StoreUnavailableError
        when the flush carrying it failed (it was not counted).
        """
        admitted = self._admit(0, event, "", self._clock())
        if isinstance(admitted, Rejection):
            raise self._reject(monitor, admitted)
        bucket = monitor.window.bucket_of(admitted)
        features = event.features
        known = monitor.layout.features.keys()
        warnings = (
            []
            if features.keys() <= known
            else [f'unknown feature "{name}" ignored' for name in sorted(features.keys() - known)]
        )
        durable = self.settings.ack_mode == "durable"
        row = Row(features, bucket, event.model_version, durable)
        if not durable:
            # Nobody waits for the flush, so a value it would refuse must be refused
            # now: plainly valid events are binned with the flush, the rest here.
            if plainly_valid(monitor.layout, features, self.settings.limits):
                self.committer.submit_row(monitor, row)
            else:
                try:
                    binned = bin_event(monitor.layout, features, self.settings.limits)
                except EventError as exc:
                    raise self._reject(
                        monitor, Rejection(0, exc.field, "invalid_value", exc.message)
                    ) from None
                self.committer.submit(monitor, [(bucket, binned)], durable=False)
                self.telemetry.count_events(monitor.name, [event.model_version])
            return Prediction(await self._latest(monitor), warnings)
        future, position = self.committer.submit_row(monitor, row)
        assert future is not None
        outcome = await future
        error = outcome.row_errors.get(position)
        if error is not None:
            raise self._reject(monitor, Rejection(0, error.field, "invalid_value", error.message))
        assert outcome.assessment is not None  # a valid row was applied
        if bucket in outcome.late_buckets:
            warnings.append(self._late_warning(monitor, 1))
        return Prediction(outcome.assessment, warnings)

    @staticmethod
    def _late_warning(monitor: Monitor, late: int) -> str:
        return (
            f"{late} event(s) outside the {monitor.window.window_seconds} s window (too old, "
            "or ahead of the store's clock): acknowledged, not counted"
        )

    async def ingest(
        self, monitor: Monitor, events: Sequence[Event], *, path_prefix: Callable[[int], str]
    ) -> IngestResult:
        """Validate, bin (by column) and count a batch; durable: return once stored.

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
        batch = bin_batch(
            monitor.layout,
            [events[index].features for index, _ in admitted],
            self.settings.limits,
            lambda j: f"{path_prefix(admitted[j][0])}features",
        )
        result.rejected.extend(
            Rejection(admitted[j][0], error.field, "invalid_value", error.message)
            for j, error in batch.errors.items()
        )
        result.rejected.sort(key=lambda r: r.index)
        accepted = [index for j, (index, _) in enumerate(admitted) if j not in batch.errors]
        return await self._count(
            monitor,
            batch,
            np.array([t for _, t in admitted], dtype=np.float64),
            [events[i].model_version for i in accepted],
            result,
        )

    async def ingest_columns(
        self,
        monitor: Monitor,
        columns: Mapping[str, Sequence[Any] | Vector],
        size: int,
        *,
        timestamp: datetime | None = None,
        model_version: str | None = None,
    ) -> IngestResult:
        """Count `size` events sent as one value list per feature (lengths checked before).

        They share one timestamp (the server's when absent) and model version. Raises
        RejectedEventError for a request-wide problem (timestamp, too many columns).
        """
        admitted = self._admit(0, Event(dict(columns), model_version, timestamp), "", self._clock())
        if isinstance(admitted, Rejection):
            field = "columns" if admitted.reason == "too_many_features" else admitted.field
            raise self._reject(monitor, dataclasses.replace(admitted, field=field))
        batch = bin_columns(monitor.layout, columns, size, self.settings.limits)
        result = IngestResult(monitor)
        result.rejected = [
            Rejection(i, error.field, "invalid_value", error.message)
            for i, error in sorted(batch.errors.items())
        ]
        accepted = size - len(batch.errors)
        return await self._count(
            monitor, batch, np.full(size, admitted), [model_version] * accepted, result
        )

    async def _count(
        self,
        monitor: Monitor,
        batch: BinnedBatch,
        timestamps: Vector,
        versions: list[str | None],
        result: IngestResult,
    ) -> IngestResult:
        """Commit a binned batch's valid events (`versions`: one per event counted)."""
        for rejection in result.rejected:
            self.telemetry.invalid_events.inc({"monitor": monitor.name, "reason": rejection.reason})
        result.warnings = [f'unknown feature "{name}" ignored' for name in sorted(batch.unknown)]
        if not versions:
            return result
        window = monitor.window
        buckets = (timestamps // window.bucket_seconds).astype(np.int64) * window.bucket_seconds
        submission = batch.deltas(window.width, buckets)
        future = self.committer.submit(
            monitor, submission, durable=self.settings.ack_mode == "durable"
        )
        if future is not None:
            flushed = await future
            result.assessment = flushed.assessment
            result.late = sum(
                n for start, (_, n) in submission.items() if start in flushed.late_buckets
            )
        else:
            result.assessment = await self._latest(monitor)
        result.accepted = len(versions) - result.late
        self.telemetry.count_events(monitor.name, versions)
        if result.late:
            self.telemetry.late_events.add({"monitor": monitor.name}, result.late)
            result.warnings.append(self._late_warning(monitor, result.late))
        return result

    async def _read(self, monitor: Monitor) -> WindowTotals:
        try:
            return await self.store.read(monitor.window)
        except StoreUnavailableError:
            self._store_error("read")
            raise

    async def _latest(self, monitor: Monitor) -> Assessment:
        """The last assessment of this monitor's current layout, else a fresh one."""
        last = self._assessments.get(monitor.name)
        if last is not None and last[0].monitor is monitor:
            return last[0]
        return await self.assessment(monitor)

    async def assessment(self, monitor: Monitor, *, recheck: bool = False) -> Assessment:
        """Read the monitor's window and assess it (`recheck`: offer it to the alert state)."""
        return self._assess(monitor, await self._read(monitor), recheck=recheck)

    async def report(self, monitor: Monitor) -> DriftReport:
        """Read the monitor's window and report on it in full."""
        totals = await self._read(monitor)
        return drift_report(self._assess(monitor, totals), totals)

    async def forget(self, name: str) -> None:
        """Delete a monitor's window data (every layout), loaded or not.

        The operator's finalizer calls this when a DriftMonitor is deleted.
        """
        try:
            await self.store.drop(name)
        except StoreUnavailableError:
            self._store_error("drop")
            raise
        self._assessments.pop(name, None)

    async def close(self) -> None:
        """Flush pending events and settle alert decisions; called before stores close."""
        await self.committer.close()
        await asyncio.gather(*self._observing.values(), return_exceptions=True)


__all__ = [
    "DriftEngine",
    "Event",
    "IngestResult",
    "NoDefaultMonitorError",
    "Prediction",
    "RejectedEventError",
    "Rejection",
    "UnknownMonitorError",
]
