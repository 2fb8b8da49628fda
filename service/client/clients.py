"""The clients: `DriftClient` for any code (a sending thread), `AsyncDriftClient` for asyncio.

Both queue events in memory and return at once; a sender sends them in batches in the
background. Logging never raises into the caller: input that cannot be sent, a full
queue or a closed client are counted (`stats()`) and logged as warnings.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from driftline.client.frames import block_of, row_of
from driftline.client.queue import Block, ClientStats, Item, Overflow
from driftline.client.sender import ClientConfig, Sender

Timestamp = datetime | float | None


class _Client:
    """What both clients share: settings, the queue, turning input into queue items."""

    def __init__(
        self,
        url: str,
        monitor: str,
        *,
        batch_size: int = 1000,
        max_delay: float = 0.5,
        capacity: int = 100_000,
        overflow: Overflow = "drop_oldest",
        block_timeout: float = 1.0,
        timeout: float = 10.0,
        retry_for: float = 120.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.config = ClientConfig(
            url=url,
            monitor=monitor,
            batch_size=batch_size,
            max_delay=max_delay,
            capacity=capacity,
            overflow=overflow,
            block_timeout=block_timeout,
            timeout=timeout,
            retry_for=retry_for,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            headers=dict(headers or {}),
        )
        self._queue = self.config.queue()
        self._sender = Sender(self.config, self._queue)
        self._launch()

    def _launch(self) -> None:
        """Set up the sending side (each client its own way)."""

    def stats(self) -> ClientStats:
        """Where every event handed to this client stands (sent, dropped, failed, ...)."""
        return self._queue.stats()

    def discard(self, why: str, events: int = 1) -> None:
        """Count events that could not be logged as dropped, with a (rate-limited) warning."""
        self._queue.lost(events, "input", why)

    def _parts(self, item: Item) -> Iterator[Item]:
        """What goes into the queue: a big block in batch-sized pieces."""
        if isinstance(item, Block):
            yield from item.chunks(self.config.batch_size)
        else:
            yield item

    def _row(
        self, features: Mapping[str, Any], model_version: str | None, timestamp: Timestamp
    ) -> Item | None:
        try:
            return row_of(features, model_version, timestamp)
        except Exception as exc:  # the caller's request path: count it, never raise
            self.discard(f"log(): {exc}")
            return None

    def _block(
        self,
        data: Any,
        columns: Sequence[str] | None,
        model_version: str | None,
        timestamp: Timestamp,
    ) -> Item | None:
        try:
            return block_of(data, columns, model_version, timestamp)
        except Exception as exc:
            self.discard(f"log_batch(): {exc}", _rows(data))
            return None


def _rows(data: Any) -> int:
    """How many events unusable batch input stood for, as far as can be told."""
    with contextlib.suppress(Exception):
        if hasattr(data, "shape"):
            return int(data.shape[0]) if len(data.shape) > 1 else 1
        if isinstance(data, Mapping) and data:
            return len(next(iter(data.values())))
    return 1


class DriftClient(_Client):
    """Sends events to a driftline service from any thread; a background thread sends.

    `log()` and `log_batch()` queue and return (with `overflow="block"` they wait for
    room, up to `block_timeout`). Close it (or use `with`) to send what is left; at
    interpreter exit an open client flushes for up to its `timeout`.
    """

    def _launch(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._queue.on_full = self._wake
        self._closed = False
        self._close_lock = threading.Lock()
        started = threading.Event()
        self._loop.call_soon(self._sender.start)
        self._loop.call_soon(started.set)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="driftline-client", daemon=True
        )
        self._thread.start()
        started.wait()
        atexit.register(self.close)

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a late caller
            self._loop.call_soon_threadsafe(self._sender.wake)

    def log(
        self,
        features: Mapping[str, Any],
        *,
        model_version: str | None = None,
        timestamp: Timestamp = None,
    ) -> None:
        """Queue one event's features (time: now, unless `timestamp`); never raises."""
        item = self._row(features, model_version, timestamp)
        if item is not None:
            self._queue.put(item)

    def log_batch(
        self,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        model_version: str | None = None,
        timestamp: Timestamp = None,
    ) -> None:
        """Queue many events, sent as packed columns; never raises.

        `data`: a DataFrame, a 2-D array (`columns` names its columns) or a mapping of
        columns (`columns` picks some).
        """
        item = self._block(data, columns, model_version, timestamp)
        for part in self._parts(item) if item is not None else ():
            self._queue.put(part)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything logged so far is sent (or settled); False on timeout."""
        if self._closed:
            return self.stats().pending == 0
        future = asyncio.run_coroutine_threadsafe(self._sender.flush(timeout), self._loop)
        return future.result()

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to `timeout`, then stop the sender; False if events were left."""
        with self._close_lock:
            if self._closed:
                return self.stats().pending == 0
            self._closed = True
        atexit.unregister(self.close)
        future = asyncio.run_coroutine_threadsafe(self._sender.close(timeout), self._loop)
        try:
            return future.result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> DriftClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDriftClient(_Client):
    """Sends events to a driftline service from asyncio code; a task in the same loop sends.

    `await log()` returns at once (with `overflow="block"` it waits for room, up to
    `block_timeout`). Use `async with`, or `await close()` before the loop ends.
    """

    def _launch(self) -> None:
        self._room = asyncio.Event()
        self._queue.on_full = self._sender.wake
        self._queue.on_room = self._room.set
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._sender.start()

    async def _put(self, item: Item) -> None:
        self._start()
        if self._queue.put(item, wait=False):
            return
        try:
            async with asyncio.timeout(self.config.block_timeout):
                while not self._queue.put(item, wait=False):
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            self._queue.lost(item.events, "full", self._queue.full_for)

    async def log(
        self,
        features: Mapping[str, Any],
        *,
        model_version: str | None = None,
        timestamp: Timestamp = None,
    ) -> None:
        """Queue one event's features (time: now, unless `timestamp`); never raises."""
        item = self._row(features, model_version, timestamp)
        if item is not None:
            await self._put(item)

    async def log_batch(
        self,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        model_version: str | None = None,
        timestamp: Timestamp = None,
    ) -> None:
        """Queue many events, sent as packed columns; never raises.

        `data`: a DataFrame, a 2-D array (`columns` names its columns) or a mapping of
        columns (`columns` picks some).
        """
        item = self._block(data, columns, model_version, timestamp)
        for part in self._parts(item) if item is not None else ():
            await self._put(part)

    # A timeout argument, not asyncio.timeout: both clients answer False, never raise.
    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Wait until everything logged so far is sent (or settled); False on timeout."""
        if not self._started:
            return self.stats().pending == 0
        return await self._sender.flush(timeout)

    async def close(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Flush for up to `timeout`, then stop the sender; False if events were left."""
        return await self._sender.close(timeout)

    async def __aenter__(self) -> AsyncDriftClient:
        self._start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
