"""Severity: how bad a feature's or a monitor's drift is, and how severities compare."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Severity(StrEnum):
    """How bad a feature's (or a monitor's) drift is."""

    NONE = "none"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order for comparisons: none 0 < warning 1 < critical 2."""
        return SEVERITY_RANK[self]


SEVERITY_RANK: Mapping[str, int] = {"none": 0, "warning": 1, "critical": 2}
"""The order of severities, by name: the one table the service, its metrics
(`driftline_monitor_severity`) and the operator use. alert.lua keeps a copy in Lua;
tests/test_alerts_store.py checks that it agrees."""
