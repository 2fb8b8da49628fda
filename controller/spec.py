"""The DriftMonitor custom resource's spec, as typed structs.

The API server has already validated and defaulted the spec against the CRD schema
(manifests/crd/driftmonitors.yaml). The policy defaults here are the service's own
(driftline.core.policy.DEFAULTS), so a spec read from an older CRD or a test fixture means
the same; tests hold the CRD's `default:` values equal to them. Field names are the
CRD's camelCase.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from driftline.core.policy import DEFAULTS, ReferenceKind
from driftline.core.scopes import SegmentsConfig

API_GROUP = "driftline.io"
API_VERSION = "v1alpha1"
KIND = "DriftMonitor"
PLURAL = "driftmonitors"
DEFAULT_SERVICE = "driftline"
SERVICE_PORT = 8080


class KeyRef(msgspec.Struct, frozen=True):
    """A key of a ConfigMap or Secret in the monitor's namespace."""

    name: str
    key: str


class BaselineSpec(msgspec.Struct, frozen=True, rename="camel"):
    """Exactly one of a ConfigMap key (raw rows or a saved profile) or an inline profile."""

    config_map_key_ref: KeyRef | None = None
    profile: dict[str, Any] | None = None
    bins: int = DEFAULTS.bins
    top_k: int = DEFAULTS.top_k


Test = Literal["psi", "jensenshannon", "wasserstein", "ks", "hellinger", "chisquare"]


class FeatureSpec(msgspec.Struct, frozen=True, rename="camel"):
    """Overrides for one feature."""

    name: str
    type: Literal["numeric", "categorical"] | None = None
    test: Test | None = None
    warning_threshold: float | None = None
    critical_threshold: float | None = None
    notice_threshold: float | None = None


class PredictionSpec(msgspec.Struct, frozen=True):
    """The model's prediction: its kind, classes, and the raw baseline's column(s)."""

    kind: Literal["regression", "score", "class", "probabilities"]
    classes: list[str] = []
    columns: list[str] | None = None


class InferenceSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """How the model server's payloads map to features and prediction (docs/model-servers.md)."""

    inputs: dict[str, list[str]] = {}
    instances: list[str] = []
    output: str | None = None


class LabelsSpec(msgspec.Struct, frozen=True, rename="camel"):
    """Delayed labels: the horizon, the sample rate and when performance is degraded."""

    horizon_seconds: int = DEFAULTS.labels.horizon_seconds
    sample_rate: float = DEFAULTS.labels.sample_rate
    threshold: float = DEFAULTS.labels.threshold
    accuracy_drop: float = DEFAULTS.labels.accuracy_drop
    auc_drop: float = DEFAULTS.labels.auc_drop
    mae_increase: float = DEFAULTS.labels.mae_increase


class ThresholdsSpec(msgspec.Struct, frozen=True):
    """The monitor's effect-size thresholds (on the PSI / Cohen's w scale)."""

    warning: float = DEFAULTS.warning_threshold
    critical: float = DEFAULTS.critical_threshold
    notice: float | None = None


class QualityLevelsSpec(msgspec.Struct, frozen=True):
    """Increases of a rate at which a feature is warning and critical."""

    warning: float
    critical: float


class QualitySpec(msgspec.Struct, frozen=True, rename="camel"):
    """The data-quality rules' thresholds; unset rules keep the service's."""

    missing: QualityLevelsSpec | None = None
    range: QualityLevelsSpec | None = None
    new_categories: QualityLevelsSpec | None = None


class AlertSpec(msgspec.Struct, frozen=True, rename="camel"):
    """One alert receiver; its URL and signing key live in Secrets."""

    name: str
    type: Literal["webhook", "slack", "alertmanager"]
    url_secret_ref: KeyRef
    signing_secret_ref: KeyRef | None = None
    min_severity: Literal["notice", "warning", "critical"] = "warning"


class TrafficSpec(msgspec.Struct, frozen=True, rename="camel"):
    """Declared event rates; the peak defaults to the expected rate."""

    expected_events_per_second: float = 0.0
    peak_events_per_second: float | None = None

    @property
    def peak(self) -> float:
        """The peak rate, or the expected rate when no peak was declared."""
        if self.peak_events_per_second is None:
            return self.expected_events_per_second
        return self.peak_events_per_second


class ReferenceSpec(msgspec.Struct, frozen=True, rename="camel"):
    """What the window is compared with (the service's `reference`)."""

    kind: ReferenceKind = DEFAULTS.reference.kind
    period_seconds: int | None = None


class MonitorSpec(msgspec.Struct, frozen=True, rename="camel"):
    """A DriftMonitor's spec."""

    model: str
    baseline: BaselineSpec
    service: str = DEFAULT_SERVICE
    service_url: str | None = None
    features: list[FeatureSpec] = []
    model_versions: tuple[str, ...] = ()
    segments: SegmentsConfig | None = None
    prediction: PredictionSpec | None = None
    inference: InferenceSpec | None = None

    labels: LabelsSpec | None = None
    thresholds: ThresholdsSpec = ThresholdsSpec()
    test: Test | None = None
    alpha: float = DEFAULTS.alpha
    multiple_testing: Literal["none", "bonferroni", "holm", "bh"] | None = None
    bonferroni: bool = DEFAULTS.bonferroni
    window_seconds: int = DEFAULTS.window_seconds
    bucket_seconds: int = DEFAULTS.bucket_seconds
    window_events: int | None = None
    reference: ReferenceSpec = ReferenceSpec()
    min_samples: int = DEFAULTS.min_samples
    min_drifted_features: int = DEFAULTS.min_drifted_features
    alert_hold_seconds: float | None = None
    alert_cooldown_seconds: float | None = None
    alerts: list[AlertSpec] = []
    traffic: TrafficSpec = TrafficSpec()
    quality: QualitySpec = QualitySpec()


class SpecError(ValueError):
    """A spec the CRD schema should have refused; the message names the field."""


def parse_spec(raw: Any) -> MonitorSpec:
    """Decode a DriftMonitor's spec (plain JSON data) into a MonitorSpec."""
    try:
        return msgspec.convert(raw, MonitorSpec)
    except msgspec.ValidationError as exc:
        raise SpecError(f"spec: {exc}") from exc


def service_url(service: str, namespace: str, override: str | None = None) -> str:
    """Base URL of a drift service (the spec's serviceUrl wins), without a trailing slash."""
    if override:
        return override.rstrip("/")
    return f"http://{service}.{namespace}.svc:{SERVICE_PORT}"
