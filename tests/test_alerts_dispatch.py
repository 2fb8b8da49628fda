"""Alert delivery end to end: real apps on real sockets, real Redis, real HTTP receivers.

Receivers are aiohttp servers on 127.0.0.1 started by the tests; they record every
request and can fail, hang past the alert timeout, or go down and come back. The
service instances run with small intervals; every wait polls a condition with a
deadline. A test is done when the outbox is settled (every entry acknowledged), after
which no receiver can get anything more, so exact counts can be asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis_process import RedisProcess
from support import example_monitors, small_profile, wait_until

from driftline.alerts.dispatch import AlertDispatcher, backoff
from driftline.alerts.memory import MemoryAlertStore
from driftline.alerts.redis import GROUP, alert_keys
from driftline.core.policy import MonitorDefaults
from driftline.core.profile import load_baseline
from driftline.engine.registry import MonitorRegistry
from driftline.http.app import create_app
from driftline.logs import JsonFormatter
from driftline.settings import AlertSettings, Settings
from driftline.simulate import SCENARIOS, ProfileSampler
from driftline.telemetry import Telemetry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"
ALERT_SETTINGS = {
    "timeout": 0.5,
    "max_attempts": 5,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "claim_idle": 1.0,
    "poll_interval": 0.05,
    "evaluation_interval": 0.2,
}


# ---------------------------------------------------------------------- receivers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """An HTTP receiver on 127.0.0.1 that records what it gets, and misbehaves on demand."""

    port: int = 0
    status: int = 200  # answer once the failures below are used up
    fail_first: int = 0  # answer 500 to the first N requests
    hang: bool = False  # hold requests (longer than the alert timeout) while set
    hang_first: int = 0  # hold the first N requests that way
    location: str | None = None  # answer 307 with this Location
    requests: list[Received] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.time()))
        if self.hang or len(self.requests) <= self.hang_first:
            # Bounded, so a forgotten hang cannot outlive the test.
            await asyncio.wait([asyncio.ensure_future(self._release.wait())], timeout=30)
        if len(self.requests) <= self.fail_first:
            return web.Response(status=500, text="try again")
        if self.location is not None:
            return web.Response(status=307, headers={"Location": self.location})
        return web.Response(status=self.status, text="ok")

    async def start(self) -> None:
        """Listen on `port` (a free one the first time, the same one after a stop)."""
        assert self._runner is None, "already running"
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listening socket and every open connection: the receiver is down."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release = asyncio.Event()

    def unhang(self) -> None:
        self.hang = False
        self._release.set()


@pytest.fixture
async def endpoints() -> AsyncIterator[Callable[..., Awaitable[Endpoint]]]:
    started: list[Endpoint] = []

    async def start(**behaviour: Any) -> Endpoint:
        endpoint = Endpoint(**behaviour)
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    try:
        yield start
    finally:
        for endpoint in started:
            await endpoint.stop()


# ------------------------------------------------------------------------ helpers


def write_receivers(directory: Path, receivers: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MONITOR}.json").write_text(json.dumps({"receivers": receivers}))
    return directory


def make_settings(
    redis_url: str | None,
    alerts_dir: Path,
    monitors_dir: Path | None = None,
    **alerts: Any,
) -> Settings:
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(monitors_dir or example_monitors()),
        redis_url=redis_url,
        alerts_dir=str(alerts_dir),
        flush_interval=0.001,
        alerts=AlertSettings(**{**ALERT_SETTINGS, **alerts}),
        # Announce every change at once (flap protection has its own tests below).
        defaults=MonitorDefaults(alert_hold_seconds=0.0, alert_cooldown_seconds=0.0),
    )


@pytest.fixture(scope="module")
def shifted() -> list[dict[str, Any]]:
    """Events far from the baseline (age +25, income x3): the monitor goes critical."""
    sampler = ProfileSampler(
        load_baseline(EXAMPLES / "baseline_data.json"), np.random.default_rng(3)
    )
    events = sampler.events(400, SCENARIOS["baseline"])
    for event in events:
        event["age"] += 25
        if event["income"] is not None:
            event["income"] *= 3
    return events


async def go_critical(client: TestClient, events: list[dict[str, Any]]) -> None:
    # One request, one flush: the window jumps from empty to critical, never via warning.
    response = await client.post(
        "/monitor/batch", json={"events": [{"features": e} for e in events]}
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["drift"]["severity"] == "critical", body["drift"]


async def empty_window(client: TestClient) -> None:
    response = await client.delete(f"/v1/monitors/{MONITOR}/window")
    assert response.status == 204, await response.text()


async def history(client: TestClient) -> dict[str, Any]:
    response = await client.get(f"/v1/monitors/{MONITOR}/alerts")
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def delivery(client: TestClient, seq: int, receiver: str) -> dict[str, Any]:
    """The receiver's delivery state of alert `seq`, {} while there is none."""
    for view in (await history(client))["alerts"]:
        if view["alert"]["id"] == f"{MONITOR}:{seq}":
            state: dict[str, Any] = view["deliveries"].get(receiver, {})
            return state
    return {}


