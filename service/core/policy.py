"""Policy: when a monitor calls its window drifted, and the defaults every monitor inherits.

`MonitorDefaults` is the one place the default policy is written: the service settings
embed it (and let DRIFT_* variables change it), monitor configs inherit what they leave
out, and the statistics' keyword defaults read it. The operator's DriftMonitor spec and
the CRD state the same numbers for `kubectl` users; they should take them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec

from driftline.core.limits import NonNegativeFloat, PositiveFloat, PositiveInt

Alpha = Annotated[float, msgspec.Meta(gt=0, lt=1)]
Bins = Annotated[int, msgspec.Meta(ge=2, le=100)]
TopK = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class MonitorDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Policy a monitor config inherits for every field it does not set itself."""

    warning_threshold: PositiveFloat = 0.2
    critical_threshold: PositiveFloat = 0.5
    alpha: Alpha = 0.05
    bonferroni: bool = False
    min_samples: PositiveInt = 100
    min_drifted_features: PositiveInt = 1
    window_seconds: PositiveInt = 3600
    bucket_seconds: PositiveInt = 60
    bins: Bins = 10
    top_k: TopK = 100
    # Flap protection: a new severity is announced once it has been observed for
    # alert_hold_seconds, and no sooner than alert_cooldown_seconds after the last one.
    alert_hold_seconds: NonNegativeFloat = 60.0
    alert_cooldown_seconds: NonNegativeFloat = 300.0


DEFAULTS = MonitorDefaults()
"""The built-in defaults (what a service started without DRIFT_* variables uses)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Effect-size thresholds: score >= warning is a warning, >= critical is critical."""

    warning: float = DEFAULTS.warning_threshold
    critical: float = DEFAULTS.critical_threshold

    def __post_init__(self) -> None:
        # `not (a < b)` also rejects NaN.
        if not (0.0 < self.warning < self.critical < float("inf")):
            raise ValueError(
                f"thresholds need 0 < warning < critical < inf, "
                f"got warning={self.warning}, critical={self.critical}"
            )


@dataclass(frozen=True, slots=True)
class Policy:
    """When a monitor calls its window drifted."""

    thresholds: Thresholds
    feature_thresholds: Mapping[str, Thresholds]
    alpha: float
    bonferroni: bool
    min_samples: int
    min_drifted_features: int
    alert_hold_seconds: float = DEFAULTS.alert_hold_seconds
    alert_cooldown_seconds: float = DEFAULTS.alert_cooldown_seconds

    def thresholds_for(self, feature: str) -> Thresholds:
        """The feature's own thresholds, else the monitor's."""
        return self.feature_thresholds.get(feature, self.thresholds)
