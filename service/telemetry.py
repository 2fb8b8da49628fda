"""Prometheus metrics of one service instance (aioprometheus), rendered at /monitor/metrics.

Each app owns its registry, so two instances in one process (as in the tests) never
share counters. Label values that come from clients (model_version) are bounded per
monitor and escaped; a monitor's series appear at 0 when it loads and go when it is
unloaded.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from aioprometheus import histogram
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.metricdict import MetricDict
from aioprometheus.renderer import render

from driftline.core.monitor import Monitor
from driftline.core.performance import Performance
from driftline.core.report import Assessment, Evaluation
from driftline.core.scopes import Scope, ScopeKind
from driftline.core.severity import SEVERITY_RANK

# Versions a monitor keeps a model_version label for, besides the ones its config
# declares: a client could send a new version with every request.
MAX_MODEL_VERSIONS = 20
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Why single events are refused (driftline.engine.admission, binning, batch decoding):
# each monitor's driftline_invalid_events_total starts at 0 for these.
EVENT_REASONS = (
    "invalid_value",
    "too_many_features",
    "invalid_timestamp",
    "future_timestamp",
    "invalid_event",
    "malformed_json",
    "invalid_prediction",
    "reserved_feature",
)
# Halves of an inference (driftline.engine.inference) counted or dropped without their
# other half: after the pairing timeout, pushed out of a full pending table, sent twice
# under one id (the earlier one), or waiting at shutdown.
UNPAIRED = tuple(
    (half, reason)
    for half in ("request", "response")
    for reason in ("timeout", "overflow", "duplicate", "shutdown")
)
# What became of each label (driftline.engine.facade.LabelsResult).
LABEL_OUTCOMES = (
    "counted",
    "late",
    "unmatched",
    "duplicate",
    "after_horizon",
    "unsampled",
    "invalid",
)
PERFORMANCE_METRICS = ("accuracy", "macro_f1", "roc_auc", "log_loss", "mae", "rmse", "mean_error")
STORE_OPERATIONS = (
    "read",
    "apply",
    "labels",
    "drop",
    "history",
    "alert_transition",
    "alert_fetch",
    "alert_delivery",
)


def label_value(text: str) -> str:
    """A label value escaped as the text exposition format requires (aioprometheus does not)."""
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


class VersionSlots:
    """A monitor's model_version labels: declared versions always; the others rotate.

    At most `size` undeclared versions hold a label at once; a new one takes the slot of
    the one seen least recently, whose series is removed.
    """

    def __init__(self, declared: Iterable[str], size: int = MAX_MODEL_VERSIONS) -> None:
        self.declared = frozenset(declared)
        self._size = size
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()

    def admit(self, version: str) -> str | None:
        """Note that `version` was seen; the version it pushed out, if any."""
        if version in self.declared:
            return None
        if version in self._recent:
            self._recent.move_to_end(version)
            return None
        self._recent[version] = None
        if len(self._recent) > self._size:
            evicted, _ = self._recent.popitem(last=False)
            return evicted
        return None


class LatencyRecorder:
    """Request durations, folded into a Prometheus histogram in bulk.

    aioprometheus observes one value with a Python loop over the buckets and a lookup of
    the label set; a request only appends its duration here, and the durations are
    binned with numpy at scrape time, or whenever FOLD_AT of one label set wait.
    """

    FOLD_AT = 4096

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._pending: dict[tuple[str, str, int], list[float]] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Note one request's duration."""
        pending = self._pending.setdefault((route, method, status), [])
        pending.append(seconds)
        if len(pending) >= self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Add every noted duration to the histogram."""
        pending, self._pending = self._pending, {}
        for (route, method, status), durations in pending.items():
            labels = {"route": route, "method": method, "status": str(status)}
            if labels not in self.histogram.values:
                # Let aioprometheus create the label set with the first duration.
                self.histogram.add(labels, durations.pop())
            aggregate = self.histogram.get_value(labels)
            assert isinstance(aggregate, histogram.Histogram)
            if not durations:
                continue
            values = np.sort(np.asarray(durations, dtype=np.float64))
            # Prometheus buckets are cumulative: bucket le=b counts every value <= b.
            bounds = list(aggregate.buckets)  # the collector's, and +Inf
            within = np.searchsorted(values, bounds, side="right").tolist()
            for bound, count in zip(bounds, within, strict=True):
                aggregate.buckets[bound] += count
            aggregate.sum += float(values.sum())
            aggregate.observations += len(durations)


class CompactMetricDict(MetricDict):
    """aioprometheus's label-set store, with each series' key held in its own size.

    Its keys are orjson's serialised label sets, and orjson (3.13) hands back bytes
    that keep a 4 KiB buffer: 4 KiB per series, ~2 MiB per 50-feature monitor. A copy
    of the key holds only its bytes.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # aioprometheus is untyped

    def __keytransform__(self, key: Any) -> Any:
        found = super().__keytransform__(key)  # type: ignore[no-untyped-call]
        return bytes(memoryview(found)) if isinstance(found, bytes) else found