class Outbox(NamedTuple):
    """The monitor's outbox as the delivery group sees it."""

    length: int  # entries in the stream
    pending: list[dict[str, Any]]  # read by a replica, not acknowledged yet
    # An entry no replica has read yet. XPENDING lists only what a replica has read
    # and not acknowledged: an entry just added is not pending either.
    unread: bool


async def outbox(url: str) -> Outbox:
    """Entries in the monitor's outbox, those pending in the delivery group, and unread ones."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        key = alert_keys(MONITOR)[1]
        length = await client.xlen(key)
        if not length:
            return Outbox(0, [], False)
        newest = (await client.xinfo_stream(key))["last-generated-id"]
        groups = {g["name"]: g for g in await client.xinfo_groups(key)}
        group = groups.get(GROUP.encode())
        if group is None:  # no replica has read the outbox yet: nothing is pending
            return Outbox(length, [], True)
        pending = await client.xpending_range(key, GROUP, "-", "+", 100)
    finally:
        await client.aclose()
    return Outbox(length, pending, group["last-delivered-id"] != newest)


async def settled(url: str, alerts: int) -> None:
    """Wait until the outbox holds `alerts` entries, all read by the group and acknowledged."""
    seen: list[Outbox] = []

    async def done() -> bool:
        state = await outbox(url)
        seen.append(state)
        return state.length == alerts and not state.pending and not state.unread

    await wait_until(
        done,
        lambda: f"outbox {seen[-1:]}, expected {alerts} entries, none pending or unread",
    )


async def dead_letters(url: str) -> dict[str, str]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        rows = await client.xrange(alert_keys(MONITOR)[2])
    finally:
        await client.aclose()
    return {f[b"receiver"].decode(): f[b"reason"].decode() for _, f in rows}


SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


async def metric(client: TestClient, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    text = await (await client.get("/monitor/metrics")).text()
    assert f"# TYPE {name.removesuffix('_count')}" in text, f"{name} not exported"
    total = 0.0
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def verify_signature(request: Received, secret: bytes) -> None:
    """Recompute the webhook's HMAC as a receiver would, and check it is fresh."""
    timestamp = request.headers["X-Driftline-Timestamp"]
    expected = hmac.new(secret, timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert hmac.compare_digest(
        request.headers["X-Driftline-Signature"], "sha256=" + expected.hexdigest()
    ), "signature does not verify"
    assert abs(int(timestamp) - request.at) < 5
    forged = hmac.new(b"wrong", timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert request.headers["X-Driftline-Signature"] != "sha256=" + forged.hexdigest()


# -------------------------------------------------------------------------- tests


async def test_two_instances_deliver_one_signed_alert_per_transition_and_resolve(
    aiohttp_client: Any,
    redis_url: str,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
) -> None:
    hook, chat, am = await endpoints(), await endpoints(), await endpoints()
    secret = "whsec-5e3f1d0c9b8a"
    alerts_dir = write_receivers(
        tmp_path / "alerts",
        [
            {
                "name": "hook",
                "type": "webhook",
                "url": hook.url("/in/T0KEN"),
                "signing_secret": secret,
            },
            {"name": "chat", "type": "slack", "url": chat.url("/services/T/B/X")},
            {
                "name": "pager",
                "type": "alertmanager",
                "url": am.url("/"),
                "min_severity": "critical",
            },
        ],
    )
    settings = make_settings(redis_url, alerts_dir)
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))

    await go_critical(a, shifted)
    # Both replicas see the change at the same moment: still one alert.
    reports = await asyncio.gather(
        *(c.get(f"/v1/monitors/{MONITOR}/drift") for c in (a, b) for _ in range(5))
    )
    assert {(await r.json())["severity"] for r in reports} == {"critical"}
    await settled(redis_url, 1)

    await empty_window(a)  # both evaluate on their timers and race to resolve
    await settled(redis_url, 2)

    # Exactly one alert per transition, per receiver.
    for endpoint in (hook, chat, am):
        assert len(endpoint.requests) == 2, [r.body for r in endpoint.requests]
    fired, resolved = (r.json for r in hook.requests)
    assert [r.path for r in hook.requests] == ["/in/T0KEN"] * 2
    for request in hook.requests:
        verify_signature(request, secret.encode())
        assert request.headers["X-Driftline-Alert-Id"] == request.json["id"]

    assert fired["id"] == f"{MONITOR}:1" and resolved["id"] == f"{MONITOR}:2"
    assert (fired["severity"], fired["previous_severity"], fired["status"]) == (
        "critical",
        "none",
        "firing",
    )
    assert fired["monitor"] == MONITOR and fired["model"] == "credit-risk-xgb"
    assert fired["drift_score"] >= 0.5
    scores = {f["name"]: f["score"] for f in fired["drifted_features"]}
    assert {"age", "income"} <= set(scores) and scores["age"] >= 0.5
    assert fired["window"]["events"] == len(shifted)
    assert abs(parse_time(fired["created_at"]) - time.time()) < 30
    assert (resolved["severity"], resolved["previous_severity"], resolved["status"]) == (
        "none",
        "critical",
        "resolved",
    )
    assert resolved["started_at"] == fired["started_at"] == fired["created_at"]
    assert resolved["window"]["events"] == 0

    firing_text, resolved_text = (r.json["text"] for r in chat.requests)
    assert "CRITICAL drift on credit-risk" in firing_text and "age" in firing_text
    assert "resolved" in resolved_text and f"`{MONITOR}:2`" in resolved_text

    assert [r.path for r in am.requests] == ["/api/v2/alerts"] * 2
    (am_fired,), (am_resolved,) = (r.json for r in am.requests)
    assert (
        am_fired["labels"]
        == am_resolved["labels"]
        == {
            "alertname": "DriftlineDrift",
            "monitor": MONITOR,
            "model": "credit-risk-xgb",
            "severity": "critical",
        }
    )
    assert parse_time(am_fired["endsAt"]) > time.time() + 3600  # firing_ttl is a day
    assert parse_time(am_resolved["endsAt"]) <= time.time()  # resolved
    assert parse_time(am_resolved["startsAt"]) <= parse_time(am_resolved["endsAt"])

    # The history, from either replica: newest first, delivery state per receiver.
    for client in (a, b):
        body = await history(client)
        assert body["severity"] == "none"
        assert [v["alert"]["id"] for v in body["alerts"]] == [f"{MONITOR}:2", f"{MONITOR}:1"]
        for view in body["alerts"]:
            assert set(view["deliveries"]) == {"hook", "chat", "pager"}
            assert {d["status"] for d in view["deliveries"].values()} == {"delivered"}
            assert {d["attempts"] for d in view["deliveries"].values()} == {1}
            assert view["acknowledgement"] is None
            # Times are ISO 8601 like every other answer (not Unix seconds).
            for delivery in view["deliveries"].values():
                sent = datetime.fromisoformat(delivery["delivered_at"])
                assert sent.tzinfo is not None and delivery["delivered_at"].endswith("Z")
                assert delivery["updated_at"].endswith("Z")

    # Acknowledge on one replica, see it on the other.
    response = await a.post(
        f"/v1/monitors/{MONITOR}/alerts/{MONITOR}:1/ack", json={"by": "oncall", "comment": "ok"}
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["acknowledgement"]["by"] == "oncall"
    assert datetime.fromisoformat(body["acknowledgement"]["at"]).tzinfo is not None
    assert (await history(b))["alerts"][1]["acknowledgement"]["comment"] == "ok"
    json_type = {"Content-Type": "application/json"}
    response = await b.post(f"/v1/monitors/{MONITOR}/alerts/2/ack", headers=json_type)
    assert response.status == 200 and (await response.json())["acknowledgement"]["by"]
    # The first acknowledgement stays: a second one, on either replica, answers 409 with it.
    response = await b.post(
        f"/v1/monitors/{MONITOR}/alerts/{MONITOR}:1/ack", json={"by": "late", "comment": "x"}
    )
    conflict = await response.json(content_type=None)
    assert response.status == 409 and response.content_type == "application/problem+json"
    assert conflict["alert"]["acknowledgement"]["by"] == "oncall"
    assert conflict["errors"][0]["field"] == "alert_id"
    assert (await history(a))["alerts"][1]["acknowledgement"]["comment"] == "ok"
    # A form (what a cross-site page can post without asking) or no Content-Type: 415.
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {}):
        response = await a.post(
            f"/v1/monitors/{MONITOR}/alerts/2/ack",
            data=b"by=mallory",
            headers=headers,
            skip_auto_headers=["Content-Type"],
        )
        assert response.status == 415, headers
    for bad in (f"{MONITOR}:9", "other:1", "x", "\u00b2", "1" * 5000):
        response = await a.post(f"/v1/monitors/{MONITOR}/alerts/{bad}/ack", headers=json_type)
        assert response.status == 404, bad
    for limit in ("0", "\u00b2", "1" * 5000, "-1"):
        assert (await a.get(f"/v1/monitors/{MONITOR}/alerts?limit={limit}")).status == 400
    assert (await a.get("/v1/monitors/nope/alerts")).status == 404

    # Each transition decided once, each delivery made once, across both replicas.
    transitions = [await metric(c, "driftline_alert_transitions_total") for c in (a, b)]
    assert sum(transitions) == 2, transitions
    sent = [await metric(c, "driftline_alerts_sent_total") for c in (a, b)]
    assert sum(sent) == 6, sent
    latency = [await metric(c, "driftline_alert_delivery_seconds_count") for c in (a, b)]
    assert sum(latency) == 6, latency


