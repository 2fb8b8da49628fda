"""Model performance from delayed labels, kept as reserved slots of the monitor's window.

A monitor with `labels` keeps, per (sampled) event with an id, a pending record of its
prediction: the bucket of the prediction's time and an 8-byte payload (the predicted
class, the positive class's probability, the score or the regressed value). A label
that arrives later is joined to its record and counted into the bucket of the
prediction's time, in slots appended to the window vector, so the performance window
slides with the drift window and is shared by every replica (docs/labels.md):

- classification: labelled events, the confusion matrix (true class major), and for
  scores and probabilities the positive class's score histogram per label (AUC_BINS
  equal bins) and the fixed-point sum of the log loss;
- regression: labelled events and the fixed-point sums of the error, its absolute
  value and its square, in baseline standard deviations of the prediction.

The positive class is the first declared one (`1` for a score). Every number here is a
pure function of those counts; docs/labels.md states what the binning does to AUC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri, stdtr, stdtrit

from driftline.core.fixedpoint import MOMENT_CLIP, MOMENT_SCALE
from driftline.core.idempotency import KEY_BYTES, key_digest
from driftline.core.memo import LastResults
from driftline.core.policy import DEFAULTS, LabelsPolicy
from driftline.core.prediction import (
    PREFIX,
    PredictionError,
    PredictionSpec,
    class_of,
    training_columns,
)
from driftline.core.profile import (
    BaselineError,
    BaselinePerformance,
    BaselineProfile,
    Column,
    NumericProfile,
)
from driftline.core.severity import Severity
from driftline.core.values import as_number, is_missing

Vector = npt.NDArray[np.float64]

AUC_BINS = 200
"""Equal-width bins of the positive class's score per label: AUC counts the pairs that
share a bin as ties (half a concordant pair), see `auc_tie_bound`."""

LOG_LOSS_EPSILON = 1e-15
"""Probabilities are clipped to [eps, 1 - eps] before the log, as scikit-learn did."""

ID_BYTES = KEY_BYTES
"""A pending record's key: the blake2b digest of the event id (as an idempotency key's)."""

RECORD = np.dtype([("bucket", ">i8"), ("payload", ">u8"), ("version", "u1"), ("segment", "u1")])
"""A pending record as stores keep it: 18 bytes, the bucket start, the payload, and the
window blocks of the prediction's model version and segment (driftline.core.scopes; 0:
none), so that its label counts where its prediction was counted."""

RECORD_BYTES = RECORD.itemsize
PROBABILITY_SCALE = 2**32 - 1  # a probability's fixed point in a payload's low 32 bits
SCORE_CLASSES = ("1", "0")  # a score's labels: positive first
Task = Literal["classification", "regression"]
PerformanceTest = Literal["two_proportion_z", "hanley_mcneil_z", "welch_t"]
CompareMetric = Literal["accuracy", "roc_auc", "mae"]


def task_of(spec: PredictionSpec) -> Task:
    """Regression for a regressed value, classification for the other kinds."""
    return "regression" if spec.kind == "regression" else "classification"


def id_digest(event_id: str) -> bytes:
    """The key of an event's pending record (the same on every replica).

    The digest of the id as an idempotency key: an event keyed by its id is hashed once.
    """
    return key_digest("event", event_id)


def sampled(digest: bytes, rate: float) -> bool:
    """Whether an id's prediction is kept at this sample rate (by its digest: deterministic)."""
    return rate >= 1.0 or int.from_bytes(digest[:8], "big") < rate * 2.0**64


# Performance verdicts kept per monitor layout with the counts they came from (see
# driftline.core.memo): one per monitor in use.
_LAST: LastResults[Performance] = LastResults(2048)


