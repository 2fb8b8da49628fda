"""Alert delivery: from a monitor's outbox to its receivers, at least once.

Every replica runs an `AlertDispatcher`. It reads the outbox streams as one consumer
group, posts each alert to the receivers that want it (with timeouts, retries with
exponential backoff and jitter), records each receiver's state, and acknowledges the
entry once every receiver is done. Entries a dead replica left pending are claimed by
another after `claim_idle` seconds; receivers already served are not posted again, so
a receiver sees an alert twice only when a replica died between its POST and the
record of it — the alert id lets receivers drop such a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time

import aiohttp

from driftline.alerts.payloads import Alert, alert_from, render_request
from driftline.alerts.store import AlertStore, DeliveryState, OutboxEntry
from driftline.core.monitor import Monitor
from driftline.core.receivers import Receiver
from driftline.engine.registry import MonitorRegistry
from driftline.lifecycle import pause
from driftline.settings import AlertSettings
from driftline.stores.protocol import StoreUnavailableError
from driftline.targets import VettingResolver, link_local_target
from driftline.telemetry import Telemetry, label_value

log = logging.getLogger(__name__)

# A client error other than these will not heal by retrying the same request.
RETRYABLE_4XX = frozenset({408, 425, 429})


FETCH_BATCH = 128
"""Outboxes read per store call (one Redis pipeline): a sweep reads every monitor's."""


