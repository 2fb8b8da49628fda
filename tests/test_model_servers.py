"""Model servers: KServe's logger CloudEvents and Open Inference Protocol bodies, on both stores.

The payload rules (V1 and V2 bodies, the monitor's `inference` mapping, every mismatch
named by field) without a server; then the real app over real sockets, fed CloudEvents
built with the CloudEvents SDK as KServe's logger sends them (binary mode, ce-* headers
from pkg/logger/worker.go) and in structured mode: pairs counted exactly as the same
events sent to POST /monitor/batch, requests left alone counted after the pairing
timeout, lone responses dropped, the pending table's bound, and the V2 route without
CloudEvents.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import yaml
from aiohttp.test_utils import TestClient
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent
from prometheus_client.parser import text_string_to_metric_families
from support import EXAMPLES, MONITOR, ROOT, Service, example_monitors, wait_until
from test_readme import blocks, commands, section

from driftline.core.inference import (
    InferenceError,
    InferenceRequest,
    InferenceResponse,
    InferenceSpec,
    Tensor,
    input_rows,
    request_inputs,
    response_predictions,
    spec_problem,
)
from driftline.core.monitor import MonitorConfigError, build_monitor, read_monitor_config
from driftline.core.policy import DEFAULTS
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import load_baseline
from driftline.http.app import create_app
from driftline.settings import InferenceSettings, Settings
from driftline.simulate import SCENARIOS, ProfileSampler, payload

PROBLEM = "application/problem+json"
CE_REQUEST = "org.kubeflow.serving.inference.request"
CE_RESPONSE = "org.kubeflow.serving.inference.response"
NUMERIC = ["age", "income", "credit_score", "tenure_months", "num_products"]
CATEGORICAL = ["channel", "product_category", "region"]
FEATURES = NUMERIC + CATEGORICAL
# The example monitor, reading a model server whose numeric features come in one
# [rows, 5] tensor, the categorical ones as BYTES tensors named after them.
INFERENCE = f"""
inference:
  inputs:
    numeric: [{", ".join(NUMERIC)}]
    request_id: []
  instances: [{", ".join(FEATURES)}]
  output: default_probability
"""
SCORE = PredictionSpec("score")
SPEC = InferenceSpec(inputs={"numeric": NUMERIC, "request_id": []}, instances=FEATURES)


def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> Tensor:
    return Tensor(name, datatype, shape, data)


def v2_request(events: list[dict[str, Any]], *, nested: bool = False) -> dict[str, Any]:
    """An Open Inference Protocol request holding the events' features (row-major)."""
    rows = [[e["features"][n] for n in NUMERIC] for e in events]
    numeric: list[Any] = rows if nested else [v for row in rows for v in row]
    inputs = [
        {"name": "numeric", "datatype": "FP64", "shape": [len(rows), 5], "data": numeric},
        *(
            {
                "name": name,
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [e["features"][name] for e in events],
            }
            for name in CATEGORICAL
        ),
        {"name": "request_id", "datatype": "INT64", "shape": [len(rows)], "data": [7] * len(rows)},
    ]
    return {"id": "42", "inputs": inputs}


def v2_response(events: list[dict[str, Any]], version: str | None = "v3") -> dict[str, Any]:
    outputs = [
        {
            "name": "default_probability",
            "datatype": "FP32",
            "shape": [len(events), 1],
            "data": [e["prediction"] for e in events],
        },
        {"name": "label", "datatype": "INT64", "shape": [len(events)], "data": [0] * len(events)},
    ]
    body: dict[str, Any] = {"model_name": "credit-risk", "id": "42", "outputs": outputs}
    if version is not None:
        body["model_version"] = version
    return body


def v1_request(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"instances": [[e["features"][n] for n in FEATURES] for e in events]}


def v1_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"predictions": [e["prediction"] for e in events]}