@dataclass(frozen=True, slots=True)
class PerformanceSlots:
    """Where a monitor's performance counts sit in its window vector (after the features)."""

    spec: PredictionSpec
    policy: LabelsPolicy
    first: int  # the labelled-events slot; the others follow it
    classes: tuple[str, ...] = ()  # classification: true/predicted class order
    low: float = 0.0  # the score histogram's range
    high: float = 1.0
    unit: float = 1.0  # regression: the baseline prediction's standard deviation
    baseline: tuple[int, ...] | None = None  # the baseline's counts, in the same slots
    # A class's index by its name, the label as most are sent: one look-up per label.
    # Names that read as missing are left out, for `label_value`'s full check to refuse.
    label_index: Mapping[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {name: float(i) for i, name in enumerate(self.classes) if not is_missing(name)}
        object.__setattr__(self, "label_index", index)

    @property
    def task(self) -> Task:
        """What the model does: classification or regression."""
        return task_of(self.spec)

    @property
    def scored(self) -> bool:
        """Whether predictions carry the positive class's score (AUC, log loss)."""
        return self.spec.kind in ("score", "probabilities")

    @property
    def probabilistic(self) -> bool:
        """Whether the score is a probability (log loss): probabilities, or scores in [0, 1]."""
        return self.spec.kind == "probabilities" or (
            self.spec.kind == "score" and self.low >= 0.0 and self.high <= 1.0
        )

    @property
    def confusion(self) -> int:
        """First slot of the K x K confusion matrix (row: true class, column: predicted)."""
        return self.first + 1

    @property
    def scores(self) -> int:
        """First slot of the score histograms: AUC_BINS positive, then AUC_BINS negative."""
        return self.confusion + len(self.classes) ** 2

    @property
    def log_loss(self) -> int:
        """The slot of the log loss's fixed-point sum."""
        return self.scores + 2 * AUC_BINS

    @property
    def width(self) -> int:
        """Slots taken."""
        if self.task == "regression":
            return 4  # labelled, sum of errors, of absolute errors, of squared errors
        k = len(self.classes)
        return 1 + k * k + (2 * AUC_BINS + 1 if self.scored else 0)

    @property
    def signature(self) -> str:
        """What changes the slots' meaning: part of the layout id."""
        return (
            f"{self.spec.kind}:{','.join(self.classes)}:{self.low!r}:{self.high!r}:"
            f"{self.unit!r}:{self.policy.threshold!r}:{AUC_BINS}"
        )

    @classmethod
    def of(
        cls, spec: PredictionSpec, policy: LabelsPolicy, profile: BaselineProfile, first: int
    ) -> PerformanceSlots:
        """The slots of a monitor's prediction, from the baseline's prediction column.

        The baseline's own counts come along when the profile has them (see
        `baseline_problem` for when they fit).
        """
        measured = profile.performance
        baseline = None if measured is msgspec.UNSET else tuple(measured.counts)
        if spec.kind == "regression":
            column = profile.features[PREFIX + "value"]
            assert isinstance(column, NumericProfile)
            unit = column.std if column.std > 0 else 1.0
            return cls(spec, policy, first, unit=unit, baseline=baseline)
        if spec.kind == "score":
            column = profile.features[PREFIX + "score"]
            assert isinstance(column, NumericProfile)
            high = column.max if column.max > column.min else column.min + 1.0
            return cls(spec, policy, first, SCORE_CLASSES, column.min, high, baseline=baseline)
        return cls(spec, policy, first, tuple(spec.classes), baseline=baseline)


def baseline_problem(
    spec: PredictionSpec, policy: LabelsPolicy, profile: BaselineProfile
) -> str | None:
    """Why the profile's performance counts do not fit the monitor's slots, or None."""
    measured = profile.performance
    if measured is msgspec.UNSET:
        return None
    slots = PerformanceSlots.of(spec, policy, profile, 0)
    if measured.kind != spec.kind or tuple(measured.classes) != slots.classes:
        return (
            f"baseline.performance: measured for a {measured.kind} prediction of classes "
            f"({', '.join(measured.classes)}), the monitor declares a {spec.kind} prediction "
            f"of classes ({', '.join(slots.classes)}); rebuild the baseline with its prediction"
        )
    if spec.kind == "score" and measured.threshold != policy.threshold:
        return (
            f"labels.threshold: {policy.threshold} differs from the {measured.threshold} the "
            "baseline's performance was measured at; rebuild it with --threshold "
            f"{policy.threshold} (or set labels.threshold: {measured.threshold})"
        )
    counts = measured.counts
    # Every count is one of events, but a regression's sum of errors (its bias) may be < 0.
    counted = [counts[0], *counts[2:]] if slots.task == "regression" else counts
    if len(counts) != slots.width or min(counted, default=0) < 0:
        return (
            f"baseline.performance.counts: expected {slots.width} counts of 0 or more for a "
            f"{spec.kind} prediction, got {len(measured.counts)}"
        )
    return None


def measure_baseline(
    profile: BaselineProfile,
    spec: PredictionSpec,
    table: Mapping[str, Column],
    label: str,
    threshold: float = LabelsPolicy().threshold,
) -> BaselineProfile:
    """The profile with the model's performance on the labelled rows of `table`.

    `table` holds the prediction column(s) and the labels' column `label`; rows without
    a label or a prediction are left out. Counted by `label_deltas`, as a window counts.
    Raises BaselineError naming the column and row of a bad label.
    """
    if label not in table:
        raise BaselineError(
            f"label column {label!r} is not a column of the data (has {', '.join(sorted(table))})"
        )
    slots = PerformanceSlots.of(spec, LabelsPolicy(threshold=threshold), profile, 0)
    try:
        outputs = list(training_columns(spec, table).values())
    except PredictionError as exc:
        raise BaselineError(f"prediction: {exc}") from None
    if spec.numeric:
        outputs = [[as_number(v) for v in outputs[0]]]
    labels = table[label]
    keep: list[int] = []
    values: list[float] = []
    for row, value in enumerate(labels):
        if is_missing(value) or any(column[row] is None for column in outputs):
            continue
        number = as_number(value)  # numeric strings (a CSV), numpy numbers
        if slots.task == "regression":
            value = value if number is None else number
        elif number is not None and number.is_integer() and type(value) is not str:
            value = int(number)  # a class read as a float column (1.0 is class `1`)
        try:
            values.append(label_value(slots, value))
        except LabelError as exc:
            raise BaselineError(f"{label}[{row}]: {exc}") from None
        keep.append(row)
    if not keep:
        raise BaselineError(f"label column {label!r}: no row has both a label and a prediction")
    kept = [[column[row] for row in keep] for column in outputs]
    matched = np.zeros(len(keep), dtype=RECORD)
    matched["payload"] = payloads(slots, kept)
    counts = label_deltas(slots, slots.width, matched, np.array(values))[0]
    measured = BaselinePerformance(
        kind=spec.kind,
        classes=list(slots.classes),
        threshold=threshold,
        label=label,
        counts=[round(c) for c in counts.tolist()],
    )
    return msgspec.structs.replace(profile, performance=measured)


# ---------------------------------------------------------------------------- records


def _float_payload(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    return values.astype(np.float64).view(np.uint64)


def awaits_label(values: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Whether an event's prediction can wait for its label: none of its outputs missing."""
    # A loop, not all() over a generator (twice as fast): called per event with an id.
    for name in names:  # noqa: SIM110
        if is_missing(values[name]):
            return False
    return True


def payloads(
    slots: PerformanceSlots, columns: Sequence[Sequence[Any] | npt.NDArray[Any]]
) -> npt.NDArray[np.uint64]:
    """Each event's payload from its prediction's reserved columns (valid values only).

    `columns` are the outputs' values in the spec's order (`Decoder.names`): class
    labels, probabilities, or numbers.
    """
    kind = slots.spec.kind
    if kind in ("regression", "score"):
        return _float_payload(np.asarray(columns[0], dtype=np.float64))
    index = {c: i for i, c in enumerate(slots.classes)}
    predicted = np.fromiter((index[c] for c in columns[-1]), np.uint64, len(columns[-1]))
    if kind == "class":
        return predicted
    fixed = np.rint(np.asarray(columns[0], dtype=np.float64) * PROBABILITY_SCALE)
    return (predicted << np.uint64(32)) | fixed.astype(np.uint64)


def records(
    buckets: npt.NDArray[np.int64],
    payload: npt.NDArray[np.uint64],
    blocks: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None,
) -> bytes:
    """Pending records as stores keep them, one after another.

    `blocks`: each prediction's version and segment window blocks (None: neither).
    """
    out = np.zeros(len(buckets), dtype=RECORD)
    out["bucket"] = buckets
    out["payload"] = payload
    if blocks is not None:
        out["version"], out["segment"] = blocks
    return out.tobytes()


# ---------------------------------------------------------------------------- labels


class LabelError(ValueError):
    """A label that cannot be counted; the message says what is allowed."""


def label_value(slots: PerformanceSlots, value: Any) -> float:
    """A label as a number: the class index, or the regressed value; else LabelError."""
    # A regression has no classes: its labels never match here.
    if type(value) is str and (index := slots.label_index.get(value)) is not None:
        return index
    if slots.task == "regression":
        if type(value) is not float and type(value) is not int:
            raise LabelError(f"expected a number, got {msgspec.json.encode(value).decode()[:40]}")
        number = float(value)
        if not math.isfinite(number):
            raise LabelError(f"expected a finite number, got {value}")
        return number
    if is_missing(value):
        raise LabelError("expected a class label, got null")
    if slots.spec.kind == "score":
        value = {True: "1", False: "0"}.get(value, value) if type(value) is bool else value
    try:
        label = class_of(value, slots.classes, frozenset(slots.classes))
    except PredictionError as exc:
        raise LabelError(str(exc)) from None
    assert label is not None
    return float(slots.classes.index(label))


def _fixed(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.rint(values * MOMENT_SCALE)


def label_deltas(
    slots: PerformanceSlots,
    width: int,
    matched: npt.NDArray[np.void],
    labels: npt.NDArray[np.float64],
) -> dict[int, Vector]:
    """Per bucket of the predictions' times, the performance counts of joined labels.

    `matched`: the records (RECORD) of the predictions; `labels`: their labels (see
    `label_value`), in the same order.
    """
    buckets = matched["bucket"].astype(np.int64)
    payload = matched["payload"].astype(np.uint64)
    starts, row = np.unique(buckets, return_inverse=True)
    out = np.zeros((len(starts), width), dtype=np.float64)

    def add(columns: npt.NDArray[np.int64] | int, weights: Vector | None = None) -> None:
        # One bincount over (bucket, slot) cells: exact sums of integers below 2**53.
        cells = row * width + columns
        out.reshape(-1)[:] += np.bincount(cells, weights, minlength=out.size)

    add(slots.first)
    if slots.task == "regression":
        predicted = payload.view(np.float64)
        error = np.clip((predicted - labels) / slots.unit, -MOMENT_CLIP, MOMENT_CLIP)
        add(slots.first + 1, _fixed(error))
        add(slots.first + 2, _fixed(np.abs(error)))
        add(slots.first + 3, _fixed(error * error))
        return {int(s): out[i] for i, s in enumerate(starts)}
    truth = labels.astype(np.int64)
    k = len(slots.classes)
    kind = slots.spec.kind
    score: npt.NDArray[np.float64] | None = None
    if kind == "score":
        score = payload.view(np.float64)
        predicted_class = np.where(score >= slots.policy.threshold, 0, 1)
    elif kind == "probabilities":
        predicted_class = (payload >> np.uint64(32)).astype(np.int64)
        score = (payload & np.uint64(0xFFFFFFFF)).astype(np.float64) / PROBABILITY_SCALE
    else:
        predicted_class = payload.astype(np.int64)
    add(slots.confusion + truth * k + predicted_class)
    if slots.scored:
        assert score is not None  # only a score or probabilities are scored
        positive = truth == 0
        span = slots.high - slots.low
        bins = np.clip(np.floor((score - slots.low) / span * AUC_BINS), 0, AUC_BINS - 1)
        add(slots.scores + bins.astype(np.int64) + np.where(positive, 0, AUC_BINS))
        if slots.probabilistic:
            p = np.clip(score, LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON)
            add(slots.log_loss, _fixed(-np.log(np.where(positive, p, 1 - p))))
    return {int(s): out[i] for i, s in enumerate(starts)}


# ---------------------------------------------------------------------------- metrics


class ClassMetrics(msgspec.Struct, frozen=True):
    """One class's precision, recall and F1 (None when undefined: no such predictions)."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # labelled events of this class


class PerformanceCheck(msgspec.Struct, frozen=True):
    """One metric of the window against the baseline's: how much worse, how sure, how bad.

    `p_value` is one-sided (the window is worse), `p_adjusted` Bonferroni over the
    monitor's performance checks. The severity is warning once the change reaches
    `threshold` and is significant at the monitor's alpha, critical at twice it.
    """

    test: PerformanceTest
    value: float
    baseline: float
    difference: float  # window - baseline
    change: float  # the worsening compared with the thresholds (MAE: relative increase)
    p_value: float
    p_adjusted: float
    warning_threshold: float
    critical_threshold: float
    severity: Severity


class Performance(msgspec.Struct, frozen=True, omit_defaults=True):
    """The model's performance on the labelled events of a window (or the baseline).

    With a baseline that has performance counts, `baseline` is its performance,
    `checks` the metrics compared, and `severity` the worst of them (`none` while the
    window has fewer labelled events than `min_labels`); without one all three are
    absent.
    """

    task: Task
    labelled: int
    accuracy: float | None = None
    macro_f1: float | None = None
    classes: dict[str, ClassMetrics] | None = None
    confusion_matrix: list[list[int]] | None = None  # row: true class, column: predicted
    roc_auc: float | None = None
    log_loss: float | None = None
    mae: float | None = None
    rmse: float | None = None
    mean_error: float | None = None  # bias: mean of prediction - label
    severity: Severity | None = None
    min_labels: int | None = None
    baseline: Performance | None = None
    checks: dict[str, PerformanceCheck] | None = None


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def binned_auc(
    positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64]
) -> float | None:
    """P(positive score > negative score) + half the ties, from histograms on shared bins."""
    p, n = positive.sum(), negative.sum()
    if not p or not n:
        return None
    below = np.concatenate(([0.0], np.cumsum(negative)[:-1]))
    return float((positive * (below + 0.5 * negative)).sum() / (p * n))


def auc_tie_bound(positive: npt.NDArray[np.float64], negative: npt.NDArray[np.float64]) -> float:
    """How far binning may move AUC from the raw scores': half the pairs sharing a bin."""
    return float(0.5 * (positive * negative).sum() / (positive.sum() * negative.sum()))


def _regression_sums(slots: PerformanceSlots, vector: Vector) -> Vector:
    """The sums of the error, its absolute value and its square (in the label's unit)."""
    units = np.array([slots.unit, slots.unit, slots.unit**2])
    sums: Vector = vector[slots.first + 1 : slots.first + 4] / MOMENT_SCALE * units
    return sums


def _metrics(slots: PerformanceSlots, vector: Vector) -> Performance:
    """The metrics of the performance slots of a vector (a window's, or the baseline's)."""
    n = int(vector[slots.first])
    if slots.task == "regression":
        if not n:
            return Performance("regression", 0)
        sums = _regression_sums(slots, vector)
        return Performance(
            "regression",
            n,
            mae=float(sums[1] / n),
            rmse=math.sqrt(max(float(sums[2]) / n, 0.0)),
            mean_error=float(sums[0] / n),
        )
    matrix = _confusion(slots, vector)
    classes: dict[str, ClassMetrics] = {}
    f1s: list[float] = []
    for i, name in enumerate(slots.classes):
        tp, predicted, actual = matrix[i, i], matrix[:, i].sum(), matrix[i].sum()
        precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
        f1 = _ratio(2 * tp, predicted + actual)
        if actual or predicted:
            f1s.append(f1 or 0.0)
        classes[name] = ClassMetrics(precision, recall, f1, int(actual))
    auc = log_loss = None
    if slots.scored:
        auc = binned_auc(*_score_bins(slots, vector))
        if slots.probabilistic and n:
            log_loss = float(vector[slots.log_loss] / MOMENT_SCALE / n)
    return Performance(
        "classification",
        n,
        accuracy=_ratio(float(np.trace(matrix)), n),
        macro_f1=float(sum(f1s) / len(f1s)) if f1s else None,
        classes=classes,
        confusion_matrix=matrix.astype(np.int64).tolist(),
        roc_auc=auc,
        log_loss=log_loss,
    )


def _confusion(slots: PerformanceSlots, vector: Vector) -> Vector:
    k = len(slots.classes)
    return vector[slots.confusion : slots.confusion + k * k].reshape(k, k)


def _score_bins(slots: PerformanceSlots, vector: Vector) -> tuple[Vector, Vector]:
    """The positive and the negative events' score histograms."""
    bins = vector[slots.scores : slots.scores + 2 * AUC_BINS]
    return bins[:AUC_BINS], bins[AUC_BINS:]


# ---------------------------------------------------------------------------- verdict


def accuracy_drop_p(correct: float, n: float, baseline_correct: float, baseline_n: float) -> float:
    """One-sided p of a two-proportion z-test that the window's accuracy is below the baseline's."""
    pooled = (correct + baseline_correct) / (n + baseline_n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / baseline_n))
    drop = baseline_correct / baseline_n - correct / n
    if se == 0.0:  # both all right or all wrong: no drop
        return 1.0
    return float(ndtr(-drop / se))


def hanley_mcneil_se(auc: float, positives: float, negatives: float) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC from P positives and N negatives."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    variance = (
        auc * (1.0 - auc)
        + (positives - 1.0) * (q1 - auc * auc)
        + (negatives - 1.0) * (q2 - auc * auc)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def auc_drop_p(
    auc: float, counts: tuple[float, float], baseline: float, baseline_counts: tuple[float, float]
) -> float:
    """One-sided p that the window's AUC is below the baseline's (independent samples)."""
    se = math.hypot(hanley_mcneil_se(auc, *counts), hanley_mcneil_se(baseline, *baseline_counts))
    if se == 0.0:
        return 1.0 if auc >= baseline else 0.0
    return float(ndtr(-(baseline - auc) / se))


def _welch(
    sums: Sequence[tuple[float, float, float]],
) -> tuple[float, float, float]:
    """The absolute errors' means' difference (first - second), its SE and Welch's df."""
    means, variances = [], []
    for n, absolute, squares in sums:
        mean = absolute / n
        means.append(mean)
        variances.append(max(squares - n * mean * mean, 0.0) / (n - 1.0) / n)
    se = math.sqrt(sum(variances))
    df = (
        se**4 / sum(v * v / (s[0] - 1.0) for v, s in zip(variances, sums, strict=True))
        if se > 0
        else math.inf
    )
    return means[0] - means[1], se, df


def mae_rise_p(sums: tuple[float, float, float], baseline: tuple[float, float, float]) -> float:
    """One-sided p of Welch's t-test that the window's mean absolute error is the larger.

    `sums`: (n, sum of |e|, sum of e^2) — the absolute errors' mean and variance follow,
    since |e|^2 = e^2.
    """
    rise, se, df = _welch([sums, baseline])
    if se == 0.0:
        return 0.0 if rise > 0 else 1.0
    return float(stdtr(df, -rise / se))


class Difference(msgspec.Struct, frozen=True):
    """How much better model B did than model A on one metric, and how sure that is.

    `improvement` is B's gain: b - a for accuracy and ROC-AUC, a - b for MAE (lower is
    better); `ci_low`..`ci_high` its confidence interval; `p_value` two-sided (no
    difference). Independent samples: each version's own labelled events.
    """

    metric: CompareMetric
    test: PerformanceTest
    a: float
    b: float
    improvement: float
    ci_low: float
    ci_high: float
    p_value: float
    labelled_a: int
    labelled_b: int


def difference(
    slots: PerformanceSlots,
    a: Vector,
    b: Vector,
    metric: CompareMetric,
    confidence: float,
) -> Difference | None:
    """B's improvement over A on `metric` from two windows' performance counts.

    None while a version lacks what the metric needs (two labelled events each; both
    classes for ROC-AUC). Accuracy: Wald interval and unpooled z of two proportions;
    ROC-AUC: Hanley-McNeil standard errors of two independent AUCs; MAE: Welch's t.
    """
    ma, mb = _metrics(slots, a), _metrics(slots, b)
    na, nb = ma.labelled, mb.labelled
    if na < 2 or nb < 2:
        return None
    test: PerformanceTest
    if metric == "accuracy":
        if ma.accuracy is None or mb.accuracy is None:
            return None
        value_a, value_b = ma.accuracy, mb.accuracy
        gain = value_b - value_a
        se = math.sqrt(value_a * (1 - value_a) / na + value_b * (1 - value_b) / nb)
        test, df = "two_proportion_z", math.inf
    elif metric == "roc_auc":
        if ma.roc_auc is None or mb.roc_auc is None:
            return None
        value_a, value_b = ma.roc_auc, mb.roc_auc
        gain = value_b - value_a
        pa, qa = (float(x.sum()) for x in _score_bins(slots, a))
        pb, qb = (float(x.sum()) for x in _score_bins(slots, b))
        se = math.hypot(hanley_mcneil_se(value_a, pa, qa), hanley_mcneil_se(value_b, pb, qb))
        test, df = "hanley_mcneil_z", math.inf
    else:
        if ma.mae is None or mb.mae is None:
            return None
        value_a, value_b = ma.mae, mb.mae
        sums_a, sums_b = _regression_sums(slots, a), _regression_sums(slots, b)
        gain, se, df = _welch(
            [(na, float(sums_a[1]), float(sums_a[2])), (nb, float(sums_b[1]), float(sums_b[2]))]
        )
        test = "welch_t"
    tail = (1.0 - confidence) / 2.0
    if se == 0.0:
        low = high = gain
        p_value = 1.0 if gain == 0 else 0.0
    else:
        quantile = -float(ndtri(tail)) if math.isinf(df) else -float(stdtrit(df, tail))
        low, high = gain - quantile * se, gain + quantile * se
        z = abs(gain) / se
        p_value = 2.0 * float(ndtr(-z) if math.isinf(df) else stdtr(df, -z))
    return Difference(metric, test, value_a, value_b, gain, low, high, min(p_value, 1.0), na, nb)


@dataclass(frozen=True, slots=True)
class _Compared:
    """A metric of the window and the baseline, before its severity is decided."""

    test: PerformanceTest
    value: float
    baseline: float
    change: float  # the worsening: baseline - window (MAE: relative increase)
    p_value: float
    warning: float  # the policy's threshold; critical is twice it

    def check(self, tests: int, alpha: float, ready: bool) -> PerformanceCheck:
        """The check, its p-value adjusted over `tests` (Bonferroni)."""
        adjusted = min(self.p_value * tests, 1.0)
        level = Severity.NONE
        # A change that reaches a threshold up to float rounding (0.9 - 0.88) reaches it.
        reached = self.change / self.warning + 1e-9
        if ready and adjusted < alpha and reached >= 1.0:
            level = Severity.CRITICAL if reached >= 2.0 else Severity.WARNING
        return PerformanceCheck(
            self.test,
            self.value,
            self.baseline,
            self.value - self.baseline,
            self.change,
            self.p_value,
            adjusted,
            self.warning,
            2 * self.warning,
            level,
        )


def performance(
    slots: PerformanceSlots,
    vector: Vector,
    *,
    alpha: float = DEFAULTS.alpha,
    min_labels: int = DEFAULTS.min_samples,
) -> Performance:
    """The window's performance, and its verdict against the baseline's when there is one.

    A metric is worse when it changed by its threshold (`accuracy_drop`, `auc_drop`:
    absolute; `mae_increase`: relative to the baseline's MAE) and the change is
    significant at `alpha` (one-sided, Bonferroni over the metrics checked); critical
    at twice the threshold. Only once the window has `min_labels` labelled events.
    """
    counts = np.asarray(vector[slots.first : slots.first + slots.width], dtype=np.float64)
    inputs = (counts.tobytes(), alpha, min_labels)
    found = _LAST.get(slots, inputs)
    if found is None:
        found = _performance(slots, vector, alpha, min_labels)
        _LAST.put(slots, inputs, found)
    return found


def _performance(
    slots: PerformanceSlots, vector: Vector, alpha: float, min_labels: int
) -> Performance:
    window = _metrics(slots, vector)
    if slots.baseline is None:
        return window
    base = np.zeros_like(vector)
    base[slots.first : slots.first + slots.width] = slots.baseline
    measured = _metrics(slots, base)
    policy = slots.policy
    n, n0 = window.labelled, measured.labelled
    ready = n >= max(min_labels, 2)
    found: dict[str, _Compared] = {}
    if n and n0 and window.accuracy is not None and measured.accuracy is not None:
        correct = float(np.trace(_confusion(slots, vector)))
        baseline_correct = float(np.trace(_confusion(slots, base)))
        found["accuracy"] = _Compared(
            "two_proportion_z",
            window.accuracy,
            measured.accuracy,
            measured.accuracy - window.accuracy,
            accuracy_drop_p(correct, n, baseline_correct, n0),
            policy.accuracy_drop,
        )
    if window.roc_auc is not None and measured.roc_auc is not None:
        positive, negative = _score_bins(slots, vector)
        positive0, negative0 = _score_bins(slots, base)
        counts = (float(positive.sum()), float(negative.sum()))
        baseline_counts = (float(positive0.sum()), float(negative0.sum()))
        found["roc_auc"] = _Compared(
            "hanley_mcneil_z",
            window.roc_auc,
            measured.roc_auc,
            measured.roc_auc - window.roc_auc,
            auc_drop_p(window.roc_auc, counts, measured.roc_auc, baseline_counts),
            policy.auc_drop,
        )
    if window.mae is not None and measured.mae is not None and n > 1 and n0 > 1:
        sums = _regression_sums(slots, vector)
        baseline_sums = _regression_sums(slots, base)
        rise = window.mae - measured.mae
        found["mae"] = _Compared(
            "welch_t",
            window.mae,
            measured.mae,
            rise / measured.mae if measured.mae > 0 else (math.inf if rise > 0 else 0.0),
            mae_rise_p((n, sums[1], sums[2]), (n0, baseline_sums[1], baseline_sums[2])),
            policy.mae_increase,
        )
    checks = {
        metric: compared.check(len(found), alpha, ready) for metric, compared in found.items()
    }
    severity = max(
        (c.severity for c in checks.values()), key=lambda s: s.rank, default=Severity.NONE
    )
    return msgspec.structs.replace(
        window, severity=severity, min_labels=min_labels, baseline=measured, checks=checks
    )
