"""Baseline profiles: what a monitor compares its windows with.

A profile is built once from raw training rows (JSON records, JSON columns or CSV) and
kept instead of the data: per numeric feature, interior cut points and the baseline
count per bin (plus mean, std, min, max, the tail cuts and each bin's mean); per
categorical feature, the top categories and their counts, the rest pooled with
never-seen categories in an `other` bin. Every value has a bin. The profile's content
hash names the layout its counts are kept under.

Categorical features are built on a held-out split of the baseline rows: the kept
categories are chosen on one half and counted on the other, so the counts a window is
compared with are not biased by the choice (docs/metrics.md, "Held-out categories").
Profiles of the first version (`.../v1`) still load; their categorical tests are
reported as not calibrated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.policy import DEFAULTS
from driftline.core.prediction import (
    RESERVED_MARK,
    RESERVED_NAMES,
    PredictionError,
    PredictionSpec,
    training_columns,
)
from driftline.core.values import FeatureKind as FeatureKind
from driftline.core.values import as_number, category_label, category_values, is_missing

PROFILE_KIND = "driftline.baseline-profile/v2"
LEGACY_PROFILE_KIND = "driftline.baseline-profile/v1"
PROFILE_KINDS = frozenset({PROFILE_KIND, LEGACY_PROFILE_KIND})
# Quantile bins hold at least this many baseline values each: with fewer, the spread of
# the baseline's own quantiles makes large windows fail the drift test too often.
MIN_VALUES_PER_BIN = 50
# The tail cuts are the baseline's r-th smallest and largest values, r = this share of
# its values (at least 1, i.e. the minimum and maximum).
TAIL_QUANTILE = 0.001
# Numeric features with at most this many distinct baseline values get one bin per
# value: quantile bins would collapse them into a few uneven bins.
DISCRETE_MAX_VALUES = 20

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
    # Version 2 (None in older profiles, which use min and max, rank 1, and interval
    # middles instead): the baseline's tail_rank-th smallest and largest values, and
    # where each bin sits on the axis (the mean of its baseline values, or a position
    # for a bin the baseline left empty; see bin_positions).
    tail_low: float | None = None
    tail_high: float | None = None
    tail_rank: int = 1
    bin_means: list[float] | None = None

    @property
    def bins(self) -> int:
        """Number of bins."""
        return len(self.counts)

    @property
    def tail_cuts(self) -> tuple[float, float]:
        """Values below the first or above the second count as out of range."""
        low = self.min if self.tail_low is None else self.tail_low
        high = self.max if self.tail_high is None else self.tail_high
        return low, high

    @property
    def positions(self) -> list[float]:
        """Where each bin sits on the feature's axis (the Wasserstein distance's points)."""
        if self.bin_means is not None:
            return self.bin_means
        return bin_positions(self.cuts, [None] * self.bins, self.std)


class CategoricalProfile(msgspec.Struct, frozen=True, tag="categorical", tag_field="type"):
    """A categorical feature: one bin per kept category and a final `other` bin.

    Built on a held-out split (version 2): `selection` counts the half of the rows the
    categories were chosen on, `counts` the other half, which a window is compared with.
    `n` and `missing` count every row.
    """

    categories: list[str]
    counts: list[int]  # len(categories) + 1; the last is `other` (pooled + never seen)
    n: int
    missing: int
    selection: list[int] | None = None  # None in version 1 profiles (no held-out split)

    @property
    def bins(self) -> int:
        """Number of bins, `other` included."""
        return len(self.counts)

    @property
    def calibrated(self) -> bool:
        """Whether the categories were chosen on other rows than those counted."""
        return self.selection is not None


FeatureProfile = NumericProfile | CategoricalProfile


class BaselinePerformance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The model's performance counts on the baseline's labelled rows (docs/labels.md).

    `counts` are the performance slots a monitor's window keeps
    (driftline.core.performance), so window and baseline are compared like with like.
    """

    kind: str  # the prediction's kind when measured
    classes: list[str]  # the slots' class order (a score's: 1, 0)
    threshold: float  # a score at or above it predicted the positive class
    label: str  # the labels' column
    counts: list[int]


