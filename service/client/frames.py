"""Caller data as queue items: dict events as rows, frames and arrays as column blocks.

Runs in the caller's request path, so it copies what it must (the caller may reuse its
buffers) and nothing more: numeric columns become float64 arrays (NaN missing), other
columns object arrays of Python values (None missing). pandas is never imported: a
DataFrame or Series is recognised by what it can do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from driftline.client.queue import Block, Row

NUMERIC_KINDS = "fiu"  # numpy dtype kinds sent as packed float64


def seconds(timestamp: datetime | float | None) -> float:
    """Unix seconds of an event time (now when None); a datetime must carry its time zone."""
    if timestamp is None:
        return time.time()
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("timestamp: a datetime needs a time zone (e.g. datetime.now(UTC))")
        return timestamp.timestamp()
    return float(timestamp)


def row_of(
    features: Mapping[str, Any], model_version: str | None, timestamp: datetime | float | None
) -> Row:
    """One event; the features are copied (a caller may reuse its dict)."""
    return Row(dict(features), seconds(timestamp), model_version)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def column_of(values: Any) -> np.ndarray:
    """A 1-D copy of one column: float64 when numeric, else Python objects."""
    dtype = getattr(values, "dtype", None)
    kind = getattr(dtype, "kind", "O")
    if hasattr(values, "to_numpy"):  # a pandas Series (nullable dtypes included)
        if kind in NUMERIC_KINDS:
            return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan))
        return np.asarray(values.to_numpy(dtype=object, na_value=None), dtype=object)
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"expected a 1-D column, got shape {values.shape}")
        if kind in NUMERIC_KINDS:
            return values.astype(np.float64)
        return values.astype(object)
    column = np.empty(len(values), dtype=object)
    column[:] = list(values)
    present = [v for v in column if v is not None]
    if present and all(_is_number(v) for v in present):
        return np.array([math.nan if v is None else v for v in column], dtype=np.float64)
    return column


def columns_of(data: Any, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Named columns of equal length from a DataFrame, a 2-D array or a mapping of columns.

    A 2-D (or 1-D: one event) array needs `names`, one per column; for a DataFrame or a
    mapping, `names` picks and orders the columns (all of them by default).
    """
    if isinstance(data, np.ndarray):
        matrix = data.reshape(1, -1) if data.ndim == 1 else data
        if matrix.ndim != 2:
            raise ValueError(f"expected a 1-D or 2-D array, got shape {data.shape}")
        if names is None or len(names) != matrix.shape[1]:
            got = "none" if names is None else len(names)
            raise ValueError(
                f"columns: a {matrix.shape[1]}-column array needs as many names, got {got}"
            )
        if matrix.dtype.kind in NUMERIC_KINDS:
            matrix = matrix.astype(np.float64)  # a copy: rows as the caller had them
            return {name: matrix[:, j] for j, name in enumerate(names)}
        return {name: column_of(matrix[:, j]) for j, name in enumerate(names)}
    if not hasattr(data, "items"):
        raise TypeError(
            "expected a DataFrame, a 2-D array with column names, or a mapping of columns; "
            f"got {type(data).__name__}"
        )
    chosen = list(names) if names is not None else [str(name) for name in data.keys()]  # noqa: SIM118 (DataFrames too)
    columns = {name: column_of(data[name]) for name in chosen}
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1:
        sizes = {name: len(c) for name, c in columns.items()}
        raise ValueError(f"columns have different lengths: {sizes}")
    return columns


def block_of(
    data: Any,
    names: Sequence[str] | None,
    model_version: str | None,
    timestamp: datetime | float | None,
) -> Block | None:
    """Many events as one block (None when there are none)."""
    if (
        isinstance(data, np.ndarray)
        and data.dtype.kind in NUMERIC_KINDS
        and data.ndim in (1, 2)
        and names is not None
        and len(names) == data.shape[-1]
    ):
        # The common model-server call, a numeric row or matrix: one copy, one column a row.
        matrix = data.reshape(1, -1) if data.ndim == 1 else data
        if not len(matrix):
            return None
        rows = np.array(matrix.T, dtype=np.float64, order="C")
        return Block(tuple(names), rows, len(matrix), seconds(timestamp), model_version)
    columns = columns_of(data, names)
    events = len(next(iter(columns.values()))) if columns else 0
    if not events:
        return None
    return Block(tuple(columns), tuple(columns.values()), events, seconds(timestamp), model_version)
