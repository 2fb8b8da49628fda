"""Operator settings: decoded once at start-up from the environment and command-line flags.

Every knob has a default, so `driftline controller` runs with no configuration; flags
win over environment variables. Nothing else in the operator reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from driftline.environment import decode_environment

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Replicas = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class ControllerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the operator spreads monitor configs, sizes autoscalers, polls services and logs."""

    # Namespaces watched; empty means all (cluster-wide).
    namespaces: tuple[str, ...] = ()
    # Events/s one service replica sustains at its CPU target (take it from bench/ results).
    replica_capacity: PositiveFloat = 2000.0
    min_replicas: Replicas = 2
    max_replicas: Replicas = 20
    cpu_utilization: Annotated[int, msgspec.Meta(ge=1, le=100)] = 70
    # How many ConfigMaps (shards) hold a service's monitor configs: `<service>-monitors`,
    # then `<service>-monitors-001` on. A ConfigMap holds at most 1 MiB, so this is N MiB
    # of configs per service: 128 hold 1,000 50-feature monitors of up to ~130 KB each,
    # twice the ~61 KB of one whose 20 categorical features keep their 100 categories
    # (docs/operator.md "Sharding"). The service Deployment's monitors volume must project
    # exactly these names; three digits name them, hence at most 1000.
    monitor_shards: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 128
    # Reconciles in flight at once: a burst of DriftMonitors (kubectl apply of hundreds,
    # or an operator restart) queues here instead of overloading the API server.
    max_concurrent_reconciles: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    # How often each DriftMonitor's status is refreshed from its drift service.
    status_interval: PositiveFloat = 30.0
    # Timeout of each call to a drift service (drift report, window deletion).
    service_timeout: PositiveFloat = 5.0
    # kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz; unset serves nothing.
    liveness_endpoint: str | None = None
    # The cluster's DNS domain: a DriftMonitor may name `<service>.<its namespace>.svc`
    # or `<service>.<its namespace>.svc.<cluster_domain>` as its serviceUrl host.
    cluster_domain: str = "cluster.local"
    # More serviceUrl hosts the operator may call (shell patterns, e.g. `*.internal`).
    # Empty: only services in the monitor's own namespace.
    service_hosts: tuple[str, ...] = ()
    # A file holding the bearer token for drift service calls (a mounted Secret); the
    # service's tokens file must give it the `read` and `admin` scopes.
    service_token_file: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def __post_init__(self) -> None:
        """Cross-field checks msgspec constraints cannot express."""
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas: must be at least min_replicas ({self.min_replicas}), "
                f"got {self.max_replicas}"
            )


# Environment variable -> settings field.
ENVIRONMENT: dict[str, str] = {
    "DRIFTLINE_CONTROLLER_NAMESPACES": "namespaces",
    "DRIFTLINE_CONTROLLER_REPLICA_CAPACITY": "replica_capacity",
    "DRIFTLINE_CONTROLLER_MIN_REPLICAS": "min_replicas",
    "DRIFTLINE_CONTROLLER_MAX_REPLICAS": "max_replicas",
    "DRIFTLINE_CONTROLLER_CPU_UTILIZATION": "cpu_utilization",
    "DRIFTLINE_CONTROLLER_STATUS_INTERVAL": "status_interval",
    "DRIFTLINE_CONTROLLER_MAX_CONCURRENT_RECONCILES": "max_concurrent_reconciles",
    "DRIFTLINE_CONTROLLER_MONITOR_SHARDS": "monitor_shards",
    "DRIFTLINE_CONTROLLER_SERVICE_TIMEOUT": "service_timeout",
    "DRIFTLINE_CONTROLLER_LIVENESS_ENDPOINT": "liveness_endpoint",
    "DRIFTLINE_CONTROLLER_CLUSTER_DOMAIN": "cluster_domain",
    "DRIFTLINE_CONTROLLER_SERVICE_HOSTS": "service_hosts",
    "DRIFTLINE_CONTROLLER_SERVICE_TOKEN_FILE": "service_token_file",
    "DRIFTLINE_LOG_LEVEL": "log_level",
}


LISTS = frozenset({"namespaces", "service_hosts"})


class ControllerSettingsError(ValueError):
    """Settings that cannot work; the message names the variable or field."""


def load_controller_settings(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> ControllerSettings:
    """Decode settings from environment variables, then overrides (flags); later wins.

    `DRIFTLINE_CONTROLLER_NAMESPACES` and `…_SERVICE_HOSTS` are comma-separated; an
    override of None or an empty sequence leaves the field to the environment.
    """
    return decode_environment(
        ControllerSettings,
        ENVIRONMENT,
        os.environ if environ is None else environ,
        overrides=overrides,
        lists=LISTS,
        error=ControllerSettingsError,
    )
