"""Service settings: one object decoded from the environment (and an optional file) at start-up.

Every knob has a default, so `driftline serve` runs with no configuration at all. The
settings object is validated once here and passed down; nothing else reads the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.yaml

from driftline.core.idempotency import DEFAULT_HORIZON_SECONDS
from driftline.core.limits import Limits, NonNegativeFloat, PositiveFloat
from driftline.core.policy import MonitorDefaults, multiple_testing_method
from driftline.environment import decode_environment
from driftline.eventloop import DEFAULT_EVENT_LOOP, EventLoopName, event_loop_problem


class AlertSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How alerts are delivered (see driftline.alerts.dispatch)."""

    timeout: PositiveFloat = 5.0  # per POST
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    backoff_base: PositiveFloat = 0.5
    backoff_cap: PositiveFloat = 30.0
    claim_idle: PositiveFloat = 30.0  # an entry pending this long is taken over
    # Every outbox is read this often, for alerts a stopped replica left (a replica reads
    # the alerts it writes at once).
    poll_interval: PositiveFloat = 10.0
    history_seconds: PositiveFloat = 7 * 24 * 3600.0
    firing_ttl: PositiveFloat = 24 * 3600.0  # endsAt of a firing Alertmanager alert
    allow_link_local: bool = False  # cloud metadata endpoints live there
    evaluation_interval: PositiveFloat = 30.0  # re-evaluate idle monitors (resolve alerts)


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long clients may take and how many may be connected (see driftline.http.server)."""

    # From a request's first byte to the end of its headers.
    header_timeout: PositiveFloat = 10.0
    # From the end of the headers to the end of the body.
    body_timeout: PositiveFloat = 30.0
    # An idle connection (or one that never sends a request) is closed after this; longer
    # than the idle timeout of proxies in front (ingress-nginx keeps upstreams 60 s), or
    # they would send requests on connections being closed.
    keepalive_timeout: PositiveFloat = 75.0
    # Open connections at once; more are answered 503 and closed.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024


class InferenceSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a replica pairs a model server's logged requests and responses (docs/model-servers.md).

    Halves wait in this process, at most `max_pending` of them holding at most
    `max_pending_bytes` of bodies as received; past either bound the oldest is settled
    early (a request counted without its prediction, a response dropped).
    """

    # How long a logged request waits for its response (and a response for its request).
    pair_timeout: PositiveFloat = 10.0
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    max_pending_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bearer tokens with scopes (see driftline.http.auth); no tokens file: open.

    The file is polled like the monitors directory (`reload_interval`).
    """

    tokens_file: str | None = None
    # Probes and the metrics scrape without a token; false: they need the `read` scope.
    open_probes: bool = True
    open_metrics: bool = True


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the service reads at start-up."""

    host: str = "0.0.0.0"  # in a container the service must listen on the pod IP
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    redis_url: str | None = None
    redis_cluster: bool = False
    monitors_dir: str | None = None
    baseline_data_path: str | None = None
    alerts_dir: str | None = None
    default_monitor: str | None = None
    ack_mode: Literal["durable", "async"] = "durable"
    flush_interval: NonNegativeFloat = 0.002
    reload_interval: PositiveFloat = 2.0
    drain_seconds: NonNegativeFloat = 0.0
    redis_timeout: PositiveFloat = 2.0
    # How long a request's Idempotency-Key (or a predict's event id) is remembered: at
    # least this long, at most twice. Replicas sharing a Redis must agree on it.
    idempotency_horizon: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = (
        DEFAULT_HORIZON_SECONDS
    )
    # Seconds of per-bucket verdict history kept per monitor (docs/ui.md); 0 keeps none.
    history_horizon: Annotated[int, msgspec.Meta(ge=0, le=90 * 24 * 3600)] = 7 * 24 * 3600
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The asyncio event loop implementation (driftline.eventloop).
    event_loop: EventLoopName = DEFAULT_EVENT_LOOP
    limits: Limits = Limits()
    defaults: MonitorDefaults = MonitorDefaults()
    alerts: AlertSettings = AlertSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    inference: InferenceSettings = InferenceSettings()

    def __post_init__(self) -> None:
        """Cross-field checks msgspec constraints cannot express."""
        problem = event_loop_problem(self.event_loop)
        if problem is not None:
            raise ValueError(f"event_loop: {problem}")
        d = self.defaults
        if d.critical_threshold <= d.warning_threshold:
            raise ValueError(
                f"defaults.critical_threshold: must be greater than warning_threshold "
                f"({d.warning_threshold}), got {d.critical_threshold}"
            )
        if d.notice_threshold > d.warning_threshold:
            raise ValueError(
                f"defaults.notice_threshold: must not exceed warning_threshold "
                f"({d.warning_threshold}), got {d.notice_threshold}"
            )
        try:
            multiple_testing_method(d.multiple_testing, d.bonferroni)
        except ValueError as exc:
            raise ValueError(f"defaults.{exc}") from None
        if d.window_seconds % d.bucket_seconds:
            raise ValueError(
                f"defaults.window_seconds: must be a whole number of buckets "
                f"({d.bucket_seconds} s), got {d.window_seconds}"
            )


