"""The background sender: batches off the queue, over HTTP, with retries, every event settled.

One batch is in flight at a time, so events arrive in the order they were logged. A
batch leaves when `batch_size` events wait or the oldest has waited `max_delay`
seconds. Connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff and jitter (honouring Retry-After) for up to `retry_for` seconds; each batch
carries one `Idempotency-Key` on every attempt, so a service that records keys counts
a retried batch once. Other refusals are final and logged with the service's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import aiohttp
import msgspec

from driftline.client.queue import OVERFLOW_POLICIES, Batch, EventQueue, Overflow
from driftline.client.wire import (
    JSON_TYPE,
    MSGPACK_TYPE,
    UNENCODABLE,
    BatchAnswer,
    MonitorKinds,
    Problem,
    columns_body,
    events_body,
)

RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class ClientConfig:
    """How a client batches, queues and retries (the clients' keyword arguments)."""

    url: str
    monitor: str
    batch_size: int = 1000
    max_delay: float = 0.5
    capacity: int = 100_000
    overflow: Overflow = "drop_oldest"
    block_timeout: float = 1.0
    timeout: float = 10.0
    retry_for: float = 120.0
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).netloc:
            raise ValueError(f"url: expected http(s)://host[:port], got {self.url!r}")
        if not self.monitor:
            raise ValueError("monitor: expected the name of a monitor of the service")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow: expected one of {OVERFLOW_POLICIES}, got {self.overflow!r}"
            )
        for name in ("max_delay", "block_timeout", "timeout", "retry_for", "backoff_base"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds")

    def route(self, suffix: str) -> str:
        """The URL of one of the monitor's routes."""
        return f"{self.url.rstrip('/')}/v1/monitors/{quote(self.monitor, safe='')}{suffix}"

    def queue(self) -> EventQueue:
        """The bounded queue these settings describe."""
        return EventQueue(self.capacity, self.overflow, self.batch_size, self.block_timeout)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: settled (counts), or to be retried (`retry` says why)."""

    sent: int = 0
    rejected: int = 0
    failed: int = 0
    retry: str | None = None
    retry_after: float = 0.0
    answered: bool = True


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds form; dates are ignored)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


class Sender:
    """Sends a queue's batches to one monitor of a driftline service; runs in one event loop."""

    def __init__(self, config: ClientConfig, queue: EventQueue) -> None:
        self.config = config
        self.queue = queue
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._flushing = 0
        self._kinds: dict[str, str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start sending in the running event loop."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            headers=dict(self.config.headers),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="driftline-sender")

    def wake(self) -> None:
        """A batch is full: send it now (call in the sender's loop)."""
        self._wake.set()

    # A timeout argument, not asyncio.timeout: False on timeout, never an exception.
    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Send everything logged so far; False if some is still pending after `timeout`."""
        target = self.queue.logged()
        self._flushing += 1
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while not self.queue.settled_since(target):
                    await self._progress.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    async def close(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Flush for up to `timeout`, then stop: what is left counts as dropped or failed."""
        flushed = await self.flush(timeout) if self._task is not None else True
        self.queue.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        return flushed

    # ------------------------------------------------------------------- the loop

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when woken."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def _run(self) -> None:
        size = self.config.batch_size
        while True:
            if not self._flushing and self.queue.backlog() < size:
                await self._sleep(self.config.max_delay)
            batch = self.queue.take(size)
            if batch is None:
                self._progressed()
                if self._flushing:
                    await self._sleep(self.config.max_delay)  # nothing to send: do not spin
                continue
            await self._deliver(batch)
            self._progressed()

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is settled: retried within `retry_for` seconds."""
        loop = asyncio.get_running_loop()
        key = uuid.uuid4().hex  # the same on every attempt: a retry is the same batch
        started = loop.time()
        attempt = 0
        outcome = Outcome(failed=batch.events, answered=False)  # if cancelled first
        try:
            while True:
                attempt += 1
                outcome = await self._attempt(batch, key)
                if outcome.retry is None:
                    return
                delay = min(self.config.backoff_cap, self.config.backoff_base * 2 ** (attempt - 1))
                delay = max(delay * random.uniform(0.5, 1.0), outcome.retry_after)
                if loop.time() + delay - started > self.config.retry_for:
                    self.queue.warn(
                        "gave-up",
                        "driftline client: gave up sending %d events to %s after %d attempts "
                        "in %.0f s: %s",
                        batch.events,
                        self.config.url,
                        attempt,
                        loop.time() - started,
                        outcome.retry,
                    )
                    outcome = Outcome(failed=batch.events, answered=False)
                    return
                self.queue.retried()
                outcome = Outcome(failed=batch.events, answered=False)
                await asyncio.sleep(delay)
        finally:
            self.queue.settle(
                batch.events,
                sent=outcome.sent,
                rejected=outcome.rejected,
                failed=outcome.failed,
                answered=outcome.answered,
            )

    # ------------------------------------------------------------------ attempts

    def _unsendable(self, refused: list[str]) -> None:
        """Warn that events were dropped for values that cannot be sent (the first named)."""
        self.queue.warn(
            "unsendable",
            "driftline client: %d events have values that cannot be sent: %s",
            len(refused),
            refused[0],
        )

    async def _attempt(self, batch: Batch, key: str) -> Outcome:
        session = self._session
        assert session is not None  # started
        try:
            if batch.columnar:
                kinds = await self._monitor_kinds(session, batch.events)
                if isinstance(kinds, Outcome):
                    return kinds
                url, content_type = self.config.route("/columns"), MSGPACK_TYPE
                body, refused = columns_body(batch.items, kinds)  # type: ignore[arg-type]
            else:
                url, content_type = self.config.route("/events"), JSON_TYPE
                body, refused = events_body(batch.items)  # type: ignore[arg-type]
        except UNENCODABLE as exc:  # blocks that encode alone but not together
            self._unsendable([str(exc)] * batch.events)
            return Outcome(rejected=batch.events, answered=False)
        if refused:
            self._unsendable(refused)
        if body is None:
            return Outcome(rejected=batch.events, answered=False)
        headers = {"Content-Type": content_type, "Idempotency-Key": key}
        try:
            async with session.post(url, data=body, headers=headers) as response:
                payload = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(retry=f"{type(exc).__name__}: {exc}".rstrip(": "))
        return self._judge(batch, status, payload, retry_after, len(refused))

    def _judge(
        self, batch: Batch, status: int, payload: bytes, retry_after: float, refused: int
    ) -> Outcome:
        """What an answer means for the batch's events."""
        if 200 <= status < 300:
            try:
                answer = msgspec.json.decode(payload, type=BatchAnswer)
            except msgspec.DecodeError:
                return Outcome(sent=batch.events - refused, rejected=refused)
            if answer.rejected:
                first = answer.errors[0] if answer.errors else None
                self.queue.warn(
                    "rejected",
                    "driftline client: the service refused %d of %d events%s",
                    answer.rejected,
                    batch.events,
                    f", e.g. {first.field}: {first.message}" if first else "",
                )
            return Outcome(
                sent=batch.events - refused - answer.rejected, rejected=refused + answer.rejected
            )
        if status in RETRIED_STATUSES or status >= 500:
            return Outcome(retry=f"HTTP {status}", retry_after=retry_after)
        try:
            problem = msgspec.json.decode(payload, type=Problem)
        except msgspec.DecodeError:
            problem = Problem(detail=payload[:200].decode(errors="replace"))
        if status == 422 and problem.type.endswith("/no-valid-events"):
            self.queue.warn(
                "rejected",
                "driftline client: the service refused all %d events of a batch: %s",
                batch.events,
                "; ".join(f"{e.field}: {e.message}" for e in problem.errors[:3]),
            )
            return Outcome(rejected=batch.events)
        if batch.columnar:
            self._kinds = None  # the monitor may have changed: look its features up again
        self.queue.warn(
            f"refused-{status}",
            "driftline client: the service refused a batch of %d events (HTTP %d): %s",
            batch.events,
            status,
            problem.detail,
        )
        return Outcome(failed=batch.events)

    async def _monitor_kinds(
        self, session: aiohttp.ClientSession, events: int
    ) -> dict[str, str] | Outcome:
        """The monitor's feature kinds (looked up once): which columns to send packed."""
        if self._kinds is not None:
            return self._kinds
        try:
            async with session.get(self.config.route("")) as response:
                payload = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(retry=f"{type(exc).__name__}: {exc}".rstrip(": "))
        if status == 200:
            self._kinds = msgspec.json.decode(payload, type=MonitorKinds).kinds()
            return self._kinds
        if status in RETRIED_STATUSES or status >= 500:
            return Outcome(retry=f"HTTP {status}", retry_after=retry_after)
        self.queue.warn(
            f"monitor-{status}",
            "driftline client: monitor %r of %s answered HTTP %d",
            self.config.monitor,
            self.config.url,
            status,
        )
        return Outcome(failed=events)
