"""Background loops that stop when asked, not only when cancelled.

redis-py can swallow a task's cancellation when it lands inside a command, so a loop
that only listens for `cancel()` may never end. Every background loop of the service
therefore also watches a `stopping` event and ends at its next pause.
"""

from __future__ import annotations

import asyncio


async def pause(stopping: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Wait `seconds`, or until `stopping` (or `wake`) is set; True when the loop should end."""
    waiters = [asyncio.ensure_future(event.wait()) for event in (stopping, wake) if event]
    try:
        # asyncio.wait, not wait_for: on 3.11 wait_for can lose a cancellation.
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stopping.is_set()


async def stop(tasks: list[asyncio.Task[None]], stopping: asyncio.Event, grace: float) -> None:
    """Ask the loops to end, give them `grace` seconds, then cancel what is left."""
    stopping.set()
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=grace)
