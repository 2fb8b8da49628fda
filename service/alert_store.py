"""Where alerts live between the decision and the receivers: state, outbox, deliveries.

A severity change is decided once for all replicas by compare-and-set and written to
the monitor's outbox stream in the same atomic step (`alert.lua`). Delivery workers of
every replica read the outbox as one consumer group, so each alert is handled by one
replica at a time; an entry left pending by a replica that died is claimed by another
once it has been idle long enough. Per-alert delivery state (per receiver) and user
acknowledgements sit in a hash per alert that expires with the history.

Two backends with the same behaviour: Redis (shared by replicas) and in-process.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec
from redis.exceptions import RedisError, ResponseError

from driftline.core.severity import Severity
from driftline.stores.protocol import StoreUnavailableError
from driftline.stores.redis_client import KEY_ROOT, RedisClient

SCRIPT = importlib.resources.files("driftline").joinpath("alert.lua").read_text(encoding="utf-8")
GROUP = "delivery"
OUTBOX_LENGTH = 1000  # alerts kept per monitor (history and pending delivery)

DeliveryStatus = Literal["pending", "delivered", "failed", "dead", "skipped"]


class DeliveryState(msgspec.Struct, frozen=True):
    """Where one receiver stands with one alert."""

    status: DeliveryStatus
    attempts: int = 0
    last_error: str | None = None
    updated_at: float = 0.0
    delivered_at: float | None = None


class Acknowledgement(msgspec.Struct, frozen=True):
    """A person saying "seen" about an alert."""

    by: str
    at: float
    comment: str = ""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One severity change, as written to the outbox."""

    monitor: str
    entry_id: str
    seq: int
    severity: Severity
    previous: Severity
    at: float
    started_at: float
    snapshot: bytes


@dataclass(slots=True)
class AlertRecord:
    """An outbox entry with its delivery states and acknowledgement (for the history API)."""

    entry: OutboxEntry
    deliveries: dict[str, DeliveryState] = field(default_factory=dict)
    acknowledgement: Acknowledgement | None = None


