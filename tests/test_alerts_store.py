"""Alert stores against real parts: transition rules and the outbox, on both backends.

The store tests run on the in-process store and on a real redis-server (the session's,
flushed per test); the cool-down runs on real clocks (Redis decides with its own TIME),
so the tests poll with deadlines instead of assuming how long anything takes.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from support import ALERT_SNAPSHOT as SNAPSHOT
from support import wait_until

from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.redis import GROUP, RedisAlertStore, alert_keys
from driftline.alerts.store import (
    Acknowledgement,
    AlertStore,
    DeliveryState,
    FlapGuard,
    OutboxEntry,
)
from driftline.core.severity import SEVERITY_RANK, Severity
from driftline.stores.redis import RedisWindowStore

NONE, WARNING, CRITICAL = Severity.NONE, Severity.WARNING, Severity.CRITICAL
MONITOR = "credit-risk"


class Stores:
    """A store of one kind, and more handles on the same state (other replicas)."""

    def __init__(self, kind: str, redis_url: str | None) -> None:
        self.kind = kind
        self._url = redis_url
        self._clients: list[redis.asyncio.Redis] = []
        self._memory = MemoryAlertStore()

    def new(self) -> AlertStore:
        """Another replica's view: its own connection to Redis, or the same process store."""
        if self._url is None:
            return self._memory
        client = redis.asyncio.Redis.from_url(self._url)
        self._clients.append(client)
        return RedisAlertStore(client)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    stores = Stores(request.param, url)
    try:
        yield stores
    finally:
        await stores.close()


async def transition(
    store: AlertStore, observed: Severity, hold: float = 0.0, cooldown: float = 0.0
) -> tuple[Severity, OutboxEntry | None]:
    return await store.transition(MONITOR, observed, FlapGuard(hold, cooldown), SNAPSHOT)


async def fetch(
    store: AlertStore, consumer: str, *, count: int, stale_after: float | None
) -> list[OutboxEntry]:
    """MONITOR's outbox entries for `consumer`."""
    found = await store.fetch([MONITOR], consumer, count=count, stale_after=stale_after)
    return found[MONITOR]


async def test_one_fetch_reads_each_monitors_outbox(stores: Stores) -> None:
    """A sweep reads many outboxes in one call; each monitor gets its own entries."""
    store = stores.new()
    at_once = FlapGuard(0, 0)
    names = [f"{MONITOR}-{i}" for i in range(3)]
    entries = {}
    for name, severity in zip(names[:2], (WARNING, CRITICAL), strict=True):
        _, entries[name] = await store.transition(name, severity, at_once, SNAPSHOT)
    found = await store.fetch(names, "a", count=10, stale_after=30)
    assert list(found) == names
    for name in names[:2]:
        (entry,) = found[name]
        assert entry == entries[name] and entry.monitor == name
    assert found[names[2]] == []
    assert await store.fetch(names, "b", count=10, stale_after=None) == {n: [] for n in names}


