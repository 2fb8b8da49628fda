"""Peers on the same data: Evidently's data drift preset and whylogs against driftline.

Reference and current frames are 100,000 x 20 (15 numeric, 5 categorical); the current
frame drifts on `data.DRIFTED`. Each tool gets the frames as a data scientist holds them
(pandas for the peers; for driftline, the current frame posted through the batch API
to a running service whose baseline profile was built from the reference) and the
clock runs until its verdict is in hand.

PSI agreement: driftline's reported PSI per feature is recomputed by Evidently's own
PSI function and by numpy on the raw frames binned with driftline's bins (the profile's
cut points, kept categories plus `other`); they must agree to 1e-9.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from . import data
from .client import Connection, build_request, get
from .procs import Server, start_driftline

PEER_MONITOR = "peer"
CHUNK = 10_000  # the service's default max_batch_events
# The timed runs the ratio takes the fastest of, on each side: driftline's side is ~0.2 s,
# short enough for one slow spell of a shared host to move a single run by half.
RUNS = 3


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _fastest(runs: int, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, list[float]]:
    """The output and seconds of the fastest of `runs` calls, and every call's seconds."""
    timed = [_timed(fn, *args, **kwargs) for _ in range(runs)]
    out, seconds = min(timed, key=lambda t: t[1])
    return out, seconds, [t[1] for t in timed]


# ------------------------------------------------------------------------ evidently


def _evidently_run(ref: Any, cur: Any, **preset: Any) -> dict[str, dict[str, Any]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=list(data.NUMERIC), categorical_columns=list(data.CATEGORICAL)
    )
    report = Report([DataDriftPreset(**preset)])
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    columns: dict[str, dict[str, Any]] = {}
    pattern = re.compile(
        r"ValueDrift\(column=(?P<col>[^,]+),method=(?P<m>[^,]+),threshold=(?P<t>[^)]+)\)"
    )
    for metric in snapshot.dict()["metrics"]:
        match = pattern.fullmatch(metric.get("metric_name", ""))
        if not match:
            continue
        value, threshold, method = float(metric["value"]), float(match["t"]), match["m"]
        # p-value tests drift below the threshold; distances and PSI at or above it.
        drifted = value < threshold if "p_value" in method else value >= threshold
        columns[match["col"]] = {
            "method": method,
            "value": value,
            "threshold": threshold,
            "drift": drifted,
        }
    return columns


def evidently(ref: Any, cur: Any) -> dict[str, Any]:
    """Evidently's DataDriftPreset: as shipped, and with PSI at driftline's 0.2 threshold."""
    import evidently as ev

    warnings.filterwarnings("ignore")
    small = 2000
    _evidently_run(ref.head(small), cur.head(small))  # imports, registries: not timed
    default, t_default, runs = _fastest(RUNS, _evidently_run, ref, cur)
    psi, t_psi = _timed(_evidently_run, ref, cur, method="psi", threshold=0.2)
    return {
        "version": ev.__version__,
        "default": {"seconds": t_default, "runs_seconds": runs, "columns": default},
        "psi": {"seconds": t_psi, "columns": psi},
    }


def evidently_psi_on_bins(ref_bins: Any, cur_bins: Any) -> float:
    """Evidently's PSI function on values already put in driftline's bins."""
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    value, _ = _psi(ref_bins, cur_bins, ColumnType.Categorical, 0.2)
    return float(value)


# -------------------------------------------------------------------------- whylogs


def whylogs(ref: Any, cur: Any) -> dict[str, Any]:
    """Whylogs profiles of both frames and its drift scores (KS on sketches, chi-square)."""
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    warnings.filterwarnings("ignore")
    import whylogs as why
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    why.log(pandas=ref.head(2000))  # imports: not timed

    def run() -> dict[str, Any]:
        ref_view = why.log(pandas=ref).view()
        cur_view = why.log(pandas=cur).view()
        return calculate_drift_scores(
            target_view=cur_view, reference_view=ref_view, with_thresholds=True
        )

    scores, seconds = _timed(run)
    columns = {
        name: {
            "algorithm": s["algorithm"],
            "p_value": float(s["pvalue"]),
            "category": s["drift_category"],
            "drift": s["drift_category"] == "DRIFT",
        }
        for name, s in scores.items()
        if s
    }
    return {"version": why.__version__, "seconds": seconds, "columns": columns}


