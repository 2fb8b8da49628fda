"""Idempotent ingestion over HTTP, on both window stores: a retry with its key counts once.

`Idempotency-Key` on predict, batch, events and columns requests, and a predict's event
`id`: a repeat within the horizon gets the first attempt's counts and
`Idempotent-Replayed: true`; the window does not move. The same key with another body
is refused (422). On Redis it holds across replicas sharing the store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from support import example_settings

from driftline.alerts.memory import MemoryAlertStore
from driftline.http import app as app_module
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.stores.memory import MemoryHistoryStore, MemoryWindowStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"
PROBLEM = "application/problem+json"
REPLAYED = "Idempotent-Replayed"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((EXAMPLES / "baseline_data.json").read_text())
    return loaded[:50]


async def window_events(client: TestClient) -> int:
    body = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    events: int = body["window"]["events"]
    return events


async def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one series of the exposition (0 when absent)."""
    text = await (await client.get("/monitor/metrics")).text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_a_predict_sent_again_with_its_id_counts_once(
    client: TestClient, rows: list[dict[str, Any]]
) -> None:
    payload = {"features": rows[0], "id": "prediction-0001", "model_version": "v1"}
    first = await client.post("/monitor/predict", json=payload)
    assert first.status == 200, await first.text()
    assert REPLAYED not in first.headers
    assert await window_events(client) == 1

    again = await client.post("/monitor/predict", json=payload)
    body = await again.json()
    assert again.status == 200, body
    assert again.headers[REPLAYED] == "true"
    assert body["monitor"] == MONITOR
    assert await window_events(client) == 1
    assert await metric(client, "driftline_idempotent_replays_total", monitor=MONITOR) == 1
    counted = await metric(client, "driftline_events_total", monitor=MONITOR, model_version="v1")
    assert counted == 1

    other = await client.post("/monitor/predict", json={**payload, "features": rows[1]})
    problem = await other.json()
    assert other.status == 422, problem
    assert other.content_type == PROBLEM
    assert problem["type"].endswith("/idempotency-key-reused")
    assert problem["errors"][0]["field"] == "id"
    assert await window_events(client) == 1

    # Another id is another prediction; a header key names the request instead of the id.
    fresh = await client.post("/monitor/predict", json={**payload, "id": "prediction-0002"})
    assert fresh.status == 200
    keyed = await client.post(
        "/monitor/predict", json=payload, headers={"Idempotency-Key": "req-1"}
    )
    assert keyed.status == 200
    assert REPLAYED not in keyed.headers
    assert await window_events(client) == 3


async def test_a_batch_sent_again_with_its_key_gets_the_first_counts(
    client: TestClient, rows: list[dict[str, Any]]
) -> None:
    events = [{"features": row} for row in rows[:10]]
    events.append({"features": {"age": "old"}})  # refused, both times
    events.append({"features": rows[10], "timestamp": "2020-01-01T00:00:00Z"})  # late
    headers = {"Idempotency-Key": "batch-2026-11-23-0001"}
    first = await client.post("/monitor/batch", json={"events": events}, headers=headers)
    first_body = await first.json()
    assert first.status == 200, first_body
    assert (first_body["accepted"], first_body["late"], first_body["rejected"]) == (10, 1, 1)

    again = await client.post("/monitor/batch", json={"events": events}, headers=headers)
    body = await again.json()
    assert again.status == 200, body
    assert again.headers[REPLAYED] == "true"
    assert (body["accepted"], body["late"], body["rejected"]) == (10, 1, 1)
    assert body["errors"] == first_body["errors"]
    assert await window_events(client) == 10

    reused = await client.post("/monitor/batch", json={"events": events[:3]}, headers=headers)
    problem = await reused.json()
    assert reused.status == 422, problem
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert await window_events(client) == 10