async def test_every_kind_of_change_is_announced_once_in_order(stores: Stores) -> None:
    store = stores.new()
    assert await store.severity(MONITOR) is NONE
    assert await transition(store, NONE) == (NONE, None)

    steps = [
        (WARNING, NONE),  # none -> warning
        (CRITICAL, WARNING),  # warning -> critical
        (WARNING, CRITICAL),  # critical -> warning
        (NONE, WARNING),  # resolved
        (CRITICAL, NONE),  # straight to critical
        (NONE, CRITICAL),  # straight back to none
    ]
    entries: list[OutboxEntry] = []
    for seq, (observed, previous) in enumerate(steps, start=1):
        severity, entry = await transition(store, observed)
        assert severity is observed
        assert entry is not None, f"no alert for {previous} -> {observed}"
        assert (entry.seq, entry.severity, entry.previous) == (seq, observed, previous)
        assert entry.snapshot == SNAPSHOT
        # The same severity again is no change, and says where the monitor stands.
        assert await transition(store, observed) == (observed, None)
        assert await store.severity(MONITOR) is observed
        entries.append(entry)

    # An episode starts when the monitor leaves `none` and ends when it gets back there.
    first, second = entries[:4], entries[4:]
    assert {e.started_at for e in first} == {first[0].at}
    assert {e.started_at for e in second} == {second[0].at}
    assert second[0].at >= first[-1].at >= first[0].at
    assert abs(first[0].at - time.time()) < 5, "decided-at is not a current Unix time"

    # Written to the outbox in the same step: history holds exactly these entries.
    history = await store.history(MONITOR, 100)
    assert [(r.entry.seq, r.entry.entry_id) for r in history] == [
        (e.seq, e.entry_id) for e in reversed(entries)
    ]
    assert [r.entry.severity for r in history[:2]] == [NONE, CRITICAL]
    assert [(r.entry.seq, r.entry.severity) for r in await store.history(MONITOR, 2)] == [
        (6, NONE),
        (5, CRITICAL),
    ]
    # Other monitors are untouched.
    assert await store.severity("other") is NONE
    assert await store.history("other", 10) == []


async def test_concurrent_replicas_decide_each_change_once(stores: Stores) -> None:
    replicas = [stores.new() for _ in range(8)]

    async def race(observed: Severity) -> list[OutboxEntry]:
        results = await asyncio.gather(
            *(transition(replica, observed) for replica in replicas for _ in range(5))
        )
        assert {severity for severity, _ in results} == {observed}
        return [entry for _, entry in results if entry is not None]

    for observed in (CRITICAL, WARNING, NONE):
        won = await race(observed)
        assert len(won) == 1, f"{len(won)} replicas announced {observed}"
    history = await replicas[0].history(MONITOR, 100)
    assert [(r.entry.seq, r.entry.severity) for r in history] == [
        (3, NONE),
        (2, WARNING),
        (1, CRITICAL),
    ]


async def _announced_after(
    store: AlertStore, observed: Severity, hold: float, cooldown: float
) -> tuple[OutboxEntry, float]:
    """Offer `observed` until it is announced: the entry and how long that took."""
    started = time.monotonic()
    announced: list[OutboxEntry] = []

    async def announces() -> bool:
        _, entry = await transition(store, observed, hold, cooldown)
        if entry is not None:
            announced.append(entry)
        return bool(announced)

    await wait_until(announces, f"{observed} never announced", within=5)
    return announced[0], time.monotonic() - started


async def test_a_blip_is_never_announced_and_a_change_only_once_it_held(stores: Stores) -> None:
    """The flap of the issue: warning at 129 events, back to none 17 ms later: no alert."""
    store = stores.new()
    hold = 0.4
    assert await transition(store, WARNING, hold) == (NONE, None)
    assert await transition(store, NONE, hold) == (NONE, None)  # the blip is over
    assert await transition(store, WARNING, hold) == (NONE, None)  # a new episode: clock anew
    assert await stores.new().history(MONITOR, 10) == []
    # Each offer in between must agree: a different severity restarts the hold.
    entry, took = await _announced_after(store, WARNING, hold, 0.0)
    assert took >= hold - 0.05, f"announced after {took:.3f} s, hold {hold} s"
    assert (entry.seq, entry.severity, entry.previous) == (1, WARNING, NONE)
    # Going down holds as well.
    entry, took = await _announced_after(store, NONE, hold, 0.0)
    assert took >= hold - 0.05 and (entry.severity, entry.previous) == (NONE, WARNING)