class AlertStore(Protocol):
    """Backend of alert state, outbox and delivery bookkeeping."""

    async def transition(
        self, monitor: str, observed: Severity, cooldown: float, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Compare-and-set the monitor's severity; a change is appended to the outbox."""
        ...

    async def fetch(
        self, monitor: str, consumer: str, *, count: int, stale_after: float
    ) -> list[OutboxEntry]:
        """Entries for this consumer: left by a dead one (idle > stale_after s), then new."""
        ...

    async def keep(self, monitor: str, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer still works on."""
        ...

    async def ack(self, monitor: str, entry_id: str) -> None:
        """Mark an entry done for the group."""
        ...

    async def record_delivery(
        self, monitor: str, seq: int, receiver: str, state: DeliveryState, ttl: float
    ) -> None:
        """Store a receiver's delivery state for an alert."""
        ...

    async def deliveries(self, monitor: str, seq: int) -> dict[str, DeliveryState]:
        """Delivery states of an alert per receiver."""
        ...

    async def dead_letter(self, monitor: str, seq: int, receiver: str, reason: str) -> None:
        """Append a delivery given up on to the monitor's dead-letter stream."""
        ...

    async def history(self, monitor: str, count: int) -> list[AlertRecord]:
        """Latest alerts first, with delivery states and acknowledgements."""
        ...

    async def acknowledge(
        self, monitor: str, seq: int, ack: Acknowledgement, ttl: float
    ) -> AlertRecord | None:
        """Record an acknowledgement; None when the alert is unknown."""
        ...

    async def severity(self, monitor: str) -> Severity:
        """The severity last announced for the monitor."""
        ...


_DELIVERY = msgspec.json.Decoder(DeliveryState)
_ACK = msgspec.json.Decoder(Acknowledgement)


def _entry(monitor: str, entry_id: Any, raw: Mapping[Any, Any]) -> OutboxEntry:
    """An outbox entry from stream fields (bytes or str keys and values)."""
    fields = {_text(k): v for k, v in raw.items()}

    def text(name: str) -> str:
        return _text(fields[name])

    snapshot = fields["snapshot"]
    return OutboxEntry(
        monitor=monitor,
        entry_id=_text(entry_id),
        seq=int(text("seq")),
        severity=Severity(text("severity")),
        previous=Severity(text("previous")),
        at=float(text("at")),
        started_at=float(text("started_at")),
        snapshot=snapshot if isinstance(snapshot, bytes) else snapshot.encode(),
    )


# ---------------------------------------------------------------------- Redis


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
        self._script = client.register_script(SCRIPT)
        self._groups: set[str] = set()

    async def transition(
        self, monitor: str, observed: Severity, cooldown: float, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Compare-and-set in one script with the outbox append."""
        state, outbox, _, _ = alert_keys(monitor)
        try:
            current, seq, entry_id, at, started_at, previous = await self._script(
                keys=[state, outbox], args=[str(observed), cooldown, snapshot, OUTBOX_LENGTH]
            )
        except RedisError as exc:
            raise StoreUnavailableError(f"alert transition failed: {exc}") from exc
        severity = Severity(_text(current))
        if not int(seq):
            return severity, None
        fields = {
            "seq": str(seq),
            "severity": _text(current),
            "previous": _text(previous),
            "at": _text(at),
            "started_at": _text(started_at),
            "snapshot": snapshot,
        }
        return severity, _entry(monitor, entry_id, fields)

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
        self, monitor: str, consumer: str, *, count: int, stale_after: float
    ) -> list[OutboxEntry]:
        """XAUTOCLAIM entries idle past `stale_after`, then XREADGROUP new ones."""
        _, outbox, _, _ = alert_keys(monitor)
        client: Any = self._client  # redis-py's stream reply types are too loose to use
        try:
            await self._ensure_group(monitor)
            claimed = await client.xautoclaim(
                outbox, GROUP, consumer, int(stale_after * 1000), "0-0", count=count
            )
            # Entries deleted (trimmed) while pending come back without fields: skip them.
            rows = [row for row in claimed[1] if row and row[1]]
            fresh = await client.xreadgroup(GROUP, consumer, {outbox: ">"}, count=count)
            for _, stream_rows in fresh or []:
                rows.extend(stream_rows)
        except RedisError as exc:
            self._groups.discard(monitor)  # the stream may have been deleted with its group
            raise StoreUnavailableError(f"alert outbox read failed: {exc}") from exc
        return [_entry(monitor, i, f) for i, f in rows]

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
            return _deliveries(await self._alert_hash(monitor, seq))
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
            entries = [_entry(monitor, i, f) for i, f in rows]
            async with self._client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.hgetall(prefix + str(entry.seq))
                hashes = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"alert history failed: {exc}") from exc
        return [_record(entry, fields) for entry, fields in zip(entries, hashes, strict=True)]

    async def acknowledge(
        self, monitor: str, seq: int, ack: Acknowledgement, ttl: float
    ) -> AlertRecord | None:
        """HSET the acknowledgement when the alert is still in the outbox."""
        prefix = alert_keys(monitor)[3]
        try:
            for record in await self.history(monitor, OUTBOX_LENGTH):
                if record.entry.seq == seq:
                    async with self._client.pipeline(transaction=False) as pipe:
                        pipe.hset(prefix + str(seq), "ack", msgspec.json.encode(ack))
                        pipe.expire(prefix + str(seq), max(int(ttl), 1))
                        await pipe.execute()
                    record.acknowledgement = ack
                    return record
        except RedisError as exc:
            raise StoreUnavailableError(f"alert acknowledgement failed: {exc}") from exc
        return None

    async def severity(self, monitor: str) -> Severity:
        """HGET of the state's severity."""
        try:
            value = await self._client.hget(alert_keys(monitor)[0], "severity")
        except RedisError as exc:
            raise StoreUnavailableError(f"alert state read failed: {exc}") from exc
        return Severity(_text(value)) if value else Severity.NONE


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _deliveries(fields: Mapping[Any, Any]) -> dict[str, DeliveryState]:
    return {
        _text(k)[2:]: _DELIVERY.decode(v) for k, v in fields.items() if _text(k).startswith("r:")
    }


def _record(entry: OutboxEntry, fields: Mapping[Any, Any]) -> AlertRecord:
    ack = fields.get(b"ack")
    return AlertRecord(entry, _deliveries(fields), _ACK.decode(ack) if ack else None)


# ----------------------------------------------------------------- in-process


@dataclass(slots=True)
class _Monitor:
    severity: Severity = Severity.NONE
    seq: int = 0
    started_at: float = 0.0
    lower_since: float | None = None
    entries: list[OutboxEntry] = field(default_factory=list)
    delivered_up_to: int = 0  # entries handed to consumers (index into entries)
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> consumer, since
    alerts: dict[int, dict[bytes, bytes]] = field(default_factory=dict)


class MemoryAlertStore:
    """The same semantics in one process (the embedded default: one replica)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._monitors: dict[str, _Monitor] = {}

    def _get(self, monitor: str) -> _Monitor:
        return self._monitors.setdefault(monitor, _Monitor())

    async def transition(
        self, monitor: str, observed: Severity, cooldown: float, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Same rule as alert.lua: up at once, down after the cool-down."""
        state = self._get(monitor)
        now = self._clock()
        if observed is state.severity:
            state.lower_since = None
            return state.severity, None
        if observed.rank < state.severity.rank and cooldown > 0:
            if state.lower_since is None:
                state.lower_since = now
                return state.severity, None
            if now - state.lower_since < cooldown:
                return state.severity, None
        state.seq += 1
        if state.severity is Severity.NONE or not state.started_at:
            state.started_at = now
        entry = OutboxEntry(
            monitor=monitor,
            entry_id=f"{int(now * 1000)}-{state.seq}",
            seq=state.seq,
            severity=observed,
            previous=state.severity,
            at=now,
            started_at=state.started_at,
            snapshot=snapshot,
        )
        state.severity, state.lower_since = observed, None
        state.entries.append(entry)
        trimmed = max(len(state.entries) - OUTBOX_LENGTH, 0)
        del state.entries[:trimmed]
        # An index into the entries: shift it with them, so no undelivered one is skipped.
        state.delivered_up_to = max(state.delivered_up_to - trimmed, 0)
        return observed, entry

    async def fetch(
        self, monitor: str, consumer: str, *, count: int, stale_after: float
    ) -> list[OutboxEntry]:
        """Stale pending entries first, then entries no consumer has seen."""
        state = self._get(monitor)
        now = self._clock()
        by_id = {e.entry_id: e for e in state.entries}
        out: list[OutboxEntry] = []
        for entry_id, (_, since) in list(state.pending.items()):
            if len(out) < count and now - since >= stale_after and entry_id in by_id:
                state.pending[entry_id] = (consumer, now)
                out.append(by_id[entry_id])
        while len(out) < count and state.delivered_up_to < len(state.entries):
            entry = state.entries[state.delivered_up_to]
            state.delivered_up_to += 1
            state.pending[entry.entry_id] = (consumer, now)
            out.append(entry)
        return out

    async def keep(self, monitor: str, consumer: str, entry_ids: list[str]) -> None:
        """Reset idle times."""
        state = self._get(monitor)
        for entry_id in entry_ids:
            if entry_id in state.pending:
                state.pending[entry_id] = (consumer, self._clock())

    async def ack(self, monitor: str, entry_id: str) -> None:
        """Drop from pending."""
        self._get(monitor).pending.pop(entry_id, None)

    async def record_delivery(
        self, monitor: str, seq: int, receiver: str, state: DeliveryState, ttl: float
    ) -> None:
        """Store the state (history is bounded by the outbox length here, not by ttl)."""
        alerts = self._get(monitor).alerts
        alerts.setdefault(seq, {})[f"r:{receiver}".encode()] = msgspec.json.encode(state)

    async def deliveries(self, monitor: str, seq: int) -> dict[str, DeliveryState]:
        """States per receiver."""
        return _deliveries(self._get(monitor).alerts.get(seq, {}))

    async def dead_letter(self, monitor: str, seq: int, receiver: str, reason: str) -> None:
        """Nothing more to keep in-process: the alert's delivery state already says `dead`."""

    async def history(self, monitor: str, count: int) -> list[AlertRecord]:
        """Latest first."""
        state = self._get(monitor)
        return [
            _record(entry, state.alerts.get(entry.seq, {}))
            for entry in reversed(state.entries[-count:])
        ]

    async def acknowledge(
        self, monitor: str, seq: int, ack: Acknowledgement, ttl: float
    ) -> AlertRecord | None:
        """Store the acknowledgement of a known alert."""
        state = self._get(monitor)
        for entry in state.entries:
            if entry.seq == seq:
                state.alerts.setdefault(seq, {})[b"ack"] = msgspec.json.encode(ack)
                return _record(entry, state.alerts[seq])
        return None

    async def severity(self, monitor: str) -> Severity:
        """Last announced severity."""
        return self._get(monitor).severity
