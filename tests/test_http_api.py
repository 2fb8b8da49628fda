"""The HTTP API over real sockets, on both window stores: contract, verdicts and errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats
from scipy.spatial.distance import jensenshannon
from support import example_settings as make_settings
from support import wait_until

from driftline.core.limits import Limits
from driftline.core.profile import CategoricalProfile, load_baseline
from driftline.engine.admission import Rejection
from driftline.http.app import create_app
from driftline.http.handlers import column_path, event_path
from driftline.http.keys import ENGINE
from driftline.settings import Settings
from driftline.simulate import SCENARIOS, ProfileSampler
from driftline.ui import assets as ui

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"
ORIGINAL_PAYLOAD = {
    "features": {"age": 35, "income": 50000, "tenure_months": 24, "product_category": "premium"},
    "model_version": "v1.2.0",
    "timestamp": "2025-05-29T10:30:00Z",
}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def baseline_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((EXAMPLES / "baseline_data.json").read_text())
    return rows


async def post_json(client: TestClient, path: str, body: Any) -> tuple[int, Any, Any]:
    response = await client.post(path, json=body)
    return response.status, await response.json(content_type=None), response.headers


async def send_events(client: TestClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    status, body, _ = await post_json(
        client, "/monitor/batch", {"events": [{"features": e} for e in events]}
    )
    assert status == 200, body
    assert body["accepted"] == len(events)
    result: dict[str, Any] = body
    return result


# -------------------------------------------------------- original API contract


async def test_original_payload_gets_the_original_answer_shape(client: TestClient) -> None:
    payload = dict(ORIGINAL_PAYLOAD, timestamp=None)
    status, body, _ = await post_json(client, "/monitor/predict", payload)
    assert status == 200, body
    assert isinstance(body["drift_detected"], bool)
    assert isinstance(body["drift_score"], float)
    assert body["severity"] in {"none", "warning", "critical"}
    assert set(body["feature_scores"]) == {
        "age",
        "income",
        "tenure_months",
        "credit_score",
        "num_products",
        "product_category",
        "region",
        "channel",
    }
    assert body["timestamp"].endswith("Z")
    assert body["monitor"] == MONITOR
    assert body["window"]["events"] == 1
    assert body["window"]["ready"] is False  # 1 event < min_samples 100
    assert body["severity"] == "none"
    assert body["warnings"] == []


async def test_health_ready_and_metrics(client: TestClient, settings: Settings) -> None:
    health = await (await client.get("/monitor/health")).json()
    assert health["status"] == "healthy"
    assert health["baseline_data_loaded"] is True
    assert health["store"]["kind"] == ("redis" if settings.redis_url else "memory")
    ready = await client.get("/monitor/ready")
    assert ready.status == 200
    await post_json(client, "/monitor/predict", {"features": {"age": 30}, "model_version": "v7"})
    text = await (await client.get("/monitor/metrics")).text()
    for name in (
        "driftline_feature_drift_score",
        "driftline_monitor_severity",
        "driftline_drift_detected",
        "driftline_drifted_features",
        "driftline_window_events",
        "driftline_events_total",
        "driftline_request_duration_seconds",
    ):
        assert f"# TYPE {name}" in text, name
    assert 'driftline_events_total{model_version="v7",monitor="credit-risk"} 1' in text
    assert 'driftline_window_events{monitor="credit-risk"} 1' in text


async def test_openapi_describes_every_route(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    routes = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    # The web UI's page and files are not API operations (docs/ui.md).
    registered = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.method != "HEAD" and r.handler.__module__ != ui.__name__
    }
    assert routes == registered
    predict = document["paths"]["/monitor/predict"]["post"]
    schema_ref = predict["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref.rsplit("/", 1)[1] in document["components"]["schemas"]


# ----------------------------------------------------------------- the verdict


async def test_baseline_traffic_stays_none_and_shift_goes_critical(client: TestClient) -> None:
    profile = load_baseline(EXAMPLES / "baseline_data.json")
    sampler = ProfileSampler(profile, np.random.default_rng(11))
    result = await send_events(client, sampler.events(500, SCENARIOS["baseline"]))
    assert result["drift"]["severity"] == "none"
    assert result["drift"]["window"]["events"] == 500
    # Shift age and income strongly; leave everything else at baseline.
    shifted = sampler.events(500, SCENARIOS["baseline"])
    for event in shifted:
        event["age"] += 25
        if event["income"] is not None:
            event["income"] *= 3
    result = await send_events(client, shifted)
    drift = result["drift"]
    assert drift["severity"] == "critical"
    assert {"age", "income"} <= set(drift["drifted_features"])
    assert drift["feature_scores"]["age"] >= 0.5


async def test_report_page_renders_the_live_drift_report(client: TestClient) -> None:
    profile = load_baseline(EXAMPLES / "baseline_data.json")
    shifted = ProfileSampler(profile, np.random.default_rng(12)).events(400, SCENARIOS["high"])
    await send_events(client, shifted)
    response = await client.get(f"/v1/monitors/{MONITOR}/report.html")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert report["severity"] == "critical"
    assert f"<title>Drift report: {MONITOR}, critical</title>" in page
    assert "<dt>Window events</dt><dd>400</dd>" in page
    for name in report["drifted_features"]:
        assert f'<a href="#f{list(report["features"]).index(name)}">{name}</a>' in page
    missing = await client.get("/v1/monitors/nope/report.html")
    assert missing.status == 404
    assert missing.content_type == PROBLEM


def moment_matched_p(table: np.ndarray) -> tuple[float, float, float]:
    """Pearson's X² of a 2 x k table, its null mean, and its p against a chi-square scaled
    to X²'s exact mean and variance given the margins (docs/metrics.md, written out)."""
    table = table[:, table.sum(axis=0) > 0].astype(np.float64)
    m, n = table.sum(axis=1)
    c = table.sum(axis=0)
    k, total = c.size, m + n
    statistic = float(stats.chi2_contingency(table, correction=False).statistic)
    mean = (k - 1) * total / (total - 1)
    r = float(np.sum(1 / c))
    k2 = total * (m - n) ** 2 - 2 * (m * m - m * n + n * n) + total
    variance = (
        r * total**3 * (total - 1) * (m * m - 4 * m * n + n * n + total)
        - total**2
        * (
            2 * (m - 1) * (n - 1) * total**2
            - 2 * (m - 1) * (n - 1) * total * (total + 1) * k
            + k2 * k * k
        )
    ) / (m * n * (total - 3) * (total - 2) * (total - 1) ** 2)
    scale, shape = variance / (2 * mean), 2 * mean * mean / variance
    return statistic, mean, float(stats.chi2.sf(statistic / scale, shape))