async def test_cool_down_is_the_least_time_between_two_announcements(stores: Stores) -> None:
    store = stores.new()
    cooldown = 0.5
    _, up = await transition(store, CRITICAL, 0.0, cooldown)
    announced_at = time.monotonic()
    assert up is not None and up.severity is CRITICAL, "the first change is announced at once"
    # Hovering at the threshold: nothing more within the cool-down, either way.
    for observed in (WARNING, NONE, WARNING):
        assert await transition(store, observed, 0.0, cooldown) == (CRITICAL, None)
    entry, _ = await _announced_after(store, WARNING, 0.0, cooldown)
    waited = time.monotonic() - announced_at
    assert waited >= cooldown - 0.05, (
        f"announced {waited:.3f} s after the last, cool-down {cooldown}"
    )
    assert (entry.seq, entry.severity, entry.previous) == (2, WARNING, CRITICAL)
    assert len(await store.history(MONITOR, 100)) == 2


async def test_without_hold_or_cool_down_a_drop_is_announced_at_once(stores: Stores) -> None:
    store = stores.new()
    await transition(store, CRITICAL)
    severity, entry = await transition(store, NONE)
    assert severity is NONE and entry is not None and entry.previous is CRITICAL


async def test_outbox_group_hands_each_entry_to_one_consumer_and_claims_stale(
    stores: Stores,
) -> None:
    a, b = stores.new(), stores.new()
    _, first = await transition(a, CRITICAL)
    _, second = await transition(a, NONE)
    assert first is not None and second is not None

    fetched = await fetch(a, "a", count=10, stale_after=30)
    assert [e.entry_id for e in fetched] == [first.entry_id, second.entry_id]
    assert fetched[0].seq == 1 and fetched[0].snapshot == SNAPSHOT
    assert await fetch(b, "b", count=10, stale_after=30) == []
    await a.ack(MONITOR, first.entry_id)

    # `second` is left pending by `a`: `b` takes it over once it has been idle long enough,
    # and only when it asks for stale entries (a poll that does not reads new ones only).
    await asyncio.sleep(0.25)
    assert await fetch(b, "b", count=10, stale_after=None) == []
    claimed: list[OutboxEntry] = []

    async def claims() -> bool:
        claimed.extend(await fetch(b, "b", count=10, stale_after=0.2))
        return bool(claimed)

    await wait_until(claims, "b never claimed the entry a left pending")
    assert [e.entry_id for e in claimed] == [second.entry_id]
    assert claimed[0].seq == 2 and claimed[0].previous is CRITICAL
    # Now b's: a finds nothing new or stale (b's claim reset its idle time).
    assert await fetch(a, "a", count=10, stale_after=5) == []
    # `keep` resets the idle time, so a long-running delivery is not taken over.
    await b.keep(MONITOR, "b", [second.entry_id])
    assert await fetch(a, "a", count=10, stale_after=5) == []
    await b.ack(MONITOR, second.entry_id)
    assert await fetch(a, "a", count=10, stale_after=0) == []


async def test_delivery_state_history_and_acknowledgement(stores: Stores) -> None:
    store = stores.new()
    _, entry = await transition(store, WARNING)
    assert entry is not None
    await store.record_delivery(MONITOR, 1, "hook", DeliveryState("failed", 1, "HTTP 500"), 60)
    await store.record_delivery(
        MONITOR, 1, "hook", DeliveryState("delivered", 2, None, 10.0, 10.0), 60
    )
    await store.record_delivery(MONITOR, 1, "am", DeliveryState("dead", 1, "HTTP 404"), 60)
    await store.dead_letter(MONITOR, 1, "am", "HTTP 404")
    assert await store.deliveries(MONITOR, 1) == {
        "hook": DeliveryState("delivered", 2, None, 10.0, 10.0),
        "am": DeliveryState("dead", 1, "HTTP 404"),
    }
    assert await store.deliveries(MONITOR, 2) == {}

    ack = Acknowledgement(by="oncall", at=12.5, comment="looking")
    outcome = await store.acknowledge(MONITOR, 1, ack, 60)
    assert outcome is not None and outcome[1] is True and outcome[0].acknowledgement == ack
    # A second acknowledgement does not replace the first: the store answers with it.
    later = Acknowledgement(by="someone-else", at=13.0, comment="me too")
    outcome = await store.acknowledge(MONITOR, 1, later, 60)
    assert outcome is not None and outcome[1] is False and outcome[0].acknowledgement == ack
    assert await store.acknowledge(MONITOR, 7, ack, 60) is None
    (record,) = await store.history(MONITOR, 10)
    assert record.entry.seq == 1 and record.acknowledgement == ack
    assert record.deliveries["hook"].status == "delivered"
    assert record.deliveries["am"].last_error == "HTTP 404"