# Environment variable -> (section, field). The original API's variable names are kept as they were.
ENVIRONMENT: dict[str, tuple[str | None, str]] = {
    "DRIFTLINE_HOST": (None, "host"),
    "DRIFTLINE_PORT": (None, "port"),
    "REDIS_URL": (None, "redis_url"),
    "DRIFTLINE_REDIS_CLUSTER": (None, "redis_cluster"),
    "DRIFTLINE_MONITORS_DIR": (None, "monitors_dir"),
    "BASELINE_DATA_PATH": (None, "baseline_data_path"),
    "DRIFTLINE_DEFAULT_MONITOR": (None, "default_monitor"),
    "DRIFTLINE_ACK_MODE": (None, "ack_mode"),
    "DRIFTLINE_FLUSH_INTERVAL": (None, "flush_interval"),
    "DRIFTLINE_RELOAD_INTERVAL": (None, "reload_interval"),
    "DRIFTLINE_DRAIN_SECONDS": (None, "drain_seconds"),
    "DRIFTLINE_REDIS_TIMEOUT": (None, "redis_timeout"),
    "DRIFTLINE_IDEMPOTENCY_HORIZON": (None, "idempotency_horizon"),
    "DRIFTLINE_HISTORY_HORIZON": (None, "history_horizon"),
    "DRIFTLINE_LOG_LEVEL": (None, "log_level"),
    "DRIFTLINE_EVENT_LOOP": (None, "event_loop"),
    "DRIFTLINE_MAX_BODY_BYTES": ("limits", "max_body_bytes"),
    "DRIFTLINE_MAX_FEATURES": ("limits", "max_features"),
    "DRIFTLINE_MAX_BATCH_EVENTS": ("limits", "max_batch_events"),
    "DRIFTLINE_MAX_STRING_LENGTH": ("limits", "max_string_length"),
    "DRIFTLINE_MAX_FUTURE_SECONDS": ("limits", "max_future_seconds"),
    "DRIFTLINE_MAX_ABS_VALUE": ("limits", "max_abs_value"),
    "DRIFT_WARNING_THRESHOLD": ("defaults", "warning_threshold"),
    "DRIFT_CRITICAL_THRESHOLD": ("defaults", "critical_threshold"),
    "DRIFT_NOTICE_THRESHOLD": ("defaults", "notice_threshold"),
    "DRIFTLINE_TEST": ("defaults", "test"),
    "DRIFTLINE_ALPHA": ("defaults", "alpha"),
    "DRIFTLINE_MULTIPLE_TESTING": ("defaults", "multiple_testing"),
    "DRIFTLINE_BONFERRONI": ("defaults", "bonferroni"),
    "DRIFTLINE_MIN_SAMPLES": ("defaults", "min_samples"),
    "DRIFTLINE_MIN_DRIFTED_FEATURES": ("defaults", "min_drifted_features"),
    "DRIFTLINE_WINDOW_SECONDS": ("defaults", "window_seconds"),
    "DRIFTLINE_BUCKET_SECONDS": ("defaults", "bucket_seconds"),
    "DRIFTLINE_BINS": ("defaults", "bins"),
    "DRIFTLINE_TOP_K": ("defaults", "top_k"),
    "DRIFTLINE_ALERT_HOLD_SECONDS": ("defaults", "alert_hold_seconds"),
    "DRIFTLINE_ALERT_COOLDOWN_SECONDS": ("defaults", "alert_cooldown_seconds"),
    "DRIFTLINE_ALERTS_DIR": (None, "alerts_dir"),
    "DRIFTLINE_ALERT_TIMEOUT": ("alerts", "timeout"),
    "DRIFTLINE_ALERT_MAX_ATTEMPTS": ("alerts", "max_attempts"),
    "DRIFTLINE_ALERT_BACKOFF_BASE": ("alerts", "backoff_base"),
    "DRIFTLINE_ALERT_BACKOFF_CAP": ("alerts", "backoff_cap"),
    "DRIFTLINE_ALERT_CLAIM_IDLE": ("alerts", "claim_idle"),
    "DRIFTLINE_ALERT_POLL_INTERVAL": ("alerts", "poll_interval"),
    "DRIFTLINE_ALERT_HISTORY_SECONDS": ("alerts", "history_seconds"),
    "DRIFTLINE_ALERT_FIRING_TTL": ("alerts", "firing_ttl"),
    "DRIFTLINE_ALERT_ALLOW_LINK_LOCAL": ("alerts", "allow_link_local"),
    "DRIFTLINE_EVALUATION_INTERVAL": ("alerts", "evaluation_interval"),
    "DRIFTLINE_HEADER_TIMEOUT": ("server", "header_timeout"),
    "DRIFTLINE_BODY_TIMEOUT": ("server", "body_timeout"),
    "DRIFTLINE_KEEPALIVE_TIMEOUT": ("server", "keepalive_timeout"),
    "DRIFTLINE_MAX_CONNECTIONS": ("server", "max_connections"),
    "DRIFTLINE_INFERENCE_PAIR_TIMEOUT": ("inference", "pair_timeout"),
    "DRIFTLINE_INFERENCE_MAX_PENDING": ("inference", "max_pending"),
    "DRIFTLINE_INFERENCE_MAX_PENDING_BYTES": ("inference", "max_pending_bytes"),
    "DRIFTLINE_TOKENS_FILE": ("auth", "tokens_file"),
    "DRIFTLINE_OPEN_PROBES": ("auth", "open_probes"),
    "DRIFTLINE_OPEN_METRICS": ("auth", "open_metrics"),
}
SETTINGS_FILE_VARIABLE = "DRIFTLINE_SETTINGS_FILE"


