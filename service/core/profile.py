"""Baseline profiles: what a monitor compares its windows with.

A profile is built once from raw training rows (JSON records, JSON columns or CSV) and
kept instead of the data: per numeric feature, interior cut points and the baseline
count per bin (plus mean, std, min, max); per categorical feature, the top categories
and their counts, the rest pooled with never-seen categories in an `other` bin. Every
value has a bin. The profile's content hash names the layout its counts are kept under.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from driftline.core.policy import DEFAULTS

PROFILE_KIND = "driftline.baseline-profile/v1"
# Numeric features with at most this many distinct baseline values get one bin per
# value: quantile bins would collapse them into a few uneven bins.
DISCRETE_MAX_VALUES = 20
# Strings a CSV (or a careless JSON export) uses for "no value".
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "null", "none"})

FeatureKind = Literal["numeric", "categorical"]
# A column of training values: any sequence, or a 1-D NumPy array (numeric: NaN missing).
Column = Sequence[Any] | np.ndarray


class NumericProfile(msgspec.Struct, frozen=True, tag="numeric", tag_field="type"):
    """A numeric feature: bins by interior cut points (bins open at both ends)."""

    cuts: list[float]  # bin i holds cuts[i-1] <= x < cuts[i]; values below cuts[0] in bin 0
    counts: list[int]  # baseline count per bin, len(cuts) + 1
    n: int  # non-missing baseline values
    missing: int
    mean: float
    std: float
    min: float
    max: float
    discrete: bool = False

    @property
    def bins(self) -> int:
        """Number of bins."""
        return len(self.counts)


class CategoricalProfile(msgspec.Struct, frozen=True, tag="categorical", tag_field="type"):
    """A categorical feature: one bin per kept category and a final `other` bin."""

    categories: list[str]
    counts: list[int]  # len(categories) + 1; the last is `other` (pooled + never seen)
    n: int
    missing: int

    @property
    def bins(self) -> int:
        """Number of bins, `other` included."""
        return len(self.counts)


FeatureProfile = NumericProfile | CategoricalProfile


class BaselineProfile(msgspec.Struct, frozen=True):
    """All features of one baseline, in a fixed order."""

    features: dict[str, FeatureProfile]
    rows: int
    kind: str = PROFILE_KIND

    @property
    def content_hash(self) -> str:
        """Hash of everything that decides bins and expected counts."""
        return hashlib.sha256(msgspec.json.encode(self, order="deterministic")).hexdigest()[:16]


class BaselineError(ValueError):
    """Training data or a profile that cannot make a baseline; the message says why."""


# ---------------------------------------------------------------------------- loading


def rows_to_columns(data: Any, origin: str = "baseline") -> dict[str, list[Any]]:
    """Normalise JSON records (list of objects) or columns (object of lists) to columns."""
    if isinstance(data, list):
        if not data:
            raise BaselineError(f"{origin}: no rows")
        columns: dict[str, list[Any]] = {}
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise BaselineError(
                    f"{origin}[{i}]: expected an object of feature values, got {type(row).__name__}"
                )
            for name in row:
                columns.setdefault(name, [None] * i)
            for name, column in columns.items():
                column.append(row.get(name))
        return columns
    if isinstance(data, dict):
        lengths = {name: len(v) for name, v in data.items() if isinstance(v, list)}
        if len(lengths) != len(data):
            bad = next(name for name in data if name not in lengths)
            raise BaselineError(f"{origin}.{bad}: expected a list of values (column format)")
        if len(set(lengths.values())) > 1:
            raise BaselineError(f"{origin}: columns have different lengths {lengths}")
        if not data or not next(iter(lengths.values())):
            raise BaselineError(f"{origin}: no rows")
        return {name: list(values) for name, values in data.items()}
    raise BaselineError(
        f"{origin}: expected a list of records or an object of columns, got {type(data).__name__}"
    )


def _csv_columns(text: str, origin: str) -> dict[str, list[Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise BaselineError(f"{origin}: CSV has no header row")
    columns: dict[str, list[Any]] = {name: [] for name in reader.fieldnames}
    for row in reader:
        for name in columns:
            columns[name].append(row.get(name))
    if not next(iter(columns.values())):
        raise BaselineError(f"{origin}: no rows")
    return columns


# --------------------------------------------------------------------------- building


def is_missing(value: Any) -> bool:
    """Whether a raw value stands for "no value" (None, NaN, or a string such as "NA")."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING_STRINGS


