"""Prometheus metrics of one service instance (aioprometheus), rendered at /monitor/metrics.

Each app owns its registry, so two instances in one process (as in the tests) never
share counters. Label values that come from clients (model_version) are bounded.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
from aioprometheus import histogram
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.renderer import render

from driftline.core.report import Assessment

# A client could send a new model_version per request: cap the label's cardinality.
MAX_MODEL_VERSIONS = 50
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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


class Telemetry:
    """The service's Prometheus collectors and the updates the service makes to them."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.feature_score = Gauge(
            "driftline_feature_drift_score",
            "Effect size per feature on the current window (PSI numeric, Cohen's w categorical)",
            registry=r,
        )
        self.feature_p_value = Gauge(
            "driftline_feature_p_value", "Significance of each feature's drift test", registry=r
        )
        self.severity = Gauge(
            "driftline_monitor_severity",
            "Monitor severity: 0 none, 1 warning, 2 critical",
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
        self.store_persistence = Gauge(
            "driftline_store_persistence",
            "1 for what survives a restart of the window store: mode aof (Redis append-only"
            " file, with its appendfsync), none, or unknown (CONFIG refused or Redis down)",
            registry=r,
        )
        self._model_versions: set[str] = set()

    def observe(self, assessment: Assessment) -> None:
        """Publish a monitor's latest assessment."""
        name = assessment.monitor.name
        monitor = {"monitor": name}
        for feature, data in assessment.evaluation.features.items():
            labels = {"monitor": name, "feature": feature}
            self.feature_score.set(labels, data.score)
            self.feature_p_value.set(labels, data.p_value)
        verdict = assessment.evaluation.verdict
        self.severity.set(monitor, verdict.severity.rank)
        self.drift_detected.set(monitor, int(verdict.drift_detected))
        self.drift_score.set(monitor, verdict.drift_score)
        self.drifted_features.set(monitor, len(assessment.drifted_features))
        self.window_events.set(monitor, assessment.window.events)

    def count_events(self, monitor: str, versions: Sequence[str | None]) -> None:
        """Count accepted events per model_version (bounded label set)."""
        tally: dict[str, int] = {}
        # Counter tallies in C: a batch's versions are mostly one value.
        for version, count in collections.Counter(versions).items():
            label = version or "unknown"
            if label not in self._model_versions:
                if len(self._model_versions) >= MAX_MODEL_VERSIONS:
                    label = "other"
                else:
                    self._model_versions.add(label)
            tally[label] = tally.get(label, 0) + count
        for label, n in tally.items():
            self.events.add({"monitor": monitor, "model_version": label}, n)

    def set_persistence(self, mode: str, fsync: str | None) -> None:
        """Publish what survives a restart of the store: one series, valued 1."""
        self.store_persistence.values.clear()  # the previous state's series
        self.store_persistence.set({"mode": mode, "appendfsync": fsync or "none"}, 1)

    def render(self, accept: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        """The exposition body and headers for an Accept header."""
        self.latency.fold()
        body, headers = render(self.registry, list(accept))
        return body, dict(headers)