async def test_redis_keys_group_dead_letters_and_expiry(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        store = RedisAlertStore(client)
        await transition(store, CRITICAL)
        state, outbox, dead, prefix = alert_keys(MONITOR)
        # All in the monitor's cluster slot.
        assert all("{credit-risk}" in key for key in (state, outbox, dead, prefix))
        assert await client.xlen(outbox) == 1
        assert await fetch(store, "a", count=5, stale_after=30)
        (group,) = await client.xinfo_groups(outbox)
        assert group["name"] == GROUP.encode() and group["pending"] == 1
        await store.record_delivery(MONITOR, 1, "am", DeliveryState("dead", 1, "HTTP 404"), 60)
        await store.dead_letter(MONITOR, 1, "am", "HTTP 404 " + "x" * 1000)
        ((_, fields),) = await client.xrange(dead)
        assert fields[b"seq"] == b"1" and fields[b"receiver"] == b"am"
        assert fields[b"reason"].startswith(b"HTTP 404") and len(fields[b"reason"]) == 500
        assert 0 < await client.ttl(prefix + "1") <= 60
        # A history shorter than a second still keeps the state (EXPIRE 0 would delete it).
        await store.record_delivery(MONITOR, 1, "am", DeliveryState("dead", 1, "HTTP 404"), 0.5)
        assert (await store.deliveries(MONITOR, 1))["am"].status == "dead"
    finally:
        await client.aclose()


async def test_deleting_the_window_keeps_the_alert_state(redis_url: str) -> None:
    """DELETE .../window empties the window; the next evaluation must be able to resolve.

    Were the alert state deleted with the window, the monitor would look `none` already
    and the receivers would never hear that the drift ended.
    """
    windows = RedisWindowStore.from_url(redis_url)
    try:
        store = RedisAlertStore(windows.client)
        await transition(store, CRITICAL)
        await windows.drop(MONITOR)
        assert await store.severity(MONITOR) is CRITICAL
        severity, entry = await transition(store, NONE)
        assert severity is NONE and entry is not None and entry.previous is CRITICAL
    finally:
        await windows.close()


async def test_memory_outbox_trim_keeps_undelivered_entries() -> None:
    store = MemoryAlertStore()
    for i in range(1000):
        await transition(store, CRITICAL if i % 2 == 0 else NONE)
    delivered = await fetch(store, "a", count=600, stale_after=30)
    assert [e.seq for e in delivered] == list(range(1, 601))
    for e in delivered:
        await store.ack(MONITOR, e.entry_id)
    await transition(store, CRITICAL)  # seq 1001 pushes seq 1 out of the bounded outbox
    rest = await fetch(store, "a", count=1000, stale_after=30)
    assert [e.seq for e in rest] == list(range(601, 1002)), "an entry was skipped or repeated"


def test_alert_script_orders_severities_as_the_core_does() -> None:
    # alert.lua cannot import the order; it keeps a copy, which must agree.
    script = importlib.resources.files("driftline.alerts").joinpath("alert.lua").read_text()
    table = re.search(r"local rank = \{([^}]*)\}", script)
    assert table is not None, "alert.lua has no rank table"
    ranks = dict(re.findall(r"(\w+) = (\d+)", table.group(1)))
    assert {name: int(rank) for name, rank in ranks.items()} == dict(SEVERITY_RANK)