# ------------------------------------------------------------------------ driftline


def _bin_with_profile(profile: Any, name: str, values: np.ndarray) -> np.ndarray:
    """Bin indices of raw values under driftline's bins for one feature."""
    feature = profile.features[name]
    if hasattr(feature, "cuts"):
        return np.searchsorted(np.asarray(feature.cuts), values, side="right")
    index = {c: i for i, c in enumerate(feature.categories)}
    other = len(feature.categories)
    return np.fromiter((index.get(v, other) for v in values), dtype=np.int64, count=len(values))


def _numpy_psi(ref_bins: np.ndarray, cur_bins: np.ndarray, bins: int) -> float:
    """PSI from the formula on proportions floored at 1e-4 (docs/metrics.md)."""
    e = np.bincount(ref_bins, minlength=bins) / len(ref_bins)
    a = np.bincount(cur_bins, minlength=bins) / len(cur_bins)
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


async def _post_chunks(port: int, requests: list[bytes]) -> int:
    connection = await Connection.open("127.0.0.1", port)
    accepted = 0
    try:
        for request in requests:
            response = await connection.send(request)
            if response.status != 200:
                raise RuntimeError(f"batch answered {response.status}: {response.body[:300]!r}")
            accepted += msgspec.json.decode(response.body)["accepted"]
    finally:
        await connection.close()
    return accepted


class _Run(msgspec.Struct):
    """One timed run of driftline's side: the report it read and its seconds per part."""

    report: dict[str, Any]
    accepted: int
    encode: float
    ingest: float
    reading: float

    @property
    def seconds(self) -> float:
        return self.encode + self.ingest + self.reading


def _driftline_run(cur_cols: dict[str, np.ndarray], monitors: Path, logs: Path) -> _Run:
    """One timed run on a fresh service (an empty window): encode, post, read the report."""
    server: Server = start_driftline("driftline-peer", monitors, logs)
    try:
        t0 = time.perf_counter()
        # The columnar batch API over msgpack: numeric columns packed as float64 bytes (as
        # a frame holds them), categorical ones as lists of strings.
        path = f"/v1/monitors/{PEER_MONITOR}/columns"
        size = len(next(iter(cur_cols.values())))

        def packed(column: np.ndarray) -> bytes | list[Any]:
            if column.dtype == object:
                return column.tolist()
            return column.astype("<f8").tobytes()

        requests = [
            build_request(
                "127.0.0.1",
                server.port,
                path,
                msgspec.msgpack.encode(
                    {
                        "columns": {
                            name: packed(col[i : i + CHUNK]) for name, col in cur_cols.items()
                        }
                    }
                ),
                "application/msgpack",
            )
            for i in range(0, size, CHUNK)
        ]
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        accepted = asyncio.run(_post_chunks(server.port, requests))
        t_ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        response = asyncio.run(get("127.0.0.1", server.port, f"/v1/monitors/{PEER_MONITOR}/drift"))
        report = msgspec.json.decode(response.body)
        t_report = time.perf_counter() - t0
    finally:
        server.stop()
    return _Run(report, accepted, t_encode, t_ingest, t_report)


