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

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.fixedpoint import MOMENT_CLIP, MOMENT_SCALE
from driftline.core.policy import LabelsPolicy
from driftline.core.prediction import (
    PREFIX,
    PredictionError,
    PredictionSpec,
    class_of,
)
from driftline.core.profile import BaselineProfile, NumericProfile
from driftline.core.values import is_missing

Vector = npt.NDArray[np.float64]

AUC_BINS = 200
"""Equal-width bins of the positive class's score per label: AUC counts the pairs that
share a bin as ties (half a concordant pair), see `auc_tie_bound`."""

LOG_LOSS_EPSILON = 1e-15
"""Probabilities are clipped to [eps, 1 - eps] before the log, as scikit-learn did."""

ID_BYTES = 16
"""A pending record's key: the blake2b digest of the event id."""

RECORD = np.dtype([("bucket", ">i8"), ("payload", ">u8")])
"""A pending record as stores keep it: 16 bytes, the bucket start and the payload."""

RECORD_BYTES = RECORD.itemsize
PROBABILITY_SCALE = 2**32 - 1  # a probability's fixed point in a payload's low 32 bits
SCORE_CLASSES = ("1", "0")  # a score's labels: positive first
Task = Literal["classification", "regression"]


def task_of(spec: PredictionSpec) -> Task:
    """Regression for a regressed value, classification for the other kinds."""
    return "regression" if spec.kind == "regression" else "classification"


def id_digest(event_id: str) -> bytes:
    """The key of an event's pending record (the same on every replica)."""
    return hashlib.blake2b(event_id.encode(), digest_size=ID_BYTES, person=b"label").digest()


def sampled(digest: bytes, rate: float) -> bool:
    """Whether an id's prediction is kept at this sample rate (by its digest: deterministic)."""
    return rate >= 1.0 or int.from_bytes(digest[:8], "big") < rate * 2.0**64


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
        """The slots of a monitor's prediction, from the baseline's prediction column."""
        if spec.kind == "regression":
            column = profile.features[PREFIX + "value"]
            assert isinstance(column, NumericProfile)
            unit = column.std if column.std > 0 else 1.0
            return cls(spec, policy, first, unit=unit)
        if spec.kind == "score":
            column = profile.features[PREFIX + "score"]
            assert isinstance(column, NumericProfile)
            high = column.max if column.max > column.min else column.min + 1.0
            return cls(spec, policy, first, SCORE_CLASSES, column.min, high)
        return cls(spec, policy, first, tuple(spec.classes))


# ---------------------------------------------------------------------------- records


def _float_payload(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    return values.astype(np.float64).view(np.uint64)


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


def records(buckets: npt.NDArray[np.int64], payload: npt.NDArray[np.uint64]) -> bytes:
    """Pending records as stores keep them, one after another."""
    out = np.empty(len(buckets), dtype=RECORD)
    out["bucket"] = buckets
    out["payload"] = payload
    return out.tobytes()


# ---------------------------------------------------------------------------- labels


class LabelError(ValueError):
    """A label that cannot be counted; the message says what is allowed."""


def label_value(slots: PerformanceSlots, value: Any) -> float:
    """A label as a number: the class index, or the regressed value; else LabelError."""
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


class Performance(msgspec.Struct, frozen=True, omit_defaults=True):
    """The model's performance on the labelled events of a window (or the baseline)."""

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


def performance(slots: PerformanceSlots, vector: Vector) -> Performance:
    """The metrics of the performance slots of a window vector."""
    n = int(vector[slots.first])
    if slots.task == "regression":
        if not n:
            return Performance("regression", 0)
        sums = (
            vector[slots.first + 1 : slots.first + 4]
            / MOMENT_SCALE
            * np.array([slots.unit, slots.unit, slots.unit**2])
        )
        return Performance(
            "regression",
            n,
            mae=float(sums[1] / n),
            rmse=math.sqrt(max(float(sums[2]) / n, 0.0)),
            mean_error=float(sums[0] / n),
        )
    k = len(slots.classes)
    matrix = vector[slots.confusion : slots.confusion + k * k].reshape(k, k)
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
        bins = vector[slots.scores : slots.scores + 2 * AUC_BINS]
        auc = binned_auc(bins[:AUC_BINS], bins[AUC_BINS:])
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
