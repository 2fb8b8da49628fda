"""Policy: when a monitor calls its window drifted, and the defaults every monitor inherits.

`MonitorDefaults` is the one place the default policy is written: the service settings
embed it (and let DRIFT_* variables change it), monitor configs inherit what they leave
out, and the statistics' keyword defaults read it. The operator's DriftMonitor spec and
the CRD state the same numbers for `kubectl` users; they should take them from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

import msgspec

from driftline.core.limits import NonNegativeFloat, PositiveFloat, PositiveInt

MIN_TEST_EVENTS = 10
"""Fewest non-missing window values a drift test is run on. Below it the test says
nothing (p = 1, status `insufficient`): with 10 bins its false-alarm rate is no longer
bounded by alpha (9 % at 5 values). `min_samples` may not be set lower."""

Alpha = Annotated[float, msgspec.Meta(gt=0, lt=1)]
Bins = Annotated[int, msgspec.Meta(ge=2, le=100)]
TopK = Annotated[int, msgspec.Meta(ge=1, le=1000)]
MinSamples = Annotated[int, msgspec.Meta(ge=MIN_TEST_EVENTS)]

TestName = Literal["psi", "jensenshannon", "wasserstein", "ks", "hellinger", "chisquare"]
TESTS: tuple[TestName, ...] = get_args(TestName)
NUMERIC_ONLY_TESTS = frozenset({"wasserstein", "ks"})
"""Tests that need ordered bins: a categorical feature cannot use them."""
DEFAULT_TESTS: Mapping[str, TestName] = {"numeric": "psi", "categorical": "chisquare"}
"""The test of a feature (by kind) when neither it nor its monitor chooses one."""
SHARED_SCALE_TESTS = frozenset({"psi", "chisquare"})
"""Tests whose scores share the monitor's thresholds (PSI and Cohen's w: 0.1/0.2/0.5)."""

MultipleTesting = Literal["none", "bonferroni", "holm", "bh"]

ReferenceKind = Literal["baseline", "previous_window", "period"]
MAX_KEPT_BUCKETS = 20_160
"""Most buckets a monitor's store keeps (its window plus its reference's span): a week
of one-minute buckets. docs/metrics.md gives the Redis memory this costs."""


class ReferenceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a monitor's window is compared with (docs/metrics.md, "Reference and window choices").

    The training `baseline`, the `previous_window`, or the same window `period_seconds`
    earlier (`period`: a day or a week, for seasonality).
    """

    kind: ReferenceKind = "baseline"
    period_seconds: PositiveInt | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Effect-size thresholds: score >= warning is a warning, >= critical is critical.

    A significant score >= notice (and below warning) is a notice; notice == warning
    turns that tier off.
    """

    warning: float = 0.2
    critical: float = 0.5
    notice: float = 0.1

    def __post_init__(self) -> None:
        # `not (a < b)` also rejects NaN.
        if not (0.0 < self.warning < self.critical < float("inf")):
            raise ValueError(
                f"thresholds need 0 < warning < critical < inf, "
                f"got warning={self.warning}, critical={self.critical}"
            )
        if not (0.0 < self.notice <= self.warning):
            raise ValueError(
                f"thresholds need 0 < notice <= warning, "
                f"got notice={self.notice}, warning={self.warning}"
            )


TEST_THRESHOLDS: Mapping[TestName, Thresholds] = {
    "psi": Thresholds(0.2, 0.5, 0.1),
    "chisquare": Thresholds(0.2, 0.5, 0.1),
    # Matched to PSI 0.1 / 0.2 / 0.5 on a normal feature's decile bins (docs/metrics.md).
    "jensenshannon": Thresholds(0.15, 0.25, 0.1),
    "hellinger": Thresholds(0.15, 0.25, 0.1),
    "wasserstein": Thresholds(0.45, 0.7, 0.3),
    "ks": Thresholds(0.18, 0.28, 0.13),
}
"""Each test's own thresholds, for features whose test is not on the shared scale."""


class QualityThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Increase of a rate over the baseline's own rate at which a feature is warning/critical."""

    warning: PositiveFloat
    critical: PositiveFloat

    def __post_init__(self) -> None:
        """Critical above warning, both finite."""
        if not (self.warning < self.critical < math.inf):
            raise ValueError(
                f"critical: must be greater than warning ({self.warning}) and finite, "
                f"got {self.critical}"
            )


class QualityPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The data-quality rules' thresholds (absolute increases of a rate)."""

    missing: QualityThresholds = QualityThresholds(0.05, 0.20)
    range: QualityThresholds = QualityThresholds(0.005, 0.05)
    new_categories: QualityThresholds = QualityThresholds(0.005, 0.05)


class LabelsPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a monitor takes delayed labels, and when its performance counts as degraded.

    `horizon_seconds`: how long a prediction waits for its label. `sample_rate`: the
    share of events with an id whose prediction is kept (chosen by the id's hash, so
    every replica agrees). `threshold`: a score at or above it predicts the positive
    class. The drops are absolute (accuracy and AUC in [0, 1]); `mae_increase` is
    relative to the baseline's MAE.
    """

    horizon_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 86400)] = 86400
    sample_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    threshold: float = 0.5
    accuracy_drop: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.02
    auc_drop: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.02
    mae_increase: Annotated[float, msgspec.Meta(gt=0)] = 0.1


class MonitorDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Policy a monitor config inherits for every field it does not set itself."""

    warning_threshold: PositiveFloat = 0.2
    critical_threshold: PositiveFloat = 0.5
    notice_threshold: PositiveFloat = 0.1
    test: TestName | None = None  # None: psi for numeric, chisquare for categorical
    alpha: Alpha = 0.05
    multiple_testing: MultipleTesting | None = None  # None: as `bonferroni` says
    bonferroni: bool = False  # alias of multiple_testing: bonferroni
    min_samples: MinSamples = 100
    min_drifted_features: PositiveInt = 1
    window_seconds: PositiveInt = 3600
    # The window as the newest buckets holding at least this many events, no older than
    # window_seconds (None: the window is window_seconds).
    window_events: PositiveInt | None = None
    bucket_seconds: PositiveInt = 60
    bins: Bins = 10
    top_k: TopK = 100
    # Flap protection: a new severity is announced once it has been observed for
    # alert_hold_seconds, and no sooner than alert_cooldown_seconds after the last one.
    alert_hold_seconds: NonNegativeFloat = 60.0
    alert_cooldown_seconds: NonNegativeFloat = 300.0
    quality: QualityPolicy = QualityPolicy()
    labels: LabelsPolicy = LabelsPolicy()  # for monitors that declare `labels`
    reference: ReferenceConfig = ReferenceConfig()


DEFAULTS = MonitorDefaults()
"""The built-in defaults (what a service started without DRIFT_* variables uses)."""


def multiple_testing_method(
    method: MultipleTesting | None, bonferroni: bool | None
) -> MultipleTesting | None:
    """The method a `multiple_testing` / `bonferroni` pair asks for; None when neither does.

    `bonferroni: true` is the older spelling of `multiple_testing: bonferroni`; asking
    for another method beside it is a contradiction (ValueError).
    """
    if bonferroni and method not in (None, "bonferroni"):
        raise ValueError(
            f"multiple_testing: {method} contradicts bonferroni: true "
            "(an alias of multiple_testing: bonferroni); set only one"
        )
    if method is not None:
        return method
    if bonferroni is None:
        return None
    return "bonferroni" if bonferroni else "none"


@dataclass(frozen=True, slots=True)
class Policy:
    """When a monitor calls its window drifted."""

    thresholds: Thresholds
    feature_thresholds: Mapping[str, Thresholds]
    alpha: float
    multiple_testing: MultipleTesting
    min_samples: int
    min_drifted_features: int
    alert_hold_seconds: float = DEFAULTS.alert_hold_seconds
    alert_cooldown_seconds: float = DEFAULTS.alert_cooldown_seconds
    tests: Mapping[str, TestName] = field(default_factory=dict)  # every feature's test
    quality: QualityPolicy = field(default_factory=QualityPolicy)

    @property
    def bonferroni(self) -> bool:
        """Whether the multiple-testing method is Bonferroni's (the older switch)."""
        return self.multiple_testing == "bonferroni"

    def thresholds_for(self, feature: str) -> Thresholds:
        """The feature's own thresholds (or its test's), else the monitor's."""
        return self.feature_thresholds.get(feature, self.thresholds)

    def test_for(self, feature: str, kind: str) -> TestName:
        """The feature's test: its own or its monitor's, else its kind's default."""
        return self.tests.get(feature, DEFAULT_TESTS[kind])
