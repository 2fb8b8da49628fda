"""Alert state in one process: the embedded default's alert store (one replica).

The same rules as the Redis store (alert.lua's compare-and-set, the consumer group's
hand-out and claiming); alerts pending at exit are lost with the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from driftline.alerts.store import (
    OUTBOX_LENGTH,
    Acknowledgement,
    AlertRecord,
    DeliveryState,
    FlapGuard,
    OutboxEntry,
    deliveries_from,
    record_from,
)
from driftline.core.severity import Severity


@dataclass(slots=True)
class _Monitor:
    severity: Severity = Severity.NONE
    seq: int = 0
    started_at: float = 0.0
    candidate: Severity | None = None  # observed, not yet announced
    candidate_since: float = 0.0
    changed_at: float | None = None  # the last announcement
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
        self, monitor: str, observed: Severity, flap: FlapGuard, snapshot: bytes
    ) -> tuple[Severity, OutboxEntry | None]:
        """Same rule as alert.lua: announced once held for `hold`, `cooldown` after the last."""
        state = self._get(monitor)
        now = self._clock()
        if observed is state.severity:
            state.candidate = None
            return state.severity, None
        if state.candidate is not observed:
            state.candidate, state.candidate_since = observed, now
        if now - state.candidate_since < flap.hold:
            return state.severity, None
        if state.changed_at is not None and now - state.changed_at < flap.cooldown:
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
        state.severity, state.candidate, state.changed_at = observed, None, now
        state.entries.append(entry)
        trimmed = max(len(state.entries) - OUTBOX_LENGTH, 0)
        del state.entries[:trimmed]
        # An index into the entries: shift it with them, so no undelivered one is skipped.
        state.delivered_up_to = max(state.delivered_up_to - trimmed, 0)
        return observed, entry

    async def fetch(
        self, monitors: Sequence[str], consumer: str, *, count: int, stale_after: float | None
    ) -> dict[str, list[OutboxEntry]]:
        """Per monitor: stale pending entries first (unless `stale_after` is None), then unseen."""
        return {m: self._fetch(m, consumer, count, stale_after) for m in monitors}

    def _fetch(
        self, monitor: str, consumer: str, count: int, stale_after: float | None
    ) -> list[OutboxEntry]:
        state = self._get(monitor)
        now = self._clock()
        by_id = {e.entry_id: e for e in state.entries}
        out: list[OutboxEntry] = []
        if stale_after is not None:
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
        return deliveries_from(self._get(monitor).alerts.get(seq, {}))

    async def dead_letter(self, monitor: str, seq: int, receiver: str, reason: str) -> None:
        """Nothing more to keep in-process: the alert's delivery state already says `dead`."""

    async def history(self, monitor: str, count: int) -> list[AlertRecord]:
        """Latest first."""
        state = self._get(monitor)
        return [
            record_from(entry, state.alerts.get(entry.seq, {}))
            for entry in reversed(state.entries[-count:])
        ]

    async def acknowledge(
        self, monitor: str, seq: int, ack: Acknowledgement, ttl: float
    ) -> tuple[AlertRecord, bool] | None:
        """Store the acknowledgement of a known alert unless it has one."""
        state = self._get(monitor)
        for entry in state.entries:
            if entry.seq == seq:
                fields = state.alerts.setdefault(seq, {})
                first = b"ack" not in fields
                if first:
                    fields[b"ack"] = msgspec.json.encode(ack)
                return record_from(entry, fields), first
        return None

    async def severity(self, monitor: str) -> Severity:
        """Last announced severity."""
        return self._get(monitor).severity