class SettingsError(ValueError):
    """The configuration cannot work; the message names the variable or field."""


def _decode_file(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    data: Any
    if path.suffix in {".yaml", ".yml"}:
        data = msgspec.yaml.decode(raw)
    else:
        data = msgspec.json.decode(raw)
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for key in data:
        if key in ENVIRONMENT or key == SETTINGS_FILE_VARIABLE:
            section, field = ENVIRONMENT.get(key, (None, key))
            name = f"{section}: {{{field}: ...}}" if section else f"{field}: ..."
            raise SettingsError(
                f"{path}: unknown field `{key}`: a settings file takes the settings' own "
                f"names (here `{name}`), environment variable names go in the environment"
            )
    return data


def setting_sources(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, str]:
    """Where each setting that is not its default comes from, by dotted path.

    The settings file's path, the environment variable's name, or "command line"; the
    same precedence as load_settings (later wins).
    """
    env = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    file = env.get(SETTINGS_FILE_VARIABLE)
    if file:
        for key, value in _decode_file(Path(file)).items():
            inner = value.items() if isinstance(value, dict) else [(None, None)]
            for field, _ in inner:
                sources[f"{key}.{field}" if field else key] = f"{SETTINGS_FILE_VARIABLE}={file}"
    for variable, (section, field) in ENVIRONMENT.items():
        if env.get(variable, "") != "":
            sources[f"{section}.{field}" if section else field] = variable
    for field, value in overrides.items():
        if value is not None and value != [] and value != ():
            sources[field] = "command line"
    return sources


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Decode settings from a settings file, then environment variables, then overrides.

    Later sources win. Environment strings are converted to the field types (so
    `DRIFTLINE_PORT=9000` becomes an int); a bad value raises SettingsError naming it.
    """
    env = os.environ if environ is None else environ
    file = env.get(SETTINGS_FILE_VARIABLE)
    return decode_environment(
        Settings,
        ENVIRONMENT,
        env,
        base=_decode_file(Path(file)) if file else None,
        overrides=overrides,
        error=SettingsError,
    )
