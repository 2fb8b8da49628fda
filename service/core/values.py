"""Raw values: what stands for "no value", the category a value names, the number it is.

The one set of rules for every raw value, wherever it comes from: training rows, events
and predictions.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FeatureKind = Literal["numeric", "categorical"]

# Strings a CSV (or a careless JSON export) uses for "no value".
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "null", "none"})


def is_missing(value: Any) -> bool:
    """Whether a raw value stands for "no value" (None, NaN, or a string such as "NA")."""
    if type(value) is float:  # first: most values are (predictions, scores)
        return value != value  # NaN
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING_STRINGS


def as_number(value: Any) -> float | None:
    """A finite number, or None when the value is not one (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def category_label(value: Any) -> str:
    """The category a raw value stands for (JSON true/false as `true`/`false`)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def category_values(column: npt.NDArray[Any]) -> list[Any]:
    """A numeric NumPy column as category values: 3.0 is the category `3`, as JSON's 3 is."""
    return [
        None if v != v else int(v) if float(v).is_integer() else v  # v != v: NaN
        for v in column.tolist()
    ]
