"""Baselines from where training data lives: DataFrames, arrays, Parquet files.

`build_baseline` makes the same profile `driftline baseline build` makes from the same
rows (numeric columns are read as arrays, without a Python loop per value), ready to
save with `encode_profile` and ship as the ConfigMap key a DriftMonitor reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from driftline.client.frames import columns_of
from driftline.core.performance import measure_baseline
from driftline.core.policy import DEFAULTS
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import BaselineError, BaselineProfile, FeatureKind, build_profile

PARQUET_EXTRA = "pip install 'driftline[parquet]'"


def build_baseline(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
    prediction: PredictionSpec | None = None,
    label: str | None = None,
    threshold: float = DEFAULTS.labels.threshold,
) -> BaselineProfile:
    """A baseline profile from training data, as `driftline baseline build` makes it.

    `data`: a pandas DataFrame, a pyarrow Table, a 2-D array (`columns` names its
    columns) or a mapping of columns. `columns` picks the features (default: every
    column); `kinds` overrides a feature's inferred type (`numeric` or `categorical`);
    `prediction` names the model's prediction column(s) and kind (docs/predictions.md).
    `label` names the true outcome's column of a labelled validation set: the profile
    keeps the model's performance on it (`threshold`: a score's class cut; docs/labels.md).
    """
    if label is not None and prediction is None:
        raise BaselineError("label: needs the prediction it labels (prediction=)")
    if columns is not None and prediction is not None:
        columns = [*columns, *(c for c in prediction.columns if c not in columns)]
    if columns is not None and label is not None and label not in columns:
        columns = [*columns, label]
    if hasattr(data, "column_names") and hasattr(data, "select"):  # a pyarrow Table
        found = arrow_columns(data.select(list(columns)) if columns is not None else data)
    else:
        try:
            found = columns_of(data, columns)
        except (TypeError, ValueError, KeyError) as exc:
            raise BaselineError(f"training data: {exc}") from exc
    features = {name: values for name, values in found.items() if name != label}
    profile = build_profile(features, kinds=kinds, bins=bins, top_k=top_k, prediction=prediction)
    if label is None:
        return profile
    assert prediction is not None
    return measure_baseline(profile, prediction, found, label, threshold)


def arrow_columns(table: Any) -> dict[str, np.ndarray]:
    """A pyarrow Table's columns as `build_profile` takes them.

    Numbers as float64 (NaN missing); booleans and strings (dictionary-encoded too) as
    Python values (None missing).
    """
    import pyarrow as pa

    columns: dict[str, np.ndarray] = {}
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            values = column.cast(pa.float64()).fill_null(float("nan"))
            columns[field.name] = values.to_numpy()
        elif (
            pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
        ):
            columns[field.name] = np.array(column.to_pylist(), dtype=object)
        else:
            raise BaselineError(
                f"columns.{field.name}: a {field.type} column is not a feature (numbers, "
                "booleans and strings are); pick the feature columns (columns=, or --column)"
            )
    return columns


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The columns of a Parquet file (all, or `columns`), as `build_profile` takes them."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BaselineError(f"{path}: reading Parquet needs pyarrow: {PARQUET_EXTRA}") from None
    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise BaselineError(f"{path}: cannot read Parquet: {exc}") from exc
    return arrow_columns(table)