async def test_failures_retry_time_out_and_dead_letter_without_leaking_secrets(
    aiohttp_client: Any,
    redis_url: str,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    flaky = await endpoints(fail_first=2)
    slow = await endpoints(hang_first=1)
    gone = await endpoints(status=404)
    broken = await endpoints(status=503)
    trap = await endpoints()
    moved = await endpoints(location=trap.url("/trap"))
    token = "T0KEN-8c1f2e9d7a6b"
    secret = "whsec-0a9b8c7d6e5f"
    receivers = {
        "flaky": flaky.url(f"/hooks/{token}/flaky"),
        "slow": slow.url(f"/hooks/{token}/slow"),
        "gone": gone.url(f"/hooks/{token}/gone"),
        "broken": broken.url(f"/hooks/{token}/broken"),
        "moved": moved.url(f"/hooks/{token}/moved"),
        "metadata": f"http://169.254.169.254/latest/meta-data/{token}",
        "mangled": f"http://{token}..example/hooks/x",  # not a valid host name
    }
    alerts_dir = write_receivers(
        tmp_path / "alerts",
        [
            {"name": name, "type": "webhook", "url": url, "signing_secret": secret}
            for name, url in receivers.items()
        ],
    )
    client = await aiohttp_client(
        create_app(make_settings(redis_url, alerts_dir, max_attempts=4, allow_link_local=False))
    )

    await go_critical(client, shifted)
    await settled(redis_url, 1)

    states = {name: await delivery(client, 1, name) for name in receivers}
    summary = {n: (s["status"], s["attempts"], s["last_error"]) for n, s in states.items()}
    assert summary == {
        "flaky": ("delivered", 3, None),
        "slow": ("delivered", 2, None),
        "gone": ("dead", 1, "HTTP 404"),  # a client error other than 408/425/429: final
        "broken": ("dead", 4, "HTTP 503"),  # max_attempts
        "moved": ("dead", 4, "HTTP 307"),  # redirects are not followed
        "metadata": ("dead", 1, "refused: target resolves to link-local address 169.254.169.254"),
        "mangled": ("dead", 1, "refused: invalid URL (UnicodeError)"),
    }
    assert len(flaky.requests) == 3 and len(slow.requests) == 2
    assert len(gone.requests) == 1 and len(broken.requests) == 4 and len(moved.requests) == 4
    assert trap.requests == [], "a redirect was followed"
    assert {r.json["id"] for r in flaky.requests + slow.requests} == {f"{MONITOR}:1"}
    # The first POST to `slow` hung and was given up after the timeout (0.5 s).
    assert slow.requests[1].at - slow.requests[0].at >= 0.5
    # Exponential backoff with jitter: the k-th retry waits in [c/2, c], c = base * 2^(k-1).
    gaps = np.diff([r.at for r in broken.requests])
    for k, gap in enumerate(gaps, start=1):
        ceiling = min(0.2, 0.05 * 2 ** (k - 1))
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.4, (k, list(gaps))
    # A retry is signed afresh and still verifies.
    for request in flaky.requests:
        verify_signature(request, secret.encode())

    assert await dead_letters(redis_url) == {
        name: states[name]["last_error"]
        for name in ("gone", "broken", "moved", "metadata", "mangled")
    }

    def count(name: str, receiver: str | None = None) -> Awaitable[float]:
        return metric(client, name, **({"receiver": receiver} if receiver else {}))

    assert await count("driftline_alerts_sent_total", "flaky") == 1
    assert await count("driftline_alerts_sent_total") == 2
    assert await count("driftline_alerts_failed_total", "flaky") == 2
    assert await count("driftline_alerts_retried_total", "flaky") == 2
    assert await count("driftline_alerts_failed_total", "broken") == 4
    assert await count("driftline_alerts_retried_total", "broken") == 3
    assert await count("driftline_alerts_failed_total", "slow") == 1
    assert await count("driftline_alerts_dead_lettered_total") == 5
    assert await count("driftline_alerts_dead_lettered_total", "metadata") == 1
    assert await count("driftline_alert_delivery_seconds_count", "slow") == 1

    # Logs name receivers, never their URLs or keys.
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    dead = [line for line in lines if "alert dead-lettered" in line]
    assert len(dead) == 5, dead
    assert any('"receiver":"broken"' in line for line in dead), dead
    leaks = [
        line
        for line in lines
        for needle in (
            token,
            secret,
            "/hooks/",
            "meta-data",
            f":{flaky.port}",
            f":{gone.port}",
        )
        if needle in line
    ]
    assert not leaks, leaks


async def test_receiver_that_is_down_gets_the_alert_when_it_comes_back(
    aiohttp_client: Any,
    redis_url: str,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
) -> None:
    hook = await endpoints()
    alerts_dir = write_receivers(
        tmp_path / "alerts", [{"name": "hook", "type": "webhook", "url": hook.url("/in")}]
    )
    client = await aiohttp_client(create_app(make_settings(redis_url, alerts_dir, max_attempts=60)))
    await hook.stop()

    await go_critical(client, shifted)
    state: dict[str, Any] = {}

    async def retried_while_down() -> bool:
        state.update(await delivery(client, 1, "hook"))
        return state.get("attempts", 0) >= 3

    await wait_until(retried_while_down, lambda: f"no retries while down: {state}")
    assert state["status"] == "failed" and state["last_error"] == "ClientConnectorError"
    assert hook.requests == []

    await hook.start()  # the same port again
    await settled(redis_url, 1)
    (request,) = hook.requests
    assert request.json["id"] == f"{MONITOR}:1" and request.json["severity"] == "critical"
    final = await delivery(client, 1, "hook")
    assert final["status"] == "delivered" and final["attempts"] > state["attempts"]


async def test_alert_left_by_a_stopped_instance_is_claimed_and_delivered_by_another(
    aiohttp_client: Any,
    redis_url: str,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
) -> None:
    hook = await endpoints(hang=True)  # hangs past the timeout while instance A holds the entry
    chat = await endpoints(fail_first=2)  # delivered by A (third attempt) before it stops
    alerts_dir = write_receivers(
        tmp_path / "alerts",
        [
            {"name": "hook", "type": "webhook", "url": hook.url("/in")},
            {"name": "chat", "type": "slack", "url": chat.url("/services/x")},
        ],
    )
    settings = make_settings(redis_url, alerts_dir, max_attempts=100)
    a = await aiohttp_client(create_app(settings))
    await go_critical(a, shifted)

    async def held_by_a() -> bool:
        return len(hook.requests) >= 1 and len(chat.requests) == 3

    await wait_until(held_by_a, "instance A never started delivering")
    pending = (await outbox(redis_url)).pending
    (entry,) = pending
    holder = entry["consumer"]

    b = await aiohttp_client(create_app(settings))

    # A alive keeps its claim: B does not take the entry over while A retries past
    # claim_idle (each attempt hangs for the whole timeout).
    async def retried_past_claim_idle() -> bool:
        return len(hook.requests) >= 4

    await wait_until(retried_past_claim_idle, "instance A stopped retrying")
    assert hook.requests[-1].at - hook.requests[0].at > settings.alerts.claim_idle
    pending = (await outbox(redis_url)).pending
    assert [p["consumer"] for p in pending] == [holder], "taken over from a live instance"

    await a.close()  # stopped mid-delivery: the entry stays pending, owned by A
    pending = (await outbox(redis_url)).pending
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry["message_id"], holder)]
    hook.unhang()

    await settled(redis_url, 1)
    assert {r.json["id"] for r in hook.requests} == {f"{MONITOR}:1"}
    assert {r.headers["X-Driftline-Alert-Id"] for r in hook.requests} == {f"{MONITOR}:1"}
    assert len(chat.requests) == 3, "B posted again to a receiver A had already served"
    assert await metric(b, "driftline_alerts_sent_total", receiver="hook") == 1
    assert await metric(b, "driftline_alerts_sent_total", receiver="chat") == 0
    state = await delivery(b, 1, "hook")
    assert state["status"] == "delivered" and state["attempts"] >= 2