class BaselineProfile(msgspec.Struct, frozen=True):
    """All features of one baseline, in a fixed order."""

    features: dict[str, FeatureProfile]
    rows: int
    kind: str = PROFILE_KIND
    # Measured on labelled rows (`baseline build --label`); absent (never written, so
    # older profiles keep their hash): performance is reported without a verdict.
    performance: BaselinePerformance | msgspec.UnsetType = msgspec.UNSET

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
    """Columns of a CSV with a header row; empty cells (and absent ones) are missing values.

    In a one-column file an empty line is a row whose only cell is empty, i.e. a missing
    value; in a wider file it is skipped, as spreadsheet tools do.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise BaselineError(f"{origin}: CSV has no header row")
    position = {name: i for i, name in enumerate(header)}  # a repeated name: the last wins
    columns: dict[str, list[Any]] = {name: [] for name in position}
    for row in reader:
        if not row and len(header) > 1:
            continue
        for name, i in position.items():
            columns[name].append(row[i] if i < len(row) else None)
    if not next(iter(columns.values())):
        raise BaselineError(f"{origin}: no rows")
    return columns


# --------------------------------------------------------------------------- building


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
        number = as_number(value)
        if number is None:
            bad.append(i)
            if len(bad) == max_bad:
                break
        else:
            numbers[i] = number
    return numbers, bad


def _kind_of(numbers: FloatArray, bad: list[int]) -> FeatureKind:
    return "numeric" if not bad and not np.isnan(numbers).all() else "categorical"


def infer_kind(values: Column) -> FeatureKind:
    """Numeric when every present value is a number (or a numeric string), else categorical."""
    return _kind_of(*parse_numbers(values))


def quantile_bins(present: int, bins: int) -> int:
    """Quantile bins for a baseline of `present` values: `bins`, at most one per 50 values, >= 2."""
    return max(2, min(bins, present // MIN_VALUES_PER_BIN))


def tail_rank(present: int) -> int:
    """Rank of the tail cuts among `present` baseline values: 0.1 % of them, at least 1."""
    return max(1, math.floor(TAIL_QUANTILE * present))


def bin_positions(cuts: Sequence[float], means: Sequence[float | None], std: float) -> list[float]:
    """Where each bin sits on the axis: its baseline mean, else a point of its interval.

    A bin without a mean sits in the middle of its cuts; the open outer bins one
    neighbouring bin's width beyond their cut (the baseline SD, or 1, with one cut).
    """
    width_low = cuts[1] - cuts[0] if len(cuts) > 1 else (std or 1.0)
    width_high = cuts[-1] - cuts[-2] if len(cuts) > 1 else (std or 1.0)
    fallback = [
        # Held within float64: one width beyond a cut near its limit overflows.
        max(cuts[0] - width_low, -sys.float_info.max),
        *(lo / 2 + hi / 2 for lo, hi in itertools.pairwise(cuts)),
        min(cuts[-1] + width_high, sys.float_info.max),
    ]
    return [f if mean is None else mean for f, mean in zip(fallback, means, strict=True)]


def numeric_cuts(
    ordered: npt.NDArray[np.float64], bins: int
) -> tuple[FloatArray, FloatArray | None]:
    """The cuts of a numeric feature's sorted values, and its distinct values if one bin each.

    At most DISCRETE_MAX_VALUES distinct values: one bin per value, with cuts halfway
    between neighbours and open outer bins (empty in the baseline) below the smallest
    and above the largest value. Otherwise quantile cuts (ties collapsed), at most
    `quantile_bins` bins.
    """
    # np.unique's own rule, on values sorted once for every use: the first of each run.
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    distinct = ordered[first]
    if len(distinct) > DISCRETE_MAX_VALUES:
        edges = np.linspace(0, 1, quantile_bins(len(ordered), bins) + 1)[1:-1]
        # Sorted input only makes the selection cheap: the quantiles are the same.
        return np.unique(np.quantile(ordered, edges)), None
    # Halved before adding so values near the float maximum do not overflow; for
    # neighbours one ulp apart the middle rounds down to the lower one, so nudge it up.
    middles = np.maximum(distinct[:-1] / 2 + distinct[1:] / 2, np.nextafter(distinct[:-1], np.inf))
    cuts = np.concatenate([[distinct[0]], middles, [np.nextafter(distinct[-1], np.inf)]])
    return cuts, distinct


def numeric_profile(values: Column, bins: int, name: str = "feature") -> NumericProfile:
    """Quantile bins (ties collapsed), or one bin per value for low-cardinality features.

    Quantile bins are capped by `quantile_bins` for small baselines.
    """
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
    ordered = np.sort(x)
    cuts, distinct = numeric_cuts(ordered, bins)
    discrete = distinct is not None
    index = np.searchsorted(cuts, x, side="right")
    counts = np.bincount(index, minlength=len(cuts) + 1).tolist()
    mean, std, bin_means = _moments(x, index, counts)
    # One bin per value sits at its value (a mean of equal values can round off it).
    means = [None, *distinct.tolist(), None] if distinct is not None else bin_means
    cut_list = cuts.tolist()
    positions = bin_positions(cut_list, means, std)
    if not all(map(math.isfinite, [*cut_list, mean, std, *positions])):
        raise BaselineError(
            f"{name}: values too large to summarise in float64 (the largest magnitude is "
            f"{max(-ordered[0], ordered[-1]):g}); rescale the feature"
        )
    rank = tail_rank(len(x))
    return NumericProfile(
        cuts=cut_list,
        counts=counts,
        n=len(x),
        missing=len(numbers) - len(x),
        mean=mean,
        std=std,
        min=float(ordered[0]),
        max=float(ordered[-1]),
        discrete=discrete,
        tail_low=float(ordered[rank - 1]),
        tail_high=float(ordered[len(x) - rank]),
        tail_rank=rank,
        bin_means=positions,
    )


def _moments(
    x: FloatArray, index: npt.NDArray[np.intp], counts: list[int]
) -> tuple[float, float, list[float | None]]:
    """The values' mean and SD, and each bin's mean (None when empty).

    Values near the float64 limit overflow a plain sum: those are summed again scaled
    down by a power of two (exact), and the results scaled back (inf if they overflow).
    """
    shift = 0
    while True:
        y = np.ldexp(x, -shift) if shift else x
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is checked for
            totals = np.bincount(index, weights=y, minlength=len(counts))
            found = np.ldexp([y.mean(), y.std(ddof=1) if len(y) > 1 else 0.0], shift)
            means = np.ldexp(totals / np.maximum(counts, 1), shift).tolist()
        mean, std = found.tolist()
        if shift or all(map(math.isfinite, [mean, std, *totals.tolist()])):
            return mean, std, [m if n else None for m, n in zip(means, counts, strict=True)]
        shift = math.frexp(float(np.abs(x).max()))[1]


def held_out_split(counts: Mapping[str, int]) -> tuple[Counter[str], Counter[str]]:
    """The rows of each category split at random into a selection and a reference half.

    The selection half holds half the rows (rounded down), drawn as a random half of the
    rows would be (multivariate hypergeometric counts per category). Seeded from the
    counts themselves, so the same data, in any row order, always gives the same profile.
    """
    labels = sorted(counts)
    colors = np.array([counts[label] for label in labels], dtype=np.int64)
    digest = hashlib.sha256(msgspec.json.encode([labels, colors.tolist()])).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    total = int(colors.sum())
    if total == 0:
        return Counter(), Counter()
    selected = rng.multivariate_hypergeometric(colors, total // 2)
    selection = Counter(dict(zip(labels, selected.tolist(), strict=True)))
    reference = Counter(dict(zip(labels, (colors - selected).tolist(), strict=True)))
    return +selection, +reference  # without the categories a half has no row of


def categorical_profile(values: Column, top_k: int) -> CategoricalProfile:
    """The top_k categories of a held-out half by count (ties by name), the rest `other`.

    The categories are chosen on the selection half of the rows and counted on the
    reference half: categories chosen and counted on the same rows have inflated counts
    (and `other` a deflated one), which makes every test of a window against them fail
    too often (docs/metrics.md).
    """
    items: Iterable[tuple[Any, int]]
    if isinstance(values, CodedColumn):
        counted = np.bincount(values.codes + 1, minlength=len(values.values) + 1).tolist()
        items = zip([None, *values.values], counted, strict=True)  # code -1 is null
    else:
        if isinstance(values, np.ndarray):
            values = category_values(values) if values.dtype.kind in "fiu" else values.tolist()
        # Each distinct value is labelled once, not once per row. Values that compare equal
        # across types (1, 1.0, True) have labels of their own: those are counted by type.
        distinct: Counter[Any] = Counter(values)
        items = distinct.items()
        if not all(type(value) is str or value is None for value in distinct):
            typed = Counter(zip(map(type, values), values, strict=True))
            items = ((value, count) for (_, value), count in typed.items())
    counts: Counter[str] = Counter()
    missing = 0
    for value, count in items:
        if is_missing(value):
            missing += count
        else:
            counts[category_label(value)] += count
    selection, reference = held_out_split(counts)
    ranked = sorted(selection.items(), key=lambda item: (-item[1], item[0]))
    kept = [category for category, _ in ranked[:top_k]]
    reference_kept = [reference.get(category, 0) for category in kept]
    selection_kept = [selection[category] for category in kept]
    n = sum(counts.values())
    return CategoricalProfile(
        categories=kept,
        counts=[*reference_kept, sum(reference.values()) - sum(reference_kept)],
        n=n,
        missing=missing,
        selection=[*selection_kept, sum(selection.values()) - sum(selection_kept)],
    )


def build_profile(
    columns: Mapping[str, Column],
    *,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
    prediction: PredictionSpec | None = None,
) -> BaselineProfile:
    """Build a profile from columns; `kinds` overrides the inferred type of a feature.

    With `prediction`, its column(s) become the prediction's reserved columns
    (driftline.core.prediction) instead of features.
    """
    if not columns:
        raise BaselineError("baseline has no features")
    reserved = next((name for name in columns if name.startswith(RESERVED_MARK)), None)
    if reserved is not None:
        raise BaselineError(
            f"features.{reserved}: names starting with {RESERVED_MARK} are reserved for the "
            "prediction; rename the column (or name it as the prediction column)"
        )
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(columns))
    if unknown:
        raise BaselineError(f"features.{unknown[0]}: not a column of the baseline data")
    rows = len(next(iter(columns.values())))
    top: dict[str, int] = {}
    sources: dict[str, str] = {}
    if prediction is not None:
        try:
            outputs = training_columns(prediction, columns)
        except PredictionError as exc:
            raise BaselineError(f"prediction: {exc}") from None
        columns = {k: v for k, v in columns.items() if k not in prediction.columns} | outputs
        for name, output_kind in prediction.outputs:
            kinds[name] = output_kind
            top[name] = max(top_k, len(prediction.classes))
            sources[name] = f"prediction column {'/'.join(prediction.columns)}"
    features: dict[str, FeatureProfile] = {}
    for name in sorted(columns):
        values = columns[name]
        kind = kinds.get(name)
        if kind == "categorical":
            features[name] = categorical_profile(values, top.get(name, top_k))
            continue
        numbers, bad = parse_numbers(values, max_bad=1)
        if kind is None and _kind_of(numbers, bad) == "categorical":
            features[name] = categorical_profile(values, top_k)
        else:
            features[name] = _numeric_profile(values, numbers, bad, bins, sources.get(name, name))
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
    if profile.kind not in PROFILE_KINDS:
        raise BaselineError(
            f"{origin}.kind: expected one of {', '.join(sorted(PROFILE_KINDS))}, got {profile.kind}"
        )
    for name, feature in profile.features.items():
        if name.startswith(RESERVED_MARK) and name not in RESERVED_NAMES:
            raise BaselineError(
                f"{origin}.features.{name}: names starting with {RESERVED_MARK} are reserved; "
                f"the prediction's are {', '.join(sorted(RESERVED_NAMES))}"
            )
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
        _validate_feature_fields(name, feature, origin)
    if list(profile.features) != sorted(profile.features):
        return msgspec.structs.replace(profile, features=dict(sorted(profile.features.items())))
    return profile


def _validate_feature_fields(name: str, feature: FeatureProfile, origin: str) -> None:
    """The held-out counts, bin means and tail cuts, where present, fit the feature's bins.

    A profile without them (written before they existed) still loads: its categorical
    tests are reported as not calibrated and its tails are the minimum and maximum.
    """
    where = f"{origin}.features.{name}"
    if isinstance(feature, CategoricalProfile):
        if feature.selection is not None and len(feature.selection) != len(feature.counts):
            raise BaselineError(
                f"{where}.selection: expected {len(feature.counts)} counts, "
                f"got {len(feature.selection)}"
            )
        return
    if feature.bin_means is not None and len(feature.bin_means) != len(feature.counts):
        raise BaselineError(
            f"{where}.bin_means: expected {len(feature.counts)} values, "
            f"got {len(feature.bin_means)}"
        )
    low, high = feature.tail_cuts
    if not low <= high or feature.tail_rank < 1:
        raise BaselineError(
            f"{where}: needs tail_low <= tail_high and tail_rank >= 1, "
            f"got {low}, {high} and {feature.tail_rank}"
        )


def is_profile_document(data: Any) -> bool:
    """Whether decoded JSON is a saved profile rather than raw training rows."""
    return isinstance(data, dict) and data.get("kind") in PROFILE_KINDS


def profile_from_bytes(
    data: bytes,
    origin: str,
    *,
    csv_format: bool,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
    prediction: PredictionSpec | None = None,
) -> BaselineProfile:
    """A saved profile as is, or one built from raw rows (JSON records or columns, CSV)."""
    table = table_from_bytes(data, origin, csv_format=csv_format)
    if isinstance(table, BaselineProfile):
        return table
    return build_profile(table, kinds=kinds, bins=bins, top_k=top_k, prediction=prediction)


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


def read_table(path: Path) -> dict[str, list[Any]] | BaselineProfile:
    """The columns of a file of rows (CSV, JSON records or columns), or its saved profile."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline: {exc.strerror}") from exc
    return table_from_bytes(raw, str(path), csv_format=path.suffix.lower() == ".csv")


def load_baseline(
    path: Path,
    *,
    kinds: Mapping[str, FeatureKind] | None = None,
    bins: int = DEFAULTS.bins,
    top_k: int = DEFAULTS.top_k,
    prediction: PredictionSpec | None = None,
) -> BaselineProfile:
    """Load a saved profile, or build one from raw rows (CSV, JSON records or columns).

    `prediction`: see build_profile (a saved profile carries its prediction columns).
    """
    table = read_table(path)
    if isinstance(table, BaselineProfile):
        return table
    return build_profile(table, kinds=kinds, bins=bins, top_k=top_k, prediction=prediction)