def sample(n: int, seed: int, scenario: str = "baseline") -> list[dict[str, Any]]:
    """Events of the example monitor drawn from its profile, with their predictions."""
    profile = load_baseline(EXAMPLES / "credit-risk-profile.json")
    drawn = ProfileSampler(profile, np.random.default_rng(seed)).events(n, SCENARIOS[scenario])
    return [payload(e, SCORE) for e in drawn]


# ----------------------------------------------------------------- payload rules


def test_v2_tensors_become_rows_flat_or_nested_batched_and_bytes() -> None:
    events = sample(4, seed=1)
    for nested in (False, True):
        request = InferenceRequest(
            inputs=[Tensor(**t) for t in v2_request(events, nested=nested)["inputs"]]
        )
        rows = input_rows(request_inputs(SPEC, FEATURES, request))
        assert rows == [e["features"] for e in events]
    response = InferenceResponse(outputs=[Tensor(**t) for t in v2_response(events)["outputs"]])
    spec = InferenceSpec(output="default_probability")
    assert response_predictions(spec, SCORE, response) == [e["prediction"] for e in events]


def test_v1_instances_become_rows_by_name_or_position() -> None:
    events = sample(3, seed=2)
    positional = InferenceRequest(instances=v1_request(events)["instances"])
    assert input_rows(request_inputs(SPEC, FEATURES, positional)) == [e["features"] for e in events]
    named = InferenceRequest(instances=[e["features"] for e in events])
    assert input_rows(request_inputs(InferenceSpec(), FEATURES, named)) == [
        e["features"] for e in events
    ]
    # One-value lists are unwrapped (sklearn answers [[p], ...]); probabilities are not.
    response = InferenceResponse(predictions=[[0.25], 0.5])
    assert response_predictions(SPEC, SCORE, response) == [0.25, 0.5]
    proba = PredictionSpec("probabilities", ["churn", "stay"])
    response = InferenceResponse(predictions=[[0.25, 0.75]])
    assert response_predictions(SPEC, proba, response) == [[0.25, 0.75]]
    rows = InferenceResponse(
        outputs=[tensor("p", "FP32", [2, 2], [0.1, 0.9, 0.8, 0.2])]
    )  # one column per class
    assert response_predictions(SPEC, proba, rows) == [[0.1, 0.9], [0.8, 0.2]]


MISMATCHES = [
    ([tensor("mystery", "FP32", [1], [1.0])], "inputs[0].name", 'unknown tensor "mystery"'),
    (
        [tensor("numeric", "FP64", [2, 4], [1.0] * 8)],
        "inputs[0].shape",
        "tensor 'numeric' holds 5 feature(s) (age, income, credit_score, tenure_months, "
        "num_products): expected [rows, 5], got [2,4]",
    ),
    (
        [tensor("numeric", "FP64", [2, 5], [1.0] * 9)],
        "inputs[0].data",
        "expected 10 values (shape [2,5]), got 9",
    ),
    (
        [tensor("region", "BYTES", [2], ["north", 3])],
        "inputs[0].data[1]",
        "expected a string (datatype BYTES), got 3",
    ),
    (
        [tensor("age", "INT32", [2], [30, 30.5])],
        "inputs[0].data[1]",
        "expected an integer (datatype INT32), got 30.5",
    ),
    (
        [tensor("age", "FP32", [2], [30.0, "old"])],
        "inputs[0].data[1]",
        'expected a number (datatype FP32), got "old"',
    ),
    (
        [tensor("age", "FLOAT", [1], [30.0])],
        "inputs[0].datatype",
        "expected one of BOOL, UINT8",
    ),
    (
        [tensor("age", "FP32", [1, 1, 1], [30.0])],
        "inputs[0].shape",
        "expected [rows] or [rows, columns], got [1,1,1]",
    ),
    (
        [tensor("age", "FP32", [2], [1.0, 2.0]), tensor("region", "BYTES", [3], ["a"] * 3)],
        "inputs[1].shape",
        "expected 2 rows (as inputs[0] has), got 3",
    ),
    ([tensor("request_id", "INT64", [1], [1])], "inputs", "no input tensor holds a feature"),
]


