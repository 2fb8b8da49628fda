"""driftline's Kubernetes operator: DriftMonitor resources in, drift service configuration out.

`driftline controller` runs it (see docs/operator.md). Importing this package needs the
`controller` extra (kopf, lightkube): the drift service's packages never import it, and
the CLI imports it only inside the `controller` command.
"""

from __future__ import annotations

import logging
import sys

import kopf
from lightkube import AsyncClient, ConfigError, KubeConfig

from .kube import KubeApi
from .operator import STATUS_TIMER, DriftMonitorOperator, build_registry, operator_settings
from .settings import ControllerSettings


class QuietTimerSuccess(logging.Filter):
    """Drops kopf's line for each successful status refresh.

    kopf logs every successful timer run at INFO: with a status refresh per monitor every
    30 s that is a line per monitor per interval, forever, and says nothing new. Failures
    and every other handler's lines still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the timer's success lines."""
        return not (
            record.levelno == logging.INFO
            and record.getMessage() == f"Timer '{STATUS_TIMER}' succeeded."
        )


def run(settings: ControllerSettings) -> int:
    """Run the operator until SIGINT/SIGTERM (all namespaces, or the settings'); exit code."""
    try:
        # Checked before kopf starts: kopf would retry a failing start-up every minute.
        config = KubeConfig.from_env()
    except ConfigError as exc:
        print(
            f"driftline: no Kubernetes configuration (in-cluster or KUBECONFIG): {exc}",
            file=sys.stderr,
        )
        return 2
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON,
        log_refkey="object",
    )
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("kopf.objects").addFilter(QuietTimerSuccess())
    # lightkube's HTTP client logs every request at INFO: a line per API call.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLogger().level))
    operator = DriftMonitorOperator(
        settings, kube_factory=lambda: KubeApi(AsyncClient(config=config))
    )
    kopf.run(
        registry=build_registry(operator),
        settings=operator_settings(),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0


__all__ = [
    "ControllerSettings",
    "DriftMonitorOperator",
    "build_registry",
    "operator_settings",
    "run",
]
