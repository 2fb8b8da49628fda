"""Calls from the operator to a drift service: a monitor's drift report, and forgetting its window.

Failures come back as values (ServiceFailure), not exceptions: an unreachable service
is an expected state the DriftMonitor's Ready condition reports, never a crash. The
session carries the timeout (ControllerSettings.service_timeout).
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

Severity = Literal["none", "notice", "warning", "critical"]


class WindowSummary(msgspec.Struct, frozen=True):
    """The part of a report's `window` the operator keeps."""

    events: int


class FeatureVerdict(msgspec.Struct, frozen=True):
    """The part of a report's feature the operator keeps: its severity and why."""

    severity: Severity
    reasons: list[str] = []


class DriftSummary(msgspec.Struct, frozen=True):
    """The fields of the service's DriftReport (driftline.core.report) the status shows."""

    severity: Severity
    drift_score: float
    drifted_features: list[str]
    window: WindowSummary
    features: dict[str, FeatureVerdict] = {}


@dataclass(frozen=True, slots=True)
class ServiceFailure:
    """Why a call to the drift service gave no answer; `reason` is a condition reason."""

    reason: Literal["ServiceUnreachable", "MonitorNotLoaded", "ServiceError", "ServiceUrlRefused"]
    message: str


def refused_service_url(
    url: str, namespace: str, *, cluster_domain: str, extra_hosts: Sequence[str]
) -> ServiceFailure | None:
    """Why the operator must not call `url` for a monitor of `namespace`, or None.

    Anyone who may create a DriftMonitor chooses its serviceUrl, and the operator sends
    GET and DELETE there: by default only services of the monitor's own namespace
    (`<name>.<namespace>.svc[.<cluster_domain>]`) are called, plus the hosts the
    operator's settings allow.
    """
    not_http = ServiceFailure("ServiceUrlRefused", f"serviceUrl {url!r} is not an http(s) URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        return not_http
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return not_http
    local = (f".{namespace}.svc", f".{namespace}.svc.{cluster_domain}")
    label = host.split(".", 1)[0]
    if label and any(host == label + suffix for suffix in local):
        return None
    if any(fnmatch.fnmatchcase(host, pattern) for pattern in extra_hosts):
        return None
    return ServiceFailure(
        "ServiceUrlRefused",
        f"serviceUrl host {host!r} is not a service of namespace {namespace!r} "
        f"(<name>.{namespace}.svc) nor allowed by the operator's "
        "DRIFTLINE_CONTROLLER_SERVICE_HOSTS",
    )


def bearer_token(path: str) -> aiohttp.ClientMiddlewareType:
    """A client middleware sending the token in `path` (a mounted Secret) with every call.

    The file is read for each call, so a rotated Secret takes effect without a restart;
    the drift service needs the `read` scope (drift reports) and `admin` (deleting
    windows). An unreadable file sends no token: the call fails with 401, reported in
    the DriftMonitor's Ready condition.
    """
    file = Path(path)

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        try:
            token = (await asyncio.to_thread(file.read_text)).strip()
        except OSError:
            token = ""
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return await handler(request)

    return middleware


def _problem_detail(body: bytes) -> str:
    # The service answers errors with RFC 9457 problem documents; fall back to raw text.
    try:
        problem = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200].decode(errors="replace")
    if isinstance(problem, dict) and isinstance(detail := problem.get("detail"), str):
        return detail
    return body[:200].decode(errors="replace")


def _unreachable(base_url: str, exc: BaseException) -> ServiceFailure:
    # A timeout's text is empty: name the exception instead.
    why = str(exc) or type(exc).__name__
    return ServiceFailure("ServiceUnreachable", f"drift service at {base_url} unreachable: {why}")


def _monitor_path(base_url: str, monitor: str, suffix: str) -> str:
    return f"{base_url}/v1/monitors/{quote(monitor, safe='')}/{suffix}"


async def _call(
    session: aiohttp.ClientSession, method: str, base_url: str, url: str
) -> tuple[int, bytes] | ServiceFailure:
    try:
        async with session.request(method, url) as response:
            return response.status, await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return _unreachable(base_url, exc)


async def fetch_drift_summary(
    session: aiohttp.ClientSession, base_url: str, monitor: str
) -> DriftSummary | ServiceFailure:
    """GET /v1/monitors/{monitor}/drift and keep what the status shows."""
    answer = await _call(session, "GET", base_url, _monitor_path(base_url, monitor, "drift"))
    if isinstance(answer, ServiceFailure):
        return answer
    status, body = answer
    if status == 404:
        return ServiceFailure(
            "MonitorNotLoaded",
            f"drift service at {base_url} has not loaded monitor {monitor!r} (yet): "
            f"{_problem_detail(body)}",
        )
    if status != 200:
        return ServiceFailure(
            "ServiceError",
            f"drift service at {base_url} answered {status} for the drift report: "
            f"{_problem_detail(body)}",
        )
    try:
        return msgspec.json.decode(body, type=DriftSummary)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return ServiceFailure(
            "ServiceError", f"drift service at {base_url} sent an unreadable drift report: {exc}"
        )


async def forget_window(
    session: aiohttp.ClientSession, base_url: str, monitor: str
) -> ServiceFailure | None:
    """DELETE /v1/monitors/{monitor}/window (the monitor's counts in Redis); None on 204."""
    answer = await _call(session, "DELETE", base_url, _monitor_path(base_url, monitor, "window"))
    if isinstance(answer, ServiceFailure):
        return answer
    status, body = answer
    if status in (200, 204):
        return None
    return ServiceFailure(
        "ServiceError",
        f"drift service at {base_url} answered {status} to deleting the window: "
        f"{_problem_detail(body)}",
    )
