"""The event loop the service runs on: uvloop by default, asyncio's own on request.

uvloop runs asyncio's callbacks, timers, futures and sockets in C (libuv). A replica
creates a future and a timer per flush and switches tasks several times per request,
so the loop's own cost is a visible share of each request: in six interleaved rounds,
uvloop served ~12 % more predict requests per second embedded and ~8 % more with Redis
durable, while the framework app alone did not change (docs/performance.md). asyncio's
loop stays one setting away for platforms without uvloop (Windows) and for ruling the
loop out when debugging.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

EventLoopName = Literal["uvloop", "asyncio"]
DEFAULT_EVENT_LOOP: EventLoopName = "asyncio" if sys.platform == "win32" else "uvloop"

T = TypeVar("T")


def event_loop_problem(name: EventLoopName) -> str | None:
    """Why the named loop cannot run here (uvloop not installed), or None."""
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return (
            'expected "asyncio" where uvloop is not installed (pip install uvloop; '
            'it does not run on Windows), got "uvloop"'
        )
    return None


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """The constructor of the named event loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], name: EventLoopName) -> T:
    """Run `main` to completion on a new loop of the named kind (asyncio.run's contract)."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
