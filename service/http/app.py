"""The aiohttp application factory and the process that serves it."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import ClientPayloadError, web

from driftline.alerts.dispatch import AlertDispatcher
from driftline.alerts.history import AlertLog
from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.observer import SeverityObserver
from driftline.alerts.redis import RedisAlertStore
from driftline.alerts.store import AlertStore
from driftline.engine.facade import DriftEngine
from driftline.engine.inference import InferencePairing
from driftline.engine.registry import MonitorRegistry
from driftline.http.auth import Access, TokenGate
from driftline.http.keys import (
    ACCESS,
    ALERTS,
    DRAINING,
    ENGINE,
    INFERENCES,
    REJECTIONS,
    SETTINGS,
    TELEMETRY,
    TOKENS,
)
from driftline.http.problems import Handler, as_problem, problem_response
from driftline.http.rejections import Rejections
from driftline.http.routes import ROUTES
from driftline.http.server import EdgeRunner
from driftline.lifecycle import stop
from driftline.settings import Settings
from driftline.stores.memory import MemoryHistoryStore, MemoryWindowStore
from driftline.stores.protocol import HistoryStore, WindowStore
from driftline.stores.redis import RedisWindowStore
from driftline.stores.redis_history import RedisHistoryStore
from driftline.telemetry import Telemetry
from driftline.ui.assets import add_routes as add_ui_routes

log = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 20)


# Recorded in the request metric for a client that went away mid-request (nginx's code).
CLIENT_CLOSED_REQUEST = 499


@web.middleware
async def service_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the token, answer every failure with a problem document, time every request.

    One middleware, not several: each layer costs every request a coroutine frame.
    """
    start = time.perf_counter()
    route = request.match_info.route
    resource = route.resource
    name = resource.canonical if resource is not None else "unmatched"
    try:
        access = request.app[ACCESS].get(route)
        if access is not None:
            request.app[TOKENS].check(request, access)
        response = await handler(request)
    except (ConnectionResetError, ClientPayloadError):
        # The client went away mid-body: nobody will read an answer. Not a server error.
        log.debug("client closed the request", extra={"route": name, "method": request.method})
        response = web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
    except Exception as exc:
        problem = as_problem(request, exc)
        response = problem_response(problem)
        if problem.status < 500:
            request.app[REJECTIONS].record(request, name, problem)
        if not request.content.at_eof():
            # A refused body is not drained (it may be huge, slow or compressed): close.
            response.force_close()
    request.app[TELEMETRY].latency.record(
        name, request.method, response.status, time.perf_counter() - start
    )
    return response


def open_stores(settings: Settings) -> tuple[WindowStore, AlertStore, HistoryStore]:
    """Redis when a URL is configured, else the embedded in-process stores."""
    if settings.redis_url:
        window = RedisWindowStore.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout,
            cluster=settings.redis_cluster,
            future_seconds=settings.limits.max_future_seconds,
            idempotency_seconds=settings.idempotency_horizon,
        )
        return window, RedisAlertStore(window.client), RedisHistoryStore(window.client)
    return (
        MemoryWindowStore(idempotency_seconds=settings.idempotency_horizon),
        MemoryAlertStore(),
        MemoryHistoryStore(),
    )


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    """Load monitors, open the stores; on shutdown flush pending counts, then close them."""
    settings = app[SETTINGS]
    telemetry = app[TELEMETRY]
    registry = MonitorRegistry(settings)
    await asyncio.to_thread(registry.load)
    store, alerts, history = open_stores(settings)
    engine = DriftEngine(settings, registry, store, telemetry, history=history)
    consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    dispatcher = AlertDispatcher(alerts, registry, settings.alerts, telemetry, consumer)
    observer = SeverityObserver(alerts, telemetry, on_alert=dispatcher.wake)
    engine.subscribe(observer.offer)
    app[ENGINE] = engine
    app[ALERTS] = AlertLog(alerts, settings.alerts)
    pairing = InferencePairing(engine, settings.inference, telemetry)
    app[INFERENCES] = pairing
    stopping = asyncio.Event()
    tasks = [
        asyncio.create_task(pairing.expire_forever(stopping), name="inference-pairing"),
        asyncio.create_task(registry.watch(stopping), name="monitor-reload"),
        asyncio.create_task(engine.assess_waiting_forever(stopping), name="verdicts"),
        asyncio.create_task(dispatcher.run(stopping), name="alert-delivery"),
        asyncio.create_task(
            observer.evaluate_forever(engine, settings.alerts.evaluation_interval, stopping),
            name="evaluation",
        ),
    ]
    persistence = await engine.persistence()
    log.info(
        "service started",
        extra={
            "store": store.kind,
            "monitors": [m.name for m in registry],
            "ack_mode": settings.ack_mode,
            "persistence": persistence.mode,
            "appendfsync": persistence.fsync,
        },
    )
    if settings.ack_mode == "durable" and store.kind == "redis" and persistence.mode != "aof":
        # Durable acknowledgement promises what Redis keeps: without an append-only file
        # a Redis restart loses every acknowledged count.
        log.warning(
            "Redis persistence is %s: acknowledged events survive a Redis restart only with "
            "appendonly yes",
            "off" if persistence.mode == "none" else "unknown (CONFIG GET refused or Redis down)",
            extra={"persistence": persistence.mode},
        )
    yield
    await pairing.close()  # lone requests waiting for a response are counted now
    await engine.close()
    await observer.close()  # the last flush may have changed a severity
    await stop(tasks, stopping, grace=5.0)
    await store.close()
    log.info("service stopped: pending counts flushed")