async def test_embedded_store_delivers_and_resolves_once_none_held(
    aiohttp_client: Any,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
) -> None:
    monitors = tmp_path / "monitors"
    monitors.mkdir()
    config = (example_monitors() / "credit-risk.yaml").read_text()
    (monitors / "credit-risk.yaml").write_text(config + "alert_hold_seconds: 1.0\n")
    hook = await endpoints()
    alerts_dir = write_receivers(
        tmp_path / "alerts",
        [
            {"name": "hook", "type": "webhook", "url": hook.url("/in")},
            # Allowed explicitly: tried like any target (an unscoped IPv6 link-local
            # address cannot be connected to, so nothing is ever reached).
            {"name": "near", "type": "webhook", "url": "http://[fe80::a9fe:a9fe]:9/x"},
        ],
    )
    settings = make_settings(None, alerts_dir, monitors, allow_link_local=True, max_attempts=1)
    client = await aiohttp_client(create_app(settings))

    await go_critical(client, shifted)

    async def received(n: int) -> bool:
        return len(hook.requests) >= n

    await wait_until(lambda: received(1), "no alert from the embedded store")
    emptied = time.time()
    await empty_window(client)
    await wait_until(lambda: received(2), "the monitor never resolved", within=10)
    # Resolved by the evaluation timer (no traffic), once `none` had held for 1 s.
    assert hook.requests[1].at - emptied >= 1.0
    assert [(r.json["id"], r.json["status"]) for r in hook.requests] == [
        (f"{MONITOR}:1", "firing"),
        (f"{MONITOR}:2", "resolved"),
    ]

    async def both_delivered() -> bool:
        views = (await history(client))["alerts"]
        return [v["deliveries"].get("hook", {}).get("status") for v in views] == ["delivered"] * 2

    await wait_until(both_delivered, "delivery states not recorded")
    body = await history(client)
    assert body["severity"] == "none"
    assert len(hook.requests) == 2
    near = body["alerts"][1]["deliveries"]["near"]
    assert near["status"] == "dead" and near["attempts"] == 1
    assert not near["last_error"].startswith("refused"), near