@pytest.mark.parametrize(("inputs", "field", "message"), MISMATCHES)
def test_v2_mismatches_name_the_field(inputs: list[Tensor], field: str, message: str) -> None:
    with pytest.raises(InferenceError) as caught:
        request_inputs(SPEC, FEATURES, InferenceRequest(inputs=inputs))
    assert caught.value.field == field
    assert caught.value.message.startswith(message), caught.value.message


def test_v1_and_output_mismatches_name_the_field() -> None:
    cases: list[tuple[Any, str, str]] = [
        (
            lambda: request_inputs(SPEC, FEATURES, InferenceRequest(instances=[[1, 2]])),
            "instances[0]",
            "expected 8 values (age, income",
        ),
        (
            lambda: request_inputs(InferenceSpec(), FEATURES, InferenceRequest(instances=[[1]])),
            "instances[0]",
            "expected an object of named feature values, got [1]",
        ),
        (
            lambda: request_inputs(SPEC, FEATURES, InferenceRequest()),
            "inputs",
            "required: a V2 request has `inputs`",
        ),
        (
            lambda: response_predictions(
                InferenceSpec(output="score"),
                SCORE,
                InferenceResponse(outputs=[tensor("p", "FP32", [1], [0.5])]),
            ),
            "outputs",
            "no tensor 'score' (the monitor's inference.output); got 'p'",
        ),
        (
            lambda: response_predictions(
                InferenceSpec(),
                SCORE,
                InferenceResponse(
                    outputs=[tensor("p", "FP32", [1], [0.5]), tensor("q", "FP32", [1], [0.5])]
                ),
            ),
            "outputs",
            "expected one tensor, got 2 ('p', 'q'); name the prediction's",
        ),
        (
            lambda: response_predictions(
                InferenceSpec(),
                SCORE,
                InferenceResponse(outputs=[tensor("p", "FP32", [1, 2], [0, 1])]),
            ),
            "outputs[0].shape",
            "a score prediction is one value per row: expected [rows] or [rows, 1], got [1,2]",
        ),
    ]
    for call, field, message in cases:
        with pytest.raises(InferenceError) as caught:
            call()
        assert caught.value.field == field
        assert caught.value.message.startswith(message), caught.value.message


def test_a_mapping_that_cannot_work_is_refused_naming_it() -> None:
    assert spec_problem(SPEC, FEATURES) is None
    assert spec_problem(InferenceSpec(inputs={"x": ["age", "ghost"]}), FEATURES) == (
        "inputs.x: 'ghost' is not a feature of the baseline (has "
        + ", ".join(sorted(FEATURES))
        + ")"
    )
    found = spec_problem(InferenceSpec(inputs={"x": ["age"], "y": ["age"]}), FEATURES)
    assert found == "inputs.y: 'age' is mapped twice"
    assert spec_problem(InferenceSpec(instances=["age", "age"]), FEATURES) == (
        "instances: 'age' is mapped twice"
    )


def test_a_monitor_config_with_a_bad_mapping_is_refused(tmp_path: Path) -> None:
    monitors = write_monitors(tmp_path, "\ninference:\n  inputs:\n    x: [agee]\n")
    config = read_monitor_config(monitors / "credit-risk.yaml", "credit-risk.yaml")
    with pytest.raises(MonitorConfigError, match=r"inference\.inputs\.x: 'agee' is not a feature"):
        build_monitor(config, DEFAULTS, base_dir=monitors, source="credit-risk.yaml")


# ------------------------------------------------------------- the real service