async def tokens_context(app: web.Application) -> AsyncIterator[None]:
    """Load the tokens file (if any) and reload it when it changes."""
    gate = app[TOKENS]
    await asyncio.to_thread(gate.load)
    stopping = asyncio.Event()
    task = asyncio.create_task(
        gate.watch(app[SETTINGS].reload_interval, stopping), name="tokens-reload"
    )
    yield
    await stop([task], stopping, grace=1.0)


def create_app(settings: Settings) -> web.Application:
    """Build the application; resources open in its cleanup contexts."""
    app = web.Application(
        client_max_size=settings.limits.max_body_bytes,
        middlewares=[service_middleware],
        # Bodies are read as sent: a compressed one is refused before it is inflated
        # (driftline.http.codec.read_body), never inflated by the parser as it arrives.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    telemetry = Telemetry()
    app[TELEMETRY] = telemetry
    app[REJECTIONS] = Rejections(telemetry)
    app[TOKENS] = TokenGate(settings.auth)
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.append(tokens_context)
    app.cleanup_ctx.append(engine_context)
    access: dict[web.AbstractRoute, Access] = {}
    for route in ROUTES:
        access[app.router.add_route(route.method, route.path, route.handler)] = route.access
    app[ACCESS] = access
    add_ui_routes(app.router)  # open: the page asks the API with the user's token
    return app


def open_warning(settings: Settings) -> str | None:
    """What to warn about when no tokens protect a service listening beyond loopback."""
    if settings.auth.tokens_file:
        return None
    host = settings.host
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a name: it may resolve to anything
    return (
        f"no tokens file (DRIFTLINE_TOKENS_FILE) and listening on {host}: anyone who "
        "reaches it may send events, read reports, acknowledge alerts and delete windows"
    )


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain: readiness 503, finish requests, flush."""
    app = create_app(settings)
    warning = open_warning(settings)
    if warning:
        log.warning(warning)
    runner = EdgeRunner(app, edge=settings.server, handle_signals=False, access_log=None)
    await runner.setup()
    # Requests allocate many short-lived containers: with the default threshold (700)
    # the collector runs every few requests, and every full collection rescans what
    # start-up built (modules, monitors, profiles). Freeze that; collect young objects
    # less often. Reference cycles are rare here, so memory does not grow from it.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    loop = asyncio.get_running_loop()
    kind = type(loop)
    log.info(
        "listening",
        extra={
            "host": settings.host,
            "port": settings.port,
            "event_loop": f"{kind.__module__}.{kind.__qualname__}",
        },
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stop signal: draining", extra={"drain_seconds": settings.drain_seconds})
        app[DRAINING].set()
        # Give Kubernetes time to take the pod out of its endpoints before we stop
        # accepting connections; requests keep being served meanwhile.
        await asyncio.sleep(settings.drain_seconds)
    finally:
        await runner.cleanup()