def _as_number(value: Any) -> float | None:
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


def _float_array(values: Any) -> np.ndarray | None:
    """A numeric NumPy column as float64 (NaN missing); None for anything else."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    return None


def infer_kind(values: Iterable[Any]) -> FeatureKind:
    """Numeric when every present value is a number (or a numeric string), else categorical."""
    if _float_array(values) is not None:
        return "numeric"
    present = [v for v in values if not is_missing(v)]
    if present and all(_as_number(v) is not None for v in present):
        return "numeric"
    return "categorical"


def numeric_profile(values: Column, bins: int, name: str = "feature") -> NumericProfile:
    """Quantile bins (ties collapsed), or one bin per value for low-cardinality features.

    `values` may be a numeric NumPy array (NaN missing), read without a Python loop.
    """
    column = _float_array(values)
    if column is not None:
        present = ~np.isnan(column)
        x, missing = column[present], len(column) - int(present.sum())
        if not np.isfinite(x).all():
            bad = x[~np.isfinite(x)][0]
            raise BaselineError(f"{name}: expected a finite number, got {bad}")
    else:
        x, missing = _numbers(values, name)
    if not len(x):
        raise BaselineError(f"{name}: no non-missing values to build bins from")
    distinct = np.unique(x)
    discrete = len(distinct) <= DISCRETE_MAX_VALUES
    if discrete:
        # One bin per value: edges halfway between neighbours, with open outer bins
        # below the smallest and above the largest value (empty in the baseline).
        # Halved before adding so values near the float maximum do not overflow; for
        # neighbours one ulp apart the middle rounds down to the lower one, so nudge it up.
        middles = np.maximum(
            distinct[:-1] / 2 + distinct[1:] / 2, np.nextafter(distinct[:-1], np.inf)
        )
        cuts = np.concatenate([[distinct[0]], middles, [np.nextafter(distinct[-1], np.inf)]])
    else:
        quantiles = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
        cuts = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(cuts, x, side="right"), minlength=len(cuts) + 1)
    return NumericProfile(
        cuts=[float(c) for c in cuts],
        counts=[int(c) for c in counts],
        n=len(x),
        missing=missing,
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        min=float(x.min()),
        max=float(x.max()),
        discrete=discrete,
    )


def _numbers(values: Column, name: str) -> tuple[np.ndarray, int]:
    """The present values as float64, and how many are missing."""
    numbers: list[float] = []
    missing = 0
    for value in values:
        if is_missing(value):
            missing += 1
            continue
        number = _as_number(value)
        if number is None:
            raise BaselineError(f"{name}: expected a number, got {value!r}")
        numbers.append(number)
    return np.asarray(numbers, dtype=np.float64), missing


def category_values(column: np.ndarray) -> list[Any]:
    """A numeric NumPy column as category values: 3.0 is the category `3`; NaN is missing."""
    return [
        None if v != v else int(v) if float(v).is_integer() else v  # v != v: NaN
        for v in column.tolist()
    ]


def categorical_profile(values: Column, top_k: int) -> CategoricalProfile:
    """The top_k categories by count (ties by name), the rest pooled into `other`."""
    if _float_array(values) is not None:
        values = category_values(np.asarray(values))
    counter = Counter(category_label(v) for v in values if not is_missing(v))
    missing = len(values) - sum(counter.values())
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    kept = ranked[:top_k]
    pooled = sum(count for _, count in ranked[top_k:])
    return CategoricalProfile(
        categories=[category for category, _ in kept],
        counts=[count for _, count in kept] + [pooled],
        n=sum(counter.values()),
        missing=missing,
    )


def build_profile(
    columns: Mapping[str, Column],
    *,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
) -> BaselineProfile:
    """Build a profile from columns; `kinds` overrides the inferred type of a feature."""
    if not columns:
        raise BaselineError("baseline has no features")
    kinds = kinds or {}
    unknown = sorted(set(kinds) - set(columns))
    if unknown:
        raise BaselineError(f"features.{unknown[0]}: not a column of the baseline data")
    features: dict[str, FeatureProfile] = {}
    for name in sorted(columns):
        values = columns[name]
        kind = kinds.get(name) or infer_kind(values)
        features[name] = (
            numeric_profile(values, bins, name)
            if kind == "numeric"
            else categorical_profile(values, top_k)
        )
    rows = len(next(iter(columns.values())))
    return BaselineProfile(features=features, rows=rows)


# ------------------------------------------------------------------------ persistence


def encode_profile(profile: BaselineProfile) -> bytes:
    """The profile as indented JSON, the format `driftline baseline build` writes."""
    return msgspec.json.format(msgspec.json.encode(profile), indent=2) + b"\n"


def decode_profile(data: Any, origin: str = "profile") -> BaselineProfile:
    """Validate a decoded JSON object as a profile, naming the bad field on error."""
    try:
        profile = msgspec.convert(data, BaselineProfile)
    except msgspec.ValidationError as exc:
        raise BaselineError(f"{origin}: {exc}") from exc
    return validate_profile(profile, origin)


def validate_profile(profile: BaselineProfile, origin: str = "profile") -> BaselineProfile:
    """Check what the schema cannot: counts per bin, increasing cuts; sort features by name.

    Slots are laid out in feature order and the content hash sorts names, so a profile
    written in another order must be sorted to keep layout and hash in step.
    """
    for name, feature in profile.features.items():
        expected = (
            len(feature.cuts) + 1
            if isinstance(feature, NumericProfile)
            else len(feature.categories) + 1
        )
        if len(feature.counts) != expected:
            raise BaselineError(
                f"{origin}.features.{name}.counts: expected {expected} counts, "
                f"got {len(feature.counts)}"
            )
        if isinstance(feature, NumericProfile) and any(
            b <= a for a, b in zip(feature.cuts, feature.cuts[1:], strict=False)
        ):
            raise BaselineError(f"{origin}.features.{name}.cuts: must be strictly increasing")
    if list(profile.features) != sorted(profile.features):
        return msgspec.structs.replace(profile, features=dict(sorted(profile.features.items())))
    return profile


def is_profile_document(data: Any) -> bool:
    """Whether decoded JSON is a saved profile rather than raw training rows."""
    return isinstance(data, dict) and data.get("kind") == PROFILE_KIND


def profile_from_bytes(
    data: bytes,
    origin: str,
    *,
    csv_format: bool,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
) -> BaselineProfile:
    """A saved profile as is, or one built from raw rows (JSON records or columns, CSV)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{origin}: not UTF-8 text: {exc}") from exc
    if csv_format:
        columns = _csv_columns(text, origin)
    else:
        try:
            document = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise BaselineError(f"{origin}: not valid JSON: {exc}") from exc
        if is_profile_document(document):
            return decode_profile(document, origin)
        columns = rows_to_columns(document, origin)
    return build_profile(columns, kinds=kinds, bins=bins, top_k=top_k)


def load_baseline(
    path: Path,
    *,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
) -> BaselineProfile:
    """Load a saved profile, or build one from raw rows (CSV, JSON records or columns)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline: {exc.strerror}") from exc
    return profile_from_bytes(
        raw,
        str(path),
        csv_format=path.suffix.lower() == ".csv",
        kinds=kinds,
        bins=bins,
        top_k=top_k,
    )
