"""A monitor's evaluation plan: what every verdict needs, fixed by its layout and policy.

Tests, thresholds and baseline rates as arrays over the features, grouped by test, so
that a verdict (driftline.core.report.evaluate) is a few numpy passes with no
per-feature lookups. Built once when a monitor is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from driftline.core.drift import IntVector, Vector, rows_by_test
from driftline.core.layout import Layout, moment_unit
from driftline.core.policy import Policy, QualityThresholds, TestName
from driftline.core.prediction import is_prediction_column
from driftline.core.profile import NumericProfile


@dataclass(frozen=True, slots=True)
class Levels:
    """Per-feature thresholds of one check: notice <= warning < critical."""

    notice: Vector
    warning: Vector
    critical: Vector

    @classmethod
    def quality(cls, thresholds: QualityThresholds, size: int) -> Levels:
        """A data-quality rule's thresholds (no notice tier) for `size` features."""
        warning = np.full(size, thresholds.warning)
        return cls(warning, warning, np.full(size, thresholds.critical))


@dataclass(frozen=True, slots=True)
class Plan:
    """Arrays over a monitor's features (layout order unless said otherwise)."""

    names: tuple[str, ...]
    tests: tuple[TestName, ...]
    drift: Levels
    numeric_rows: IntVector  # where each numeric feature sits among `names`
    categorical_rows: IntVector
    numeric_groups: dict[TestName, IntVector]  # rows of the numeric matrix per test
    categorical_groups: dict[TestName, IntVector]
    scale: Vector  # numeric: the baseline SD (Wasserstein's unit)
    missing_slots: IntVector
    baseline_missing: Vector  # missing values among the baseline rows
    baseline_rows: Vector  # every baseline row, missing or not
    baseline_missing_rate: Vector
    missing: Levels
    tail_baseline: Vector  # numeric: non-missing baseline values (the tail cuts' m)
    tail_baseline_rate: Vector  # the share beyond the tail cuts expected: 2r / (m + 1)
    range: Levels
    other_baseline: Vector  # categorical: the reference `other` count and rows
    other_rows: Vector
    other_baseline_rate: Vector
    new_categories: Levels
    other_testable: npt.NDArray[np.bool_]  # categorical: held-out counts (see FeatureSlots)
    # Not the prediction's columns: an event may come without one (docs/predictions.md).
    missing_testable: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, layout: Layout, policy: Policy) -> Plan:
        """The plan of a layout under a policy."""
        features = layout.features
        names = tuple(features)
        position = {name: i for i, name in enumerate(names)}
        tests = tuple(policy.test_for(name, slots.kind) for name, slots in features.items())
        thresholds = [policy.thresholds_for(name) for name in names]
        numeric = layout.numeric
        categorical = layout.categorical
        profiles = [features[name].profile for name in numeric.names]
        quality = policy.quality

        def floats(values: list[float] | list[int]) -> npt.NDArray[np.float64]:
            return np.array(values, dtype=np.float64)

        baseline_missing = floats([s.profile.missing for s in features.values()])
        baseline_rows = floats([s.profile.n + s.profile.missing for s in features.values()])
        tail_baseline = floats([p.n for p in profiles])
        other_baseline = floats([float(features[n].baseline_counts[-1]) for n in categorical.names])
        other_rows = categorical.baseline.sum(axis=1)
        return cls(
            names=names,
            tests=tests,
            drift=Levels(
                floats([t.notice for t in thresholds]),
                floats([t.warning for t in thresholds]),
                floats([t.critical for t in thresholds]),
            ),
            numeric_rows=np.array([position[n] for n in numeric.names], dtype=np.intp),
            categorical_rows=np.array([position[n] for n in categorical.names], dtype=np.intp),
            numeric_groups=rows_by_test([tests[position[n]] for n in numeric.names]),
            categorical_groups=rows_by_test([tests[position[n]] for n in categorical.names]),
            scale=floats([moment_unit(p) for p in profiles if isinstance(p, NumericProfile)]),
            missing_slots=np.array([s.missing for s in features.values()], dtype=np.intp),
            baseline_missing=baseline_missing,
            baseline_rows=baseline_rows,
            baseline_missing_rate=baseline_missing / np.maximum(baseline_rows, 1.0),
            missing=Levels.quality(quality.missing, len(names)),
            tail_baseline=tail_baseline,
            tail_baseline_rate=2 * numeric.tail_rank / (tail_baseline + 1),
            range=Levels.quality(quality.range, len(profiles)),
            other_baseline=other_baseline,
            other_rows=other_rows,
            other_baseline_rate=other_baseline / np.maximum(other_rows, 1.0),
            new_categories=Levels.quality(quality.new_categories, len(categorical.names)),
            other_testable=np.array(
                [features[n].calibrated for n in categorical.names], dtype=np.bool_
            ),
            missing_testable=np.array([not is_prediction_column(n) for n in names], dtype=np.bool_),
        )
