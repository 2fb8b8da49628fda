"""The framework limit: a minimal aiohttp app doing only what every request must do.

It decodes the same payload (the original API's shape) with msgspec (the same field
types the service validates) and answers a small JSON, on the same aiohttp server set-up
as `driftline serve` (AppRunner, no access log, one process, the same garbage collector
settings, the same event loop: uvloop unless `--event-loop asyncio`). Its requests/s is
the ceiling the service is measured against.

    python -m bench.framework_app --host 127.0.0.1 --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from datetime import datetime
from typing import Any, get_args

import msgspec
from aiohttp import web

from driftline import eventloop
from driftline.eventloop import DEFAULT_EVENT_LOOP, EventLoopName
from driftline.http.app import GC_THRESHOLDS


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The original API's payload, as the service's `PredictRequest` declares it."""

    features: dict[str, Any]
    model_version: str | None = None
    timestamp: datetime | None = None
    monitor: str | None = None


class Answer(msgspec.Struct, frozen=True):
    """A small answer."""

    ok: bool
    features: int


_DECODER = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()


async def predict(request: web.Request) -> web.Response:
    """Decode the payload and answer."""
    try:
        event = _DECODER.decode(await request.read())
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        return web.Response(status=422, text=str(exc))
    return web.Response(
        body=_ENCODER.encode(Answer(True, len(event.features))), content_type="application/json"
    )


async def health(request: web.Request) -> web.Response:
    """Readiness probe for the harness."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    app = web.Application()
    app.router.add_post("/monitor/predict", predict)
    app.router.add_get("/monitor/health", health)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # The same collector set-up as `driftline serve`, so the ratio measures the work.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--event-loop", choices=get_args(EventLoopName), default=DEFAULT_EVENT_LOOP)
    args = parser.parse_args()
    eventloop.run(serve(args.host, args.port), args.event_loop)


if __name__ == "__main__":
    main()