async def test_events_and_columns_take_keys(client: TestClient, rows: list[dict[str, Any]]) -> None:
    ndjson = b"\n".join(
        msgspec.json.encode({"features": row, "id": f"e{i}"}) for i, row in enumerate(rows[:5])
    )
    columns = msgspec.msgpack.encode(
        {"columns": {"age": [row["age"] for row in rows[:7]]}, "model_version": "v2"}
    )
    for _ in range(2):
        response = await client.post(
            f"/v1/monitors/{MONITOR}/events",
            data=ndjson,
            headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": "nd-1"},
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == 5
        response = await client.post(
            f"/v1/monitors/{MONITOR}/columns",
            data=columns,
            headers={"Content-Type": "application/msgpack", "Idempotency-Key": "col-1"},
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == 7
    assert response.headers[REPLAYED] == "true"
    assert await window_events(client) == 12
    # Ids inside a batch are the events' own (kept for joining labels); the batch's key,
    # not its ids, makes it idempotent: without a key it counts again.
    response = await client.post(
        f"/v1/monitors/{MONITOR}/events",
        data=ndjson,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert response.status == 200
    assert await window_events(client) == 17


@pytest.mark.parametrize(
    ("key", "message"),
    [("k" * 256, "expected 1 to 255 characters, got 256"), ("tab\there", "printable ASCII")],
)
async def test_a_bad_key_is_refused(
    client: TestClient, rows: list[dict[str, Any]], key: str, message: str
) -> None:
    response = await client.post(
        "/monitor/batch", json={"events": [{"features": rows[0]}]}, headers={"Idempotency-Key": key}
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert message in problem["errors"][0]["message"]
    assert await window_events(client) == 0


@pytest.mark.parametrize("event_id", ["", "x" * 256, 17])
async def test_a_bad_event_id_is_refused(
    client: TestClient, rows: list[dict[str, Any]], event_id: Any
) -> None:
    response = await client.post("/monitor/predict", json={"features": rows[0], "id": event_id})
    problem = await response.json()
    assert response.status == 422, problem
    assert problem["errors"][0]["field"] == "id"
    assert await window_events(client) == 0


async def test_a_retry_on_another_replica_counts_once(
    aiohttp_client: Any, redis_url: str, rows: list[dict[str, Any]]
) -> None:
    a = await aiohttp_client(create_app(example_settings(redis_url)))
    b = await aiohttp_client(create_app(example_settings(redis_url)))
    batch = {"events": [{"features": row} for row in rows[:20]]}
    headers = {"Idempotency-Key": "shared-1"}
    first = await a.post("/monitor/batch", json=batch, headers=headers)
    assert first.status == 200
    again = await b.post("/monitor/batch", json=batch, headers=headers)
    assert again.status == 200
    assert again.headers[REPLAYED] == "true"
    assert (await again.json())["accepted"] == 20
    assert await window_events(a) == await window_events(b) == 20


async def test_openapi_documents_the_key_and_the_replay_header(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    keyed = {
        (path, method)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    }
    assert keyed == {
        ("/monitor/predict", "post"),
        ("/monitor/batch", "post"),
        ("/v1/monitors/{name}/events", "post"),
        ("/v1/monitors/{name}/columns", "post"),
        ("/v1/monitors/{name}/inferences", "post"),
    }
    predict = document["paths"]["/monitor/predict"]["post"]
    assert REPLAYED in predict["responses"]["200"]["headers"]
    event = document["components"]["schemas"]["PredictRequest"]["properties"]["id"]
    assert event["anyOf"][0]["maxLength"] == 255


async def test_keys_past_the_embedded_stores_bound_count_and_are_reported(
    aiohttp_client: Any, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded store keeps at most `max_keys` keys per monitor (memory is bounded);
    # a key past it is counted, not recorded, and the metric says so.
    def small_stores(settings: Settings) -> tuple[Any, ...]:
        return MemoryWindowStore(max_keys=2), MemoryAlertStore(), MemoryHistoryStore()

    monkeypatch.setattr(app_module, "open_stores", small_stores)
    client: TestClient = await aiohttp_client(create_app(example_settings(None)))
    for n in (0, 1, 2, 2):
        payload = {"features": rows[n], "id": f"bounded-{n}"}
        answer = await client.post("/monitor/predict", json=payload)
        assert answer.status == 200, await answer.text()
        assert REPLAYED not in answer.headers  # the third id was never recorded
    assert await window_events(client) == 4
    unrecorded = "driftline_idempotency_keys_unrecorded_total"
    assert await metric(client, unrecorded, monitor=MONITOR) == 2