def write_monitors(directory: Path, extra: str = INFERENCE) -> Path:
    """The example monitor reading the test's model server."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (example_monitors() / "credit-risk.yaml").read_text()
    own = text[: text.index("\ninference:")]  # the example's mapping, replaced by the test's
    (directory / "credit-risk.yaml").write_text(own + extra)
    return directory


@pytest.fixture(params=["memory", "redis"])
def server_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(write_monitors(tmp_path / "monitors")),
        redis_url=url,
        flush_interval=0.001,
        inference=InferenceSettings(pair_timeout=0.3, max_pending=50),
    )


@pytest.fixture
async def api(aiohttp_client: Any, server_settings: Settings) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(server_settings))
    return client


def logged(kind: str, body: dict[str, Any], inference_id: str) -> CloudEvent:
    """One CloudEvent as KServe's logger makes it (pkg/logger/worker.go)."""
    attributes = {
        "specversion": "1.0",
        "id": inference_id,
        "type": kind,
        "source": "http://localhost:9081/",
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
        "inferenceservicename": "credit-risk",
        "namespace": "models",
        "component": "predictor",
        "endpoint": "default",
        "metadata": "{}",
    }
    return CloudEvent(attributes, msgspec.json.encode(body))


async def send(api: TestClient, event: CloudEvent, mode: str = "binary") -> tuple[int, Any]:
    message = to_binary_event(event) if mode == "binary" else to_structured_event(event)
    response = await api.post(
        f"/v1/monitors/{MONITOR}/cloudevents", data=message.body, headers=message.headers
    )
    return response.status, await response.json(content_type=None)


