"""Retraining triggers: the exact requests a GitHub, Argo Events and CI receiver get.

The real app on Redis and the embedded store sends them to a real HTTP server on
127.0.0.1 when the example monitor's inputs and predictions drift (docs/retraining.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import MONITOR, wait_until
from test_alerts_dispatch import Endpoint, endpoints, make_settings, write_receivers
from test_predictions import example_events

from driftline.core.receivers import ReceiverConfigError, load_receivers
from driftline.http.app import create_app

__all__ = ["endpoints"]  # the fixture, shared with the dispatch tests

TRIGGER_FIELDS = {
    "alert_id",
    "monitor",
    "model",
    "severity",
    "reasons",
    "drifted_features",
    "drifted_prediction",
    "drift_score",
    "window",
    "created_at",
}


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def check_trigger(trigger: dict[str, Any]) -> None:
    """The trigger of a critical drift of inputs and predictions, field by field."""
    assert set(trigger) == TRIGGER_FIELDS
    assert (trigger["monitor"], trigger["model"]) == (MONITOR, "credit-risk-xgb")
    assert trigger["alert_id"] == f"{MONITOR}:1" and trigger["severity"] == "critical"
    assert trigger["reasons"][0] == "distribution" and trigger["reasons"][-1] == "prediction"
    assert {"age", "credit_score"} <= set(trigger["drifted_features"])
    assert trigger["drifted_prediction"] == ["score"]
    assert trigger["window"]["events"] == 400
    assert set(trigger["window"]) == {"events", "start", "end"}


async def test_each_trigger_gets_its_request_shape(
    aiohttp_client: Any,
    endpoints: Callable[..., Awaitable[Endpoint]],
    tmp_path: Path,
    store_url: str | None,
) -> None:
    ci = await endpoints()
    receivers = [
        {
            "name": "retrain-gha",
            "type": "github",
            "url": ci.url("/repos/acme/credit-model/dispatches"),
            "token": "ghp-test-token",
            "event_type": "retrain-credit-risk",
        },
        {"name": "argo", "type": "argo", "url": ci.url("/argo/retrain")},
        {
            "name": "jenkins",
            "type": "ci",
            "url": ci.url("/ci/trigger"),
            "signing_secret": "s3cret",
            "token": "ci-token",
        },
        # Hears the end of the episode: the triggers above must not.
        {"name": "hook", "type": "webhook", "url": ci.url("/hook")},
    ]
    settings = make_settings(store_url, write_receivers(tmp_path / "alerts", receivers))
    client = await aiohttp_client(create_app(settings))
    response = await client.post("/monitor/batch", json={"events": example_events(400, "high", 4)})
    assert response.status == 200, await response.text()

    def paths() -> list[str]:
        return sorted(r.path for r in ci.requests)

    async def fired() -> bool:
        return len(ci.requests) == 4

    await wait_until(fired, lambda: f"received {paths()}")
    got = {r.path: r for r in ci.requests}

    github = got["/repos/acme/credit-model/dispatches"]
    assert github.headers["Authorization"] == "Bearer ghp-test-token"
    assert github.headers["Accept"] == "application/vnd.github+json"
    assert github.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert github.headers["Content-Type"] == "application/json"
    assert set(github.json) == {"event_type", "client_payload"}
    assert github.json["event_type"] == "retrain-credit-risk"
    check_trigger(github.json["client_payload"])

    argo = got["/argo/retrain"]
    assert "Authorization" not in argo.headers and "X-Driftline-Signature" not in argo.headers
    assert argo.headers["Content-Type"] == "application/json"
    check_trigger(argo.json)
    assert argo.json == github.json["client_payload"]

    jenkins = got["/ci/trigger"]
    assert jenkins.headers["Authorization"] == "Bearer ci-token"
    stamp = jenkins.headers["X-Driftline-Timestamp"]
    mac = hmac.new(b"s3cret", stamp.encode() + b"." + jenkins.body, hashlib.sha256)
    assert jenkins.headers["X-Driftline-Signature"] == "sha256=" + mac.hexdigest()
    assert jenkins.json == argo.json

    # The drift ends: the webhook hears it, the pipelines are not started again.
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204
    response = await client.post(
        "/monitor/batch", json={"events": example_events(200, "baseline", 5)}
    )
    assert response.status == 200 and (await response.json())["drift"]["severity"] == "none"

    async def resolved() -> bool:
        hooks = [json.loads(r.body) for r in ci.requests if r.path == "/hook"]
        return any(h["status"] == "resolved" for h in hooks)

    await wait_until(resolved, lambda: f"received {paths()}")
    assert paths().count("/argo/retrain") == 1 and paths().count("/ci/trigger") == 1


def test_a_github_receiver_needs_a_token(tmp_path: Path) -> None:
    receiver = {
        "name": "gha",
        "type": "github",
        "url": "https://api.github.com/repos/a/b/dispatches",
    }
    write_receivers(tmp_path, [receiver])
    with pytest.raises(ReceiverConfigError, match=r"receivers\[0\]\.token: required for a github"):
        load_receivers(tmp_path)