def driftline(
    ref_cols: dict[str, np.ndarray], cur_cols: dict[str, np.ndarray], root: Path, logs: Path
) -> dict[str, Any]:
    """Profile the reference, serve it, post the current frame in batches, read the report.

    The fastest of RUNS runs counts, each on a fresh service.
    """
    from driftline.core.profile import decode_profile

    t0 = time.perf_counter()
    monitors = data.write_monitor(root, ref_cols, name=PEER_MONITOR)
    t_profile = time.perf_counter() - t0
    profile = decode_profile(
        msgspec.json.decode((root / "baselines" / f"{PEER_MONITOR}.profile.json").read_bytes())
    )
    runs = [_driftline_run(cur_cols, monitors, logs) for _ in range(RUNS)]
    fastest = min(runs, key=lambda r: r.seconds)
    report = fastest.report
    features = report["features"]
    columns = {
        name: {
            "severity": f["severity"],
            "score": f["score"],
            "psi": f["psi"],
            "p_value": f["p_value"],
            "drift": f["severity"] != "none",
        }
        for name, f in features.items()
    }
    # PSI on the same bins, three ways.
    import pandas as pd

    psi_rows: dict[str, dict[str, Any]] = {}
    for name in data.FEATURES:
        feature = profile.features[name]
        bins = feature.bins
        # The reference is the profile's own counts: a categorical profile counts the
        # half of the rows its categories were not chosen on (docs/metrics.md), so
        # binning every reference row would compare with another baseline.
        ref_bins = np.repeat(np.arange(bins), feature.counts)
        cur_bins = _bin_with_profile(profile, name, cur_cols[name])
        shares = np.concatenate(
            [
                np.bincount(ref_bins, minlength=bins) / len(ref_bins),
                np.bincount(cur_bins, minlength=bins) / len(cur_bins),
            ]
        )
        psi_rows[name] = {
            "driftline": features[name]["psi"],
            "numpy": _numpy_psi(ref_bins, cur_bins, bins),
            "evidently": evidently_psi_on_bins(pd.Series(ref_bins), pd.Series(cur_bins)),
            # Evidently fills only empty bins (with 1e-4); driftline floors every share
            # at 1e-4. They differ by construction where a share is in (0, 1e-4).
            "floor_conventions_differ": bool(np.any((shares > 0) & (shares < 1e-4))),
        }
    for r in psi_rows.values():
        r["diff_numpy"] = abs(r["driftline"] - r["numpy"])
        r["diff_evidently"] = abs(r["driftline"] - r["evidently"])
    excluded = {n: r for n, r in psi_rows.items() if r["floor_conventions_differ"]}
    note = (
        "all 20 features"
        if not excluded
        else "excluded (a bin share in (0, 1e-4): "
        + "driftline floors shares at 1e-4, Evidently only fills empty bins): "
        + ", ".join(f"{n} |diff| {r['diff_evidently']:.1e}" for n, r in excluded.items())
    )
    return {
        "accepted": fastest.accepted,
        "seconds": fastest.seconds,
        "runs_seconds": [r.seconds for r in runs],
        "profile_seconds": t_profile,
        "encode_seconds": fastest.encode,
        "ingest_seconds": fastest.ingest,
        "report_seconds": fastest.reading,
        "monitor_drift": report["drift_detected"],
        "columns": columns,
        "psi_same_bins": psi_rows,
        "psi_max_abs_diff_numpy": max(r["diff_numpy"] for r in psi_rows.values()),
        "psi_max_abs_diff_evidently": max(
            (r["diff_evidently"] for r in psi_rows.values() if not r["floor_conventions_differ"]),
            default=0.0,
        ),
        "psi_max_abs_diff_evidently_all": max(r["diff_evidently"] for r in psi_rows.values()),
        "psi_evidently_note": note,
    }


def compare(root: Path, logs: Path, rows: int = 100_000) -> dict[str, Any]:
    """Run the three tools on the same frames; verdicts, timings, PSI agreement."""
    ref_cols = data.frame(rows, seed=1)
    cur_cols = data.frame(rows, seed=2, drift=True)
    out: dict[str, Any] = {"rows": rows, "features": len(data.FEATURES), "drifted": data.DRIFTED}
    out["driftline"] = driftline(ref_cols, cur_cols, root, logs)
    try:
        import pandas as pd

        ref, cur = pd.DataFrame(ref_cols), pd.DataFrame(cur_cols)
    except ImportError as exc:
        out["evidently"] = out["whylogs"] = {"error": f"pandas not installed: {exc}"}
        return out
    for name, fn in (("evidently", evidently), ("whylogs", whylogs)):
        try:
            out[name] = fn(ref, cur)
        except Exception as exc:  # an optional peer that fails is reported, not fatal
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    truth = sorted(data.DRIFTED)
    out["verdicts"] = {
        "expected": truth,
        "driftline": sorted(n for n, c in out["driftline"]["columns"].items() if c["drift"]),
    }
    if "default" in out.get("evidently", {}):
        for key in ("default", "psi"):
            cols = out["evidently"][key]["columns"]
            out["verdicts"][f"evidently_{key}"] = sorted(n for n, c in cols.items() if c["drift"])
    if "columns" in out.get("whylogs", {}):
        out["verdicts"]["whylogs"] = sorted(
            n for n, c in out["whylogs"]["columns"].items() if c["drift"]
        )
    return out
