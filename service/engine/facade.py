"""The drift engine: the one object the HTTP layer calls to count events and report drift.

Ties the monitor registry, the window store, group commit, verdicts and telemetry
together. It knows nothing of HTTP (handlers decode a request into `Event`s, call the
engine, and encode what it returns) nor of alerts (the alerts layer subscribes to the
verdicts).
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from driftline.core.binning import BinnedBatch, EventError, bin_batch, bin_columns, first_error
from driftline.core.compare import Comparison, compare
from driftline.core.idempotency import (
    ClaimOutcome,
    ClaimStatus,
    EventKey,
    KeyConflictError,
    RequestKey,
)
from driftline.core.inference import Columns, Inputs, input_rows, input_size
from driftline.core.monitor import Monitor
from driftline.core.performance import (
    RECORD,
    CompareMetric,
    LabelError,
    PerformanceSlots,
    awaits_label,
    id_digest,
    label_value,
    payloads,
    sampled,
)
from driftline.core.performance import records as pending_records
from driftline.core.policy import LabelsPolicy
from driftline.core.prediction import RESERVED_MARK, is_prediction_column
from driftline.core.report import Assessment, DriftReport, drift_report
from driftline.core.scopes import Scope, batch_deltas, joined_deltas, record_blocks
from driftline.core.window import Vector, WindowTotals
from driftline.engine.admission import (
    Event,
    Label,
    RejectedEventError,
    Rejection,
    admit,
    inference_events,
    invalid_value,
    unjoined,
    with_prediction,
)
from driftline.engine.commit import ColumnChunk, FlushOutcome, GroupCommitter, Row, Ticket
from driftline.engine.history import History, HistoryRecorder
from driftline.engine.registry import MonitorRegistry
from driftline.engine.verdicts import Listener, Verdicts, scope_assessment
from driftline.engine.windows import judged, read, read_all
from driftline.settings import Settings
from driftline.stores.protocol import (
    TOMBSTONE,
    HistoryStore,
    Persistence,
    StoreUnavailableError,
    WindowStore,
)
from driftline.telemetry import Telemetry

MAX_WARNINGS = 20
"""Unknown features named in an answer; the rest are counted in one more warning."""


def prediction_ignored(monitor: Monitor) -> str:
    """The warning for a prediction sent to a monitor that declares none."""
    return (
        f"prediction ignored: monitor {monitor.name!r} declares no prediction kind "
        "(docs/predictions.md)"
    )


def unknown_feature_warnings(names: Collection[str]) -> list[str]:
    """A warning per unknown feature (alphabetically first MAX_WARNINGS), then how many more."""
    first = heapq.nsmallest(MAX_WARNINGS, names)
    warnings = [f'unknown feature "{name}" ignored' for name in first]
    if len(names) > len(first):
        warnings.append(f"and {len(names) - len(first)} more unknown features ignored")
    return warnings


class NoDefaultMonitorError(LookupError):
    """A request named no monitor and the service has no default one."""


HISTORY_OFF = (
    "no history is kept: DRIFTLINE_HISTORY_HORIZON is 0 (set it to the seconds of history "
    "to keep, e.g. 604800 for 7 days)"
)


class HistoryOffError(LookupError):
    """History is not kept: no history store, or a horizon of 0."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """A counted single event: the verdict that covers it, and warnings."""

    assessment: Assessment
    warnings: list[str]
    replayed: bool = False  # its key was seen before: counted then, not now
    made_id: str | None = None  # the id the service gave an event without one (labels)
    late: bool = False  # acknowledged, not counted: outside the window


class LabelsOffError(LookupError):
    """Labels sent to a monitor that does not take them."""


@dataclass(frozen=True, slots=True)
class LabelRejection:
    """A label that cannot be counted: its position and what is wrong with its value."""

    index: int
    message: str


@dataclass(slots=True)
class LabelsResult:
    """What became of a batch of labels (docs/labels.md): every label is in one count.

    `counted`: joined and counted into its prediction's bucket; `late`: joined, but
    that bucket has left the window; `unmatched`: no prediction waits under its id;
    `duplicate`: its prediction was labelled already (or the id repeats in the batch);
    `after_horizon`: it came later than the horizon after its prediction; `unsampled`:
    its id was not sampled (labels.sample_rate), so no prediction was kept.
    """

    monitor: Monitor
    counted: int = 0
    late: int = 0
    unmatched: int = 0
    duplicate: int = 0
    after_horizon: int = 0
    unsampled: int = 0
    rejected: list[LabelRejection] = field(default_factory=list)
    assessment: Assessment | None = None

    def outcomes(self) -> dict[str, int]:
        """Every count by outcome, as the metrics name them."""
        return {
            "counted": self.counted,
            "late": self.late,
            "unmatched": self.unmatched,
            "duplicate": self.duplicate,
            "after_horizon": self.after_horizon,
            "unsampled": self.unsampled,
            "invalid": len(self.rejected),
        }


@dataclass(slots=True)
class IngestResult:
    """What happened to a request's events."""

    monitor: Monitor
    accepted: int = 0
    late: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    assessment: Assessment | None = None
    replayed: bool = False  # its key was seen before: the counts are the first attempt's
    # A monitor with labels: per submitted event its id (the service's for one sent
    # without), None for a refused event.
    ids: list[str | None] | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """What liveness and readiness report of the engine."""

    store_kind: str
    store_ok: bool
    monitors: list[str]
    default_monitor: str | None
    config_errors: dict[str, str]
    unreachable: list[str]  # loaded monitors whose windows the store cannot reach now


