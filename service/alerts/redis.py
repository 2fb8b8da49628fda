"""Alert state shared by every replica through Redis: state hash, outbox, dead letters.

`alert.lua` decides a severity change by compare-and-set and appends it to the
monitor's outbox stream in the same atomic step; delivery workers read the outbox as
the consumer group GROUP. Per-alert delivery states and the acknowledgement sit in a
hash per alert that expires with the history.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError, ResponseError

from driftline.alerts.store import (
    OUTBOX_LENGTH,
    Acknowledgement,
    AlertRecord,
    DeliveryState,
    FlapGuard,
    OutboxEntry,
    deliveries_from,
    entry_from,
    record_from,
    text,
)
from driftline.core.severity import Severity
from driftline.stores.protocol import StoreUnavailableError
from driftline.stores.redis_client import KEY_ROOT, RedisClient, StoredScript

SCRIPT = (
    importlib.resources.files("driftline.alerts").joinpath("alert.lua").read_text(encoding="utf-8")
)
GROUP = "delivery"


def alert_keys(monitor: str) -> tuple[str, str, str, str]:
    """State hash, outbox stream, dead-letter stream and per-alert hash prefix.

    They share the window keys' `{monitor}` hash tag (one Redis Cluster slot per
    monitor) but not their prefix: deleting a monitor's window (DELETE .../window, the
    operator's finalizer) must not take the alert state with it, or the emptied window
    would look `none` already and the firing alert would never be resolved.
    """
    base = f"{KEY_ROOT}:alert:{{{monitor}}}:"
    return base + "state", base + "outbox", base + "dead", base + "a:"


class RedisAlertStore:
    """Alert state shared by every replica through Redis."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._script = StoredScript(client, SCRIPT)
        self._groups: set[str] = set()

    async def transition(
        self, monitor: str, observed: Severity, flap: FlapGuard, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Compare-and-set in one script with the outbox append."""
        state, outbox, _, _ = alert_keys(monitor)
        try:
            current, seq, entry_id, at, started_at, previous = await self._script(
                keys=[state, outbox],
                args=[str(observed), flap.hold, flap.cooldown, snapshot, OUTBOX_LENGTH],
            )
        except RedisError as exc:
            raise StoreUnavailableError(f"alert transition failed: {exc}") from exc
        severity = Severity(text(current))
        if not int(seq):
            return severity, None
        fields = {
            "seq": str(seq),
            "severity": text(current),
            "previous": text(previous),
            "at": text(at),
            "started_at": text(started_at),
            "snapshot": snapshot,
        }
        return severity, entry_from(monitor, entry_id, fields)

    async def _ensure_group(self, monitor: str) -> None:
        if monitor in self._groups:
            return
        _, outbox, _, _ = alert_keys(monitor)
        try:
            # From the start of the stream: alerts written before any worker ran count too.
            await self._client.xgroup_create(outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(monitor)

    async def fetch(
        self, monitors: Sequence[str], consumer: str, *, count: int, stale_after: float | None
    ) -> dict[str, list[OutboxEntry]]:
        """XAUTOCLAIM entries idle past `stale_after` (unless None), then XREADGROUP new ones.

        One pipeline for every monitor: a sweep of a fleet's outboxes used to take two
        round trips per monitor.
        """
        client: Any = self._client  # redis-py's stream reply types are too loose to use
        try:
            for monitor in monitors:
                await self._ensure_group(monitor)
            pipe = client.pipeline(transaction=False)
            for monitor in monitors:
                _, outbox, _, _ = alert_keys(monitor)
                if stale_after is not None:
                    idle = int(stale_after * 1000)
                    pipe.xautoclaim(outbox, GROUP, consumer, idle, "0-0", count=count)
                pipe.xreadgroup(GROUP, consumer, {outbox: ">"}, count=count)
            replies = iter(await pipe.execute())
        except RedisError as exc:
            # A stream may have been deleted with its group: it is made again next time.
            self._groups.difference_update(monitors)
            raise StoreUnavailableError(f"alert outbox read failed: {exc}") from exc
        out: dict[str, list[OutboxEntry]] = {}
        for monitor in monitors:
            rows = []
            if stale_after is not None:
                # Entries deleted (trimmed) while pending come back without fields: skip.
                rows = [row for row in next(replies)[1] if row and row[1]]
            for _, stream_rows in next(replies) or []:
                rows.extend(stream_rows)
            out[monitor] = [entry_from(monitor, i, f) for i, f in rows]
        return out

    async def keep(self, monitor: str, consumer: str, entry_ids: list[str]) -> None:
        """XCLAIM ... JUSTID: the entries stay this consumer's, their idle time resets."""
        if not entry_ids:
            return
        _, outbox, _, _ = alert_keys(monitor)
        try:
            await self._client.xclaim(outbox, GROUP, consumer, 0, list(entry_ids), justid=True)
        except RedisError as exc:
            raise StoreUnavailableError(f"alert outbox claim failed: {exc}") from exc

    async def ack(self, monitor: str, entry_id: str) -> None:
        """XACK."""
        _, outbox, _, _ = alert_keys(monitor)
        try:
            await self._client.xack(outbox, GROUP, entry_id)
        except RedisError as exc:
            raise StoreUnavailableError(f"alert outbox ack failed: {exc}") from exc

    async def record_delivery(
        self, monitor: str, seq: int, receiver: str, state: DeliveryState, ttl: float
    ) -> None:
        """HSET the receiver's state into the alert's hash and refresh its expiry."""
        key = alert_keys(monitor)[3] + str(seq)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, f"r:{receiver}", msgspec.json.encode(state))
                pipe.expire(key, max(int(ttl), 1))
                await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"alert delivery state failed: {exc}") from exc

    async def _alert_hash(self, monitor: str, seq: int) -> dict[Any, Any]:
        client: Any = self._client
        result: dict[Any, Any] = await client.hgetall(alert_keys(monitor)[3] + str(seq))
        return result

    async def deliveries(self, monitor: str, seq: int) -> dict[str, DeliveryState]:
        """Delivery states per receiver."""
        try:
            return deliveries_from(await self._alert_hash(monitor, seq))
        except RedisError as exc:
            raise StoreUnavailableError(f"alert delivery state failed: {exc}") from exc

    async def dead_letter(self, monitor: str, seq: int, receiver: str, reason: str) -> None:
        """XADD to the dead-letter stream."""
        dead = alert_keys(monitor)[2]
        try:
            await self._client.xadd(
                dead,
                {"seq": seq, "receiver": receiver, "reason": reason[:500]},
                maxlen=OUTBOX_LENGTH,
                approximate=True,
            )
        except RedisError as exc:
            raise StoreUnavailableError(f"dead-letter write failed: {exc}") from exc

    async def history(self, monitor: str, count: int) -> list[AlertRecord]:
        """XREVRANGE of the outbox, joined with each alert's hash."""
        _, outbox, _, prefix = alert_keys(monitor)
        client: Any = self._client
        try:
            rows = await client.xrevrange(outbox, count=count)
            entries = [entry_from(monitor, i, f) for i, f in rows]
            async with self._client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.hgetall(prefix + str(entry.seq))
                hashes = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"alert history failed: {exc}") from exc
        return [record_from(entry, fields) for entry, fields in zip(entries, hashes, strict=True)]

    async def acknowledge(
        self, monitor: str, seq: int, ack: Acknowledgement, ttl: float
    ) -> tuple[AlertRecord, bool] | None:
        """HSETNX the acknowledgement when the alert is still in the outbox (the first stays)."""
        key = alert_keys(monitor)[3] + str(seq)
        try:
            for record in await self.history(monitor, OUTBOX_LENGTH):
                if record.entry.seq == seq:
                    async with self._client.pipeline(transaction=False) as pipe:
                        pipe.hsetnx(key, "ack", msgspec.json.encode(ack))
                        pipe.expire(key, max(int(ttl), 1))
                        pipe.hget(key, "ack")
                        first, _, stored = await pipe.execute()
                    record.acknowledgement = msgspec.json.decode(stored, type=Acknowledgement)
                    return record, bool(first)
        except RedisError as exc:
            raise StoreUnavailableError(f"alert acknowledgement failed: {exc}") from exc
        return None

    async def severity(self, monitor: str) -> Severity:
        """HGET of the state's severity."""
        try:
            value = await self._client.hget(alert_keys(monitor)[0], "severity")
        except RedisError as exc:
            raise StoreUnavailableError(f"alert state read failed: {exc}") from exc
        return Severity(text(value)) if value else Severity.NONE
