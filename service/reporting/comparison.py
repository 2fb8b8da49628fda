"""Offline comparison: current data judged against reference data, as the service would.

The reference becomes a baseline profile by the rules of `driftline baseline build` (or
of a monitor config, when one is given); the current data is binned by the core's column
binning into one window vector; the report is the core's `drift_report` of that vector,
the very function behind `GET /v1/monitors/{name}/drift`. Nothing here computes a
statistic of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from driftline.core.binning import bin_columns
from driftline.core.limits import Limits
from driftline.core.monitor import (
    Monitor,
    MonitorConfig,
    MonitorConfigError,
    build_monitor,
    decode_monitor_config,
    read_monitor_config,
)
from driftline.core.policy import DEFAULTS, MonitorDefaults
from driftline.core.prediction import PredictionError, is_prediction_column, training_columns
from driftline.core.profile import BaselineError, BaselineProfile, build_profile, parse_numbers
from driftline.core.report import DriftReport, assess, drift_report
from driftline.core.severity import SEVERITY_RANK
from driftline.core.window import WindowTotals
from driftline.reporting.html import render_html
from driftline.reporting.tables import InputError, table_of

COMPARE_MONITOR = "compare"  # the report's monitor name when no config names one
MAX_LISTED_ERRORS = 5


@dataclass(frozen=True, slots=True)
class Comparison:
    """The drift report of current data against reference data, and what to note about it.

    Reads like the report itself (`.severity`, `.features`, ...); `.to_dict()` is the
    JSON the service's drift API answers, `.to_html()` the self-contained page.
    """

    report: DriftReport
    warnings: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name == "report":  # not set yet (copying): no report to ask
            raise AttributeError(name)
        return getattr(self.report, name)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, shaped as `GET /v1/monitors/{name}/drift` answers."""
        data: dict[str, Any] = msgspec.json.decode(self.to_json())
        return data

    def to_json(self) -> bytes:
        """The report as JSON, encoded as the service encodes it."""
        return msgspec.json.encode(self.report)

    def to_html(self) -> str:
        """The report as one self-contained HTML page (warnings shown in its summary)."""
        return render_html(self.report, notes=self.warnings)

    def _repr_html_(self) -> str:
        # Notebooks show the report itself rather than its repr.
        return render_html(self.report, notes=self.warnings, fragment=True)


def _config_of(
    config: MonitorConfig | Mapping[str, Any] | str | Path | None,
) -> tuple[MonitorConfig | None, Path, str]:
    """The config, the folder its relative baseline path is read from, and its name."""
    if config is None or isinstance(config, MonitorConfig):
        return config, Path.cwd(), "config"
    if isinstance(config, Mapping):
        return decode_monitor_config(dict(config), "config"), Path.cwd(), "config"
    path = Path(config)
    return read_monitor_config(path, str(path)), path.parent, str(path)


def _monitor(
    reference: Any,
    config: MonitorConfig | Mapping[str, Any] | str | Path | None,
    defaults: MonitorDefaults,
) -> Monitor:
    """The monitor a comparison judges with: the config's policy, the reference's profile."""
    resolved, base_dir, source = _config_of(config)
    if reference is None:
        if resolved is None:
            raise InputError("reference: required unless a monitor config names its baseline")
        return build_monitor(resolved, defaults, base_dir=base_dir, source=source)
    if resolved is None:
        resolved = MonitorConfig(name=COMPARE_MONITOR, baseline="")
    table = table_of(reference, "reference")
    if isinstance(table, BaselineProfile):
        profile = table
    else:
        kinds = {name: f.type for name, f in resolved.features.items() if f.type is not None}
        profile = build_profile(
            table,
            kinds=kinds,
            bins=defaults.bins if resolved.bins is None else resolved.bins,
            top_k=defaults.top_k if resolved.top_k is None else resolved.top_k,
            prediction=resolved.prediction,
        )
    resolved = msgspec.structs.replace(resolved, baseline=profile)
    return build_monitor(resolved, defaults, base_dir=base_dir, source=source)


def _current_columns(
    monitor: Monitor, table: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The current columns as column binning takes them, and what to warn about.

    Numeric features are parsed by the baseline's rules (a CSV holds strings), so a file
    is read the same way whichever side of the comparison it is on.
    """
    features = monitor.layout.features
    columns: dict[str, Any] = {}
    warnings: list[str] = []
    spec = monitor.prediction
    if spec is not None:
        if all(column in table for column in spec.columns):
            try:
                outputs = training_columns(spec, table)
            except PredictionError as exc:
                raise InputError(f"current: prediction: {exc}") from None
            table = {k: v for k, v in table.items() if k not in spec.columns} | outputs
        else:
            listed = ", ".join(spec.columns)
            warnings.append(f"current has no prediction column ({listed}): not compared")
    for name, slots in features.items():
        values = table.get(name)
        if values is None:
            continue
        if slots.kind == "numeric":
            numbers, bad = parse_numbers(values)
            if bad:
                shown = ", ".join(f"row {i + 1}: {values[i]!r}" for i in bad[:MAX_LISTED_ERRORS])
                raise InputError(
                    f"current.{name}: expected numbers, got {len(bad)} that are not ({shown})"
                )
            columns[name] = numbers
        else:
            columns[name] = values.tolist() if isinstance(values, np.ndarray) else values
    warnings += [
        f'current has no column "{name}": every row counts it as missing'
        for name in features
        if name not in table and not is_prediction_column(name)
    ]
    warnings += [
        f'column "{name}" is not a feature of the reference: ignored'
        for name in table
        if name not in features
    ]
    return columns, warnings


def compare(
    reference: Any,
    current: Any,
    *,
    config: MonitorConfig | Mapping[str, Any] | str | Path | None = None,
    defaults: MonitorDefaults = DEFAULTS,
    limits: Limits | None = None,
) -> Comparison:
    """Judge `current` against `reference` with the service's profiles, binning and tests.

    Each of them is a file path (CSV, JSON, Parquet), a mapping of columns, records, or a
    DataFrame; `reference` may also be a saved profile, or None when `config` (a monitor
    config: path, mapping or MonitorConfig) names the baseline. Raises InputError.
    """
    try:
        monitor = _monitor(reference, config, defaults)
    except (BaselineError, MonitorConfigError) as exc:
        raise InputError(str(exc)) from exc
    table = table_of(current, "current")
    if isinstance(table, BaselineProfile):
        raise InputError("current: expected rows of data, got a baseline profile")
    size = len(next(iter(table.values())))
    columns, warnings = _current_columns(monitor, table)
    batch = bin_columns(monitor.layout, columns, size, limits or Limits())
    if batch.errors:
        shown = "; ".join(
            f"row {i + 1}: {error}" for i, error in sorted(batch.errors.items())[:MAX_LISTED_ERRORS]
        )
        raise InputError(f"current: {len(batch.errors)} rows cannot be counted ({shown})")
    ((vector, _),) = batch.deltas(monitor.window.width, np.zeros(size, dtype=np.int64)).values()
    # No time window offline: the "window" is the current data, read now.
    now = time.time()
    totals = WindowTotals(vector, start=now, now=now)
    return Comparison(drift_report(assess(monitor, totals), totals), tuple(warnings))


def fails(report: DriftReport, threshold: str) -> bool:
    """Whether the report's severity is at or above `threshold` (a severity name)."""
    return SEVERITY_RANK[report.severity] >= SEVERITY_RANK[threshold]
