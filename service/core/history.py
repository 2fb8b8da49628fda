"""Drift history: one compact, fixed-size record per bucket of what a monitor's verdict was.

A record is the verdict last assessed within one window bucket: the monitor's severity,
drift score, readiness and events, and per feature (in layout order) its effect size,
adjusted p-value, severity, reasons and two data-quality rates. Every field has a fixed
width, so a monitor's records fit a ring of `HistorySpec.slots` slots whose size depends
on its layout and the horizon, never on traffic. Stores (driftline.stores) keep the ring
as opaque bytes; the first 8 bytes of a record are its bucket start, which is all they
read of it.

Widths: the header is 21 bytes (bucket and events as 64-bit integers, score as float32,
a flags byte), each feature 17 bytes (four float32 and a flags byte). float32 keeps
about 7 significant digits; a p-value below 1.4e-45 is stored as 0.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import msgspec
import numpy as np

from driftline.core.monitor import Monitor
from driftline.core.report import REASONS, Assessment, Reason
from driftline.core.severity import LEVELS, Severity
from driftline.core.timestamps import isoformat

MAX_POINTS = 2000
"""Points one history answer holds at most; a longer span needs a coarser step."""

HEADER = np.dtype([("bucket", ">i8"), ("events", ">i8"), ("score", ">f4"), ("flags", "u1")])
FEATURE = np.dtype(
    [("score", ">f4"), ("p", ">f4"), ("missing", ">f4"), ("quality", ">f4"), ("flags", "u1")]
)
# Header flags: severity rank in bits 0-1, ready in bit 2, drift detected in bit 3.
# Feature flags: severity rank in bits 0-1, one bit per reason (REASONS order) from bit 2.
_READY, _DETECTED = 4, 8


def record_bytes(features: int) -> int:
    """The size of one record of a monitor with this many features."""
    return HEADER.itemsize + features * FEATURE.itemsize


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """What a store needs to know of one monitor's history ring."""

    monitor: str
    layout_id: str  # records of another layout have other fields: never mixed
    record_bytes: int
    bucket_seconds: int
    slots: int  # records kept: the horizon in buckets

    def slot_of(self, bucket: int) -> int:
        """The ring slot that holds the record of the bucket starting at `bucket`."""
        return (bucket // self.bucket_seconds) % self.slots

    def ranges(self, first: int, last: int) -> list[tuple[int, int]]:
        """Byte ranges (offset, length) of the ring that may hold buckets in `first`..`last`."""
        count = (last // self.bucket_seconds) - (first // self.bucket_seconds) + 1
        if count <= 0:
            return []
        if count >= self.slots:
            return [(0, self.slots * self.record_bytes)]
        start = self.slot_of(first)
        head = min(count, self.slots - start)
        out = [(start * self.record_bytes, head * self.record_bytes)]
        if count > head:
            out.append((0, (count - head) * self.record_bytes))
        return out

    def records_in(self, chunks: list[bytes], first: int, last: int) -> list[bytes]:
        """The records of buckets `first`..`last` among ring chunks, in bucket order.

        A slot not written since its bucket left the horizon holds an older bucket, a slot
        never written holds zeros (bucket 0): both are skipped.
        """
        size = self.record_bytes
        found: list[tuple[int, bytes]] = []
        for chunk in chunks:
            for offset in range(0, len(chunk) - size + 1, size):
                bucket = int.from_bytes(chunk[offset : offset + 8], "big", signed=True)
                if bucket and first <= bucket <= last:
                    found.append((bucket, chunk[offset : offset + size]))
        found.sort(key=lambda item: item[0])
        return [record for _, record in found]


def history_spec(monitor: Monitor, horizon_seconds: int) -> HistorySpec:
    """The history ring of a monitor: one slot per bucket of the horizon."""
    window = monitor.window
    return HistorySpec(
        monitor=monitor.name,
        layout_id=window.layout_id,
        record_bytes=record_bytes(len(monitor.layout.features)),
        bucket_seconds=window.bucket_seconds,
        slots=max(1, -(-horizon_seconds // window.bucket_seconds)),
    )


def encode_record(assessment: Assessment, bucket: int) -> bytes:
    """The record of an assessment made within the bucket starting at `bucket`."""
    evaluation = assessment.evaluation
    verdict = evaluation.verdict
    header = np.zeros(1, dtype=HEADER)
    header["bucket"] = bucket
    header["events"] = evaluation.events
    header["score"] = verdict.drift_score
    header["flags"] = (
        verdict.severity.rank
        | (_READY if verdict.ready else 0)
        | (_DETECTED if verdict.drift_detected else 0)
    )
    names = list(evaluation.features)
    rows = np.zeros(len(names), dtype=FEATURE)
    rows["score"] = [f.score for f in evaluation.features.values()]
    rows["p"] = [f.p_adjusted for f in evaluation.features.values()]
    rows["flags"] = [
        f.severity.rank | sum(4 << REASONS.index(r) for r in f.reasons)
        for f in evaluation.features.values()
    ]
    position = {name: i for i, name in enumerate(names)}
    missing = evaluation.quality["missing"]
    rows["missing"][[position[n] for n in missing.features]] = missing.rate
    for rule in (evaluation.quality["range"], evaluation.quality["new_categories"]):
        rows["quality"][[position[n] for n in rule.features]] = rule.rate
    return header.tobytes() + rows.tobytes()


class FeaturePoint(msgspec.Struct, frozen=True, omit_defaults=True):
    """One feature's verdict in one history point."""

    score: float
    p_adjusted: float
    severity: Severity
    reasons: list[Reason]
    missing_rate: float
    out_of_range_rate: float | None = None  # numeric features
    new_category_rate: float | None = None  # categorical features


class HistoryPoint(msgspec.Struct, frozen=True):
    """The monitor's verdict as last assessed within the bucket that ends at `time`."""

    time: str
    events: int
    severity: Severity
    drift_score: float
    drift_detected: bool
    ready: bool
    features: dict[str, FeaturePoint]


def _finite(value: float) -> float:
    # float32 keeps an infinite score infinite; JSON has no infinity.
    return value if math.isfinite(value) else 0.0


def decode_record(monitor: Monitor, spec: HistorySpec, record: bytes) -> HistoryPoint:
    """A record of this monitor's layout as a history point."""
    header = np.frombuffer(record, dtype=HEADER, count=1)[0]
    rows = np.frombuffer(record, dtype=FEATURE, offset=HEADER.itemsize)
    flags = int(header["flags"])
    features: dict[str, FeaturePoint] = {}
    for (name, slots), row in zip(monitor.layout.features.items(), rows.tolist(), strict=True):
        score, p, missing, quality, bits = row
        rate = round(float(quality), 7)
        numeric = slots.kind == "numeric"
        features[name] = FeaturePoint(
            score=_finite(round(float(score), 7)),
            p_adjusted=float(p),
            severity=LEVELS[bits & 3],
            reasons=[r for i, r in enumerate(REASONS) if bits & (4 << i)],
            missing_rate=round(float(missing), 7),
            out_of_range_rate=rate if numeric else None,
            new_category_rate=None if numeric else rate,
        )
    return HistoryPoint(
        time=isoformat(int(header["bucket"]) + spec.bucket_seconds),
        events=int(header["events"]),
        severity=LEVELS[flags & 3],
        drift_score=_finite(round(float(header["score"]), 7)),
        drift_detected=bool(flags & _DETECTED),
        ready=bool(flags & _READY),
        features=features,
    )


def sample(records: list[bytes], step: int, first: int) -> list[bytes]:
    """One record per `step` seconds from `first`: the last of each step (its closing verdict).

    `records` in bucket order.
    """
    chosen: dict[int, bytes] = {}
    for record in records:
        bucket = int.from_bytes(record[:8], "big", signed=True)
        chosen[(bucket - first) // step] = record
    return list(chosen.values())


def default_step(span: int, bucket_seconds: int) -> int:
    """The finest step, a whole number of buckets, that covers `span` seconds in MAX_POINTS."""
    buckets = -(-max(span, 1) // (bucket_seconds * MAX_POINTS))
    return max(1, buckets) * bucket_seconds


CSV_COLUMNS = (
    "time",
    "events",
    "severity",
    "drift_score",
    "drift_detected",
    "ready",
    "feature",
    "score",
    "p_adjusted",
    "feature_severity",
    "reasons",
    "missing_rate",
    "out_of_range_rate",
    "new_category_rate",
)


def history_csv(points: list[HistoryPoint]) -> str:
    """The points as CSV for spreadsheets: one row per point and feature (CSV_COLUMNS)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for point in points:
        head = [
            point.time,
            point.events,
            point.severity,
            repr(point.drift_score),
            str(point.drift_detected).lower(),
            str(point.ready).lower(),
        ]
        for name, f in point.features.items():
            writer.writerow(
                [
                    *head,
                    name,
                    repr(f.score),
                    repr(f.p_adjusted),
                    f.severity,
                    ";".join(f.reasons),
                    repr(f.missing_rate),
                    "" if f.out_of_range_rate is None else repr(f.out_of_range_rate),
                    "" if f.new_category_rate is None else repr(f.new_category_rate),
                ]
            )
    return out.getvalue()