def backoff(attempt: int, settings: AlertSettings) -> float:
    """Delay before retry `attempt` (1-based): exponential, capped, half of it jittered."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class AlertDispatcher:
    """Delivers the alerts of every loaded monitor; one per replica."""

    def __init__(
        self,
        store: AlertStore,
        registry: MonitorRegistry,
        settings: AlertSettings,
        telemetry: Telemetry,
        consumer: str,
    ) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings
        self._telemetry = telemetry
        self._consumer = consumer
        self._wake = asyncio.Event()
        self._woken: set[str] = set()  # monitors this replica just wrote an alert for
        self._swept = -math.inf  # when a poll last read every outbox
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def wake(self, monitor: str) -> None:
        """Read the monitor's outbox now: this replica just wrote an alert to it."""
        self._woken.add(monitor)
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll the outboxes until `stopping`; deliveries in flight are then abandoned.

        An abandoned entry stays pending in the group: another replica (or this one
        after a restart) takes it over after claim_idle, and receivers already served
        are not posted again.
        """
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        connector = (
            None
            if self._settings.allow_link_local
            else aiohttp.TCPConnector(resolver=VettingResolver())
        )
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                while not stopping.is_set():
                    # Cleared first: an alert written while the poll runs wakes the next.
                    self._wake.clear()
                    await self.poll()
                    due = self._swept + self._settings.poll_interval - time.monotonic()
                    await pause(stopping, max(due, 0.0), self._wake)
            finally:
                for task in list(self._inflight.values()):
                    task.cancel()
                if self._inflight:
                    await asyncio.wait(list(self._inflight.values()), timeout=1.0)

    async def poll(self) -> None:
        """Fetch new entries where this replica wrote; all and stale ones when a sweep is due.

        Their deliveries start at once. The replica that writes an alert reads it at once;
        every outbox is swept every `poll_interval` only for the alerts of a replica that
        stopped before delivering them (never read, or pending past claim_idle): a round
        trip per monitor and second was most of an idle fleet replica's CPU.
        """
        now = time.monotonic()
        sweep = now - self._swept >= self._settings.poll_interval
        if sweep:
            self._swept = now
        woken, self._woken = self._woken, set()
        monitors = {m.name: m for m in self._registry if sweep or m.name in woken}
        names = list(monitors)
        for start in range(0, len(names), FETCH_BATCH):
            try:
                found = await self._store.fetch(
                    names[start : start + FETCH_BATCH],
                    self._consumer,
                    count=50,
                    stale_after=self._settings.claim_idle if sweep else None,
                )
            except StoreUnavailableError as exc:
                self._telemetry.store_errors.inc({"operation": "alert_fetch"})
                log.warning("alert outbox unavailable", extra={"error": str(exc)})
                return
            for name, entries in found.items():
                for entry in entries:
                    if entry.entry_id not in self._inflight:
                        task = asyncio.create_task(self._deliver(monitors[name], entry))
                        self._inflight[entry.entry_id] = task

    async def _keep_claimed(self, monitor: str, entry_id: str) -> None:
        # While retries back off, tell the group the entry is still ours, so no other
        # replica takes it over and posts it a second time.
        while True:
            await asyncio.sleep(self._settings.claim_idle / 3)
            with contextlib.suppress(StoreUnavailableError):
                await self._store.keep(monitor, self._consumer, [entry_id])

    async def _deliver(self, monitor: Monitor, entry: OutboxEntry) -> None:
        keeper = asyncio.create_task(self._keep_claimed(monitor.name, entry.entry_id))
        try:
            alert = alert_from(entry)
            states = await self._store.deliveries(monitor.name, entry.seq)
            targets = [
                receiver
                for receiver in self._registry.receivers(monitor.name)
                if receiver.wants(alert.severity, alert.previous_severity)
                and states.get(receiver.name, DeliveryState("pending")).status
                not in ("delivered", "dead")
            ]
            await asyncio.gather(
                *(self._send(monitor, entry, alert, r, states.get(r.name)) for r in targets)
            )
            await self._store.ack(monitor.name, entry.entry_id)
        except StoreUnavailableError as exc:
            # Left pending: this or another replica takes it up again after claim_idle.
            self._telemetry.store_errors.inc({"operation": "alert_delivery"})
            log.warning(
                "alert delivery interrupted",
                extra={"monitor": monitor.name, "alert": entry.seq, "error": str(exc)},
            )
        finally:
            keeper.cancel()
            del self._inflight[entry.entry_id]

    async def _record(
        self, monitor: Monitor, entry: OutboxEntry, receiver: Receiver, state: DeliveryState
    ) -> None:
        await self._store.record_delivery(
            monitor.name, entry.seq, receiver.name, state, self._settings.history_seconds
        )

    async def _post(self, receiver: Receiver, alert: Alert) -> tuple[int | None, str]:
        """POST once; returns (HTTP status or None, an error text that names no URL)."""
        assert self._session is not None
        if not self._settings.allow_link_local:
            address = await asyncio.to_thread(link_local_target, receiver.url)
            if address is not None:
                return 0, f"refused: target resolves to link-local address {address}"
        url, body, headers = render_request(
            receiver, alert, now=time.time(), firing_ttl=self._settings.firing_ttl
        )
        try:
            # No redirects: a 3xx to a link-local address would get round the check above.
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return response.status, f"HTTP {response.status}"
        except (aiohttp.InvalidURL, ValueError) as exc:
            # A URL aiohttp cannot use (bad IDNA label, bad IP literal) will not heal.
            return 0, f"refused: invalid URL ({type(exc).__name__})"
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception text can carry the URL (a secret): report its kind only.
            return None, type(exc).__name__

    async def _send(
        self,
        monitor: Monitor,
        entry: OutboxEntry,
        alert: Alert,
        receiver: Receiver,
        previous: DeliveryState | None,
    ) -> None:
        labels = {
            "monitor": monitor.name,
            "receiver": label_value(receiver.name),
            "type": receiver.type,
        }
        attempt = previous.attempts if previous else 0
        while True:
            attempt += 1
            status, error = await self._post(receiver, alert)
            now = time.time()
            if status is not None and 200 <= status < 300:
                await self._record(
                    monitor, entry, receiver, DeliveryState("delivered", attempt, None, now, now)
                )
                self._telemetry.alerts_sent.inc(labels)
                self._telemetry.alert_latency.add(labels, max(now - entry.at, 0.0))
                return
            self._telemetry.alerts_failed.inc(labels)
            permanent = status == 0 or (
                status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX
            )
            if permanent or attempt >= self._settings.max_attempts:
                await self._record(
                    monitor, entry, receiver, DeliveryState("dead", attempt, error, now)
                )
                await self._store.dead_letter(monitor.name, entry.seq, receiver.name, error)
                self._telemetry.alerts_dead.inc(labels)
                log.error(
                    "alert dead-lettered",
                    extra={**labels, "alert": alert.id, "attempts": attempt, "error": error},
                )
                return
            await self._record(
                monitor, entry, receiver, DeliveryState("failed", attempt, error, now)
            )
            self._telemetry.alerts_retried.inc(labels)
            await asyncio.sleep(backoff(attempt, self._settings))