# ------------------------------------------------------------------ Redis outage


async def test_alert_pending_through_a_redis_restart_is_delivered(
    aiohttp_client: Any,
    own_redis: RedisProcess,
    tmp_path: Path,
    endpoints: Callable[..., Awaitable[Endpoint]],
    shifted: list[dict[str, Any]],
) -> None:
    hook = await endpoints(status=503)
    alerts_dir = write_receivers(
        tmp_path / "alerts", [{"name": "hook", "type": "webhook", "url": hook.url("/in")}]
    )
    settings = msgspec.structs.replace(
        make_settings(own_redis.url, alerts_dir, max_attempts=100), redis_timeout=0.5
    )
    client = await aiohttp_client(create_app(settings))
    await go_critical(client, shifted)

    async def retrying() -> bool:
        return len(hook.requests) >= 2

    await wait_until(retrying, "no delivery attempts")
    hook.hang = True  # the attempt in flight ends (timeout) while Redis is down
    own_redis.stop()

    async def outage_seen() -> bool:
        interrupted = await metric(
            client, "driftline_store_errors_total", operation="alert_delivery"
        )
        polls = await metric(client, "driftline_store_errors_total", operation="alert_fetch")
        return interrupted >= 1 and polls >= 1

    # The delivery could not record its attempt: it gave the entry up, pending in Redis.
    await wait_until(outage_seen, "the dispatcher never noticed Redis was gone")
    hook.status = 200
    hook.unhang()
    own_redis.start()
    # Taken up again once idle for claim_idle (its PEL entry survived the restart).

    await settled(own_redis.url, 1)
    delivered = [r for r in hook.requests if r.json["id"] == f"{MONITOR}:1"]
    assert len(delivered) == len(hook.requests) >= 3
    state = await delivery(client, 1, "hook")
    assert state["status"] == "delivered", state
    assert await metric(client, "driftline_alerts_sent_total", receiver="hook") == 1


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


