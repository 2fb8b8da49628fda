"""Declared model versions and segments: windows of their own, and champion / challenger.

Over the real app and sockets, on the embedded store, Redis and a 3-master Redis
Cluster: every ingestion path (events, single predicts with and without an idempotency
key, columns) counts an event into the whole window and into its declared version's and
segment's; the answers are checked against counts, means and statistics computed here
from the events sent, with numpy/scipy.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats
from support import make_monitor, wait_until

from bench.rediscluster import redis_cluster
from driftline.core.monitor import MonitorConfigError
from driftline.core.performance import hanley_mcneil_se
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import build_profile
from driftline.http.app import create_app
from driftline.settings import Settings

COUNTRIES = ["DE", "FR", "US", "ES"]
SPEC = PredictionSpec("probabilities", ["yes", "no"])


def baseline_profile() -> Any:
    rng = np.random.default_rng(3)
    n = 2000
    p = rng.uniform(size=n)
    return build_profile(
        {
            "x": rng.normal(size=n).tolist(),
            "country": rng.choice(COUNTRIES, size=n, p=[0.4, 0.3, 0.2, 0.1]).tolist(),
            "prediction": [{"yes": float(a), "no": float(1 - a)} for a in p],
        },
        prediction=SPEC,
    )


def config(baseline: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "scoped",
        "baseline": str(baseline),
        "prediction": msgspec.to_builtins(SPEC),
        "labels": {"horizon_seconds": 3600},
        "model_versions": ["v1", "v2"],
        "segments": {"by": "country", "values": ["DE", "US"]},
        "min_samples": 50,
        **extra,
    }


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster.url


@pytest.fixture(params=["memory", "redis", "cluster"])
async def api(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path) -> TestClient:
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(msgspec.json.encode(baseline_profile()))
    monitors = tmp_path / "monitors"
    monitors.mkdir()
    (monitors / "scoped.json").write_text(json.dumps(config(baseline)))
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    elif request.param == "cluster":
        url = request.getfixturevalue("cluster_url")
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(monitors),
        redis_url=url,
        redis_cluster=request.param == "cluster",
        flush_interval=0.001,
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    # A shared Redis (Cluster) outlives one test: start from an empty window.
    assert (await client.delete("/v1/monitors/scoped/window")).status == 204
    return client


async def get(client: TestClient, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    return response.status, await response.json(content_type=None)


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    """Events over two declared versions, an undeclared one and none, four countries."""
    rng = np.random.default_rng(seed)
    versions = ["v1", "v2", "v9", None]
    events = []
    for i in range(n):
        version = versions[i % 4]
        shift = 1.0 if version == "v2" else 0.0
        p = float(rng.uniform(0.05, 0.95))
        event: dict[str, Any] = {
            "id": f"s{seed}-{i}",
            "features": {
                "x": float(np.round(rng.normal(shift), 6)),
                "country": str(rng.choice(COUNTRIES)),
            },
            "prediction": [p, 1 - p],
        }
        if version is not None:
            event["model_version"] = version
        events.append(event)
    return events


async def send_every_way(client: TestClient, events: list[dict[str, Any]]) -> None:
    """The first half as one events batch, then singles (some keyed), the rest as columns."""
    half = len(events) // 2
    response = await client.post("/v1/monitors/scoped/events", json=events[:half])
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == half
    singles = events[half : half + 40]
    for i, event in enumerate(singles):
        headers = {"Idempotency-Key": f"single-{event['id']}"} if i % 2 else {}
        response = await client.post(
            "/monitor/predict", json={**event, "monitor": "scoped"}, headers=headers
        )
        assert response.status == 200, await response.text()
    rest = events[half + 40 :]
    by_version: dict[Any, list[dict[str, Any]]] = {}
    for event in rest:
        by_version.setdefault(event.get("model_version"), []).append(event)
    for version, group in by_version.items():
        body: dict[str, Any] = {
            "columns": {
                "x": [e["features"]["x"] for e in group],
                "country": [e["features"]["country"] for e in group],
            },
            "prediction": [e["prediction"] for e in group],
        }
        if version is not None:
            body["model_version"] = version
        response = await client.post("/v1/monitors/scoped/columns", json=body)
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == len(group)


def expected_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    xs = np.array([e["features"]["x"] for e in events])
    countries = Counter(e["features"]["country"] for e in events)
    return {"events": len(events), "mean": float(xs.mean()), "countries": countries}


def check_report(report: dict[str, Any], events: list[dict[str, Any]], segment: bool) -> None:
    expected = expected_of(events)
    assert report["window"]["events"] == expected["events"]
    x = report["features"]["x"]
    assert x["window_count"] == expected["events"]
    assert x["mean"] == pytest.approx(expected["mean"], abs=1e-6)
    if segment:
        # Inside a segment its feature is fixed: not judged.
        assert "country" not in report["features"]
        return
    country = report["features"]["country"]
    shown = dict(zip(country["bins"], country["window_proportions"], strict=True))
    for name in COUNTRIES:
        assert shown[name] == pytest.approx(expected["countries"][name] / expected["events"])


async def test_each_declared_version_and_segment_has_its_own_window(api: TestClient) -> None:
    events = make_events(400, seed=1)
    await send_every_way(api, events)
    status, whole = await get(api, "/v1/monitors/scoped/drift")
    assert status == 200, whole
    check_report(whole, events, segment=False)
    assert whole["model_version"] is None and whole["segment"] is None
    for version in ("v1", "v2"):
        status, report = await get(api, f"/v1/monitors/scoped/drift?model_version={version}")
        assert status == 200, report
        assert report["model_version"] == version
        check_report(report, [e for e in events if e.get("model_version") == version], False)
    for country in ("DE", "US"):
        status, report = await get(api, f"/v1/monitors/scoped/drift?segment={country}")
        assert status == 200, report
        assert report["segment"] == country
        chosen = [e for e in events if e["features"]["country"] == country]
        check_report(report, chosen, segment=True)
    # v2's inputs moved by one baseline SD: its window drifts, v1's does not.
    _, v1 = await get(api, "/v1/monitors/scoped/drift?model_version=v1")
    _, v2 = await get(api, "/v1/monitors/scoped/drift?model_version=v2")
    assert "x" in v2["drifted_features"] and "x" not in v1["drifted_features"]


async def test_undeclared_scopes_are_refused_by_name(api: TestClient) -> None:
    for query, field, text in (
        ("model_version=v9", "model_version", "declared: v1, v2"),
        ("segment=FR", "segment", "declared: DE, US"),
        ("model_version=v1&segment=DE", "segment", "not both"),
    ):
        status, body = await get(api, f"/v1/monitors/scoped/drift?{query}")
        assert status == 400, body
        assert body["errors"][0]["field"] == field and text in body["detail"], body


def labels_for(events: list[dict[str, Any]], accuracy: float, seed: int) -> list[dict[str, Any]]:
    """A label per event that agrees with its predicted class with probability `accuracy`."""
    rng = np.random.default_rng(seed)
    labels = []
    for event in events:
        predicted = "yes" if event["prediction"][0] > 0.5 else "no"
        other = "no" if predicted == "yes" else "yes"
        labels.append(
            {"id": event["id"], "label": predicted if rng.uniform() < accuracy else other}
        )
    return labels


async def test_champion_and_challenger_are_compared_on_their_labels(api: TestClient) -> None:
    events = [e for e in make_events(1600, seed=2) if e.get("model_version") in ("v1", "v2")]
    response = await api.post("/v1/monitors/scoped/events", json=events)
    assert response.status == 200, await response.text()
    v1 = [e for e in events if e["model_version"] == "v1"]
    v2 = [e for e in events if e["model_version"] == "v2"]
    labels = labels_for(v1, 0.9, seed=3) + labels_for(v2, 0.7, seed=4)
    response = await api.post("/v1/monitors/scoped/labels", json=labels)
    assert response.status == 200, await response.text()
    assert (await response.json())["counted"] == len(labels)

    truth = {label["id"]: label["label"] for label in labels}

    def accuracy(group: list[dict[str, Any]]) -> tuple[float, int]:
        hits = sum(("yes" if e["prediction"][0] > 0.5 else "no") == truth[e["id"]] for e in group)
        return hits / len(group), len(group)

    (pa, na), (pb, nb) = accuracy(v1), accuracy(v2)
    status, report = await get(api, "/v1/monitors/scoped/drift?model_version=v2")
    assert status == 200, report
    assert report["performance"]["labelled"] == nb
    assert report["performance"]["accuracy"] == pytest.approx(pb, abs=1e-12)

    status, body = await get(api, "/v1/monitors/scoped/compare?a=v1&b=v2&metric=accuracy")
    assert status == 200, body
    difference = body["difference"]
    assert (difference["a"], difference["b"]) == (pytest.approx(pa), pytest.approx(pb))
    assert (difference["labelled_a"], difference["labelled_b"]) == (na, nb)
    gain = pb - pa
    se = np.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    z = stats.norm.ppf(1 - 0.05 / 2)  # the monitor's alpha: the default 0.05
    assert difference["improvement"] == pytest.approx(gain, abs=1e-12)
    assert difference["ci_low"] == pytest.approx(gain - z * se, abs=1e-9)
    assert difference["ci_high"] == pytest.approx(gain + z * se, abs=1e-9)
    assert difference["p_value"] == pytest.approx(2 * stats.norm.sf(abs(gain) / se), rel=1e-6)
    assert body["verdict"] == "b_worse" and body["a"]["events"] == na, body
    # The drift between them: B's inputs moved by one SD against A's.
    assert "x" in body["drift"]["drifted_features"]

    status, swapped = await get(api, "/v1/monitors/scoped/compare?a=v2&b=v1&metric=accuracy")
    assert swapped["verdict"] == "b_better", swapped
    status, wide = await get(
        api, "/v1/monitors/scoped/compare?a=v2&b=v1&metric=accuracy&margin=0.5"
    )
    assert wide["verdict"] == "no_difference" and "within" in wide["reason"], wide

    # The default metric with probabilities is ROC-AUC, from the binned scores.
    status, auc = await get(api, "/v1/monitors/scoped/compare?a=v1&b=v2")
    assert status == 200 and auc["metric"] == "roc_auc", auc
    for side, group in (("a", v1), ("b", v2)):
        positive = [e["prediction"][0] for e in group if truth[e["id"]] == "yes"]
        negative = [e["prediction"][0] for e in group if truth[e["id"]] == "no"]
        exact = stats.mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative))
        # Binned scores: within half the pairs that share one of the 100 bins (docs/labels.md).
        assert auc["difference"][side] == pytest.approx(exact, abs=0.01)
    found = auc["difference"]
    positives = [sum(truth[e["id"]] == "yes" for e in group) for group in (v1, v2)]
    se_auc = np.hypot(
        hanley_mcneil_se(found["a"], positives[0], len(v1) - positives[0]),
        hanley_mcneil_se(found["b"], positives[1], len(v2) - positives[1]),
    )
    assert found["ci_high"] - found["ci_low"] == pytest.approx(2 * z * se_auc, rel=1e-9)


async def test_events_sent_one_at_a_time_count_and_join_in_their_scopes(
    api: TestClient,
) -> None:
    # Each predict is its flush's only event, binned on its own (unkeyed: the service
    # makes its id): it must land in its version's and its segment's blocks, and its kept
    # prediction must carry them too, so that its label counts there.
    events = make_events(120, seed=7)
    for event in events:
        unkeyed = {k: v for k, v in event.items() if k != "id"}
        response = await api.post("/monitor/predict", json={**unkeyed, "monitor": "scoped"})
        assert response.status == 200, await response.text()
        event["id"] = (await response.json())["id"]
    labels = labels_for(events, 0.8, seed=8)
    response = await api.post("/v1/monitors/scoped/labels", json=labels)
    assert response.status == 200, await response.text()
    assert (await response.json())["counted"] == len(labels)
    truth = {label["id"]: label["label"] for label in labels}
    scopes = [("", lambda e: True, False)]
    scopes += [
        (f"?model_version={v}", lambda e, v=v: e.get("model_version") == v, False)
        for v in ("v1", "v2")
    ]
    scopes += [
        (f"?segment={c}", lambda e, c=c: e["features"]["country"] == c, True) for c in ("DE", "US")
    ]
    for query, member, segment in scopes:
        chosen = [e for e in events if member(e)]
        status, report = await get(api, f"/v1/monitors/scoped/drift{query}")
        assert status == 200, report
        check_report(report, chosen, segment)
        hits = [("yes" if e["prediction"][0] > 0.5 else "no") == truth[e["id"]] for e in chosen]
        assert report["performance"]["labelled"] == len(chosen), query
        assert report["performance"]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)


async def test_compare_refuses_what_it_cannot_compare(api: TestClient) -> None:
    for query, field in (
        ("a=v1", "b"),
        ("a=v1&b=v1", "b"),
        ("a=v9&b=v1", "a"),
        ("a=v1&b=v2&metric=mae", "metric"),
        ("a=v1&b=v2&metric=f1", "metric"),
        ("a=v1&b=v2&margin=-1", "margin"),
        ("a=v1&b=v2&margin=nan", "margin"),
    ):
        status, body = await get(api, f"/v1/monitors/scoped/compare?{query}")
        assert status == 400, (query, body)
        assert body["errors"][0]["field"] == field, (query, body)
    status, body = await get(api, "/v1/monitors/scoped/compare?a=v1&b=v2")
    assert status == 200 and body["verdict"] == "no_difference", body
    assert "too few labelled events" in body["reason"]


async def test_prometheus_labels_only_declared_versions_and_segments(api: TestClient) -> None:
    events = make_events(200, seed=5)
    response = await api.post("/v1/monitors/scoped/events", json=events)
    assert response.status == 200
    v1 = sum(e.get("model_version") == "v1" for e in events)
    de = sum(e["features"]["country"] == "DE" for e in events)
    text = ""

    async def published() -> bool:
        nonlocal text
        await api.get("/v1/monitors/scoped/drift")  # an assessment: scopes every 5 s
        text = await (await api.get("/monitor/metrics")).text()
        return (
            f'driftline_version_window_events{{model_version="v1",monitor="scoped"}} {v1}' in text
            and f'driftline_segment_window_events{{monitor="scoped",segment="DE"}} {de}' in text
        )

    await wait_until(published, lambda: text[-3000:], within=20, interval=0.5)
    scoped = re.findall(r"^driftline_(?:version|segment)_\w+\{([^}]*)\}", text, re.MULTILINE)
    values = {
        m for labels in scoped for m in re.findall(r'(?:model_version|segment)="([^"]*)"', labels)
    }
    assert values == {"v1", "v2", "DE", "US"}


def test_scope_declarations_are_checked(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_bytes(msgspec.json.encode(baseline_profile()))
    for extra, message in (
        ({"segments": {"by": "x"}}, "segments.by: 'x' is not a categorical feature"),
        ({"segments": {"by": "country", "values": ["NL"]}}, "'NL' is not a category"),
        ({"model_versions": [f"v{i}" for i in range(9)]}, "at most 8 versions"),
    ):
        with pytest.raises(MonitorConfigError, match=re.escape(message)):
            make_monitor(config(baseline, **extra))
    # Without values: the baseline's most frequent categories.
    top = make_monitor(config(baseline, segments={"by": "country", "top": 2}))
    assert top.scopes.segments == ("DE", "FR")
    # Declaring scopes starts a window under another layout id; none keeps the plain one.
    plain = make_monitor({**config(baseline), "model_versions": [], "segments": None})
    assert plain.scopes.blocks == 1 and plain.window.width == plain.layout.width
    assert top.window.width == plain.layout.width * (1 + 2 + 2)
    assert len({plain.window.layout_id, top.window.layout_id}) == 2
