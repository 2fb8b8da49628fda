"""Delayed labels and performance, on both window stores.

The metrics are checked against numpy and scipy computed from the raw (prediction,
label) pairs; the labels route's counts (counted, late, unmatched, duplicate,
after_horizon, unsampled, rejected) through the real app over real sockets; and the
atomic consume: a record taken by another label meanwhile counts nothing twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats
from support import make_monitor

from driftline.core.limits import Limits
from driftline.core.monitor import MonitorConfig, MonitorConfigError
from driftline.core.performance import (
    AUC_BINS,
    RECORD,
    RECORD_BYTES,
    LabelError,
    PerformanceSlots,
    auc_tie_bound,
    id_digest,
    label_deltas,
    label_value,
    payloads,
    performance,
    records,
    sampled,
)
from driftline.core.policy import LabelsPolicy
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import build_profile
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.stores.protocol import TOMBSTONE, Pending, WindowStore

CLASSES = ["yes", "no", "maybe"]
NOW = 1_700_000_000.0


def profile_of(kind: str, n: int = 500, seed: int = 1) -> Any:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).tolist()
    if kind == "probabilities":
        p = rng.uniform(size=n)
        prediction: list[Any] = [{"yes": float(a), "no": float(1 - a)} for a in p]
        declared = PredictionSpec("probabilities", ["yes", "no"])
    elif kind == "class":
        prediction = rng.choice(CLASSES, size=n).tolist()
        declared = PredictionSpec("class", CLASSES)
    else:
        prediction = (rng.normal(size=n) * 3 + 10).tolist()
        declared = PredictionSpec("regression")
    return build_profile({"x": x, "prediction": prediction}, prediction=declared), declared


def monitor_of(kind: str, tmp_path: Path, **labels: Any) -> Any:
    profile, declared = profile_of(kind)
    path = tmp_path / f"{kind}.json"
    path.write_bytes(msgspec.json.encode(profile))
    return make_monitor(
        {
            "name": kind,
            "baseline": str(path),
            "prediction": msgspec.to_builtins(declared),
            "labels": labels,
        }
    )


def deltas_total(monitor: Any, predicted: list[Any], truth: list[Any]) -> np.ndarray:
    """The window vector the pairs add: records as events leave them, labels joined."""
    slots = monitor.layout.performance
    decoder = monitor.decoder
    outputs = [decoder.values(p) for p in predicted]
    columns = [[row[j] for row in outputs] for j in range(len(decoder.names))]
    joined = np.frombuffer(
        records(np.full(len(predicted), 600, dtype=np.int64), payloads(slots, columns)), RECORD
    )
    values = np.array([label_value(slots, t) for t in truth])
    deltas = label_deltas(slots, monitor.window.width, joined, values)
    return sum(deltas.values())  # type: ignore[return-value]


# ------------------------------------------------------------------ the metrics


def test_classification_metrics_match_numpy(tmp_path: Path) -> None:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix."""
    monitor = monitor_of("class", tmp_path)
    rng = np.random.default_rng(7)
    truth = rng.choice(CLASSES, size=2000, p=[0.5, 0.3, 0.2])
    predicted = np.where(rng.uniform(size=2000) < 0.7, truth, rng.choice(CLASSES, size=2000))
    found = performance(
        monitor.layout.performance, deltas_total(monitor, list(predicted), list(truth))
    )
    assert found.labelled == 2000
    assert found.accuracy == pytest.approx(np.mean(truth == predicted), abs=1e-12)
    f1s = []
    for i, name in enumerate(CLASSES):
        tp = np.sum((truth == name) & (predicted == name))
        precision = tp / np.sum(predicted == name)
        recall = tp / np.sum(truth == name)
        f1 = 2 * precision * recall / (precision + recall)
        f1s.append(f1)
        got = found.classes[name]  # type: ignore[index]
        assert (got.precision, got.recall, got.f1) == pytest.approx((precision, recall, f1))
        assert got.support == np.sum(truth == name)
        for j, other in enumerate(CLASSES):
            cell = np.sum((truth == name) & (predicted == other))
            assert found.confusion_matrix[i][j] == cell  # type: ignore[index]
    assert found.macro_f1 == pytest.approx(np.mean(f1s))
    assert found.roc_auc is None and found.log_loss is None  # a class has no score


