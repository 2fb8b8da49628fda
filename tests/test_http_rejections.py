"""Refused requests: counted once in driftline_invalid_events_total, logged at debug."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families
from support import example_monitors

from driftline.http.app import create_app
from driftline.http.problems import ProblemError
from driftline.http.rejections import SUMMARY_SECONDS, Rejections
from driftline.settings import Settings
from driftline.telemetry import Telemetry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    settings = Settings(
        host="127.0.0.1", monitors_dir=str(example_monitors()), flush_interval=0.001
    )
    return await aiohttp_client(create_app(settings))


async def _invalid(client: TestClient) -> dict[tuple[str, str], float]:
    text = await (await client.get("/monitor/metrics")).text()
    return {
        (s.labels["monitor"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "driftline_invalid_events_total"
    }


async def test_every_refused_request_is_counted_once_on_every_route(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    json_type = {"Content-Type": "application/json"}
    with caplog.at_level(logging.DEBUG, logger="driftline.http.rejections"):
        calls = [
            # /monitor/predict: refused before a monitor is known, and by the engine.
            client.post("/monitor/predict", data=b"{", headers=json_type),
            client.post("/monitor/predict", json={"features": []}),
            client.post("/monitor/predict", json={"features": {"age": "old"}}),
            client.post("/monitor/predict", data=b"age=3", headers={"Content-Type": "text/plain"}),
            client.post(f"/v1/monitors/{MONITOR}/columns", json={"columns": {"age": [1], "x": []}}),
            client.get(f"/v1/monitors/{MONITOR}/alerts?limit=\u00b2"),
            client.get("/v1/monitors/nope/drift"),
        ]
        for call in calls:
            response = await call
            assert 400 <= response.status < 500
    counts = await _invalid(client)
    assert counts[("", "malformed_json")] == 1
    assert counts[("", "invalid_request")] == 1
    assert counts[(MONITOR, "invalid_value")] == 1  # by the engine, not again as a request
    assert counts[("", "unsupported_media_type")] == 1
    assert counts[(MONITOR, "ragged_columns")] == 1
    assert counts[(MONITOR, "invalid_query")] == 1
    assert counts[("", "unknown_monitor")] == 1  # never a label per unknown name
    assert sum(counts.values()) == len(calls)
    lines = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert len(lines) == len(calls)
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert {r.route for r in lines} >= {"/monitor/predict", "/v1/monitors/{name}/drift"}


def test_refusals_are_summarised_at_info_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    rejections = Rejections(Telemetry(), clock=lambda: now[0])
    request = make_mocked_request("POST", "/monitor/predict")
    problem = ProblemError(422, "invalid-request", "features: required")
    with caplog.at_level(logging.INFO, logger="driftline.http.rejections"):
        for _ in range(50):
            rejections.record(request, "/monitor/predict", problem)
            now[0] += 0.1  # 50 refusals over 5 s: no summary yet
        now[0] += SUMMARY_SECONDS
        rejections.record(request, "/monitor/predict", problem)
        for _ in range(10):
            rejections.record(request, "/monitor/predict", problem)
    summaries = [r for r in caplog.records if r.getMessage() == "requests refused"]
    assert len(summaries) == 1
    assert summaries[0].refused == 51