async def test_report_numbers_match_independent_scipy(
    client: TestClient, baseline_rows: list[dict[str, Any]]
) -> None:
    """Every numeric metric of the report, recomputed from the raw events with scipy."""
    profile = load_baseline(EXAMPLES / "baseline_data.json")
    sampler = ProfileSampler(profile, np.random.default_rng(5))
    events = sampler.events(400, SCENARIOS["moderate"])
    await send_events(client, events)
    report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert report["window"]["events"] == 400
    eps = 1e-4
    for name in ("age", "income", "tenure_months", "credit_score"):
        feature = report["features"][name]
        base = np.array([r[name] for r in baseline_rows if r[name] is not None], dtype=float)
        cuts = np.unique(np.quantile(base, np.linspace(0, 1, 11)[1:-1]))
        expected_counts = np.bincount(
            np.searchsorted(cuts, base, side="right"), minlength=len(cuts) + 1
        )
        values = np.array([e[name] for e in events if e[name] is not None], dtype=float)
        counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
        n = counts.sum()
        a, e = np.maximum(counts / n, eps), np.maximum(expected_counts / expected_counts.sum(), eps)
        psi = float(np.sum((a - e) * np.log(a / e)))
        statistic, _, p = moment_matched_p(np.array([expected_counts, counts]))
        assert feature["window_count"] == n
        assert feature["test"] == "psi"
        assert feature["psi"] == pytest.approx(psi, rel=1e-9, abs=1e-12)
        assert feature["score"] == pytest.approx(psi, rel=1e-9, abs=1e-12)
        assert feature["kl"] == pytest.approx(float(np.sum(a * np.log(a / e))), rel=1e-9, abs=1e-12)
        assert feature["js"] == pytest.approx(
            float(jensenshannon(counts / n, expected_counts / expected_counts.sum())),
            rel=1e-9,
            abs=1e-12,
        )
        assert feature["dof"] == int(np.count_nonzero(counts + expected_counts)) - 1
        assert feature["statistic"] == pytest.approx(statistic, rel=1e-9)
        assert feature["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-300)
        # Quality and location: mean, z and out-of-range from the raw values. Moments are
        # kept in units of 2^-20 baseline SDs, rounded per event, and shown rounded to
        # that unit: at most one unit off.
        unit = base.std(ddof=1) / 2**20
        assert feature["mean"] == pytest.approx(values.mean(), abs=unit)
        assert feature["std"] == pytest.approx(values.std(ddof=1), rel=1e-6)
        assert feature["mean_shift_z"] == pytest.approx(
            (values.mean() - base.mean()) / base.std(ddof=1), abs=2**-21
        )
        # Out of range: beyond the baseline's r-th smallest and largest values, r = 0.1 %.
        ordered, r = np.sort(base), max(1, len(base) // 1000)
        outside = np.count_nonzero((values < ordered[r - 1]) | (values > ordered[-r]))
        assert feature["out_of_range_rate"] == pytest.approx(outside / n, abs=1e-12)
        assert feature["quality"]["range"]["rate"] == feature["out_of_range_rate"]
        missing = sum(e[name] is None for e in events)
        assert feature["missing_rate"] == pytest.approx(missing / len(events), abs=1e-12)
    for name in ("product_category", "channel"):
        feature = report["features"][name]
        kept = profile.features[name]
        assert isinstance(kept, CategoricalProfile)
        # Compared with the profile's reference half (the other half chose the categories).
        expected_counts = np.array(kept.counts)
        labels = [e[name] for e in events if e[name] is not None]
        counts = np.array([labels.count(c) for c in kept.categories] + [0])
        a, e = counts / counts.sum(), expected_counts / expected_counts.sum()
        fa, fe = np.maximum(a, eps), np.maximum(e, eps)
        assert feature["psi"] == pytest.approx(float(np.sum((fa - fe) * np.log(fa / fe))), rel=1e-9)
        assert feature["js"] == pytest.approx(float(jensenshannon(a, e)), rel=1e-9)
        # Every category expects more than one event a side: no pooling, the plain table.
        statistic, mean, p = moment_matched_p(np.array([expected_counts, counts]))
        assert feature["statistic"] == pytest.approx(statistic, rel=1e-9)
        assert feature["dof"] == int(np.count_nonzero(expected_counts + counts)) - 1
        assert feature["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-300)
        n, m = counts.sum(), expected_counts.sum()
        w = np.sqrt(max(statistic - mean, 0.0) * (1 / n + 1 / m))
        assert feature["score"] == pytest.approx(w, rel=1e-9)


async def test_data_quality_reaches_the_answers_the_report_and_the_metrics(
    client: TestClient,
) -> None:
    profile = load_baseline(EXAMPLES / "baseline_data.json")
    events = ProfileSampler(profile, np.random.default_rng(12)).events(400, SCENARIOS["baseline"])
    for i, event in enumerate(events):
        event["income"] = None  # the feature stopped arriving
        if i % 50 == 0:
            event["channel"] = "kiosk"  # 2 % in a channel training never saw
    result = await send_events(client, events)
    drift = result["drift"]
    assert drift["severity"] == "critical"
    assert drift["feature_reasons"]["income"] == ["missing"]
    assert "new_categories" in drift["feature_reasons"]["channel"]
    assert set(drift["drifted_features"]) >= {"income", "channel"}
    status, answer, _ = await post_json(client, "/monitor/predict", {"features": {"age": 40}})
    assert status == 200
    assert answer["feature_reasons"]["income"] == ["missing"]
    assert set(answer["feature_scores"]) == set(profile.features)  # the original shape kept
    report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    income = report["features"]["income"]
    assert (income["severity"], income["reasons"]) == ("critical", ["missing"])
    assert income["quality"]["missing"]["rate"] == 1.0
    channel = report["features"]["channel"]["quality"]["new_categories"]
    assert channel["rate"] == pytest.approx(8 / 400, abs=1e-12)  # the predict had no channel
    assert channel["severity"] == "warning"
    text = await (await client.get("/monitor/metrics")).text()
    assert 'driftline_monitor_severity{monitor="credit-risk"} 2' in text
    assert 'driftline_feature_missing_rate{feature="income",monitor="credit-risk"} 1' in text
    assert 'driftline_feature_severity{feature="income",monitor="credit-risk"} 2' in text
    unseen = 'driftline_feature_unseen_category_rate{feature="channel",monitor="credit-risk"}'
    assert f"{unseen} 0.02" in text
    assert 'driftline_feature_out_of_range_rate{feature="age",monitor="credit-risk"}' in text


async def test_unknown_feature_warns_and_missing_counts_as_missing(client: TestClient) -> None:
    status, body, _ = await post_json(
        client, "/monitor/predict", {"features": {"age": 40, "shoe_size": 44}}
    )
    assert status == 200
    assert body["warnings"] == ['unknown feature "shoe_size" ignored']
    report = await (await client.get("/monitor/drift")).json()
    assert report["features"]["income"]["missing_rate"] == 1.0
    assert report["features"]["age"]["missing_rate"] == 0.0


async def test_ndjson_and_array_ingestion(client: TestClient) -> None:
    lines = b"\n".join(
        json.dumps({"features": {"age": 30 + i, "channel": "web"}}).encode() for i in range(5)
    )
    response = await client.post(
        f"/v1/monitors/{MONITOR}/events",
        data=lines + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert (body["accepted"], body["rejected"]) == (5, 0)
    status, body, _ = await post_json(
        client, f"/v1/monitors/{MONITOR}/events", [{"features": {"age": 20}}] * 3
    )
    assert status == 200
    assert body["drift"]["window"]["events"] == 8


async def test_batch_counts_valid_and_names_rejected(client: TestClient) -> None:
    events = [
        {"features": {"age": 33}},
        {"features": {"age": "old"}},
        {"features": {"age": 44}, "timestamp": "2999-01-01T00:00:00Z"},
        {"features": "nope"},
        {"features": {"channel": "web"}},
    ]
    status, body, _ = await post_json(client, "/monitor/batch", {"events": events})
    assert status == 200, body
    assert (body["accepted"], body["rejected"]) == (2, 3)
    by_index = {e["index"]: e for e in body["errors"]}
    assert by_index[1]["field"] == "events[1].features.age"
    assert by_index[1]["message"] == 'expected a number, got "old"'
    assert by_index[2]["reason"] == "future_timestamp"
    assert by_index[3]["field"] == "events[3].features"
    assert body["drift"]["window"]["events"] == 2


async def test_a_batch_decoded_in_one_pass_counts_as_one_decoded_event_by_event(
    client: TestClient, baseline_rows: list[dict[str, Any]]
) -> None:
    # A batch whose every event decodes is decoded in one pass; one undecodable event
    # sends it event by event. Both must count and refuse the same events alike.
    events: list[Any] = [
        {"features": dict(r), "model_version": "v2", "trace": i}
        for i, r in enumerate(baseline_rows[:80])
    ]
    events[4]["features"]["age"] = "old"
    events[9]["timestamp"] = "2999-01-01T00:00:00Z"
    events[12]["features"]["shoe_size"] = 42
    events[20]["features"].pop("income")
    seen = []
    for body in ({"events": events}, events, {"events": [*events, {"features": "nope"}]}):
        status, answer, _ = await post_json(client, "/monitor/batch", body)
        assert status == 200, answer
        report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
        assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204
        errors = [(e["index"], e["field"].split("]", 1)[1], e["reason"]) for e in answer["errors"]]
        seen.append((answer, errors, report))
    for answer, errors, _ in seen:
        assert answer["accepted"] == 78
        assert answer["warnings"] == ['unknown feature "shoe_size" ignored']
        assert errors[:2] == [
            (4, ".features.age", "invalid_value"),
            (9, ".timestamp", "future_timestamp"),
        ]
    assert len(seen[0][1]) == len(seen[1][1]) == 2
    assert seen[2][1][2:] == [(80, ".features", "invalid_event")]
    first = seen[0][2]
    for _, _, report in seen[1:]:
        assert report["window"]["events"] == first["window"]["events"] == 78
        for name, feature in report["features"].items():
            for field in ("window_proportions", "window_count", "missing_rate", "mean", "std"):
                assert feature.get(field) == first["features"][name].get(field), (name, field)


async def test_columns_count_exactly_what_the_same_events_count(
    client: TestClient, baseline_rows: list[dict[str, Any]]
) -> None:
    rows = [dict(r) for r in baseline_rows[:300]]
    rows[7]["age"] = "old"  # one bad value: that event alone is refused
    names = sorted({k for r in rows for k in r})
    columns = {name: [r.get(name) for r in rows] for name in names}
    columns["shoe_size"] = [42] * len(rows)  # unknown: ignored with a warning
    status, body, _ = await post_json(
        client,
        f"/v1/monitors/{MONITOR}/columns",
        {"columns": columns, "model_version": "v2"},
    )
    assert status == 200, body
    assert (body["accepted"], body["rejected"]) == (len(rows) - 1, 1)
    assert body["errors"] == [
        {
            "field": "columns.age[7]",
            "message": 'expected a number, got "old"',
            "reason": "invalid_value",
            "index": 7,
        }
    ]
    assert body["warnings"] == ['unknown feature "shoe_size" ignored']
    columns_report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204

    # The same rows as events, on the emptied window: the same counts.
    status, body, _ = await post_json(
        client, f"/v1/monitors/{MONITOR}/events", [{"features": r} for r in rows]
    )
    assert (body["accepted"], body["rejected"]) == (len(rows) - 1, 1)
    assert body["errors"][0]["field"] == "[7].features.age"
    events_report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    for name, feature in events_report["features"].items():
        mine = columns_report["features"][name]
        assert mine["window_proportions"] == feature["window_proportions"], name
        assert mine["window_count"] == feature["window_count"], name
        assert mine["missing_rate"] == feature["missing_rate"], name
    assert columns_report["window"]["events"] == events_report["window"]["events"]


async def test_events_sent_one_at_a_time_count_as_the_same_events_in_a_batch(
    aiohttp_client: Any,
    settings: Settings,
    baseline_rows: list[dict[str, Any]],
) -> None:
    # Each predict below is its flush's only event: binned on its own (bin_event), where
    # the batch goes through bin_batch. Bad values, missing ones, unseen categories and
    # values beyond the baseline's tails must come out the same on both paths. The
    # example monitor declares versions and takes labels: each predict is given an id.
    client = await aiohttp_client(create_app(settings))
    rows = [dict(r) for r in baseline_rows[:60]]
    rows[3]["age"] = "old"
    rows[5]["product_category"] = {"a": 1}
    rows[8]["income"] = 10**400
    rows[11].pop("region")
    rows[13]["channel"] = "carrier-pigeon"
    rows[17]["income"] = 1e9
    rows[19]["credit_score"] = "NA"
    refused = {}
    for i, row in enumerate(rows):
        status, body, _ = await post_json(client, "/monitor/predict", {"features": row})
        if status != 200:
            assert status == 422, body
            refused[i] = [(e["field"], e["message"]) for e in body["errors"]]
    assert sorted(refused) == [3, 5, 8]
    single = (await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json())["features"]
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204

    status, body, _ = await post_json(
        client, f"/v1/monitors/{MONITOR}/events", [{"features": r} for r in rows]
    )
    assert (body["accepted"], body["rejected"]) == (len(rows) - 3, 3)
    for error in body["errors"]:
        field = error["field"].split("].", 1)[1]  # "[3].features.age" -> "features.age"
        assert refused[error["index"]] == [(field, error["message"])]
    batched = (await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json())["features"]
    for name, feature in batched.items():
        mine = single[name]
        for field in ("window_proportions", "window_count", "missing_rate", "mean", "std"):
            assert mine.get(field) == feature.get(field), (name, field)
        assert mine.get("out_of_range_rate") == feature.get("out_of_range_rate"), name
    assert single["income"]["out_of_range_rate"] > 0
    assert single["region"]["missing_rate"] > 0


async def test_column_requests_of_one_flush_with_different_columns_count_as_events(
    client: TestClient, baseline_rows: list[dict[str, Any]]
) -> None:
    # Submitted in one loop turn, they share a flush and its one binning call: a column
    # one request lacks is missing for its rows only, another's unknown column is its own.
    engine = client.app[ENGINE]
    monitor = engine.monitor(MONITOR)
    rows = [dict(r) for r in baseline_rows[:90]]
    names = sorted({k for r in rows for k in r})
    parts = [rows[:30], rows[30:60], rows[60:]]
    parts[1][4]["income"] = "lots"
    columns = [{name: [r.get(name) for r in part] for name in names} for part in parts]
    del columns[0]["income"]
    columns[2]["shoe_size"] = [41] * len(parts[2])
    results = await asyncio.gather(
        *(engine.ingest_columns(monitor, c, len(p)) for c, p in zip(columns, parts, strict=True))
    )
    assert [(r.accepted, len(r.rejected)) for r in results] == [(30, 0), (29, 1), (30, 0)]
    assert (results[1].rejected[0].index, results[1].rejected[0].feature) == (4, "income")
    assert [r.warnings for r in results] == [[], [], ['unknown feature "shoe_size" ignored']]
    by_columns = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204

    for row in parts[0]:
        row.pop("income", None)
    events = [{"features": r} for r in rows]
    status, body, _ = await post_json(client, f"/v1/monitors/{MONITOR}/events", events)
    assert (status, body["accepted"]) == (200, 89), body
    by_events = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert by_columns["window"]["events"] == by_events["window"]["events"] == 89
    for name, feature in by_events["features"].items():
        mine = by_columns["features"][name]
        assert mine["window_count"] == feature["window_count"], name
        assert mine["window_proportions"] == feature["window_proportions"], name
        assert mine["missing_rate"] == feature["missing_rate"], name


async def test_packed_msgpack_columns_count_like_json_lists(client: TestClient) -> None:
    ages = [30.0, float("nan"), 41.5, float("inf"), 55.0]
    channels = ["web", "store", None, "web", "web"]
    body = msgspec.msgpack.encode(
        {"columns": {"age": np.array(ages, dtype="<f8").tobytes(), "channel": channels}}
    )
    path = f"/v1/monitors/{MONITOR}/columns"
    response = await client.post(path, data=body, headers={"Content-Type": "application/msgpack"})
    answer = await response.json()
    assert response.status == 200, answer
    assert (answer["accepted"], answer["rejected"]) == (4, 1)
    assert answer["errors"][0]["field"] == "columns.age[3]"
    packed = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert (await client.delete(f"/v1/monitors/{MONITOR}/window")).status == 204
    # The same values as JSON lists (NaN is a null there; the infinite event left out).
    lists = {"age": [30.0, None, 41.5, 55.0], "channel": ["web", "store", None, "web"]}
    status, answer, _ = await post_json(client, path, {"columns": lists})
    assert status == 200 and answer["accepted"] == 4
    plain = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    for name in ("age", "channel"):
        for key in ("window_proportions", "window_count", "missing_rate", "mean"):
            assert packed["features"][name].get(key) == plain["features"][name].get(key)
    wrong = msgspec.msgpack.encode({"columns": {"channel": b"\0" * 8}})
    response = await client.post(path, data=wrong, headers={"Content-Type": "application/msgpack"})
    problem = await response.json(content_type=None)
    assert response.status == 422 and problem["errors"][0]["field"] == "columns.channel"
    odd = msgspec.msgpack.encode({"columns": {"age": b"\0" * 7}})
    response = await client.post(path, data=odd, headers={"Content-Type": "application/msgpack"})
    problem = await response.json(content_type=None)
    assert response.status == 422 and "multiple of 8 bytes" in problem["detail"]


async def test_columns_refuse_ragged_empty_oversized_and_future(aiohttp_client: Any) -> None:
    limits = Limits(max_batch_events=3, max_features=4)
    client = await aiohttp_client(create_app(make_settings(None, limits=limits)))
    path = f"/v1/monitors/{MONITOR}/columns"
    status, problem, _ = await post_json(
        client, path, {"columns": {"age": [1, 2], "channel": ["web"]}}
    )
    assert status == 422
    assert problem["errors"][0]["field"] == "columns.channel"
    assert "expected 2 values" in problem["detail"]
    status, problem, _ = await post_json(client, path, {"columns": {"age": []}})
    assert status == 422 and problem["errors"][0]["field"] == "columns"
    status, problem, _ = await post_json(client, path, {"columns": {"age": [1, 2, 3, 4]}})
    assert status == 413 and "at most 3 events" in problem["detail"]
    wide = {"columns": {f"f{i}": [1] for i in range(5)}}
    status, problem, _ = await post_json(client, path, wide)
    assert status == 422 and problem["errors"][0]["field"] == "columns"
    future = {"columns": {"age": [1]}, "timestamp": "2999-01-01T00:00:00Z"}
    status, problem, _ = await post_json(client, path, future)
    assert status == 400 and problem["errors"][0]["field"] == "timestamp"
    status, problem, _ = await post_json(client, path, {"columns": {"age": [True]}})
    assert status == 422 and problem["errors"][0]["field"] == "columns.age[0]"
    # A request none of whose columns is a feature (a typo) would count all-missing events.
    status, problem, _ = await post_json(client, path, {"columns": {"agee": [31, 40]}})
    assert status == 422, problem
    assert problem["errors"][0]["field"] == "columns"
    assert problem["errors"][0]["reason"] == "no_known_features"
    assert "got agee; features: age, channel, credit_score, income" in problem["detail"]
    report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert report["window"]["events"] == 0


async def test_late_events_are_acknowledged_not_counted(client: TestClient) -> None:
    status, body, _ = await post_json(
        client,
        "/monitor/predict",
        {"features": {"age": 30}, "timestamp": "2020-01-01T00:00:00Z"},
    )
    assert status == 200
    assert body["window"]["events"] == 0
    assert "outside the" in body["warnings"][0]


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"features": {"age": 1', 400, None),
        (b"", 400, None),
        (b'{"features": {"age": NaN}}', 400, None),
        (b'{"features": {"age": 1e999}}', 422, "features"),
        (b'{"features": [1, 2]}', 422, "features"),
        (b'{"model_version": "v1"}', 422, "features"),
        (b'{"features": {"age": "old"}}', 422, "features.age"),
        (b'{"features": {"age": true}}', 422, "features.age"),
        (b'{"features": {"age": 123456789012345678901234567890123456789}}', 422, "features.age"),
        (b'{"features": {"channel": {"a": 1}}}', 422, "features.channel"),
        (b'{"features": {"age": 1}, "timestamp": "yesterday"}', 422, "timestamp"),
        (b'{"features": {"age": 1}, "timestamp": "2025-05-29T10:30:00"}', 422, "timestamp"),
        (b'{"features": {"age": 1}, "timestamp": "2999-05-29T10:30:00Z"}', 400, "timestamp"),
        (b'{"features": {"age": 1}, "monitor": "nope"}', 404, "monitor"),
        (b'{"features": {"age": 1}, "model_version": 3}', 422, "model_version"),
    ],
)
async def test_bad_predict_input_gets_problem_document(
    client: TestClient, body: bytes, status: int, field: str | None
) -> None:
    response = await client.post(
        "/monitor/predict", data=body, headers={"Content-Type": "application/json"}
    )
    problem = await response.json(content_type=None)
    assert response.status == status, problem
    assert response.content_type == PROBLEM
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert problem["title"] and problem["detail"]
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem


async def test_wrong_type_message_names_field_and_value(client: TestClient) -> None:
    status, problem, _ = await post_json(client, "/monitor/predict", {"features": {"age": "old"}})
    assert status == 422
    assert problem["detail"] == 'features.age: expected a number, got "old"'


async def test_batches_at_their_limit_count_and_one_past_it_are_refused(
    aiohttp_client: Any,
) -> None:
    # A batch is decoded whole only when its braces fit the limit (two per event, one
    # per label): at the limit every form counts; one past it every form is refused.
    limits = Limits(max_batch_events=4)
    client = await aiohttp_client(create_app(make_settings(None, limits=limits)))
    event = {"features": {"age": 41, "channel": "web"}}
    events_path = f"/v1/monitors/{MONITOR}/events"
    for size, status in ((4, 200), (5, 413)):
        bodies = [
            ("/monitor/batch", msgspec.json.encode({"events": [event] * size}), "json"),
            ("/monitor/batch", msgspec.json.encode([event] * size), "json"),
            (events_path, b"\n".join([msgspec.json.encode(event)] * size), "x-ndjson"),
        ]
        for path, body, kind in bodies:
            response = await client.post(
                path, data=body, headers={"Content-Type": f"application/{kind}"}
            )
            answer = await response.json()
            assert response.status == status, (path, kind, answer)
            if status == 200:
                assert (answer["accepted"], answer["rejected"]) == (size, 0)
            else:
                assert "at most 4 events" in answer["detail"]


async def test_limits_body_features_events_strings(aiohttp_client: Any) -> None:
    limits = Limits(max_body_bytes=2048, max_features=5, max_batch_events=3, max_string_length=8)
    client = await aiohttp_client(create_app(make_settings(None, limits=limits)))
    big = {"features": {"age": 1, "pad": "x" * 4096}}
    status, problem, _ = await post_json(client, "/monitor/predict", big)
    assert status == 413 and problem["status"] == 413
    many = {"features": {f"f{i}": i for i in range(6)}}
    status, problem, _ = await post_json(client, "/monitor/predict", many)
    assert status == 422
    assert problem["errors"][0]["field"] == "features"
    assert "at most 5 features" in problem["detail"]
    status, problem, _ = await post_json(
        client, "/monitor/batch", {"events": [{"features": {"age": 1}}] * 4}
    )
    assert status == 413
    assert "at most 3 events" in problem["detail"]
    status, problem, _ = await post_json(client, "/monitor/batch", {"events": []})
    assert status == 422 and problem["errors"][0]["field"] == "events"
    status, problem, _ = await post_json(
        client, "/monitor/predict", {"features": {"channel": "x" * 9}}
    )
    assert status == 422
    assert problem["errors"][0]["field"] == "features.channel"


async def test_content_type_and_unknown_routes(client: TestClient) -> None:
    response = await client.post(
        "/monitor/predict", data=b"age=3", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert response.content_type == PROBLEM
    response = await client.get("/nope")
    assert response.status == 404 and response.content_type == PROBLEM
    response = await client.get("/monitor/predict")
    assert response.status == 405 and response.content_type == PROBLEM
    response = await client.get("/v1/monitors/nope/drift")
    assert response.status == 404
    assert (await response.json(content_type=None))["errors"][0]["field"] == "monitor"


async def test_monitor_listing_and_detail(client: TestClient) -> None:
    listing = await (await client.get("/v1/monitors")).json()
    assert listing["default_monitor"] == MONITOR
    (summary,) = listing["monitors"]
    assert summary["features"]["num_products"] == "numeric"
    assert summary["features"]["channel"] == "categorical"
    detail = await (await client.get(f"/v1/monitors/{MONITOR}")).json()
    assert detail["policy"]["feature_thresholds"]["credit_score"] == {
        "warning": 0.15,
        "critical": 0.4,
        "notice": 0.1,
    }
    assert detail["policy"]["tests"]["credit_score"] == "psi"
    assert detail["policy"]["tests"]["channel"] == "chisquare"
    assert detail["policy"]["multiple_testing"] == "none"
    assert detail["baseline"]["features"]["num_products"]["discrete"] is True
    assert detail["baseline"]["rows"] == 4000


async def test_delete_window_forgets_counts(client: TestClient) -> None:
    await send_events(client, [{"age": 30}, {"age": 31}])
    response = await client.delete(f"/v1/monitors/{MONITOR}/window")
    assert response.status == 204
    report = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert report["window"]["events"] == 0
    # Idempotent, and works for a monitor that is not (or no longer) loaded.
    assert (await client.delete("/v1/monitors/gone/window")).status == 204
    response = await client.delete("/v1/monitors/Bad%20Name/window")
    assert response.status == 422
    assert response.content_type == PROBLEM


async def test_async_mode_refuses_bad_values_at_once_and_counts_the_rest(
    aiohttp_client: Any,
) -> None:
    client = await aiohttp_client(create_app(make_settings(None, ack_mode="async")))
    status, problem, _ = await post_json(client, "/monitor/predict", {"features": {"age": "old"}})
    assert status == 422 and problem["errors"][0]["field"] == "features.age"
    for features in ({"age": 30, "channel": "web"}, {"age": "NA"}, {"age": True}):
        await post_json(client, "/monitor/predict", {"features": features})
    # Two counted: the plain one (binned at flush) and "NA" (missing, binned at once);
    # the boolean is refused. The drift report reads the store, after the flush.
    reports: list[dict[str, Any]] = []

    async def flushed() -> bool:
        reports.append(await (await client.get("/monitor/drift")).json())
        return bool(reports[-1]["window"]["events"] >= 2)

    await wait_until(flushed, lambda: f"window holds {reports[-1]['window']['events']} events")
    report = reports[-1]
    assert report["window"]["events"] == 2
    assert report["features"]["age"]["window_count"] == 1


def test_rejections_are_named_by_their_path_in_the_request() -> None:
    # The engine names the event and the feature; the HTTP layer knows the request shape.
    kids = Rejection(3, "features", "invalid_value", 'expected a number, got "two"', "kids")
    assert event_path(kids) == "features.kids"
    assert event_path(kids, "events[3].") == "events[3].features.kids"
    assert event_path(kids, "[3].") == "[3].features.kids"
    too_many = Rejection(0, "features", "too_many_features", "expected at most 2 features")
    assert event_path(too_many, "events[0].") == "events[0].features"
    future = Rejection(1, "timestamp", "future_timestamp", "is 900 s in the future")
    assert event_path(future, "[1].") == "[1].timestamp"
    assert column_path(kids) == "columns.kids[3]"
    assert column_path(too_many) == "columns"
    assert column_path(future) == "timestamp"