def test_auc_and_log_loss_match_the_raw_scores(tmp_path: Path) -> None:
    """Binned AUC within its stated tie bound of scipy's on raw scores; log loss exact."""
    monitor = monitor_of("probabilities", tmp_path)
    slots = monitor.layout.performance
    rng = np.random.default_rng(11)
    truth = rng.uniform(size=5000) < 0.4
    score = np.clip(rng.normal(np.where(truth, 0.62, 0.45), 0.15), 0.0, 1.0)
    predicted = [{"yes": float(s), "no": float(1 - s)} for s in score]
    labels = ["yes" if t else "no" for t in truth]
    vector = deltas_total(monitor, predicted, labels)
    found = performance(slots, vector)
    u = stats.mannwhitneyu(score[truth], score[~truth]).statistic
    raw_auc = u / (truth.sum() * (~truth).sum())
    bins = vector[slots.scores : slots.scores + 2 * AUC_BINS]
    bound = auc_tie_bound(bins[:AUC_BINS], bins[AUC_BINS:])
    assert 0 < bound < 0.01
    assert abs(found.roc_auc - raw_auc) <= bound + 1e-12  # type: ignore[operator]
    p = np.clip(score, 1e-15, 1 - 1e-15)
    expected = -np.mean(np.where(truth, np.log(p), np.log(1 - p)))
    # Probabilities kept in 32-bit fixed point, log terms in 2^-20: far below a report.
    assert found.log_loss == pytest.approx(expected, abs=1e-5)
    argmax = np.where(score >= 0.5, "yes", "no")  # the first declared wins a tie
    assert found.accuracy == pytest.approx(np.mean(argmax == np.array(labels)))


def test_regression_metrics_match_numpy(tmp_path: Path) -> None:
    """MAE, RMSE and the mean error from fixed-point sums, against numpy on the raw pairs."""
    monitor = monitor_of("regression", tmp_path)
    rng = np.random.default_rng(3)
    label = rng.normal(10, 3, size=3000)
    predicted = label + rng.normal(0.4, 1.5, size=3000)
    found = performance(
        monitor.layout.performance, deltas_total(monitor, predicted.tolist(), label.tolist())
    )
    error = predicted - label
    assert found.labelled == 3000
    assert found.mae == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
    assert found.rmse == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-5)
    assert found.mean_error == pytest.approx(np.mean(error), rel=1e-4)


def test_labels_need_a_prediction_and_name_bad_fields(tmp_path: Path) -> None:
    profile, _ = profile_of("class")
    path = tmp_path / "p.json"
    path.write_bytes(msgspec.json.encode(profile))
    with pytest.raises(MonitorConfigError, match="labels: a label is joined to a prediction"):
        make_monitor({"name": "m", "baseline": str(path), "labels": {}})
    with pytest.raises(MonitorConfigError, match=r"labels\.sample_rate"):
        make_monitor(
            {
                "name": "m",
                "baseline": str(path),
                "prediction": {"kind": "class", "classes": CLASSES},
                "labels": {"sample_rate": 0},
            }
        )
    assert "labels" in MonitorConfig.__struct_fields__


def test_a_label_is_its_class_index_and_missing_names_stay_refused() -> None:
    """Every spelling of a class gives its index; a class named like "no value" is refused."""
    classes = ["1", "0", "NA"]
    profile = build_profile(
        {"x": [0.0, 1.0, 2.0], "prediction": classes}, prediction=PredictionSpec("class", classes)
    )
    slots = PerformanceSlots.of(PredictionSpec("class", classes), LabelsPolicy(), profile, 0)
    assert [label_value(slots, c) for c in ("1", "0")] == [0.0, 1.0]
    assert [label_value(slots, c) for c in (1, 0)] == [0.0, 1.0]  # numbers as category labels
    for value in ("NA", None, "maybe", [1], True):
        with pytest.raises(LabelError):
            label_value(slots, value)
    regression = build_profile(
        {"x": [0.0, 1.0, 2.0], "prediction": [0.5, 1.5, 3.0]},
        prediction=PredictionSpec("regression"),
    )
    spec = PredictionSpec("regression")
    numeric = PerformanceSlots.of(spec, LabelsPolicy(), regression, 0)
    assert label_value(numeric, 2) == 2.0
    with pytest.raises(LabelError, match="expected a number"):
        label_value(numeric, "2")


