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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.policy import DEFAULTS

PROFILE_KIND = "driftline.baseline-profile/v1"
# Numeric features with at most this many distinct baseline values get one bin per
# value: quantile bins would collapse them into a few uneven bins.
DISCRETE_MAX_VALUES = 20
DISCRETE_PEEK = 1000  # rows looked at first to tell a continuous feature
# Strings a CSV (or a careless JSON export) uses for "no value".
MISSING_STRINGS = frozenset({"", "na", "n/a", "nan", "null", "none"})

FeatureKind = Literal["numeric", "categorical"]
FloatArray = npt.NDArray[np.float64]
# A column of training values: any sequence, or a 1-D NumPy array (numeric: NaN missing).
Column = Sequence[Any] | npt.NDArray[Any]


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


@dataclass(frozen=True, slots=True)
class CodedColumn(Sequence[Any]):
    """A column kept as codes into its distinct values, -1 for null (a Parquet dictionary).

    Profiles and binning then read each distinct value once instead of once per row;
    as a sequence it reads like the column it stands for.
    """

    codes: npt.NDArray[np.intp]
    values: Sequence[Any]

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        code = self.codes[index]
        return None if code < 0 else self.values[code]


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


def csv_columns(text: str, origin: str) -> dict[str, list[Any]]:
    """The columns of CSV text with a header row: one list of strings per column."""
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


# What numpy may convert at once: float() of these is what `_as_number` takes (bools,
# which numpy would take as 0 and 1, are left out).
_PLAIN_TYPES = frozenset({float, int, str, type(None)})


def parse_numbers(values: Column, *, max_bad: int | None = None) -> tuple[FloatArray, list[int]]:
    """Values as float64 (NaN where missing), and the positions of values that are no number.

    The one rule for raw values everywhere: missing per `is_missing`, else a finite number
    or a string of one. A float or integer array is taken as is (NaN is missing); a list
    goes through numpy at once when it can and value by value only when it must. With
    `max_bad`, parsing stops once that many bad values are found (the numbers are then
    incomplete): enough to tell a categorical column.
    """
    if isinstance(values, CodedColumn):
        distinct, refused = parse_numbers(values.values)
        numbers = np.append(distinct, np.nan)[values.codes]  # code -1: the NaN appended
        flagged = np.zeros(len(values.values) + 1, dtype=bool)
        flagged[refused] = True
        return numbers, np.flatnonzero(flagged[values.codes])[:max_bad].tolist()
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiu":
            numbers = values.astype(np.float64, copy=False)
            return numbers, np.flatnonzero(np.isinf(numbers)).tolist()
        values = values.tolist()
    if set(map(type, values)) <= _PLAIN_TYPES:
        try:
            numbers = np.array(values, dtype=np.float64)
        except (ValueError, OverflowError):
            pass  # a value that is no number (or a huge int): the rules below name it
        else:
            nan = np.flatnonzero(np.isnan(numbers)).tolist()
            # float("-nan") is NaN, yet "-nan" is not a missing-value string.
            if not np.isinf(numbers).any() and all(is_missing(values[i]) for i in nan):
                return numbers, []
    numbers = np.full(len(values), np.nan)
    bad: list[int] = []
    for i, value in enumerate(values):
        if is_missing(value):
            continue
        number = _as_number(value)
        if number is None:
            bad.append(i)
            if len(bad) == max_bad:
                break
        else:
            numbers[i] = number
    return numbers, bad


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


def _kind_of(numbers: FloatArray, bad: list[int]) -> FeatureKind:
    return "numeric" if not bad and not np.isnan(numbers).all() else "categorical"


def infer_kind(values: Column) -> FeatureKind:
    """Numeric when every present value is a number (or a numeric string), else categorical."""
    return _kind_of(*parse_numbers(values))


def numeric_profile(values: Column, bins: int, name: str = "feature") -> NumericProfile:
    """Quantile bins (ties collapsed), or one bin per value for low-cardinality features."""
    numbers, bad = parse_numbers(values)
    return _numeric_profile(values, numbers, bad, bins, name)


def _numeric_profile(
    values: Column, numbers: FloatArray, bad: list[int], bins: int, name: str
) -> NumericProfile:
    if bad:
        raise BaselineError(f"{name}: expected a number, got {values[bad[0]]!r}")
    x = numbers[~np.isnan(numbers)]
    if not len(x):
        raise BaselineError(f"{name}: no non-missing values to build bins from")
    # A continuous feature shows more distinct values than that among its first rows:
    # only a feature that does not needs all of its distinct values found.
    distinct = np.unique(x[:DISCRETE_PEEK])
    if len(distinct) <= DISCRETE_MAX_VALUES:
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
        missing=len(numbers) - len(x),
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if len(x) > 1 else 0.0,
        min=float(x.min()),
        max=float(x.max()),
        discrete=discrete,
    )


def categorical_profile(values: Column, top_k: int) -> CategoricalProfile:
    """The top_k categories by count (ties by name), the rest pooled into `other`."""
    items: Iterable[tuple[Any, int]]
    if isinstance(values, CodedColumn):
        counted = np.bincount(values.codes + 1, minlength=len(values.values) + 1).tolist()
        items = zip([None, *values.values], counted, strict=True)  # code -1 is null
        return _categorical_profile(items, top_k)
    if isinstance(values, np.ndarray):
        values = category_values(values) if values.dtype.kind in "fiu" else values.tolist()
    # Each distinct value is labelled once, not once per row. Values that compare equal
    # across types (1, 1.0, True) have labels of their own: those are counted by type too.
    counts: Counter[Any] = Counter(values)
    items = counts.items()
    if not all(type(value) is str or value is None for value in counts):
        typed = Counter(zip(map(type, values), values, strict=True))
        items = ((value, count) for (_, value), count in typed.items())
    return _categorical_profile(items, top_k)


def _categorical_profile(items: Iterable[tuple[Any, int]], top_k: int) -> CategoricalProfile:
    """The profile from (distinct raw value, count) pairs."""
    counter: Counter[str] = Counter()
    missing = 0
    for value, count in items:
        if is_missing(value):
            missing += count
        else:
            counter[category_label(value)] += count
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
        kind = kinds.get(name)
        if kind == "categorical":
            features[name] = categorical_profile(values, top_k)
            continue
        numbers, bad = parse_numbers(values, max_bad=1)
        if kind is None and _kind_of(numbers, bad) == "categorical":
            features[name] = categorical_profile(values, top_k)
        else:
            features[name] = _numeric_profile(values, numbers, bad, bins, name)
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
    table = table_from_bytes(data, origin, csv_format=csv_format)
    if isinstance(table, BaselineProfile):
        return table
    return build_profile(table, kinds=kinds, bins=bins, top_k=top_k)


def table_from_bytes(
    data: bytes, origin: str, *, csv_format: bool
) -> dict[str, list[Any]] | BaselineProfile:
    """The columns of CSV or JSON rows (records or columns), or a saved profile as is."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{origin}: not UTF-8 text: {exc}") from exc
    if csv_format:
        return csv_columns(text, origin)
    try:
        document = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise BaselineError(f"{origin}: not valid JSON: {exc}") from exc
    if is_profile_document(document):
        return decode_profile(document, origin)
    return rows_to_columns(document, origin)


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
