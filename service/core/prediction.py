"""Predictions: what a monitor's model answered, kept as reserved columns of its window.

A monitor may declare the kind of its model's prediction (`prediction: {kind, classes}`).
An event's `prediction` then becomes one or two columns of the monitor's layout, named
`@prediction.<output>`, which are profiled, binned, tested and alerted on as features
are (docs/predictions.md):

- regression: `value`, numeric;
- score: `score`, numeric;
- class: `class`, categorical (one of the declared classes);
- probabilities: `probability`, numeric (the first declared class's probability), and
  `class`, categorical (the most probable class; the first declared one on a tie).

Feature names cannot start with `@`, so these names never collide with a feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from driftline.core.values import (
    FeatureKind,
    as_number,
    category_label,
    category_values,
    is_missing,
)

RESERVED_MARK = "@"
PREFIX = "@prediction."
PROBABILITY_TOLERANCE = 0.01
"""Class probabilities must sum to 1 within this (a model's float32 output, rounded)."""

PredictionKind = Literal["regression", "score", "class", "probabilities"]
ClassLabel = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

OUTPUTS: dict[str, tuple[tuple[str, FeatureKind], ...]] = {
    "regression": (("value", "numeric"),),
    "score": (("score", "numeric"),),
    "class": (("class", "categorical"),),
    "probabilities": (("probability", "numeric"), ("class", "categorical")),
}
RESERVED_NAMES = frozenset(PREFIX + output for kinds in OUTPUTS.values() for output, _ in kinds)


class PredictionSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A monitor's prediction: its kind, its classes, and the baseline column(s) holding it.

    `column`: the training rows' prediction column; for probabilities also one column
    per declared class, in class order. Only read when the baseline is built from rows.
    """

    kind: PredictionKind
    classes: Annotated[list[ClassLabel], msgspec.Meta(max_length=1000)] = []
    column: str | list[str] = "prediction"

    @property
    def outputs(self) -> tuple[tuple[str, FeatureKind], ...]:
        """Each output's reserved column name and kind, in the order `event_values` gives."""
        return tuple((PREFIX + output, kind) for output, kind in OUTPUTS[self.kind])

    @property
    def columns(self) -> list[str]:
        """The baseline rows' prediction column(s)."""
        return [self.column] if isinstance(self.column, str) else list(self.column)

    @property
    def numeric(self) -> bool:
        """Whether the prediction is one number (regression or score), checked by binning."""
        return self.kind in ("regression", "score")


class PredictionError(ValueError):
    """A prediction that cannot be counted; the message says what is allowed."""


def spec_problem(spec: PredictionSpec) -> str | None:
    """What is wrong with a declaration (the field and why), or None."""
    needs_classes = spec.kind in ("class", "probabilities")
    if needs_classes and len(spec.classes) < 2:
        return f"classes: {spec.kind} needs at least 2 declared classes, got {len(spec.classes)}"
    if not needs_classes and spec.classes:
        return f"classes: only class and probabilities predictions have classes, not {spec.kind}"
    if len(set(spec.classes)) != len(spec.classes):
        repeated = next(c for c in spec.classes if spec.classes.count(c) > 1)
        return f"classes: {repeated!r} is declared twice"
    many = spec.kind == "probabilities" and len(spec.columns) > 1
    if many and len(spec.columns) != len(spec.classes):
        return (
            f"column: one column per class ({len(spec.classes)}), or one column, "
            f"got {len(spec.columns)}"
        )
    if not many and len(spec.columns) != 1:
        return f"column: a {spec.kind} prediction is one column, got {len(spec.columns)}"
    return None


def is_prediction_column(name: str) -> bool:
    """Whether a layout column is a prediction output rather than a feature."""
    return name.startswith(PREFIX)


def output_name(column: str) -> str:
    """The output a reserved column holds (`score` for `@prediction.score`)."""
    return column.removeprefix(PREFIX)


def _describe(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed(classes: Sequence[str]) -> str:
    shown = ", ".join(classes[:10])
    return shown + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")


def class_of(value: Any, classes: Sequence[str], known: frozenset[str]) -> str | None:
    """The declared class a label names (None when missing); else PredictionError."""
    if is_missing(value):
        return None
    if isinstance(value, dict | list):
        raise PredictionError(
            f"expected a class label (one of {_allowed(classes)}), got {_describe(value)}"
        )
    label = value if type(value) is str else category_label(value)
    if label not in known:
        raise PredictionError(
            f"expected one of the declared classes ({_allowed(classes)}), got {_describe(value)}"
        )
    return label


def _probability(value: Any, where: str) -> float:
    # Also false for NaN; bools are no probabilities.
    if (type(value) is not float and type(value) is not int) or not 0.0 <= value <= 1.0:
        message = f"expected a probability from 0 to 1, got {_describe(value)}"
        raise PredictionError(f"{where}: {message}")
    return float(value)


def probabilities_of(
    value: Any, classes: Sequence[str], known: frozenset[str]
) -> tuple[float, str] | None:
    """The first class's probability and the most probable class (None when missing).

    `value` is an object {class: probability} (classes left out have 0) or a list in
    declared class order; the probabilities must sum to 1 within PROBABILITY_TOLERANCE.
    """
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != len(classes):
            raise PredictionError(
                f"expected {len(classes)} probabilities, one per class in declared order "
                f"({_allowed(classes)}), got {len(value)}"
            )
        found = [_probability(p, f"[{i}]") for i, p in enumerate(value)]
    elif isinstance(value, dict):
        unknown = next((name for name in value if name not in known), None)
        if unknown is not None:
            raise PredictionError(
                f"unknown class {_describe(unknown)}; declared: {_allowed(classes)}"
            )
        found = [_probability(value[c], c) if c in value else 0.0 for c in classes]
    else:
        raise PredictionError(
            "expected class probabilities, an object {class: probability} or a list in "
            f"declared class order ({_allowed(classes)}), got {_describe(value)}"
        )
    total = math.fsum(found)
    if abs(total - 1.0) > PROBABILITY_TOLERANCE:
        raise PredictionError(
            f"expected probabilities summing to 1 (within {PROBABILITY_TOLERANCE}), got {total:.6g}"
        )
    best = max(range(len(found)), key=found.__getitem__)  # the first on a tie
    return found[0], classes[best]


class Decoder:
    """A monitor's prediction values turned into its reserved columns' values."""

    def __init__(self, spec: PredictionSpec) -> None:
        self.spec = spec
        self.names = tuple(name for name, _ in spec.outputs)
        self._classes = list(spec.classes)
        self._known = frozenset(spec.classes)

    def values(self, value: Any) -> tuple[Any, ...]:
        """One event's prediction as its outputs' values (None: missing); else PredictionError.

        A regression or score value is passed on as sent: binning checks it as it checks
        a numeric feature's value.
        """
        kind = self.spec.kind
        if kind == "class":
            return (class_of(value, self._classes, self._known),)
        if kind == "probabilities":
            found = probabilities_of(value, self._classes, self._known)
            return (None, None) if found is None else found
        return (value,)

    def columns(
        self, values: Sequence[Any] | npt.NDArray[Any]
    ) -> tuple[dict[str, Sequence[Any] | npt.NDArray[Any]], dict[int, PredictionError]]:
        """A column of predictions as its outputs' columns, and the events refused (missing).

        A regression or score column is passed on as sent (a list, or float64s).
        """
        if self.spec.numeric:
            return {self.names[0]: values}, {}
        if isinstance(values, np.ndarray):
            values = category_values(values) if values.dtype.kind in "fiu" else values.tolist()
        refused: dict[int, PredictionError] = {}
        rows: list[tuple[Any, ...]] = []
        empty = (None,) * len(self.names)
        for i, value in enumerate(values):
            try:
                rows.append(self.values(value))
            except PredictionError as exc:
                refused[i] = exc
                rows.append(empty)
        return {name: [row[j] for row in rows] for j, name in enumerate(self.names)}, refused


def training_columns(
    spec: PredictionSpec, table: Mapping[str, Sequence[Any] | npt.NDArray[Any]]
) -> dict[str, Sequence[Any] | npt.NDArray[Any]]:
    """The training rows' prediction as its reserved columns (values as events send them).

    Probabilities come from one column (objects or lists) or one column per class, whose
    values may be numeric strings (a CSV). Raises PredictionError naming the row.
    """
    missing = [name for name in spec.columns if name not in table]
    if missing:
        raise PredictionError(
            f"prediction column {missing[0]!r} is not a column of the baseline data "
            f"(has {', '.join(sorted(table))})"
        )
    decoder = Decoder(spec)
    sources = [table[name] for name in spec.columns]
    if spec.numeric:
        return {decoder.names[0]: sources[0]}
    if len(sources) > 1:  # probabilities, one column per class
        values: Sequence[Any] | npt.NDArray[Any] = [
            None
            if all(is_missing(v) for v in row)
            else [p if (p := as_number(v)) is not None else v for v in row]
            for row in zip(*sources, strict=True)
        ]
    else:
        values = sources[0]
    columns, refused = decoder.columns(values)
    if refused:
        row, error = min(refused.items())
        raise PredictionError(f"{'/'.join(spec.columns)}[{row}]: {error}")
    return columns
