"""The client's bounded queue: what waits to be sent, how batches are cut, every event counted.

Callers put one-event rows (dicts) and column blocks (arrays, frames) from any thread;
the sender takes batches off the head: runs of rows for the events route, runs of
blocks with the same columns for the columns route. Capacity is counted in events.
When it is full, `drop_oldest` discards the oldest waiting items and `block` makes the
caller wait for room (a bounded time, then the new events are dropped). Every event
handed to the client ends up in exactly one counter: sent, rejected, dropped or failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger("driftline.client")

Overflow = Literal["drop_oldest", "block"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop_oldest", "block")
# Blocks logged this close together share one request (which carries one timestamp).
MERGE_SECONDS = 1.0
# The same kind of warning is logged at most once per this many seconds.
WARNING_INTERVAL = 30.0


@dataclass(frozen=True, slots=True)
class Row:
    """One event: its features, when it happened (Unix seconds), the model version."""

    features: Mapping[str, Any]
    at: float
    model_version: str | None

    @property
    def events(self) -> int:
        """Events this item holds."""
        return 1


@dataclass(frozen=True, slots=True)
class Block:
    """Events as columns: one 1-D array per name, all of `events` values.

    Numeric columns are float64 (NaN missing); others hold Python objects (None missing).
    A numeric array logged whole is kept as one 2-D array, a row per name.
    """

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...] | np.ndarray
    events: int
    at: float
    model_version: str | None

    def split(self, count: int) -> tuple[Block, Block]:
        """The first `count` events and the rest (views, no copies)."""
        head: tuple[np.ndarray, ...] | np.ndarray
        rest: tuple[np.ndarray, ...] | np.ndarray
        if isinstance(self.columns, np.ndarray):
            head, rest = self.columns[:, :count], self.columns[:, count:]
        else:
            head = tuple(c[:count] for c in self.columns)
            rest = tuple(c[count:] for c in self.columns)
        return (
            Block(self.names, head, count, self.at, self.model_version),
            Block(self.names, rest, self.events - count, self.at, self.model_version),
        )

    def chunks(self, size: int) -> Iterator[Block]:
        """The block in pieces of at most `size` events (views)."""
        rest = self
        while rest.events > size:
            head, rest = rest.split(size)
            yield head
        yield rest

    def joins(self, other: Block) -> bool:
        """Whether `other` can go in the same columns request as this block."""
        return (
            other.names == self.names
            and other.model_version == self.model_version
            and abs(other.at - self.at) <= MERGE_SECONDS
        )


Item = Row | Block


@dataclass(frozen=True, slots=True)
class Batch:
    """What one request carries: rows (events route) or blocks of the same columns."""

    items: list[Row] | list[Block]
    events: int

    @property
    def columnar(self) -> bool:
        """Whether it goes to the columns route."""
        return isinstance(self.items[0], Block)


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Where every event handed to a client stands.

    `logged` = `sent` + `rejected` + `dropped` + `failed` + `pending`, always.
    """

    logged: int  # handed to log() / log_batch()
    sent: int  # acknowledged by the service (counted, or late for the window)
    rejected: int  # refused by the service: values it cannot count (problem in the logs)
    dropped: int  # never sent: queue overflow, unusable input, or logged after close()
    failed: int  # sending gave up: retries exhausted, or the service refused the batch
    pending: int  # queued or being sent
    retries: int  # requests sent again after a failed attempt
    batches: int  # requests the service answered


