"""Refused requests: one counter for every route, a debug line each, and a summary at info.

Every request answered with a 4xx problem is counted in
`driftline_invalid_events_total{monitor, reason}` (the reason is the problem's slug in
snake case: `malformed_json`, `invalid_request`, `unauthorized`, ...) unless the engine
already counted the events it refused. `monitor` is the monitor the request was
resolved to, or empty when it named none that is loaded (a label per unknown name would
let clients grow the metric without bound). Each refusal is logged at debug level; at
info level at most one line per SUMMARY_SECONDS says how many were refused since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from driftline.http.problems import ProblemError
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 10.0
# Where handlers note the monitor a request was resolved to (its label here).
MONITOR = web.RequestKey("monitor", str)


class Rejections:
    """Counts and logs the requests refused with a 4xx problem."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], float] = time.monotonic) -> None:
        self._telemetry = telemetry
        self._clock = clock
        self._since_summary = 0
        self._summary_at = clock()

    def record(self, request: web.Request, route: str, problem: ProblemError) -> None:
        """Note one refused request."""
        monitor = str(request.get(MONITOR, ""))
        reason = problem.slug.replace("-", "_")
        if not problem.counted:
            self._telemetry.invalid_events.inc({"monitor": monitor, "reason": reason})
        details = {
            "method": request.method,
            "route": route,
            "status": problem.status,
            "reason": reason,
            "monitor": monitor,
            "detail": problem.detail[:300],
        }
        log.debug("request refused", extra=details)
        self._since_summary += 1
        now = self._clock()
        if now - self._summary_at >= SUMMARY_SECONDS:
            log.info(
                "requests refused",
                extra={
                    "refused": self._since_summary,
                    "seconds": round(now - self._summary_at, 1),
                    "latest": details,
                },
            )
            self._since_summary = 0
            self._summary_at = now
