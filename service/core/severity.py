"""Severity: how bad a feature's or a monitor's drift is, and how severities compare."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Severity(StrEnum):
    """How bad a feature's (or a monitor's) drift is.

    `notice` is informational: a significant change below the warning threshold. It is
    reported, exported and shown, but does not call drift, and only receivers that ask
    for it (`min_severity: notice`) hear of it.
    """

    NONE = "none"
    NOTICE = "notice"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order for comparisons: none 0 < notice 1 < warning 2 < critical 3."""
        return SEVERITY_RANK[self]

    @property
    def gauge(self) -> float:
        """The value `driftline_monitor_severity` exports (see SEVERITY_GAUGE)."""
        return SEVERITY_GAUGE[self]


SEVERITY_RANK: Mapping[str, int] = {"none": 0, "notice": 1, "warning": 2, "critical": 3}
"""The order of severities, by name: the one table the service and the operator use.
alert.lua keeps a copy in Lua; tests/test_alerts_store.py checks that it agrees."""

SEVERITY_GAUGE: Mapping[str, float] = {"none": 0.0, "notice": 0.5, "warning": 1.0, "critical": 2.0}
"""The Prometheus value of each severity. Warning stays 1 and critical 2, as before the
notice tier existed, so alert rules written as `== 1` / `>= 2` keep their meaning;
notice sits between none and warning at 0.5. manifests/monitoring's rules and dashboard
use these numbers; tests/test_manifests.py checks that they agree."""

LEVELS: tuple[Severity, ...] = tuple(sorted(Severity, key=lambda s: SEVERITY_RANK[s]))
"""Severities by rank: LEVELS[rank] is the severity of that rank."""
