"""The aiohttp application factory and the process that serves it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from driftline.alerts.dispatch import AlertDispatcher
from driftline.alerts.history import AlertLog
from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.observer import SeverityObserver
from driftline.alerts.redis import RedisAlertStore
from driftline.alerts.store import AlertStore
from driftline.engine.facade import DriftEngine
from driftline.engine.registry import MonitorRegistry
from driftline.http.keys import ALERTS, DRAINING, ENGINE, SETTINGS, TELEMETRY
from driftline.http.problems import Handler, problem_for
from driftline.http.routes import ROUTES
from driftline.lifecycle import stop
from driftline.settings import Settings
from driftline.stores.memory import MemoryWindowStore
from driftline.stores.protocol import WindowStore
from driftline.stores.redis import RedisWindowStore
from driftline.telemetry import Telemetry

log = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 20)


@web.middleware
async def service_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure with a problem document; time every request by route.

    One middleware, not two: each layer costs every request a coroutine frame.
    """
    start = time.perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        response = problem_for(request, exc)
    resource = request.match_info.route.resource
    request.app[TELEMETRY].latency.record(
        resource.canonical if resource is not None else "unmatched",
        request.method,
        response.status,
        time.perf_counter() - start,
    )
    return response


def open_stores(settings: Settings) -> tuple[WindowStore, AlertStore]:
    """Redis when a URL is configured, else the embedded in-process stores."""
    if settings.redis_url:
        window = RedisWindowStore.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout,
            cluster=settings.redis_cluster,
            future_seconds=settings.limits.max_future_seconds,
            idempotency_seconds=settings.idempotency_horizon,
        )
        return window, RedisAlertStore(window.client)
    return (
        MemoryWindowStore(idempotency_seconds=settings.idempotency_horizon),
        MemoryAlertStore(),
    )


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    """Load monitors, open the stores; on shutdown flush pending counts, then close them."""
    settings = app[SETTINGS]
    telemetry = app[TELEMETRY]
    registry = MonitorRegistry(settings)
    await asyncio.to_thread(registry.load)
    store, alerts = open_stores(settings)
    engine = DriftEngine(settings, registry, store, telemetry)
    consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    dispatcher = AlertDispatcher(alerts, registry, settings.alerts, telemetry, consumer)
    observer = SeverityObserver(alerts, telemetry, on_alert=dispatcher.wake)
    engine.subscribe(observer.offer)
    app[ENGINE] = engine
    app[ALERTS] = AlertLog(alerts, settings.alerts)
    stopping = asyncio.Event()
    tasks = [
        asyncio.create_task(registry.watch(stopping), name="monitor-reload"),
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
    await engine.close()
    await observer.close()  # the last flush may have changed a severity
    await stop(tasks, stopping, grace=5.0)
    await store.close()
    log.info("service stopped: pending counts flushed")


def create_app(settings: Settings) -> web.Application:
    """Build the application; resources open in its cleanup context."""
    app = web.Application(
        client_max_size=settings.limits.max_body_bytes,
        middlewares=[service_middleware],
    )
    app[SETTINGS] = settings
    app[TELEMETRY] = Telemetry()
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.append(engine_context)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain: readiness 503, finish requests, flush."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # Requests allocate many short-lived containers: with the default threshold (700)
    # the collector runs every few requests, and every full collection rescans what
    # start-up built (modules, monitors, profiles). Freeze that; collect young objects
    # less often. Reference cycles are rare here, so memory does not grow from it.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening", extra={"host": settings.host, "port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
