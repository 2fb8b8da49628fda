"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    message: Callable[[], str] | str,
    *,
    within: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Poll `condition` until it holds; fail with `message` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {within} s: {text}", pytrace=False)
        await asyncio.sleep(interval)