class FeatureGauge:
    """A gauge per (monitor, feature), set for all of a monitor's features at once.

    aioprometheus checks a label set and serialises it into its key on every set (~3 µs);
    a monitor sets five gauges per feature per evaluation, always with the same label
    sets, so each set of them is checked and keyed once and then written directly.
    """

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._keys: dict[tuple[str, tuple[str, ...]], list[Any]] = {}

    def set(self, monitor: str, features: tuple[str, ...], values: Iterable[float]) -> None:
        """Set each feature's value (in the order of `features`)."""
        keys = self._keys.get((monitor, features))
        if keys is None:
            labels = [{"monitor": monitor, "feature": label_value(feature)} for feature in features]
            for label_set in labels:
                self.gauge.set(label_set, 0.0)  # checks the labels
            metric_dict: Any = self.gauge.values  # aioprometheus's MetricDict (untyped)
            keys = [metric_dict.__keytransform__(label_set) for label_set in labels]
            self._keys[(monitor, features)] = keys
        store = self.gauge.values.store
        for key, value in zip(keys, values, strict=True):
            store[key] = value

    def forget(self, monitor: str) -> None:
        """Drop the keys kept for a monitor that is no longer loaded."""
        for cached in [k for k in self._keys if k[0] == monitor]:
            del self._keys[cached]


def set_or_remove(gauge: Gauge, labels: dict[str, str], value: float | None) -> None:
    """Set a series, or remove it while its value is undefined (absent, not a stale 0)."""
    if value is None:
        gauge.values.pop(labels, None)
    else:
        gauge.set(labels, value)


class ScopeGauges:
    """The gauges of declared versions' (or segments') windows: a label per declared one."""

    def __init__(self, kind: ScopeKind, registry: Registry) -> None:
        self.kind = kind
        noun = "model version" if kind == "model_version" else "segment"
        prefix = "driftline_version" if kind == "model_version" else "driftline_segment"
        self.severity = Gauge(
            f"{prefix}_severity",
            f"Severity of each declared {noun}'s window (as driftline_monitor_severity)",
            registry=registry,
        )
        self.window_events = Gauge(
            f"{prefix}_window_events", f"Events in each declared {noun}'s window", registry=registry
        )
        self.drifted_features = Gauge(
            f"{prefix}_drifted_features",
            f"Features flagged as drifted in each declared {noun}'s window",
            registry=registry,
        )
        self.performance = Gauge(
            f"{prefix}_performance",
            f"Model performance on each declared {noun}'s labelled events, by metric",
            registry=registry,
        )

    def observe(self, monitor: str, value: str, assessment: Assessment) -> None:
        """Publish one declared version's (or segment's) assessment."""
        labels = {"monitor": monitor, self.kind: label_value(value)}
        self.severity.set(labels, assessment.evaluation.verdict.severity.gauge)
        self.window_events.set(labels, assessment.window.events)
        self.drifted_features.set(labels, len(assessment.drifted_features))
        performance = assessment.performance
        for metric in PERFORMANCE_METRICS:
            value_of = None if performance is None else getattr(performance, metric)
            set_or_remove(self.performance, {**labels, "metric": metric}, value_of)