class DriftEngine:
    """Counts events into shared windows and evaluates drift on them."""

    def __init__(
        self,
        settings: Settings,
        registry: MonitorRegistry,
        store: WindowStore,
        telemetry: Telemetry,
        *,
        history: HistoryStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`history`: where each monitor's verdict per bucket is kept (settings.history_horizon)."""
        self._settings = settings
        self._registry = registry
        self._store = store
        self._telemetry = telemetry
        self._clock = clock
        self._verdicts = Verdicts(telemetry)
        self._history: HistoryRecorder | None = None
        if history is not None and settings.history_horizon > 0:
            self._history = HistoryRecorder(history, settings.history_horizon, telemetry)
            self._verdicts.subscribe(self._history.offer)
        self._committer = GroupCommitter(
            store,
            settings.limits,
            self._verdicts,
            telemetry,
            flush_interval=settings.flush_interval,
        )
        registry.on_load(self._loaded)
        self._loaded(list(registry), set())

    def _loaded(self, monitors: list[Monitor], removed: set[str]) -> None:
        """Metrics follow the loaded monitors: new ones start at 0, removed ones go."""
        for monitor in monitors:
            self._telemetry.load(monitor)
            receivers = self._registry.receivers(monitor.name)
            self._telemetry.load_receivers(monitor.name, ((r.name, r.type) for r in receivers))
        for name in removed:
            self._telemetry.unload(name)
            self._verdicts.forget(name)
            if self._history is not None:
                self._history.forget(name)

    # ------------------------------------------------------------------ monitors

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every assessment the engine makes (after each flush or read)."""
        self._verdicts.subscribe(listener)

    def monitors(self) -> list[Monitor]:
        """Every loaded monitor."""
        return list(self._registry)

    @property
    def default_monitor(self) -> str | None:
        """The monitor a request without a `monitor` field goes to, if any."""
        return self._registry.default_name

    def monitor(self, name: str | None) -> Monitor:
        """The named monitor, or the default one when `name` is None.

        Raises UnknownMonitorError (driftline.engine.registry) or NoDefaultMonitorError.
        """
        if name is None:
            name = self._registry.default_name
            if name is None:
                raise NoDefaultMonitorError(
                    "no default monitor: name one of "
                    + (", ".join(m.name for m in self._registry) or "(none loaded)")
                    + " in the request's `monitor` field, or start the service with "
                    "DRIFTLINE_DEFAULT_MONITOR (serve --default-monitor)"
                )
        return self._registry.get(name)

    async def health(self) -> Health:
        """The store's reachability for every loaded monitor, and the monitors (never raises).

        The store is ok only when every loaded monitor's window can be reached: on Redis
        Cluster one master down takes the monitors of its slots with it.
        """
        monitors = list(self._registry)
        unreachable = await self._store.unreachable([m.window for m in monitors])
        return Health(
            store_kind=self._store.kind,
            store_ok=not unreachable if monitors else await self._store.ping(),
            monitors=[m.name for m in monitors],
            default_monitor=self._registry.default_name,
            config_errors=self._registry.errors,
            unreachable=unreachable,
        )

    async def persistence(self, *, reachable: bool = True) -> Persistence:
        """What of the windows survives a restart of the store (published as a metric).

        `reachable=False` (the store just failed a check): `unknown`, without asking, so
        that health answers within one store timeout (the liveness probe's budget).
        """
        persistence = await self._store.persistence() if reachable else Persistence("unknown")
        self._telemetry.set_persistence(persistence.mode, persistence.fsync)
        return persistence

    def count_invalid(self, monitor: Monitor, reasons: Iterable[str]) -> None:
        """Count events refused before they reached the engine (e.g. undecodable), by reason."""
        for reason in reasons:
            self._telemetry.invalid_events.inc({"monitor": monitor.name, "reason": reason})

    # ------------------------------------------------------------------ counting

    def _reject(self, monitor: Monitor, rejection: Rejection) -> RejectedEventError:
        self.count_invalid(monitor, [rejection.reason])
        return RejectedEventError(rejection)

    async def predict(
        self, monitor: Monitor, event: Event, key: RequestKey | None = None
    ) -> Prediction:
        """Count one event; in durable mode return once it is stored, with that verdict.

        With a key, the event is counted only if no event was counted under that key
        within the idempotency horizon; a repeat is answered as the first was (in
        durable mode). Raises RejectedEventError when the event cannot be counted,
        StoreUnavailableError when the flush carrying it failed (it was not counted),
        KeyConflictError when the key was recorded for another request.
        """
        limits = self._settings.limits
        features = event.features
        admitted = admit(0, len(features), event.timestamp, self._clock(), limits)
        if isinstance(admitted, Rejection):
            raise self._reject(monitor, admitted)
        bucket = monitor.window.bucket_of(admitted)
        known = monitor.layout.features.keys()
        warnings = (
            [] if features.keys() <= known else unknown_feature_warnings(features.keys() - known)
        )
        if monitor.decoder is not None:
            merged = with_prediction(0, monitor.decoder, features, event.prediction)
            if isinstance(merged, Rejection):
                raise self._reject(monitor, merged)
            features = merged
        elif event.prediction is not None:
            warnings.append(prediction_ignored(monitor))
        made_id, pending = _waiting_id(monitor, event.id, key)
        durable = self._settings.ack_mode == "durable"
        row = Row(features, bucket, event.model_version, durable, key, pending)
        if not durable:
            # Nobody waits for the flush, so a value it would refuse must be refused now.
            error = first_error(monitor.layout, features, limits)
            if error is not None:
                raise self._reject(monitor, invalid_value(0, error))
            self._committer.submit_row(monitor, row)
            return Prediction(await self._latest(monitor), warnings, made_id=made_id)
        ticket = self._committer.submit_row(monitor, row)
        assert ticket.future is not None
        assert ticket.row is not None
        # Shielded: the future is the whole batch's; a caller that gives up must not
        # cancel the flush the other callers (and the flusher) wait on.
        outcome = await asyncio.shield(ticket.future)
        error = outcome.row_errors.get(ticket.row)
        if error is not None:
            raise self._reject(monitor, invalid_value(0, error))
        assert outcome.assessment is not None  # a valid row was applied
        claim = _claim_of(ticket, outcome)
        late = bucket in outcome.late_buckets if claim is None else claim.late > 0
        if late:
            warnings.append(self._late_warning(monitor, 1))
        replayed = claim is not None and claim.status is ClaimStatus.REPLAYED
        if replayed:
            self._telemetry.replays.inc({"monitor": monitor.name})
        return Prediction(outcome.assessment, warnings, replayed, made_id, late)

    @staticmethod
    def _late_warning(monitor: Monitor, late: int) -> str:
        return (
            f"{late} event(s) outside the {monitor.choice.kept_seconds} s window (too old, "
            "or ahead of the store's clock): acknowledged, not counted"
        )

    async def ingest(
        self, monitor: Monitor, events: Sequence[Event], key: RequestKey | None = None
    ) -> IngestResult:
        """Validate, bin (by column) and count a batch; durable: return once stored.

        Invalid events are rejected one by one (the rest are counted); a rejection's
        index is the event's position in `events`. Raises StoreUnavailableError when the
        flush carrying the events failed: none were counted. With a key: see `predict`.
        """
        now = self._clock()
        limits = self._settings.limits
        result = IngestResult(monitor)
        admitted: list[tuple[int, float]] = []
        rows: list[dict[str, Any]] = []
        decoder = monitor.decoder
        for index, event in enumerate(events):
            outcome = admit(index, len(event.features), event.timestamp, now, limits)
            features = event.features
            if decoder is not None and not isinstance(outcome, Rejection):
                merged = with_prediction(index, decoder, features, event.prediction)
                if isinstance(merged, Rejection):
                    outcome = merged
                else:
                    features = merged
            if isinstance(outcome, Rejection):
                result.rejected.append(outcome)
            else:
                admitted.append((index, outcome))
                rows.append(features)
        batch = bin_batch(monitor.layout, rows, limits)
        result.rejected.extend(
            invalid_value(admitted[j][0], error) for j, error in batch.errors.items()
        )
        result.rejected.sort(key=lambda r: r.index)
        ignored = decoder is None and any(event.prediction is not None for event in events)
        timestamps = np.array([t for _, t in admitted], dtype=np.float64)
        versions = [events[index].model_version for index, _ in admitted]
        pending = None
        if monitor.labels is not None:
            pending = self._pending_of(
                monitor, events, admitted, rows, batch, timestamps, versions, result
            )
        counted = await self._count(monitor, batch, timestamps, versions, result, key, pending)
        if ignored:
            counted.warnings.append(prediction_ignored(monitor))
        return counted

    async def ingest_columns(
        self,
        monitor: Monitor,
        columns: Mapping[str, Sequence[Any] | Vector],
        size: int,
        *,
        timestamp: datetime | None = None,
        model_version: str | None = None,
        key: RequestKey | None = None,
        prediction: Sequence[Any] | Vector | None = None,
    ) -> IngestResult:
        """Count `size` events sent as one value list per feature (lengths checked before).

        They share one timestamp (the server's when absent) and model version;
        `prediction` holds each event's prediction (as long as the columns). Raises
        RejectedEventError for a request-wide problem (timestamp, too many columns); a
        value's rejection has the index of its event, i.e. its position in the columns.
        With a key: see `predict`.
        """
        limits = self._settings.limits
        admitted = admit(0, len(columns), timestamp, self._clock(), limits)
        if isinstance(admitted, Rejection):
            raise self._reject(monitor, admitted)
        known = monitor.layout.features
        decoder = monitor.decoder
        if decoder is not None:
            reserved = next((name for name in decoder.names if name in columns), None)
            if reserved is not None:
                raise self._reject(
                    monitor,
                    Rejection(
                        0,
                        "features",
                        "reserved_feature",
                        f"column {reserved!r}: names starting with {RESERVED_MARK} are "
                        "reserved; send the model's output in `prediction`",
                    ),
                )
        if columns and not any(name in known for name in columns) and prediction is None:
            # Every event would be all-missing: a typo'd column name, not data to count.
            raise self._reject(
                monitor,
                Rejection(
                    0,
                    "features",
                    "no_known_features",
                    f"no column is a feature of monitor {monitor.name!r}: got "
                    f"{', '.join(sorted(columns))}; features: "
                    + ", ".join(n for n in known if not is_prediction_column(n)),
                ),
            )
        refused: dict[int, EventError] = {}
        if decoder is not None and prediction is not None:
            outputs, wrong = decoder.columns(prediction)
            columns = {**columns, **outputs}
            refused = {i: EventError(decoder.names[0], str(e)) for i, e in wrong.items()}
        ignored = decoder is None and prediction is not None
        listed = self._binned_at_flush(columns, key)
        if listed is not None:
            seconds = monitor.window.bucket_seconds
            chunk = ColumnChunk(
                listed, size, int(admitted // seconds) * seconds, model_version, refused
            )
            return await self._count_chunk(monitor, chunk, ignored)
        batch = bin_columns(monitor.layout, columns, size, limits)
        for i, error in refused.items():
            batch.errors.setdefault(i, error)
        result = IngestResult(monitor)
        result.rejected = [invalid_value(i, error) for i, error in sorted(batch.errors.items())]
        counted = await self._count(
            monitor, batch, np.full(size, admitted), [model_version] * size, result, key
        )
        if ignored:
            counted.warnings.append(prediction_ignored(monitor))
        return counted

    def _binned_at_flush(
        self, columns: Mapping[str, Sequence[Any] | Vector], key: RequestKey | None
    ) -> dict[str, list[Any]] | None:
        """The columns, when they wait for their flush to be binned with others (commit.py).

        Only where the request waits for the flush anyway (durable; no key, since a claim
        needs its own vector) and every column is a plain list (packed floats are not
        joined with lists).
        """
        if self._settings.ack_mode != "durable" or key is not None:
            return None
        listed = {name: column for name, column in columns.items() if type(column) is list}
        return listed if len(listed) == len(columns) else None

    async def _count_chunk(
        self, monitor: Monitor, chunk: ColumnChunk, ignored: bool
    ) -> IngestResult:
        """Count events sent by column, binned at their flush; answered once it stored them."""
        result = IngestResult(monitor)
        future, position = self._committer.submit_columns(monitor, chunk)
        flushed = await asyncio.shield(future)  # shared: see predict
        errors = flushed.chunk_errors[position]
        result.rejected = [invalid_value(i, error) for i, error in sorted(errors.items())]
        self.count_invalid(monitor, (rejection.reason for rejection in result.rejected))
        result.warnings = unknown_feature_warnings(
            chunk.columns.keys() - monitor.layout.features.keys()
        )
        counted = chunk.size - len(errors)
        if counted:
            result.assessment = flushed.assessment
            result.late = counted if chunk.bucket in flushed.late_buckets else 0
            result.accepted = counted - result.late
            self._tally(monitor, result, [chunk.tag] * counted)
        if ignored:
            result.warnings.append(prediction_ignored(monitor))
        return result

    def _tally(self, monitor: Monitor, result: IngestResult, counted: list[str | None]) -> None:
        """Telemetry of a request's counted events (late ones too), and the late warning."""
        if result.replayed:
            self._telemetry.replays.inc({"monitor": monitor.name})
        else:
            self._telemetry.count_events(monitor.name, counted)
        if result.late:
            if not result.replayed:
                self._telemetry.late_events.add({"monitor": monitor.name}, result.late)
            result.warnings.append(self._late_warning(monitor, result.late))

    async def ingest_inference(
        self,
        monitor: Monitor,
        inputs: Inputs,
        predictions: Sequence[Any] | None,
        *,
        timestamp: datetime | None,
        model_version: str | None,
        key: RequestKey | None = None,
    ) -> IngestResult:
        """Count an inference: an event per request row, with that row's prediction if joined.

        Predictions of another number of rows are not joined (a warning says why). Rows
        held by column (V2 tensors) are counted by column when that counts them exactly
        as `ingest` counts them as events (see `_by_column`); else row by row.
        """
        size = input_size(inputs)
        why = unjoined(size, predictions)
        if why is not None:
            predictions = None
        if size == 1 and key is None:
            # An online inference: one event, binned with the other single events of its
            # flush as predict's are (a one-event batch pays numpy's fixed cost alone).
            (event,) = inference_events(input_rows(inputs), predictions, timestamp, model_version)
            result = await self._single(monitor, event)
        elif isinstance(inputs, Columns) and self._by_column(
            monitor, inputs.values, timestamp, predictions
        ):
            result = await self.ingest_columns(
                monitor,
                inputs.values,
                size,
                timestamp=timestamp,
                model_version=model_version,
                key=key,
                prediction=predictions,
            )
        else:
            events = inference_events(input_rows(inputs), predictions, timestamp, model_version)
            result = await self.ingest(monitor, events, key)
        if why is not None:
            result.warnings.append(why)
        return result

    async def _single(self, monitor: Monitor, event: Event) -> IngestResult:
        """One event counted as `predict` counts it, answered as `ingest` answers."""
        result = IngestResult(monitor)
        if monitor.labels is not None:
            result.ids = [None]
        try:
            counted = await self.predict(monitor, event)
        except RejectedEventError as exc:
            result.rejected.append(exc.rejection)
            return result
        result.assessment = counted.assessment
        result.warnings = counted.warnings
        result.late = int(counted.late)
        result.accepted = 1 - result.late
        if result.ids is not None:
            result.ids[0] = event.id or counted.made_id
        return result

    def _by_column(
        self,
        monitor: Monitor,
        columns: Collection[str],
        timestamp: datetime | None,
        predictions: Sequence[Any] | None,
    ) -> bool:
        """Whether `ingest_columns` counts these rows exactly as `ingest` counts them as events.

        Not for a monitor with labels (ids and label records are made per event), nor
        where `ingest` refuses each event on its own and `ingest_columns` the request or
        another value: a timestamp or width `admit` refuses, a column with a prediction's
        reserved name, a prediction the decoder refuses (taking precedence over a bad
        value in its row).
        """
        if monitor.labels is not None:
            return False
        limits = self._settings.limits
        if isinstance(admit(0, len(columns), timestamp, self._clock(), limits), Rejection):
            return False
        decoder = monitor.decoder
        if decoder is None:
            return True
        if any(name in columns for name in decoder.names):
            return False
        return predictions is None or decoder.spec.numeric or not decoder.columns(predictions)[1]

    def _pending_of(
        self,
        monitor: Monitor,
        events: Sequence[Event],
        admitted: list[tuple[int, float]],
        rows: list[dict[str, Any]],
        batch: BinnedBatch,
        timestamps: Vector,
        versions: list[str | None],
        result: IngestResult,
    ) -> tuple[bytes, bytes] | None:
        """Ids of a batch's counted events (made where missing) and their pending records."""
        slots = monitor.layout.performance
        assert slots is not None
        assert monitor.decoder is not None
        names = monitor.decoder.names
        result.ids = [None] * len(events)
        digests: list[bytes] = []
        waiting: list[int] = []  # positions among `rows`
        for j, (index, _) in enumerate(admitted):
            if j in batch.errors:
                continue
            made, digest = _waiting_id(monitor, events[index].id)
            result.ids[index] = events[index].id or made
            if digest is not None and awaits_label(rows[j], names):
                digests.append(digest)
                waiting.append(j)
        if not waiting:
            return None
        columns = [[rows[j][name] for j in waiting] for name in names]
        window = monitor.window
        starts = (timestamps[waiting] // window.bucket_seconds).astype(np.int64)
        return b"".join(digests), pending_records(
            starts * window.bucket_seconds,
            payloads(slots, columns),
            record_blocks(monitor.scopes, batch, versions, waiting),
        )

    async def _count(
        self,
        monitor: Monitor,
        batch: BinnedBatch,
        timestamps: Vector,
        versions: list[str | None],
        result: IngestResult,
        key: RequestKey | None,
        pending: tuple[bytes, bytes] | None = None,
    ) -> IngestResult:
        """Commit a binned batch's valid events (`versions`: one per event of the batch)."""
        self.count_invalid(monitor, (rejection.reason for rejection in result.rejected))
        result.warnings = unknown_feature_warnings(batch.unknown)
        # The usual batch has no invalid event: its versions are all counted, uncopied.
        errors = batch.errors
        counted = [v for j, v in enumerate(versions) if j not in errors] if errors else versions
        if not counted:
            return result
        window = monitor.window
        buckets = (timestamps // window.bucket_seconds).astype(np.int64) * window.bucket_seconds
        submission = batch_deltas(monitor.scopes, batch, buckets, versions)
        ticket = self._committer.submit(
            monitor,
            submission,
            durable=self._settings.ack_mode == "durable",
            key=key,
            pending=pending,
        )
        if ticket.future is not None:
            flushed = await asyncio.shield(ticket.future)  # shared: see predict
            result.assessment = flushed.assessment
            claim = _claim_of(ticket, flushed)
            if claim is not None:
                result.late = claim.late
                result.accepted = claim.accepted
                result.replayed = claim.status is ClaimStatus.REPLAYED
            else:
                result.late = sum(
                    n for start, (_, n) in submission.items() if start in flushed.late_buckets
                )
                result.accepted = len(counted) - result.late
        else:
            result.assessment = await self._latest(monitor)
            result.accepted = len(counted)
        self._tally(monitor, result, counted)
        return result

    # ------------------------------------------------------------------ labels

    async def labels(self, monitor: Monitor, labels: Sequence[Label]) -> LabelsResult:
        """Join delayed labels to their predictions and count performance (see LabelsResult).

        Raises LabelsOffError for a monitor without `labels`, StoreUnavailableError when
        the store failed (then nothing of the batch was counted or consumed).
        """
        slots = monitor.layout.performance
        policy = monitor.labels
        if slots is None or policy is None:
            raise LabelsOffError(
                f"monitor {monitor.name!r} takes no labels: declare `labels` (and its "
                "`prediction`) in its config (docs/labels.md)"
            )
        result = LabelsResult(monitor)
        values: list[float] = []
        digests: list[bytes] = []
        seen: set[bytes] = set()
        for index, item in enumerate(labels):
            try:
                value = label_value(slots, item.label)
            except LabelError as exc:
                result.rejected.append(LabelRejection(index, str(exc)))
                continue
            digest = id_digest(item.id)
            if not sampled(digest, policy.sample_rate):
                result.unsampled += 1
            elif digest in seen:
                result.duplicate += 1
            else:
                seen.add(digest)
                digests.append(digest)
                values.append(value)
        try:
            if digests:
                await self._join(monitor, slots, policy, digests, values, result)
            else:
                result.assessment = await self._latest(monitor)
        except StoreUnavailableError:
            self._telemetry.store_errors.inc({"operation": "labels"})
            raise
        self._telemetry.count_labels(monitor.name, result.outcomes())
        return result

    async def _join(
        self,
        monitor: Monitor,
        slots: PerformanceSlots,
        policy: LabelsPolicy,
        digests: list[bytes],
        values: list[float],
        result: LabelsResult,
    ) -> None:
        """Look the labels' predictions up, then count and consume them in one atomic step."""
        window = monitor.window
        horizon = policy.horizon_seconds
        found = await self._store.lookup(window, horizon, digests)
        matched: list[int] = []
        for i, record in enumerate(found.records):
            if record is None:
                result.unmatched += 1
            elif record == TOMBSTONE:
                result.duplicate += 1
            elif found.now > int.from_bytes(record[:8], "big", signed=True) + (
                window.bucket_seconds + horizon
            ):
                result.after_horizon += 1
            else:
                matched.append(i)
        while matched:
            joined = np.frombuffer(b"".join(found.records[i] or b"" for i in matched), RECORD)
            deltas = joined_deltas(
                monitor.scopes, slots, joined, np.array([values[i] for i in matched])
            )
            taken = [(digests[i], found.records[i] or b"") for i in matched]
            consumed = await self._store.consume(window, horizon, deltas, taken)
            if consumed.stale:  # labelled meanwhile by another request: count the rest
                result.duplicate += len(consumed.stale)
                stale = set(consumed.stale)
                matched = [i for m, i in enumerate(matched) if m not in stale]
                continue
            assert consumed.result is not None
            late = consumed.result.late_buckets
            result.late = int(np.isin(joined["bucket"].astype(np.int64), list(late)).sum())
            result.counted = len(matched) - result.late
            totals = await judged(self._store, monitor, consumed.result.totals)
            result.assessment = self._verdicts.assess(monitor, totals)
            return
        result.assessment = await self._latest(monitor)

    # ------------------------------------------------------------------ reading

    async def _read(self, monitor: Monitor) -> WindowTotals:
        try:
            return await read(self._store, monitor)
        except StoreUnavailableError:
            self._telemetry.store_errors.inc({"operation": "read"})
            raise

    async def _latest(self, monitor: Monitor) -> Assessment:
        """The last assessment of this monitor's current layout, else a fresh one."""
        return self._verdicts.latest(monitor) or await self.assessment(monitor)

    async def assessment(self, monitor: Monitor) -> Assessment:
        """Read the monitor's window and assess it (listeners hear of it)."""
        return self._verdicts.assess(monitor, await self._read(monitor))

    async def assessments(self, monitors: Sequence[Monitor]) -> list[Assessment]:
        """Read the monitors' windows together and assess each (listeners hear of them)."""
        try:
            totals = await read_all(self._store, monitors)
        except StoreUnavailableError:
            self._telemetry.store_errors.inc({"operation": "read"})
            raise
        return [self._verdicts.assess(m, t) for m, t in zip(monitors, totals, strict=True)]

    async def report(self, monitor: Monitor, scope: Scope | None = None) -> DriftReport:
        """Read the monitor's window and report on it in full (or on a declared scope's)."""
        totals = await self._read(monitor)
        if scope is None:
            return drift_report(
                self._verdicts.assess(monitor, totals), monitor.scopes.totals(totals)
            )
        report = drift_report(
            scope_assessment(monitor, scope, totals), monitor.scopes.totals(totals, scope.block)
        )
        return msgspec.structs.replace(report, **{scope.kind: scope.value})

    async def compare(
        self, monitor: Monitor, a: Scope, b: Scope, *, margin: float, metric: CompareMetric | None
    ) -> Comparison:
        """Compare two declared model versions' windows (driftline.core.compare)."""
        return compare(monitor, await self._read(monitor), a, b, margin=margin, metric=metric)

    async def history(self, monitor: Monitor, start: float, end: float, step: int) -> History:
        """The monitor's verdicts per `step` seconds between two moments (see HistoryRecorder).

        Raises HistoryOffError when no history is kept.
        """
        if self._history is None:
            raise HistoryOffError(HISTORY_OFF)
        try:
            return await self._history.read(monitor, start, end, step)
        except StoreUnavailableError:
            self._telemetry.store_errors.inc({"operation": "history"})
            raise

    @property
    def history_horizon(self) -> int:
        """Seconds of history kept per monitor (0: none)."""
        return 0 if self._history is None else self._history.horizon_seconds

    async def forget(self, name: str) -> None:
        """Delete a monitor's window data and history (every layout), loaded or not.

        The operator's finalizer calls this when a DriftMonitor is deleted.
        """
        try:
            await self._store.drop(name)
            if self._history is not None:
                await self._history.drop(name)
        except StoreUnavailableError:
            self._telemetry.store_errors.inc({"operation": "drop"})
            raise
        self._verdicts.forget(name)

    async def close(self) -> None:
        """Refuse new events and flush the pending ones; called before the stores close."""
        await self._committer.close()
        self._verdicts.settle()  # the last flushes' verdicts, for the alerts and history
        if self._history is not None:
            await self._history.close()

    async def assess_waiting_forever(self, stopping: asyncio.Event) -> None:
        """Make the verdicts that flushes left waiting (`Verdicts.catch_up`), until `stopping`."""
        await self._verdicts.catch_up_forever(stopping)


def _waiting_id(
    monitor: Monitor, event_id: str | None, key: RequestKey | None = None
) -> tuple[str | None, bytes | None]:
    """For a monitor with labels: the id made for an event without one, and its digest.

    The digest is None when the id is not sampled: its prediction does not wait. `key`:
    the event's idempotency key, whose digest is the id's when it was made from the id.
    """
    if monitor.labels is None:
        return None, None
    made = None
    if event_id is None:
        event_id = made = uuid.uuid4().hex
    digest = key.digest if isinstance(key, EventKey) else id_digest(event_id)
    return made, digest if sampled(digest, monitor.labels.sample_rate) else None


def _claim_of(ticket: Ticket, outcome: FlushOutcome) -> ClaimOutcome | None:
    """A keyed submission's outcome (None when unkeyed); a key of another request raises."""
    if ticket.claim is None:
        return None
    claim = outcome.claims[ticket.claim]
    assert claim is not None  # a claimed submission was sent with its flush
    if claim.status is ClaimStatus.CONFLICT:
        raise KeyConflictError(
            "this key was used with another request within the idempotency horizon: "
            "nothing was counted; send a new key for a new request"
        )
    return claim
