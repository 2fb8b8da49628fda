"""Per-call cost of the service's own steps, in process: the budget behind the ratios.

Times the functions a `POST /monitor/predict` and a batch go through (decode, binning,
drift report, response encoding, telemetry) on the bench monitor, each in a tight loop
on this core. Not a substitute for the load runs: it names the costs the profile
attributes, in microseconds, so a design change can be sized before it is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from . import data


def _per_call(fn: Callable[[], Any], budget: float = 0.25) -> float:
    """Microseconds per call: the best of 3 runs of about `budget` seconds each."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget / 10:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(max(calls * 3, 1)):
            fn()
        best = min(best, (time.perf_counter() - t0) / max(calls * 3, 1))
    return best * 1e6


def measure(monitors_dir: Path) -> dict[str, float]:
    """Microseconds per call of each step, on the bench monitor."""
    from driftline.core.binning import bin_batch, bin_columns
    from driftline.core.limits import Limits
    from driftline.core.report import assess, drift_report, evaluate
    from driftline.core.window import WindowTotals
    from driftline.engine.admission import Event
    from driftline.http.handlers import prediction_response
    from driftline.http.schemas import BatchRequest, PredictRequest
    from driftline.telemetry import Telemetry

    monitor = data.load_monitor(monitors_dir)
    limits = Limits()
    body = data.predict_bodies(1)[0]
    decoder = msgspec.json.Decoder(PredictRequest)

    # A realistic window: the totals of 5,000 binned events.
    frame = data.frame(5000, seed=9)
    rows = data.rows(frame)
    batch = bin_batch(monitor.layout, rows, limits)
    deltas = batch.deltas(monitor.window.width, np.zeros(len(rows), dtype=np.int64))
    now = time.time()
    totals = WindowTotals(vector=deltas[0][0], start=now - 3600, now=now)
    assessment = assess(monitor, totals)
    telemetry = Telemetry()
    flush = rows[:64]  # a full flush under the closed-loop load (64 connections)
    starts = np.zeros(len(flush), dtype=np.int64)
    batch_body = msgspec.json.encode({"events": [{"features": r} for r in rows]})
    # As the batch handler decodes a batch whose events all decode: in one pass.
    batch_decoder = msgspec.json.Decoder(BatchRequest[Event])
    packed = {
        name: col.tolist() if col.dtype == object else np.asarray(col, dtype=np.float64)
        for name, col in frame.items()
    }

    per_event = {
        "decode PredictRequest (msgspec)": lambda: decoder.decode(body),
        "latency record (per request)": lambda: telemetry.latency.record(
            "/monitor/predict", "POST", 200, 0.01
        ),
    }
    out = {name: _per_call(fn) for name, fn in per_event.items()}
    n_flush = len(flush)
    out["flush of 64: bin_batch + deltas (per event)"] = (
        _per_call(
            lambda: bin_batch(monitor.layout, flush, limits).deltas(monitor.window.width, starts)
        )
        / n_flush
    )
    out["evaluate: verdict of a window (per evaluation)"] = _per_call(
        lambda: evaluate(monitor, totals.vector)
    )
    out["answer encoded once per assessment"] = _per_call(
        lambda: msgspec.json.encode(prediction_response(assessment, []))
    )
    out["gauges of an assessment (per evaluation)"] = _per_call(
        lambda: telemetry.observe(assessment)
    )
    out["full drift report (GET drift only)"] = _per_call(lambda: drift_report(assessment, totals))
    n = len(rows)
    out["batch: decode 5000 events in one pass (per event)"] = (
        _per_call(lambda: batch_decoder.decode(batch_body)) / n
    )
    events = batch_decoder.decode(batch_body).events
    out["batch: bin_batch 5000 events (per event)"] = (
        _per_call(lambda: bin_batch(monitor.layout, [e.features for e in events], limits)) / n
    )
    out["columns: bin_columns 5000 events, packed numbers (per event)"] = (
        _per_call(lambda: bin_columns(monitor.layout, packed, n, limits)) / n
    )
    return {k: round(v, 3) for k, v in out.items()}