class Telemetry:
    """The service's Prometheus collectors and the updates the service makes to them."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.feature_score = FeatureGauge(
            Gauge(
                "driftline_feature_drift_score",
                "Effect size of each feature's test on the current window (PSI, Cohen's w...)",
                registry=r,
            )
        )
        self.feature_p_value = FeatureGauge(
            Gauge(
                "driftline_feature_p_value", "Significance of each feature's drift test", registry=r
            )
        )
        self.feature_severity = FeatureGauge(
            Gauge(
                "driftline_feature_severity",
                "Feature severity, worst of its checks: 0 none, 0.5 notice, 1 warning, 2 critical",
                registry=r,
            )
        )
        self.missing_rate = FeatureGauge(
            Gauge(
                "driftline_feature_missing_rate",
                "Share of the window's events without a value for the feature",
                registry=r,
            )
        )
        self.out_of_range_rate = FeatureGauge(
            Gauge(
                "driftline_feature_out_of_range_rate",
                "Numeric features: share of values beyond the baseline's 0.1 %/99.9 % tail cuts",
                registry=r,
            )
        )
        self.unseen_rate = FeatureGauge(
            Gauge(
                "driftline_feature_unseen_category_rate",
                "Categorical features: share of values outside the baseline's kept categories",
                registry=r,
            )
        )
        self.severity = Gauge(
            "driftline_monitor_severity",
            "Monitor severity: 0 none, 0.5 notice, 1 warning, 2 critical",
            registry=r,
        )
        self.drift_detected = Gauge(
            "driftline_drift_detected", "1 when the monitor calls its window drifted", registry=r
        )
        self.drift_score = Gauge(
            "driftline_drift_score", "Largest feature score of the monitor", registry=r
        )
        self.drifted_features = Gauge(
            "driftline_drifted_features", "Number of features flagged as drifted", registry=r
        )
        self.window_events = Gauge(
            "driftline_window_events", "Events in the monitor's current window", registry=r
        )
        self.events = Counter(
            "driftline_events_total", "Events accepted, by monitor and model_version", registry=r
        )
        self.late_events = Counter(
            "driftline_late_events_total",
            "Events older than the window: acknowledged, not counted",
            registry=r,
        )
        self.invalid_events = Counter(
            "driftline_invalid_events_total", "Events rejected, by reason", registry=r
        )
        self.lost_events = Counter(
            "driftline_lost_events_total",
            "Asynchronously acknowledged events whose flush failed",
            registry=r,
        )
        self.store_errors = Counter(
            "driftline_store_errors_total", "Window store failures, by operation", registry=r
        )
        self.latency = LatencyRecorder(
            Histogram(
                "driftline_request_duration_seconds",
                "HTTP request latency by route and status",
                registry=r,
                buckets=LATENCY_BUCKETS,
            )
        )
        self.alert_transitions = Counter(
            "driftline_alert_transitions_total",
            "Severity changes this replica decided (once for all replicas), by new severity",
            registry=r,
        )
        self.alerts_sent = Counter(
            "driftline_alerts_sent_total", "Alerts delivered, by receiver", registry=r
        )
        self.alerts_failed = Counter(
            "driftline_alerts_failed_total", "Alert delivery attempts that failed", registry=r
        )
        self.alerts_retried = Counter(
            "driftline_alerts_retried_total", "Alert deliveries scheduled for retry", registry=r
        )
        self.alerts_dead = Counter(
            "driftline_alerts_dead_lettered_total",
            "Alert deliveries given up on (dead-lettered)",
            registry=r,
        )
        self.alert_latency = Histogram(
            "driftline_alert_delivery_seconds",
            "From the severity change to the receiver's 2xx",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.replays = Counter(
            "driftline_idempotent_replays_total",
            "Requests sent again under a key already counted: answered, not counted again",
            registry=r,
        )
        self.unpaired = Counter(
            "driftline_inference_unpaired_total",
            "Inference halves left without their other half (by half and reason): a request is "
            "counted without its prediction, a response is dropped",
            registry=r,
        )
        self.verdict_lag = Gauge(
            "driftline_verdict_lag_seconds",
            "How long the oldest window change no verdict covers yet has waited (0: none waits)",
            registry=r,
        )
        self.pending_inferences = Gauge(
            "driftline_inference_pending",
            "Inference halves waiting for their other half in this replica",
            registry=r,
        )
        self.store_persistence = Gauge(
            "driftline_store_persistence",
            "1 for what survives a restart of the window store: mode aof (Redis append-only"
            " file, with its appendfsync), none, or unknown (CONFIG refused or Redis down)",
            registry=r,
        )
        self.labels = Counter(
            "driftline_labels_total",
            "Delayed labels received, by outcome (counted, late, unmatched, duplicate, "
            "after_horizon, unsampled, invalid)",
            registry=r,
        )
        self.unkept_predictions = Counter(
            "driftline_unkept_predictions_total",
            "Predictions with an id not kept for their labels: the embedded store is full",
            registry=r,
        )
        self.unrecorded_keys = Counter(
            "driftline_idempotency_keys_unrecorded_total",
            "Keyed requests counted without their key recorded (a retry would count again): "
            "the embedded store holds its most keys for the monitor",
            registry=r,
        )
        self.performance = Gauge(
            "driftline_performance",
            "Model performance on the window's labelled events, by metric (absent while undefined)",
            registry=r,
        )
        self.performance_baseline = Gauge(
            "driftline_performance_baseline",
            "The baseline's performance the window is compared with, by metric",
            registry=r,
        )
        self.performance_severity = Gauge(
            "driftline_performance_severity",
            "Severity of the model's performance against the baseline's (as "
            "driftline_monitor_severity; absent without a baseline's performance)",
            registry=r,
        )
        self.labelled_events = Gauge(
            "driftline_labelled_events", "Events of the window joined to a label", registry=r
        )
        # Declared versions' and segments' windows (docs/versions.md), by scope kind.
        self.scope_gauges = {kind: ScopeGauges(kind, r) for kind in ("model_version", "segment")}
        for collector in r.get_all():
            collector.values = CompactMetricDict()  # still empty: nothing is set yet
        self._versions: dict[str, VersionSlots] = {}
        # The evaluation each monitor's gauges show: an assessment of unchanged counts
        # shares it (driftline.core.memo), and publishing it again would change nothing.
        self._published: dict[str, Evaluation] = {}
        # The performance last published per monitor: without new labels a flush finds
        # the same (memoised) one, and its 16 series need no setting.
        self._published_performance: dict[str, Performance] = {}
        for operation in STORE_OPERATIONS:
            self.store_errors.set({"operation": operation}, 0)
        self.pending_inferences.set({}, 0)

    def _feature_gauges(self) -> tuple[FeatureGauge, ...]:
        return (
            self.feature_score,
            self.feature_p_value,
            self.feature_severity,
            self.missing_rate,
            self.out_of_range_rate,
            self.unseen_rate,
        )

    def _monitor_counters(self) -> tuple[Counter, ...]:
        return (self.late_events, self.lost_events, self.replays, self.unrecorded_keys)

    def load(self, monitor: Monitor) -> None:
        """Give a (re)loaded monitor its version slots and its counters, at 0 where new.

        `increase()` over a counter that appears at its first increment misses that
        increment: every per-monitor series exists from the start.
        """
        name = monitor.name
        previous = self._versions.get(name)
        if previous is None or previous.declared != frozenset(monitor.model_versions):
            self._versions[name] = VersionSlots(monitor.model_versions)
        zero: list[tuple[Counter, dict[str, str]]] = [
            (self.events, {"monitor": name, "model_version": label_value(v)})
            for v in monitor.model_versions
        ]
        zero += [(c, {"monitor": name}) for c in self._monitor_counters()]
        zero += [(self.invalid_events, {"monitor": name, "reason": r}) for r in EVENT_REASONS]
        zero += [(self.alert_transitions, {"monitor": name, "severity": s}) for s in SEVERITY_RANK]
        zero += [(self.unpaired, {"monitor": name, "half": h, "reason": r}) for h, r in UNPAIRED]
        if monitor.labels is not None:
            zero += [(self.labels, {"monitor": name, "outcome": o}) for o in LABEL_OUTCOMES]
            zero.append((self.unkept_predictions, {"monitor": name}))
        for counter, labels in zero:
            if labels not in counter.values:
                counter.set(labels, 0)

    def load_receivers(self, monitor: str, receivers: Iterable[tuple[str, str]]) -> None:
        """Start a monitor's per-receiver delivery counters at 0: (name, type) pairs."""
        for name, kind in receivers:
            labels = {"monitor": monitor, "receiver": label_value(name), "type": kind}
            for counter in (
                self.alerts_sent,
                self.alerts_failed,
                self.alerts_retried,
                self.alerts_dead,
            ):
                if labels not in counter.values:
                    counter.set(labels, 0)

    def unload(self, name: str) -> None:
        """Remove every series of a monitor that is no longer loaded."""
        self._versions.pop(name, None)
        self._published.pop(name, None)
        self._published_performance.pop(name, None)
        for gauge in self._feature_gauges():
            gauge.forget(name)
        for collector in self.registry.get_all():
            for labels, _ in collector.get_all():
                if labels.get("monitor") == name:
                    collector.values.pop(labels, None)

    def observe(self, assessment: Assessment) -> None:
        """Publish a monitor's latest assessment."""
        name = assessment.monitor.name
        monitor = {"monitor": name}
        evaluation = assessment.evaluation
        if self._published.get(name) is evaluation:
            return
        self._published[name] = evaluation
        features = tuple(evaluation.features)
        scored = evaluation.features.values()
        self.feature_score.set(name, features, [f.score for f in scored])
        self.feature_p_value.set(name, features, [f.p_value for f in scored])
        self.feature_severity.set(name, features, [f.severity.gauge for f in scored])
        quality = evaluation.quality
        for gauge, rule in (
            (self.missing_rate, quality["missing"]),
            (self.out_of_range_rate, quality["range"]),
            (self.unseen_rate, quality["new_categories"]),
        ):
            gauge.set(name, rule.features, rule.rate.tolist())
        verdict = evaluation.verdict
        self.severity.set(monitor, verdict.severity.gauge)
        self.drift_detected.set(monitor, int(verdict.drift_detected))
        self.drift_score.set(monitor, verdict.drift_score)
        self.drifted_features.set(monitor, len(assessment.drifted_features))
        self.window_events.set(monitor, assessment.window.events)
        performance = assessment.performance
        if performance is not None and self._published_performance.get(name) is not performance:
            self._published_performance[name] = performance
            self.labelled_events.set(monitor, performance.labelled)
            checks = performance.checks or {}
            for metric in PERFORMANCE_METRICS:
                labels = {"monitor": name, "metric": metric}
                set_or_remove(self.performance, labels, getattr(performance, metric))
                check = checks.get(metric)
                baseline = None if check is None else check.baseline
                set_or_remove(self.performance_baseline, labels, baseline)
            if performance.severity is not None:
                self.performance_severity.set(monitor, performance.severity.gauge)

    def observe_scopes(self, monitor: str, assessments: Mapping[Scope, Assessment]) -> None:
        """Publish the latest assessments of a monitor's declared versions and segments."""
        for scope, assessment in assessments.items():
            self.scope_gauges[scope.kind].observe(monitor, scope.value, assessment)

    def count_labels(self, monitor: str, outcomes: dict[str, int]) -> None:
        """Count a labels batch's outcomes."""
        for outcome, count in outcomes.items():
            if count:
                self.labels.add({"monitor": monitor, "outcome": outcome}, count)

    def count_events(self, monitor: str, versions: Sequence[str | None]) -> None:
        """Count accepted events per model_version (a bounded label set per monitor)."""
        slots = self._versions.setdefault(monitor, VersionSlots(()))
        # Counter tallies in C: a batch's versions are mostly one value.
        for version, count in collections.Counter(versions).items():
            label = version or "unknown"
            evicted = slots.admit(label)
            if evicted is not None:
                self.events.values.pop(
                    {"monitor": monitor, "model_version": label_value(evicted)}, None
                )
            self.events.add({"monitor": monitor, "model_version": label_value(label)}, count)

    def set_persistence(self, mode: str, fsync: str | None) -> None:
        """Publish what survives a restart of the store: one series, valued 1."""
        self.store_persistence.values.clear()  # the previous state's series
        self.store_persistence.set({"mode": mode, "appendfsync": fsync or "none"}, 1)

    def render(self, accept: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        """The exposition body and headers for an Accept header."""
        self.latency.fold()
        body, headers = render(self.registry, list(accept))
        return body, dict(headers)
