"""Where alerts live between the decision and the receivers: the alert store protocol.

A severity change is decided once for all replicas by compare-and-set and written to
the monitor's outbox in the same atomic step. Delivery workers of every replica read
the outbox as one consumer group, so each alert is handled by one replica at a time; an
entry left pending by a replica that died is claimed by another once it has been idle
long enough. Per-alert delivery state (per receiver) and user acknowledgements are kept
with the history.

Two backends with the same behaviour: Redis (driftline.alerts.redis, shared by
replicas) and in-process (driftline.alerts.memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from driftline.core.severity import Severity

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
class FlapGuard:
    """When a severity change may be announced (a monitor's policy)."""

    hold: float  # a new severity must be observed this long before it is announced
    cooldown: float  # the least time between two announcements of the monitor


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
        self, monitor: str, observed: Severity, flap: FlapGuard, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Compare-and-set the monitor's severity; a change is appended to the outbox.

        The change is announced once `observed` has held for `flap.hold` seconds (on
        every offer since) and `flap.cooldown` seconds have passed since the last
        announcement; until then the severity last announced is returned, no entry.
        """
        ...

    async def fetch(
        self, monitors: Sequence[str], consumer: str, *, count: int, stale_after: float | None
    ) -> dict[str, list[OutboxEntry]]:
        """Each monitor's entries for this consumer: a dead one's (idle > stale_after s), then new.

        At most `count` of each per monitor; `stale_after` None: new entries only. One
        round trip for all the monitors.
        """
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
    ) -> tuple[AlertRecord, bool] | None:
        """Record an acknowledgement unless the alert has one: (record, whether it is `ack`).

        The first acknowledgement stays; None when the alert is unknown.
        """
        ...

    async def severity(self, monitor: str) -> Severity:
        """The severity last announced for the monitor."""
        ...


_DELIVERY = msgspec.json.Decoder(DeliveryState)
_ACK = msgspec.json.Decoder(Acknowledgement)


def entry_from(monitor: str, entry_id: Any, raw: Mapping[Any, Any]) -> OutboxEntry:
    """An outbox entry from stream fields (bytes or str keys and values)."""
    fields = {text(k): v for k, v in raw.items()}

    def value_of(name: str) -> str:
        return text(fields[name])

    snapshot = fields["snapshot"]
    return OutboxEntry(
        monitor=monitor,
        entry_id=text(entry_id),
        seq=int(value_of("seq")),
        severity=Severity(value_of("severity")),
        previous=Severity(value_of("previous")),
        at=float(value_of("at")),
        started_at=float(value_of("started_at")),
        snapshot=snapshot if isinstance(snapshot, bytes) else snapshot.encode(),
    )


def text(value: Any) -> str:
    """A stored field as text (Redis replies carry bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def deliveries_from(fields: Mapping[Any, Any]) -> dict[str, DeliveryState]:
    """Delivery states per receiver from an alert's hash fields (`r:<receiver>`)."""
    return {text(k)[2:]: _DELIVERY.decode(v) for k, v in fields.items() if text(k).startswith("r:")}


def record_from(entry: OutboxEntry, fields: Mapping[Any, Any]) -> AlertRecord:
    """An outbox entry joined with its alert's hash fields (deliveries, acknowledgement)."""
    ack = fields.get(b"ack")
    return AlertRecord(entry, deliveries_from(fields), _ACK.decode(ack) if ack else None)