def test_sampling_is_by_id_and_close_to_its_rate() -> None:
    ids = [f"event-{i}" for i in range(20000)]
    kept = [sampled(id_digest(i), 0.25) for i in ids]
    assert kept == [sampled(id_digest(i), 0.25) for i in ids]  # the same on every replica
    assert abs(np.mean(kept) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 20000)


# ------------------------------------------------------------------ the stores


async def test_consume_counts_a_record_once(window_store: WindowStore, tmp_path: Path) -> None:
    """Lookup, then consume: a second consume of the same record finds it stale."""
    monitor = monitor_of("class", tmp_path)
    window = monitor.window
    slots = monitor.layout.performance
    now = datetime.now(UTC).timestamp()
    bucket = int(now // 60) * 60
    fake = getattr(window_store, "_clock", None)
    if hasattr(fake, "set"):
        fake.set(now)
    ids = [id_digest("a"), id_digest("b")]
    payload = payloads(slots, [["yes", "no"]])
    record_bytes = records(np.full(2, bucket, dtype=np.int64), payload)
    counts = np.zeros(window.width)
    counts[0] = 2
    await window_store.apply(
        window, {bucket: counts}, (), Pending(3600, b"".join(ids), record_bytes)
    )
    found = await window_store.lookup(window, 3600, [*ids, id_digest("c")])
    assert found.records[2] is None
    size = RECORD_BYTES
    assert found.records[0] == record_bytes[:size] and found.records[1] == record_bytes[size:]
    joined = np.frombuffer(record_bytes, RECORD)
    deltas = label_deltas(slots, window.width, joined, np.array([0.0, 0.0]))
    taken = [(ids[0], found.records[0]), (ids[1], found.records[1])]
    first = await window_store.consume(window, 3600, deltas, taken)
    assert first.result is not None and not first.stale
    assert first.result.totals.vector[slots.first] == 2
    again = await window_store.consume(window, 3600, deltas, taken)
    assert again.result is None and again.stale == (0, 1)
    assert (await window_store.lookup(window, 3600, ids)).records == [TOMBSTONE, TOMBSTONE]
    assert (await window_store.read(window)).vector[slots.first] == 2


# ------------------------------------------------------------------ over HTTP


def write_monitors(directory: Path) -> Path:
    directory.mkdir()
    for kind, labels in (
        ("probabilities", {"horizon_seconds": 600}),
        ("regression", {"horizon_seconds": 600, "sample_rate": 0.5}),
    ):
        profile, declared = profile_of(kind)
        baseline = directory.parent / f"{kind}.profile.json"
        baseline.write_bytes(msgspec.json.encode(profile))
        config = {
            "name": kind,
            "baseline": str(baseline),
            "prediction": msgspec.to_builtins(declared),
            "labels": labels,
        }
        (directory / f"{kind}.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(params=["memory", "redis"])
async def api(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Path) -> TestClient:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(write_monitors(tmp_path / "monitors")),
        redis_url=url,
        flush_interval=0.001,
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def post(client: TestClient, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    response = await client.post(path, json=body, **kwargs)
    return response.status, await response.json(content_type=None)


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(datetime.now(UTC).timestamp() - seconds_ago, UTC).isoformat()


async def test_label_batches_at_their_limit_are_joined_and_past_it_refused(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(write_monitors(tmp_path / "monitors")),
        limits=Limits(max_batch_events=3),
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    path = "/v1/monitors/probabilities/labels"
    label = {"id": "nobody", "label": "yes"}
    for size, status in ((3, 200), (4, 413)):
        for body, kind in (
            (msgspec.json.encode([label] * size), "json"),
            (b"\n".join([msgspec.json.encode(label)] * size), "x-ndjson"),
        ):
            response = await client.post(
                path, data=body, headers={"Content-Type": f"application/{kind}"}
            )
            answer = await response.json()
            assert response.status == status, (kind, answer)
            if status == 200:
                assert (answer["received"], answer["unmatched"]) == (3, 1), answer
            else:
                assert "at most 3 labels" in answer["detail"]


async def test_labels_decoded_in_one_pass_join_as_those_decoded_one_by_one(
    api: TestClient,
) -> None:
    # A batch whose labels all decode is decoded in one pass; one undecodable label sends
    # its batch label by label. Both halves must join and count alike.
    rng = np.random.default_rng(8)
    n = 200
    truth = rng.uniform(size=n) < 0.5
    score = rng.uniform(size=n)
    events = [
        {"id": f"e{i}", "features": {"x": 0.1}, "prediction": [float(s), float(1 - s)]}
        for i, s in enumerate(score)
    ]
    status, body = await post(api, "/v1/monitors/probabilities/events", events)
    assert status == 200 and body["accepted"] == n, body
    labels = [{"id": f"e{i}", "label": "yes" if t else "no"} for i, t in enumerate(truth)]
    status, whole = await post(api, "/v1/monitors/probabilities/labels", labels[:100])
    assert status == 200, whole
    status, split = await post(
        api, "/v1/monitors/probabilities/labels", [*labels[100:], {"label": "yes"}]
    )
    assert status == 200, split
    for answer, size in ((whole, 100), (split, 101)):
        assert answer["received"] == size
        assert (answer["counted"], answer["duplicate"], answer["unmatched"]) == (100, 0, 0)
    assert (whole["rejected"], whole["errors"]) == (0, [])
    assert split["rejected"] == 1
    assert [(e["field"], e["index"]) for e in split["errors"]] == [("[100].id", 100)]
    assert split["performance"]["labelled"] == n
    accuracy = np.mean((score >= 0.5) == truth)
    assert split["performance"]["accuracy"] == pytest.approx(accuracy)


async def test_labels_join_predictions_and_report_every_outcome(api: TestClient) -> None:
    rng = np.random.default_rng(5)
    n = 300
    truth = rng.uniform(size=n) < 0.5
    score = np.clip(rng.normal(np.where(truth, 0.65, 0.4), 0.2), 0, 1)
    events = [
        {"id": f"e{i}", "features": {"x": 0.1}, "prediction": [float(s), float(1 - s)]}
        for i, s in enumerate(score)
    ]
    old = stamp(1200)
    # Ten more, made 20 minutes ago: their labels come after the 600 s horizon.
    events += [
        {
            "id": f"old{i}",
            "features": {"x": 0.1},
            "prediction": [0.9, 0.1],
            "timestamp": old,
        }
        for i in range(10)
    ]
    status, body = await post(api, "/v1/monitors/probabilities/events", events)
    assert status == 200 and body["accepted"] == n + 10, body
    assert body["ids"][:2] == ["e0", "e1"]
    labels = [{"id": f"e{i}", "label": "yes" if t else "no"} for i, t in enumerate(truth)]
    labels += [{"id": f"old{i}", "label": "yes"} for i in range(10)]
    labels += [
        {"id": "e0", "label": "no"},  # the same id again in the batch
        {"id": "nobody", "label": "yes"},
        {"id": "e1", "label": "perhaps"},
        {"id": "e2"},
    ]
    status, body = await post(api, "/v1/monitors/probabilities/labels", labels)
    assert status == 200, body
    assert body["received"] == len(labels)
    assert (body["counted"], body["after_horizon"], body["duplicate"], body["unmatched"]) == (
        n,
        10,
        1,
        1,
    )
    assert body["rejected"] == 2
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert fields["[312].label"].startswith("expected one of the declared classes (yes, no)")
    assert fields["[313].label"] == "required"
    # The first declared class wins a tie, as the class output's argmax.
    accuracy = np.mean((score >= 0.5) == truth)
    assert body["performance"]["accuracy"] == pytest.approx(accuracy)
    # Posting them again: every one a duplicate, nothing counted twice.
    status, again = await post(api, "/v1/monitors/probabilities/labels", labels[:n])
    assert (again["counted"], again["duplicate"], again["unmatched"]) == (0, n, 0)
    assert again["performance"]["labelled"] == n
    report = await (await api.get("/v1/monitors/probabilities/drift")).json()
    assert report["performance"]["labelled"] == n
    raw_auc = stats.mannwhitneyu(score[truth], score[~truth]).statistic / (
        truth.sum() * (~truth).sum()
    )
    assert report["performance"]["roc_auc"] == pytest.approx(raw_auc, abs=0.01)
    metrics = await (await api.get("/monitor/metrics")).text()
    assert f'driftline_labelled_events{{monitor="probabilities"}} {n}' in metrics
    assert 'driftline_labels_total{monitor="probabilities",outcome="after_horizon"} 10' in metrics


async def test_predictions_sent_one_at_a_time_wait_for_their_labels(api: TestClient) -> None:
    # Each predict is its flush's only event (binned on its own); its prediction is kept
    # under the id made for it, and the labels join it as they join a batch's.
    rng = np.random.default_rng(11)
    score = rng.uniform(size=40)
    truth = rng.uniform(size=40) < score
    made = []
    for s in score:
        status, body = await post(
            api,
            "/monitor/predict",
            {"monitor": "probabilities", "features": {"x": 0.1}, "prediction": [s, 1 - s]},
        )
        assert status == 200, body
        made.append(body["id"])
    labels = [{"id": i, "label": "yes" if t else "no"} for i, t in zip(made, truth, strict=True)]
    status, body = await post(api, "/v1/monitors/probabilities/labels", labels)
    assert status == 200, body
    assert (body["counted"], body["unmatched"]) == (len(made), 0), body
    assert body["performance"]["accuracy"] == pytest.approx(np.mean((score >= 0.5) == truth))


async def test_a_prediction_without_id_gets_one_and_sampling_is_reported(api: TestClient) -> None:
    status, body = await post(
        api,
        "/monitor/predict",
        {"monitor": "regression", "features": {"x": 1.0}, "prediction": 12.5},
    )
    assert status == 200 and len(body["id"]) == 32, body
    made = body["id"]
    label = {"id": made, "label": 11.0}
    status, answer = await post(api, "/v1/monitors/regression/labels", [label])
    expected = "counted" if sampled(id_digest(made), 0.5) else "unsampled"
    assert answer[expected] == 1, answer
    if expected == "counted":
        assert answer["performance"]["mae"] == pytest.approx(1.5, rel=1e-5)
        assert answer["performance"]["mean_error"] == pytest.approx(1.5, rel=1e-5)
    status, problem = await post(
        api, "/v1/monitors/regression/labels", [{"id": "x", "label": "high"}]
    )
    assert status == 200 and problem["errors"][0]["field"] == "[0].label"
    assert problem["errors"][0]["message"] == 'expected a number, got "high"'


async def test_a_missing_prediction_is_counted_and_keeps_nothing_for_a_label(
    api: TestClient,
) -> None:
    """A prediction sent as a missing value ("", "NA") counts as missing; no label joins it."""
    ids = [i for i in (f"missing-{n}" for n in range(100)) if sampled(id_digest(i), 0.5)][:3]
    for event_id, value in zip(ids, ("", "NA"), strict=False):
        body = {"monitor": "regression", "id": event_id, "features": {"x": 1.0}}
        status, answer = await post(api, "/monitor/predict", {**body, "prediction": value})
        assert status == 200, answer
    event = {"id": ids[2], "features": {"x": 1.0}, "prediction": ""}
    status, answer = await post(api, "/v1/monitors/regression/events", [event])
    assert status == 200 and answer["accepted"] == 1, answer
    labels = [{"id": i, "label": 1.0} for i in ids]
    status, answer = await post(api, "/v1/monitors/regression/labels", labels)
    assert status == 200 and answer["unmatched"] == 3, answer


async def test_ndjson_labels_and_monitors_without_labels(api: TestClient, tmp_path: Path) -> None:
    lines = b'{"id": "a", "label": "yes"}\n{"id": "b", "label": "no"}\n'
    response = await api.post(
        "/v1/monitors/probabilities/labels",
        data=lines,
        headers={"Content-Type": "application/x-ndjson"},
    )
    body = await response.json()
    assert response.status == 200 and body["unmatched"] == 2, body
    response = await api.post("/v1/monitors/probabilities/labels", json=[])
    assert response.status == 422
    assert (await response.json())["errors"][0]["message"] == "expected at least 1 label"