async def test_a_poll_reads_the_outboxes_written_to_and_sweeps_all_when_due(
    tmp_path: Path,
) -> None:
    """The replica that writes an alert reads its outbox at once; every outbox (with the
    stale entries) is read once per poll_interval, not on every poll."""
    profile = msgspec.to_builtins(small_profile())
    names = ["m1", "m2", "m3"]
    for name in names:
        config = {"name": name, "baseline": profile}
        (tmp_path / f"{name}.json").write_bytes(msgspec.json.encode(config))
    registry = MonitorRegistry(Settings(monitors_dir=str(tmp_path)))
    registry.load()
    store = MemoryAlertStore()
    fetched: list[tuple[tuple[str, ...], float | None]] = []
    fetch = store.fetch

    async def counted(monitors: list[str], consumer: str, **kwargs: Any) -> Any:
        fetched.append((tuple(monitors), kwargs["stale_after"]))
        return await fetch(monitors, consumer, **kwargs)

    store.fetch = counted  # type: ignore[method-assign]
    settings = AlertSettings(poll_interval=0.3, claim_idle=1.0)
    dispatcher = AlertDispatcher(store, registry, settings, Telemetry(), "replica-a")

    await dispatcher.poll()  # the first poll sweeps: new and stale entries of every outbox
    assert fetched == [(tuple(names), 1.0)]  # in one call
    fetched.clear()
    await dispatcher.poll()  # nothing written, no sweep due: no round trip at all
    assert fetched == []
    dispatcher.wake("m2")
    await dispatcher.poll()  # this replica wrote to m2: its new entries only
    assert fetched == [(("m2",), None)]
    fetched.clear()
    await asyncio.sleep(settings.poll_interval)
    await dispatcher.poll()
    assert fetched == [(tuple(names), 1.0)]
