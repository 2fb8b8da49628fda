"""Alert building blocks against real parts: transition rules on both stores, payloads.

The store tests run on the in-process store and on a real redis-server (the session's,
flushed per test); the cool-down runs on real clocks (Redis decides with its own TIME),
so the tests poll with deadlines instead of assuming how long anything takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from support import wait_until

from driftline.alerts.dispatch import backoff
from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.payloads import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertSnapshot,
    AlertWindow,
    DriftedFeature,
    alert_from,
    alertmanager_alerts,
    render_request,
)
from driftline.alerts.redis import GROUP, RedisAlertStore, alert_keys
from driftline.alerts.store import Acknowledgement, AlertStore, DeliveryState, OutboxEntry
from driftline.alerts.targets import VettingResolver, link_local_target
from driftline.core.receivers import Receiver, ReceiverConfigError, load_receivers
from driftline.core.severity import Severity
from driftline.settings import AlertSettings
from driftline.stores.redis import RedisWindowStore

NONE, WARNING, CRITICAL = Severity.NONE, Severity.WARNING, Severity.CRITICAL
MONITOR = "credit-risk"
SNAPSHOT = msgspec.json.encode(
    AlertSnapshot(
        model="credit-risk-xgb",
        drift_score=0.83,
        drifted_features=[
            DriftedFeature("age", 0.83, CRITICAL),
            DriftedFeature("income", 0.31, WARNING),
        ],
        window=AlertWindow(500, "2025-05-29T09:30:00.000Z", "2025-05-29T10:30:00.000Z"),
    )
)


# ------------------------------------------------------------------------- stores


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
    store: AlertStore, observed: Severity, cooldown: float = 0.0
) -> tuple[Severity, OutboxEntry | None]:
    return await store.transition(MONITOR, observed, cooldown, SNAPSHOT)


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


async def test_cool_down_holds_a_lower_severity_until_it_lasted(stores: Stores) -> None:
    store = stores.new()
    cooldown = 0.5
    _, up = await transition(store, CRITICAL, cooldown)
    assert up is not None and up.severity is CRITICAL, "going up is never held"

    # Hovering at the threshold: no flapping.
    for observed in (WARNING, CRITICAL, WARNING, NONE, CRITICAL):
        assert await transition(store, observed, cooldown) == (CRITICAL, None)

    # The score went back up last, so the cool-down starts over from the next drop.
    dropped = time.monotonic()
    assert await transition(store, WARNING, cooldown) == (CRITICAL, None)
    announced: list[OutboxEntry] = []

    async def announces() -> bool:
        _, entry = await transition(store, WARNING, cooldown)
        if entry is not None:
            announced.append(entry)
        return bool(announced)

    await wait_until(announces, "warning never announced after the cool-down", within=5)
    held = time.monotonic() - dropped
    assert held >= cooldown - 0.05, f"announced after {held:.3f} s, cool-down {cooldown} s"
    (entry,) = announced
    assert (entry.seq, entry.severity, entry.previous) == (2, WARNING, CRITICAL)

    # Up again while cooling down: announced at once, and the pending drop is forgotten.
    assert await transition(store, NONE, cooldown) == (WARNING, None)
    _, again = await transition(store, CRITICAL, cooldown)
    assert again is not None and (again.previous, again.severity) == (WARNING, CRITICAL)
    assert await transition(store, WARNING, cooldown) == (CRITICAL, None)
    assert len(await store.history(MONITOR, 100)) == 3


async def test_without_cool_down_a_drop_is_announced_at_once(stores: Stores) -> None:
    store = stores.new()
    await transition(store, CRITICAL, 0.0)
    severity, entry = await transition(store, NONE, 0.0)
    assert severity is NONE and entry is not None and entry.previous is CRITICAL


async def test_outbox_group_hands_each_entry_to_one_consumer_and_claims_stale(
    stores: Stores,
) -> None:
    a, b = stores.new(), stores.new()
    _, first = await transition(a, CRITICAL)
    _, second = await transition(a, NONE)
    assert first is not None and second is not None

    fetched = await a.fetch(MONITOR, "a", count=10, stale_after=30)
    assert [e.entry_id for e in fetched] == [first.entry_id, second.entry_id]
    assert fetched[0].seq == 1 and fetched[0].snapshot == SNAPSHOT
    assert await b.fetch(MONITOR, "b", count=10, stale_after=30) == []
    await a.ack(MONITOR, first.entry_id)

    # `second` is left pending by `a`: `b` takes it over once it has been idle long enough.
    claimed: list[OutboxEntry] = []

    async def claims() -> bool:
        claimed.extend(await b.fetch(MONITOR, "b", count=10, stale_after=0.2))
        return bool(claimed)

    await wait_until(claims, "b never claimed the entry a left pending")
    assert [e.entry_id for e in claimed] == [second.entry_id]
    assert claimed[0].seq == 2 and claimed[0].previous is CRITICAL
    # Now b's: a finds nothing new or stale (b's claim reset its idle time).
    assert await a.fetch(MONITOR, "a", count=10, stale_after=5) == []
    # `keep` resets the idle time, so a long-running delivery is not taken over.
    await b.keep(MONITOR, "b", [second.entry_id])
    assert await a.fetch(MONITOR, "a", count=10, stale_after=5) == []
    await b.ack(MONITOR, second.entry_id)
    assert await a.fetch(MONITOR, "a", count=10, stale_after=0) == []


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
    record = await store.acknowledge(MONITOR, 1, ack, 60)
    assert record is not None and record.acknowledgement == ack
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
        assert await store.fetch(MONITOR, "a", count=5, stale_after=30)
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
    delivered = await store.fetch(MONITOR, "a", count=600, stale_after=30)
    assert [e.seq for e in delivered] == list(range(1, 601))
    for e in delivered:
        await store.ack(MONITOR, e.entry_id)
    await transition(store, CRITICAL)  # seq 1001 pushes seq 1 out of the bounded outbox
    rest = await store.fetch(MONITOR, "a", count=1000, stale_after=30)
    assert [e.seq for e in rest] == list(range(601, 1002)), "an entry was skipped or repeated"


# ----------------------------------------------------------------------- receivers


def write_alerts(directory: Path, name: str, document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    (directory / name).write_text(text)


def test_receivers_load_per_monitor(tmp_path: Path) -> None:
    write_alerts(
        tmp_path,
        "credit-risk.json",
        {
            "receivers": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": "https://hooks.example/x",
                    "signing_secret": "k",
                },
                {
                    "name": "pager",
                    "type": "alertmanager",
                    "url": "http://am:9093",
                    "min_severity": "critical",
                },
            ]
        },
    )
    write_alerts(tmp_path, "fraud.json", {"receivers": []})
    write_alerts(tmp_path, ".hidden.json", "not json")
    write_alerts(tmp_path, "notes.txt", "not json either")
    loaded = load_receivers(tmp_path)
    assert set(loaded) == {"credit-risk", "fraud"}
    hook, pager = loaded["credit-risk"]
    assert (hook.name, hook.type, hook.signing_secret, hook.min_severity) == (
        "hook",
        "webhook",
        "k",
        "warning",
    )
    assert (pager.type, pager.min_severity, pager.signing_secret) == (
        "alertmanager",
        "critical",
        None,
    )
    assert loaded["fraud"] == []


SECRET_URL = "https://hooks.example/T0KEN-abc123"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "malformed"),
        ({"receivers": [{"name": "a", "type": "pager", "url": SECRET_URL}]}, "type"),
        ({"receivers": [{"name": "a", "type": "webhook"}]}, "url"),
        ({"receivers": [{"name": "a", "type": "webhook", "url": "ftp://T0KEN-abc123"}]}, "url"),
        ({"receivers": [{"name": "", "type": "webhook", "url": SECRET_URL}]}, "name"),
        (
            {"receivers": [{"name": "a", "type": "slack", "url": SECRET_URL, "min_severity": "x"}]},
            "min_severity",
        ),
        (
            {"receivers": [{"name": "a", "type": "slack", "url": SECRET_URL, "token": "t"}]},
            "token",
        ),
        (
            {
                "receivers": [
                    {"name": "a", "type": "slack", "url": SECRET_URL},
                    {"name": "a", "type": "webhook", "url": SECRET_URL},
                ]
            },
            "unique",
        ),
        ({"receivers": {"name": "a"}}, "receivers"),
    ],
)
def test_bad_receiver_files_name_file_and_field_not_url(
    tmp_path: Path, document: Any, expected: str
) -> None:
    write_alerts(tmp_path, "credit-risk.json", document)
    with pytest.raises(ReceiverConfigError) as caught:
        load_receivers(tmp_path)
    message = str(caught.value)
    assert message.startswith("credit-risk.json: "), message
    assert expected in message, message
    assert "T0KEN" not in message and "hooks.example" not in message, message


@pytest.mark.parametrize(
    ("min_severity", "previous", "severity", "wanted"),
    [
        ("warning", NONE, WARNING, True),
        ("warning", WARNING, CRITICAL, True),
        ("warning", WARNING, NONE, True),
        ("critical", NONE, WARNING, False),
        ("critical", WARNING, CRITICAL, True),
        ("critical", NONE, CRITICAL, True),
        ("critical", CRITICAL, WARNING, True),  # the end of the critical episode it heard of
        ("critical", CRITICAL, NONE, True),
        ("critical", WARNING, NONE, False),
    ],
)
def test_minimum_severity(
    min_severity: Any, previous: Severity, severity: Severity, wanted: bool
) -> None:
    receiver = Receiver("r", "webhook", "http://127.0.0.1/", min_severity=min_severity)
    assert receiver.wants(severity, previous) is wanted


def make_entry(severity: Severity, previous: Severity, seq: int = 3) -> OutboxEntry:
    at = datetime(2025, 5, 29, 10, 30, 0, 250000, tzinfo=UTC).timestamp()
    return OutboxEntry(MONITOR, f"{seq}-0", seq, severity, previous, at, at - 600, SNAPSHOT)


def test_webhook_payload_is_signed_over_timestamp_and_body() -> None:
    receiver = Receiver("hook", "webhook", "https://h.example/in", signing_secret="s3cret")
    alert = alert_from(make_entry(CRITICAL, WARNING))
    url, body, headers = render_request(receiver, alert, now=1748514600.9, firing_ttl=3600)
    assert url == "https://h.example/in"
    assert headers["Content-Type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == "1748514600"
    expected = hmac.new(b"s3cret", b"1748514600." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers[ALERT_ID_HEADER] == "credit-risk:3"
    payload = json.loads(body)
    assert payload == {
        "id": "credit-risk:3",
        "monitor": MONITOR,
        "model": "credit-risk-xgb",
        "severity": "critical",
        "previous_severity": "warning",
        "status": "firing",
        "drift_score": 0.83,
        "drifted_features": [
            {"name": "age", "score": 0.83, "severity": "critical"},
            {"name": "income", "score": 0.31, "severity": "warning"},
        ],
        "window": {
            "events": 500,
            "start": "2025-05-29T09:30:00.000Z",
            "end": "2025-05-29T10:30:00.000Z",
        },
        "started_at": "2025-05-29T10:20:00.250Z",
        "created_at": "2025-05-29T10:30:00.250Z",
    }
    # Without a secret: timestamped, unsigned. A different body never has the same MAC.
    unsigned = Receiver("hook", "webhook", "https://h.example/in")
    _, _, headers = render_request(unsigned, alert, now=1.0, firing_ttl=3600)
    assert SIGNATURE_HEADER not in headers and headers[TIMESTAMP_HEADER] == "1"
    resolved = alert_from(make_entry(NONE, CRITICAL))
    _, other, signed = render_request(receiver, resolved, now=1748514600.9, firing_ttl=3600)
    assert json.loads(other)["status"] == "resolved"
    assert signed[SIGNATURE_HEADER] != f"sha256={expected}"


def test_slack_message_is_readable() -> None:
    receiver = Receiver("chat", "slack", "https://hooks.slack.example/services/T/B/X")
    _, body, headers = render_request(
        receiver, alert_from(make_entry(CRITICAL, NONE)), now=0, firing_ttl=60
    )
    assert SIGNATURE_HEADER not in headers
    text = json.loads(body)["text"]
    assert "CRITICAL drift on credit-risk" in text and "credit-risk-xgb" in text
    assert "age 0.830 (critical)" in text and "income 0.310 (warning)" in text
    assert "500 events" in text and "`credit-risk:3`" in text
    _, body, _ = render_request(
        receiver, alert_from(make_entry(NONE, WARNING)), now=0, firing_ttl=60
    )
    assert "Drift resolved on credit-risk" in json.loads(body)["text"]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_alertmanager_alerts_resolve_the_old_severity_and_fire_the_new() -> None:
    receiver = Receiver("am", "alertmanager", "http://am.example:9093/")
    created = parse("2025-05-29T10:30:00.250Z")

    def render(severity: Severity, previous: Severity) -> list[dict[str, Any]]:
        url, body, _ = render_request(
            receiver, alert_from(make_entry(severity, previous)), now=0, firing_ttl=3600
        )
        assert url == "http://am.example:9093/api/v2/alerts"
        alerts: list[dict[str, Any]] = json.loads(body)
        for alert in alerts:
            assert alert["labels"]["alertname"] == "DriftlineDrift"
            assert alert["labels"]["monitor"] == MONITOR
            assert alert["labels"]["model"] == "credit-risk-xgb"
            assert alert["annotations"]["alert_id"] == "credit-risk:3"
            assert "age 0.830" in alert["annotations"]["description"]
        return alerts

    (fired,) = render(WARNING, NONE)
    assert fired["labels"]["severity"] == "warning"
    assert parse(fired["startsAt"]) == created
    assert (parse(fired["endsAt"]) - created).total_seconds() == pytest.approx(3600)

    ended, fired = render(CRITICAL, WARNING)
    assert ended["labels"]["severity"] == "warning" and parse(ended["endsAt"]) == created
    assert fired["labels"]["severity"] == "critical" and parse(fired["endsAt"]) > created

    (ended,) = render(NONE, CRITICAL)
    assert ended["labels"]["severity"] == "critical"
    assert parse(ended["endsAt"]) == created  # resolved as of the change
    assert parse(ended["startsAt"]) < created
    assert "resolved" in ended["annotations"]["summary"]


def test_alertmanager_receiver_never_fires_below_its_minimum() -> None:
    """A critical-only Alertmanager hears critical -> warning, never warning -> none.

    A warning alert fired to it there would stay firing until its endsAt (firing_ttl).
    """
    receiver = Receiver("am", "alertmanager", "http://am:9093", min_severity="critical")
    alert = alert_from(make_entry(WARNING, CRITICAL))
    assert receiver.wants(alert.severity, alert.previous_severity)
    _, body, _ = render_request(receiver, alert, now=0, firing_ttl=3600)
    (ended,) = json.loads(body)
    assert ended["labels"]["severity"] == "critical"
    assert parse(ended["endsAt"]) == parse(alert.created_at)
    # Without a minimum the change still fires the warning.
    both = alertmanager_alerts(alert, 3600)
    assert [a["labels"]["severity"] for a in both] == ["critical", "warning"]


# ----------------------------------------------------------------- delivery rules


def test_backoff_is_exponential_capped_and_jittered() -> None:
    settings = AlertSettings(backoff_base=0.5, backoff_cap=30.0)
    random.seed(7)
    for attempt in range(1, 15):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff(attempt, settings) for _ in range(200)]
        assert min(delays) >= ceiling / 2 and max(delays) <= ceiling, attempt
        assert len(set(delays)) > 100, "no jitter"
        assert max(delays) - min(delays) > ceiling / 4, "jitter does not spread the retries"
    assert max(backoff(60, settings) for _ in range(100)) <= 30.0


def test_link_local_targets_are_recognised() -> None:
    assert link_local_target("http://169.254.169.254/latest/meta-data/") == "169.254.169.254"
    assert link_local_target("http://169.254.170.2:80/v2/credentials") == "169.254.170.2"
    assert link_local_target("http://2852039166/") == "169.254.169.254"  # the same, as a number
    assert link_local_target("http://[fe80::a9fe:a9fe]/") is not None
    # Written as an IPv4-mapped IPv6 address, it still reaches the metadata service.
    assert link_local_target("http://[::ffff:169.254.169.254]/latest") is not None
    # Metadata services outside the link-local ranges: AWS over IPv6, Alibaba Cloud.
    assert link_local_target("http://[fd00:ec2::254]/latest/meta-data/") == "fd00:ec2::254"
    assert link_local_target("http://100.100.100.200/latest/meta-data/") == "100.100.100.200"
    assert link_local_target("http://[fd00:ec2::253]/") is None  # its neighbours are not
    assert link_local_target("http://127.0.0.1:9093/") is None
    assert link_local_target("https://localhost/hook") is None
    assert link_local_target("http://10.0.0.1/") is None
    # Hosts nobody can resolve or connect to are not link-local (the POST refuses them).
    assert link_local_target("http://a..b/hook") is None
    assert link_local_target("http://[zz]/hook") is None


class _Zone(AbstractResolver):
    """A DNS zone of fixed answers: the boundary a rebinding attacker controls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_vetting_resolver_keeps_ordinary_addresses_of_real_names() -> None:
    resolver = VettingResolver()
    try:
        found = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert found and all(r["host"] in ("127.0.0.1", "::1") for r in found)


async def test_connections_never_reach_metadata_addresses_a_name_resolves_to() -> None:
    # The URL check resolves a name once; the connection resolves it again. A name that
    # answers a metadata address the second time must not be connected to.
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.host)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    zone = _Zone(
        {
            "receiver.test": ["169.254.169.254", "127.0.0.1"],
            "metadata.test": ["169.254.169.254", "fd00:ec2::254"],
        }
    )
    connector = aiohttp.TCPConnector(resolver=VettingResolver(zone))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"http://receiver.test:{port}/", data=b"{}") as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorError) as refused:
                await session.post(f"http://metadata.test:{port}/", data=b"{}")
            assert "link-local or metadata" in str(refused.value.os_error)
    finally:
        await runner.cleanup()
    assert hits == [f"receiver.test:{port}"]