async def report(api: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = await (await api.get(f"/v1/monitors/{MONITOR}/drift")).json()
    return body


async def unpaired(api: TestClient) -> dict[tuple[str, str], float]:
    text = await (await api.get("/monitor/metrics")).text()
    return {
        (s.labels["half"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "driftline_inference_unpaired_total" and s.labels["monitor"] == MONITOR
    }


def window_of(report: dict[str, Any]) -> dict[str, Any]:
    """What a report says of the window's contents (not when it was evaluated)."""
    features = {
        name: (f["window_count"], f["window_proportions"], f["missing_rate"])
        for name, f in report["features"].items()
    }
    score = report["prediction"]["outputs"]["score"]
    return {
        "events": report["window"]["events"],
        "features": features,
        "score": (score["window_count"], score["window_proportions"], score["missing_rate"]),
    }


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_logged_pairs_count_as_the_same_events_sent_as_a_batch(
    api: TestClient, mode: str
) -> None:
    events = sample(120, seed=3)
    batches = [events[i : i + 40] for i in range(0, 120, 40)]
    for n, batch in enumerate(batches):
        inference_id = str(uuid.uuid4())
        request = logged(CE_REQUEST, v2_request(batch, nested=n == 1), inference_id)
        response = logged(CE_RESPONSE, v2_response(batch), inference_id)
        # A pool of workers sends them: the response may come first.
        first, second = (response, request) if n == 2 else (request, response)
        status, body = await send(api, first, mode)
        assert status == 202, body
        assert body["status"] == "pending" and body["id"] == inference_id and body["rows"] == 40
        status, body = await send(api, second, mode)
        assert status == 200, body
        assert (body["accepted"], body["rejected"], body["errors"]) == (40, 0, [])
    paired = await report(api)
    # The same events through the batch route make the same window.
    await api.delete(f"/v1/monitors/{MONITOR}/window")
    response = await api.post("/monitor/batch", json={"events": events, "monitor": MONITOR})
    assert response.status == 200, await response.text()
    assert window_of(paired) == window_of(await report(api))
    # And the counts are the values' own, binned with numpy at the profile's cuts.
    profile = load_baseline(EXAMPLES / "credit-risk-profile.json")
    cuts = np.array(profile.features["age"].cuts)  # type: ignore[union-attr]
    ages = np.array([e["features"]["age"] for e in events])
    counts = np.bincount(np.searchsorted(cuts, ages, side="right"), minlength=len(cuts) + 1)
    proportions = paired["features"]["age"]["window_proportions"]
    assert proportions == pytest.approx((counts / counts.sum()).tolist(), rel=1e-12)
    assert paired["prediction"]["outputs"]["score"]["missing_rate"] == 0.0
    assert await unpaired(api) == {k: 0.0 for k in await unpaired(api)}


async def test_v1_bodies_pair_in_structured_mode(api: TestClient) -> None:
    events = sample(30, seed=4)
    status, body = await send(api, logged(CE_REQUEST, v1_request(events), "v1-1"), "structured")
    assert status == 202, body
    status, body = await send(api, logged(CE_RESPONSE, v1_response(events), "v1-1"), "structured")
    assert status == 200 and body["accepted"] == 30, body
    score = (await report(api))["prediction"]["outputs"]["score"]
    assert (score["window_count"], score["missing_rate"]) == (30, 0.0)


async def test_a_request_alone_counts_its_features_after_the_timeout(api: TestClient) -> None:
    events = sample(25, seed=5)
    status, body = await send(api, logged(CE_REQUEST, v2_request(events), "alone"))
    assert status == 202 and body["expires_in"] == 0.3, body
    assert (await report(api))["window"]["events"] == 0

    async def counted() -> bool:
        return bool((await report(api))["window"]["events"] == 25)

    await wait_until(counted, "the lone request was never counted")
    found = await report(api)
    assert found["prediction"]["outputs"]["score"]["missing_rate"] == 1.0
    assert found["features"]["age"]["window_count"] == 25
    assert (await unpaired(api))[("request", "timeout")] == 1.0
    # Its response, too late: waits, then is dropped; nothing more is counted.
    status, body = await send(api, logged(CE_RESPONSE, v2_response(events), "alone"))
    assert status == 202, body

    async def dropped() -> bool:
        return (await unpaired(api))[("response", "timeout")] == 1.0

    await wait_until(dropped, "the lone response was never dropped")
    assert (await report(api))["window"]["events"] == 25


async def test_the_pending_table_is_bounded(aiohttp_client: Any, server_settings: Settings) -> None:
    # A pair timeout longer than the 51 sends take, however slow the machine: a request
    # that timed out would leave the table short of full, and nothing would be pushed out.
    settings = msgspec.structs.replace(
        server_settings, inference=InferenceSettings(pair_timeout=60, max_pending=50)
    )
    api: TestClient = await aiohttp_client(create_app(settings))
    events = sample(2, seed=6)
    for n in range(51):  # max_pending=50: the 51st pushes the oldest out, counted alone
        status, _ = await send(api, logged(CE_REQUEST, v2_request(events), f"r{n}"))
        assert status == 202

    async def pushed_out() -> bool:
        return (await unpaired(api))[("request", "overflow")] == 1.0

    await wait_until(pushed_out, "no request was pushed out of the full table")

    # Counted off the request's path, after the counter: the flush lands when it lands.
    async def counted() -> bool:
        return (await report(api))["window"]["events"] >= 2

    await wait_until(counted, "the pushed-out request's events were never counted")
    # The oldest's response finds nothing; a later one still pairs.
    status, body = await send(api, logged(CE_RESPONSE, v2_response(events), "r50"))
    assert status == 200 and body["accepted"] == 2, body


async def test_a_monitor_without_prediction_counts_requests_at_once(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    monitors = write_monitors(tmp_path / "monitors", INFERENCE)
    text = (monitors / "credit-risk.yaml").read_text()
    text = text.replace("prediction:\n  kind: score\n", "")
    text = text.replace("labels:\n  horizon_seconds: 86400\n", "")  # labels need a prediction
    (monitors / "credit-risk.yaml").write_text(text)
    settings = Settings(host="127.0.0.1", monitors_dir=str(monitors), flush_interval=0.001)
    api: TestClient = await aiohttp_client(create_app(settings))
    events = sample(10, seed=7)
    status, body = await send(api, logged(CE_REQUEST, v2_request(events), "x"))
    assert status == 200 and body["accepted"] == 10, body
    status, body = await send(api, logged(CE_RESPONSE, v2_response(events), "x"))
    assert status == 202 and body["status"] == "ignored", body
    assert body["warnings"] == [
        "prediction ignored: monitor 'credit-risk' declares no prediction kind "
        "(docs/predictions.md)"
    ]


async def test_one_row_inferences_count_as_the_batch_route_counts_their_events(
    api: TestClient,
) -> None:
    # One row per inference goes the single-event way (predict's group commit): the
    # answers, refusals and window must be the batch route's for the same events.
    events = sample(24, seed=11)
    refused = {5, 17}
    for n, event in enumerate(events):
        response = v2_response([event])
        if n in refused:
            response["outputs"][0]["data"][0] = 2e300  # past limits.max_abs_value
        first, second = (
            logged(CE_REQUEST, v2_request([event]), f"one-{n}"),
            logged(CE_RESPONSE, response, f"one-{n}"),
        )
        if n % 2:
            first, second = second, first
        status, body = await send(api, first)
        assert status == 202 and body["rows"] == 1, body
        status, body = await send(api, second)
        if n in refused:  # as a batch of only refused events is answered
            (error,) = body["errors"]
            assert (status, error["field"], error["reason"]) == (
                422,
                "rows[0].prediction",
                "invalid_prediction",
            ), body
        else:
            assert status == 200, body
            assert (body["accepted"], body["rejected"], body["errors"]) == (1, 0, []), body
    paired = await report(api)
    await api.delete(f"/v1/monitors/{MONITOR}/window")
    counted = [e for n, e in enumerate(events) if n not in refused]
    response = await api.post("/monitor/batch", json={"events": counted, "monitor": MONITOR})
    assert response.status == 200, await response.text()
    assert window_of(paired) == window_of(await report(api))
    assert paired["window"]["events"] == len(counted)


async def test_bad_values_in_a_pair_are_named_by_row(api: TestClient) -> None:
    events = sample(3, seed=8)
    response = v2_response(events)
    response["outputs"][0]["data"][1] = 2e300  # past limits.max_abs_value
    await send(api, logged(CE_REQUEST, v2_request(events), "bad"))
    status, body = await send(api, logged(CE_RESPONSE, response, "bad"))
    assert status == 200 and body["accepted"] == 2, body
    (error,) = body["errors"]
    assert (error["field"], error["index"], error["reason"]) == (
        "rows[1].prediction",
        1,
        "invalid_prediction",
    )


def problem_of(status: int, body: Any, expected: int) -> tuple[str, str]:
    assert status == expected and body["status"] == expected, body
    (error,) = body["errors"]
    return error["field"], error["message"]


async def test_cloudevent_mismatches_are_problems_naming_the_field(api: TestClient) -> None:
    events = sample(2, seed=9)
    good = v2_request(events)
    bad = {
        "inputs": [
            *good["inputs"],
            {"name": "mystery", "datatype": "FP32", "shape": [2], "data": [1, 2]},
        ]
    }
    field, message = problem_of(*await send(api, logged(CE_REQUEST, bad, "m1")), 422)
    assert field == "inputs[5].name" and message.startswith('unknown tensor "mystery"')
    # Structured mode: the body sits in the envelope's data.
    field, _ = problem_of(*await send(api, logged(CE_REQUEST, bad, "m1"), "structured"), 422)
    assert field == "data.inputs[5].name"
    wrong = v2_response(events)
    wrong["outputs"][0]["shape"] = [1, 2]
    field, message = problem_of(*await send(api, logged(CE_RESPONSE, wrong, "m2")), 422)
    assert field == "outputs[0].shape" and "expected [rows] or [rows, 1], got [1,2]" in message
    not_a_tensor = {"inputs": [{"name": "age", "datatype": "FP32", "shape": ["two"], "data": []}]}
    field, _ = problem_of(*await send(api, logged(CE_REQUEST, not_a_tensor, "m3")), 422)
    assert field == "inputs[0].shape[0]"
    # The CloudEvent itself: required attributes, spec version, type.
    message_of = to_binary_event(logged(CE_REQUEST, good, "m4"))
    for header, value, status, expected_message in [
        ("ce-id", None, 400, "required: a CloudEvent has specversion, id, source and type"),
        ("ce-specversion", "0.3", 400, "expected '1.0', got '0.3'"),
        ("ce-type", "com.example.other", 422, f"expected {CE_REQUEST} or {CE_RESPONSE}"),
        ("ce-time", "yesterday", 400, "expected an RFC 3339 timestamp with a zone"),
    ]:
        headers = {k: v for k, v in message_of.headers.items() if k != header}
        if value is not None:
            headers[header] = value
        response = await api.post(
            f"/v1/monitors/{MONITOR}/cloudevents", data=message_of.body, headers=headers
        )
        assert response.content_type == PROBLEM
        field, message = problem_of(response.status, await response.json(), status)
        assert field == header and message.startswith(expected_message), message
    assert (await report(api))["window"]["events"] == 0


async def test_open_inference_protocol_pairs_without_cloudevents(api: TestClient) -> None:
    events = sample(50, seed=10)
    body = {"request": v2_request(events), "response": v2_response(events)}
    headers = {"Idempotency-Key": "batch-1"}
    response = await api.post(f"/v1/monitors/{MONITOR}/inferences", json=body, headers=headers)
    answer = await response.json()
    assert response.status == 200 and answer["accepted"] == 50, answer
    # Sent again under its key: answered, not counted twice.
    response = await api.post(f"/v1/monitors/{MONITOR}/inferences", json=body, headers=headers)
    assert response.headers.get("Idempotent-Replayed") == "true"
    found = await report(api)
    assert found["window"]["events"] == 50
    assert found["prediction"]["outputs"]["score"]["window_count"] == 50
    # Without its response: features only.
    response = await api.post(
        f"/v1/monitors/{MONITOR}/inferences", json={"request": v1_request(events[:5])}
    )
    assert response.status == 200 and (await response.json())["accepted"] == 5
    # A response of another length is not joined, and says so.
    body = {"request": v2_request(events[:3]), "response": v2_response(events[:2])}
    answer = await (await api.post(f"/v1/monitors/{MONITOR}/inferences", json=body)).json()
    assert answer["accepted"] == 3
    assert "the response has 2 rows, its request 3: predictions not counted" in answer["warnings"]
    # Mismatches name the field under request/response.
    body = {"request": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}}
    response = await api.post(f"/v1/monitors/{MONITOR}/inferences", json=body)
    field, _ = problem_of(response.status, await response.json(), 422)
    assert field == "request.inputs[0].name"


@pytest.fixture
async def unlabelled(aiohttp_client: Any, server_settings: Settings) -> TestClient:
    """The service on the example monitor without labels: V2 rows are counted by column."""
    directory = Path(server_settings.monitors_dir)
    config = directory / "credit-risk.yaml"
    text = config.read_text()
    assert "\nlabels:\n  horizon_seconds: 86400\n" in text, "the example's labels changed"
    config.write_text(text.replace("\nlabels:\n  horizon_seconds: 86400\n", "\n"))
    client: TestClient = await aiohttp_client(create_app(server_settings))
    return client


async def test_pairs_counted_by_column_are_the_batch_routes_events_value_for_value(
    unlabelled: TestClient,
) -> None:
    api = unlabelled
    events = [{**e, "features": {n: e["features"][n] for n in FEATURES}} for e in sample(64, 11)]
    # Values each rule treats differently: missing, beyond the limits, an unknown
    # category, a category too long, a bad prediction, and a row bad twice.
    events[3]["features"]["age"] = None
    events[5]["features"]["income"] = 2e300
    events[8]["features"]["channel"] = "carrier-pigeon"
    events[9]["features"]["region"] = "x" * 300
    events[12]["prediction"] = 5e20
    events[13]["prediction"] = None
    events[20]["features"]["credit_score"] = -3e300
    events[20]["prediction"] = 4e20
    for n, part in enumerate((events[:32], events[32:])):
        await send(api, logged(CE_REQUEST, v2_request(part), f"col-{n}"))
        status, body = await send(api, logged(CE_RESPONSE, v2_response(part), f"col-{n}"))
        assert status == 200, body
        if n == 0:
            paired_errors = body["errors"]
            assert body["accepted"] == 28, body
    paired = await report(api)
    await api.delete(f"/v1/monitors/{MONITOR}/window")
    response = await api.post("/monitor/batch", json={"events": events, "monitor": MONITOR})
    batch = await response.json()
    assert response.status == 200 and batch["accepted"] == 60, batch
    assert window_of(paired) == window_of(await report(api))
    expected = [{**e, "field": e["field"].replace("events[", "rows[", 1)} for e in batch["errors"]]
    assert paired_errors == expected
    assert [(e["index"], e["field"]) for e in paired_errors] == [
        (5, "rows[5].features.income"),
        (9, "rows[9].features.region"),
        (12, "rows[12].prediction"),
        (20, "rows[20].prediction"),  # the prediction comes first in the layout
    ]


async def test_a_shared_timestamp_refused_rejects_each_row_as_events_are(
    unlabelled: TestClient,
) -> None:
    events = sample(3, seed=12)
    ahead = logged(CE_REQUEST, v2_request(events), "ahead")
    ahead.get_attributes()["time"] = datetime(2999, 1, 1, tzinfo=UTC)
    await send(unlabelled, ahead)
    status, body = await send(unlabelled, logged(CE_RESPONSE, v2_response(events), "ahead"))
    assert status == 422 and body["detail"] == "none of the 3 events could be counted", body
    assert [(e["field"], e["reason"]) for e in body["errors"]] == [
        (f"rows[{i}].timestamp", "future_timestamp") for i in range(3)
    ]


# ------------------------------------------------------------------ the README


def test_the_readme_kserve_logger_is_the_example_manifests() -> None:
    (snippet,) = [b for b in blocks("yaml", section("Connect your model server")) if "logger" in b]
    manifest = yaml.safe_load(
        (ROOT / "manifests/examples/kserve/inferenceservice.yaml").read_text()
    )
    assert (
        yaml.safe_load(snippet)["spec"]["predictor"]["logger"]
        == (manifest["spec"]["predictor"]["logger"])
    )


def test_the_readme_model_server_commands_count_what_they_send(embedded: Service) -> None:
    snippets = blocks("sh", section("Connect your model server"))
    sent = [c for s in snippets for c in commands(s)]
    assert len(sent) == 3, sent
    answers = []
    for command in sent:
        command = command.replace("curl -s ", "curl -s -w '\\n%{http_code}' ", 1)
        done = subprocess.run(
            ["bash", "-c", command.replace("localhost:8080", embedded.url.removeprefix("http://"))],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        body, status = done.stdout.rsplit("\n", 1)
        answers.append((int(status), json.loads(body)))
    (pending, pending_body), (paired, paired_body), (direct, direct_body) = answers
    assert pending == 202 and pending_body["status"] == "pending", pending_body
    assert paired == 200 and (paired_body["accepted"], paired_body["errors"]) == (2, []), (
        paired_body
    )
    assert direct == 200 and (direct_body["accepted"], direct_body["errors"]) == (1, []), (
        direct_body
    )
    report = embedded.report()
    assert report["window"]["events"] == 3
    score = report["prediction"]["outputs"]["score"]
    assert score["window_count"] == 3
    # The report rounds moments to 5 decimals.
    assert score["mean"] == pytest.approx((0.12 + 0.31 + 0.07) / 3, abs=1e-5)
    assert report["features"]["age"]["mean"] == pytest.approx((35 + 51 + 42) / 3, abs=1e-5)