class Warner:
    """log.warning, each distinct warning at most once every WARNING_INTERVAL seconds."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, kind: str, message: str, *args: object) -> None:
        """Warn unless the same kind and reason (the last argument) was warned about recently."""
        key = (kind, str(args[-1])[:80] if args else "")
        now = time.monotonic()
        if now - self._last.get(key, -WARNING_INTERVAL) >= WARNING_INTERVAL:
            if len(self._last) > 1000:  # reasons that carry values: keep the memory bounded
                self._last.clear()
            self._last[key] = now
            logger.warning(message, *args)


class EventQueue:
    """Bounded FIFO of rows and blocks, counted in events; safe to use from any thread."""

    def __init__(
        self,
        capacity: int,
        overflow: Overflow,
        batch_size: int,
        block_timeout: float,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow: expected one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if capacity < batch_size or batch_size < 1:
            raise ValueError(
                f"capacity ({capacity}) must hold at least one batch (batch_size {batch_size} >= 1)"
            )
        self.capacity = capacity
        self.overflow = overflow
        self.batch_size = batch_size
        self.block_timeout = block_timeout
        self.warn = Warner()
        self._items: deque[Item] = deque()
        self._events = 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._closed = False
        self._signalled = False
        # Set by the client: wakes the sender once a batch is full; tells async callers
        # waiting for room that the sender took some.
        self.on_full: Callable[[], None] = lambda: None
        self.on_room: Callable[[], None] = lambda: None
        self._logged = self._sent = self._rejected = self._dropped = self._failed = 0
        self._in_flight = self._retries = self._batches = 0

    # ---------------------------------------------------------------- callers' side

    def put(self, item: Item, wait: bool = True) -> bool:
        """Queue `item` (at most a batch); False if it did not fit (`block`, wait=False)."""
        wake = False
        with self._lock:
            if self._closed:
                self._logged += item.events
                self._drop_locked(item.events, "closed", "the client is closed")
                return True
            if self._events + item.events > self.capacity and not self._make_room(item, wait):
                if not wait:
                    return False
                self._logged += item.events
                self._drop_locked(item.events, "full", self.full_for)
                return True
            self._logged += item.events
            self._items.append(item)
            self._events += item.events
            if self._events >= self.batch_size and not self._signalled:
                self._signalled = wake = True
        if wake:
            self.on_full()
        return True

    def _make_room(self, item: Item, wait: bool) -> bool:
        """Make room for `item` by the overflow policy (lock held); False if there is none."""
        if self.overflow == "drop_oldest":
            dropped = 0
            while self._events + item.events > self.capacity:
                oldest = self._items.popleft()
                self._events -= oldest.events
                dropped += oldest.events
            self._drop_locked(dropped, "overflow", "the queue is full (overflow=drop_oldest)")
            return True
        if not wait:
            return False
        deadline = time.monotonic() + self.block_timeout
        while self._events + item.events > self.capacity and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._room.wait(remaining)
        return not self._closed

    @property
    def full_for(self) -> str:
        """Why events are dropped under `block`."""
        return f"the queue stayed full for {self.block_timeout} s (overflow=block)"

    def lost(self, events: int, kind: str, why: str) -> None:
        """Count events the client could not take (unusable input, no room), with a warning."""
        with self._lock:
            self._logged += events
            self._drop_locked(events, kind, why)

    def _drop_locked(self, events: int, kind: str, why: str) -> None:
        self._dropped += events
        self.warn(
            f"drop-{kind}",
            "driftline client: dropped %d events (%d so far): %s",
            events,
            self._dropped,
            why,
        )

    # ----------------------------------------------------------------- sender's side

    def take(self, limit: int) -> Batch | None:
        """The next batch from the head: up to `limit` events of one route, or None."""
        with self._lock:
            self._signalled = False
            if not self._items:
                return None
            head = self._items[0]
            if isinstance(head, Row):
                rows: list[Row] = []
                while self._items and len(rows) < limit and isinstance(self._items[0], Row):
                    rows.append(self._items.popleft())  # type: ignore[arg-type]
                batch = Batch(rows, len(rows))
            else:
                batch = self._take_blocks(head, limit)
            self._events -= batch.events
            self._in_flight += batch.events
            if self._events >= self.batch_size:
                self._signalled = True  # the sender comes back for the rest at once
            self._room.notify_all()
        self.on_room()
        return batch

    def _take_blocks(self, first: Block, limit: int) -> Batch:
        blocks: list[Block] = []
        events = 0
        while self._items and events < limit:
            block = self._items[0]
            if not isinstance(block, Block) or not first.joins(block):
                break
            if events + block.events > limit:
                block, rest = block.split(limit - events)
                self._items[0] = rest
            else:
                self._items.popleft()
            blocks.append(block)
            events += block.events
        return Batch(blocks, events)

    def backlog(self) -> int:
        """Events waiting in the queue (not yet taken)."""
        with self._lock:
            return self._events

    def settle(
        self,
        events: int,
        *,
        sent: int = 0,
        rejected: int = 0,
        failed: int = 0,
        answered: bool = True,
    ) -> None:
        """Account for a taken batch of `events`: what the service did with them."""
        with self._lock:
            self._in_flight -= events
            self._sent += sent
            self._rejected += rejected
            self._failed += failed
            self._batches += answered

    def retried(self) -> None:
        """Count one request sent again."""
        with self._lock:
            self._retries += 1

    def close(self) -> int:
        """Refuse new items; drop what still waits (returns how many events)."""
        with self._lock:
            self._closed = True
            waiting = self._events
            self._items.clear()
            self._events = 0
            if waiting:
                self._drop_locked(waiting, "closed", "still queued when the client closed")
            self._room.notify_all()
        self.on_room()
        return waiting

    def stats(self) -> ClientStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            settled = self._sent + self._rejected + self._dropped + self._failed
            return ClientStats(
                logged=self._logged,
                sent=self._sent,
                rejected=self._rejected,
                dropped=self._dropped,
                failed=self._failed,
                pending=self._logged - settled,
                retries=self._retries,
                batches=self._batches,
            )

    def settled_since(self, logged: int) -> bool:
        """Whether every event logged before the counter read `logged` is settled."""
        with self._lock:
            return self._sent + self._rejected + self._dropped + self._failed >= logged

    def logged(self) -> int:
        """Events handed to the client so far."""
        with self._lock:
            return self._logged
