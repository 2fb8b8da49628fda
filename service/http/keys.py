"""Typed keys of what the aiohttp application holds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from driftline.alerts.history import AlertLog
from driftline.engine.facade import DriftEngine
from driftline.engine.inference import InferencePairing
from driftline.http.auth import Access, TokenGate
from driftline.http.rejections import Rejections
from driftline.settings import Settings
from driftline.telemetry import Telemetry

SETTINGS = web.AppKey("settings", Settings)
TELEMETRY = web.AppKey("telemetry", Telemetry)
ENGINE = web.AppKey("engine", DriftEngine)
ALERTS = web.AppKey("alerts", AlertLog)
INFERENCES = web.AppKey("inferences", InferencePairing)
TOKENS = web.AppKey("tokens", TokenGate)
REJECTIONS = web.AppKey("rejections", Rejections)
# What each registered route needs of a token (driftline.http.routes: Route.access).
ACCESS = web.AppKey("access", dict[web.AbstractRoute, Access])
# Set on SIGTERM: readiness turns 503 so Kubernetes stops routing here while in-flight
# requests finish and pending counts flush.
DRAINING = web.AppKey("draining", asyncio.Event)
