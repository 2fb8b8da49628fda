"""Tables: reference and current data as columns, from files or from memory.

CSV and JSON (records or columns) are read as baselines are (driftline.core.profile);
Parquet through pyarrow, the optional extra `parquet`. In memory: a mapping of columns
(lists, numpy arrays), records, or anything with `.to_dict("list")` such as a pandas
DataFrame, so pandas is never needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from driftline.core.profile import (
    BaselineError,
    BaselineProfile,
    CodedColumn,
    rows_to_columns,
    table_from_bytes,
)

Table = Mapping[str, Sequence[Any]]
TEXT_SUFFIXES = (".csv", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_EXTRA = "pip install 'driftline[parquet]'"


class InputError(ValueError):
    """Data or settings a comparison cannot use; the message names the file and field."""


def read_table(path: Path) -> Table | BaselineProfile:
    """The columns of a CSV, JSON or Parquet file, or the saved profile a JSON file holds."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if suffix not in TEXT_SUFFIXES:
        allowed = ", ".join(TEXT_SUFFIXES + PARQUET_SUFFIXES)
        shown = suffix or "(none)"
        raise InputError(f"{path}: unsupported file type {shown!r}; allowed: {allowed}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return table_from_bytes(raw, str(path), csv_format=suffix == ".csv")
    except BaselineError as exc:
        raise InputError(str(exc)) from exc


def _read_parquet(path: Path) -> Table:
    """The columns of a Parquet file, typed as binning and profiles take them.

    Floats become float64 arrays (null is NaN); whole numbers int64 arrays while they have
    no nulls (so a category coded 3 stays `3`, not `3.0`); the rest coded columns, each
    distinct value once (strings, booleans, dates: categories).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading Parquet needs pyarrow: {PARQUET_EXTRA}") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    if not table.num_columns or not table.num_rows:
        raise InputError(f"{path}: no rows")
    columns: dict[str, Sequence[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            columns[name] = column.cast(pa.float64()).to_numpy()
        elif pa.types.is_integer(kind) and not column.null_count:
            columns[name] = column.cast(pa.int64()).to_numpy()
        else:
            coded = column.combine_chunks()
            if not pa.types.is_dictionary(coded.type):
                coded = coded.dictionary_encode()
            codes = coded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            columns[name] = CodedColumn(codes.astype(np.intp), coded.dictionary.to_pylist())
    return columns


def table_of(data: Any, origin: str) -> Table | BaselineProfile:
    """Columns from a file path, a mapping of columns, records, or a DataFrame-like object.

    A saved profile (or a path to one) is returned as is.
    """
    if isinstance(data, BaselineProfile):
        return data
    if isinstance(data, str | os.PathLike):
        return read_table(Path(data))
    to_dict = getattr(data, "to_dict", None)
    if callable(to_dict) and not isinstance(data, Mapping):
        data = to_dict("list")
    if isinstance(data, list):
        try:
            return rows_to_columns(data, origin)
        except BaselineError as exc:
            raise InputError(str(exc)) from exc
    if not isinstance(data, Mapping):
        raise InputError(
            f"{origin}: expected a file path, a mapping of columns, records or a DataFrame, "
            f"got {type(data).__name__}"
        )
    columns: dict[str, Sequence[Any]] = {}
    for name, values in data.items():
        column = isinstance(values, Sequence) and not isinstance(values, str | bytes)
        if column or (isinstance(values, np.ndarray) and values.ndim == 1):
            columns[str(name)] = values
        else:
            raise InputError(
                f"{origin}.{name}: expected a sequence of values (list or 1-d array), "
                f"got {type(values).__name__}"
            )
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{origin}: columns have different lengths {lengths}")
    if not columns or not next(iter(lengths.values())):
        raise InputError(f"{origin}: no rows")
    return columns
