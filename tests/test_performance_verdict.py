"""Performance against the baseline's: its counts, the tests, the severity, the alert.

The baseline's counts (`baseline build --label`, `build_baseline(label=)`) are checked
against numpy on the raw pairs; each test's p-value against scipy (a chi-square on the
2 x 2 table, Welch's t on the raw absolute errors) or the formula computed here; and,
over real sockets on both stores, labels that make accuracy drop raise `performance`
in GET .../drift, in Prometheus and in an alert a real webhook receiver gets, while
labels as good as the baseline's raise nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from scipy import stats
from support import make_monitor, wait_until
from test_alerts_dispatch import ALERT_SETTINGS, Endpoint, endpoints

from driftline.cli import main as cli
from driftline.client.baseline import build_baseline
from driftline.core.monitor import MonitorConfigError
from driftline.core.performance import (
    RECORD,
    accuracy_drop_p,
    label_deltas,
    label_value,
    payloads,
    performance,
    records,
)
from driftline.core.policy import MonitorDefaults
from driftline.core.prediction import PredictionSpec
from driftline.core.profile import BaselineError, decode_profile, encode_profile, load_baseline
from driftline.http.app import create_app
from driftline.settings import AlertSettings, Settings

__all__ = ["endpoints"]  # the fixture, shared with the dispatch tests

CLASSES = ["good", "bad"]
SPEC = {
    "class": PredictionSpec("class", CLASSES),
    "probabilities": PredictionSpec("probabilities", CLASSES),
    "regression": PredictionSpec("regression"),
}


def exact_accuracy(
    rng: np.random.Generator, n: int, accuracy: float
) -> tuple[list[str], list[str]]:
    """Predicted classes and labels of which exactly round(n * accuracy) agree."""
    predicted = rng.choice(CLASSES, size=n, p=[0.7, 0.3])
    right = np.zeros(n, dtype=bool)
    right[rng.permutation(n)[: round(n * accuracy)]] = True
    other = np.where(predicted == "good", "bad", "good")
    return predicted.tolist(), np.where(right, predicted, other).tolist()


def validation_set(kind: str, n: int, seed: int) -> dict[str, list[Any]]:
    """Labelled validation rows: a feature, the model's prediction and the true outcome."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).tolist()
    if kind == "class":
        predicted, truth = exact_accuracy(rng, n, 0.9)
        return {"x": x, "prediction": predicted, "y": truth}
    if kind == "probabilities":
        positive = rng.uniform(size=n) < 0.4
        score = np.clip(rng.normal(np.where(positive, 0.7, 0.35), 0.15), 0, 1)
        return {
            "x": x,
            "prediction": [[float(s), float(1 - s)] for s in score],
            "y": np.where(positive, "good", "bad").tolist(),
        }
    label = rng.normal(10, 3, size=n)
    return {"x": x, "prediction": (label + rng.normal(0, 1, size=n)).tolist(), "y": label.tolist()}


def labelled_monitor(kind: str, tmp_path: Path, n: int = 4000, **config: Any) -> Any:
    profile = build_baseline(validation_set(kind, n, 1), prediction=SPEC[kind], label="y")
    path = tmp_path / f"{kind}.json"
    path.write_bytes(encode_profile(profile))
    document = {
        "name": kind,
        "baseline": str(path),
        "prediction": msgspec.to_builtins(SPEC[kind]),
        "labels": config.pop("labels", {}),
        **config,
    }
    return make_monitor(document)


def window_vector(monitor: Any, predicted: list[Any], truth: list[Any]) -> np.ndarray:
    """The window vector of these (prediction, label) pairs, joined as the service joins them."""
    slots = monitor.layout.performance
    outputs = [monitor.decoder.values(p) for p in predicted]
    columns = [[row[j] for row in outputs] for j in range(len(monitor.decoder.names))]
    joined = np.frombuffer(
        records(np.full(len(predicted), 600, dtype=np.int64), payloads(slots, columns)), RECORD
    )
    values = np.array([label_value(slots, t) for t in truth])
    return sum(label_deltas(slots, monitor.window.width, joined, values).values())  # type: ignore[return-value]


def verdict(monitor: Any, vector: np.ndarray) -> Any:
    policy = monitor.policy
    return performance(
        monitor.layout.performance, vector, alpha=policy.alpha, min_labels=policy.min_samples
    )


# ------------------------------------------------------------------ the baseline's counts


def test_the_baseline_counts_match_numpy_and_survive_a_round_trip(tmp_path: Path) -> None:
    rows = validation_set("class", 4000, 1)
    monitor = labelled_monitor("class", tmp_path)
    empty = np.zeros(monitor.window.width)
    baseline = verdict(monitor, empty).baseline
    truth, predicted = np.array(rows["y"]), np.array(rows["prediction"])
    assert baseline.labelled == 4000
    assert baseline.accuracy == pytest.approx(np.mean(truth == predicted), abs=1e-12)
    for i, a in enumerate(CLASSES):
        for j, b in enumerate(CLASSES):
            assert baseline.confusion_matrix[i][j] == np.sum((truth == a) & (predicted == b))
    # An empty window is reported against it, with no verdict.
    found = verdict(monitor, empty)
    assert found.labelled == 0 and found.severity == "none"
    assert found.checks == {}
    # Saved and read back, the counts are the same; without them nothing is written.
    profile = monitor.profile
    assert decode_profile(msgspec.json.decode(encode_profile(profile))) == profile
    plain = build_baseline({k: v for k, v in rows.items() if k != "y"}, prediction=SPEC["class"])
    assert b'"performance"' not in encode_profile(plain)


def test_probabilities_and_regression_baselines_match_the_raw_pairs(tmp_path: Path) -> None:
    rows = validation_set("probabilities", 4000, 1)
    monitor = labelled_monitor("probabilities", tmp_path)
    baseline = verdict(monitor, np.zeros(monitor.window.width)).baseline
    score = np.array([p[0] for p in rows["prediction"]])
    positive = np.array(rows["y"]) == "good"
    raw_auc = stats.mannwhitneyu(score[positive], score[~positive]).statistic / (
        positive.sum() * (~positive).sum()
    )
    assert baseline.roc_auc == pytest.approx(raw_auc, abs=0.0025)
    assert baseline.accuracy == pytest.approx(np.mean((score >= 0.5) == positive))

    rows = validation_set("regression", 4000, 1)
    monitor = labelled_monitor("regression", tmp_path)
    baseline = verdict(monitor, np.zeros(monitor.window.width)).baseline
    error = np.array(rows["prediction"]) - np.array(rows["y"])
    assert baseline.mae == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
    assert baseline.rmse == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-5)


def test_baseline_build_takes_a_label_column(tmp_path: Path) -> None:
    rows = validation_set("class", 600, 2)
    data = tmp_path / "validation.csv"
    lines = ["x,prediction,y"] + [
        f"{x},{p},{y}" for x, p, y in zip(rows["x"], rows["prediction"], rows["y"], strict=True)
    ]
    lines.append("0.5,good,")  # a row without its label is left out
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "profile.json"
    common = ["baseline", "build", str(data), "-o", str(out)]
    flags = ["--prediction-kind", "class", "--classes", "good,bad"]
    assert cli([*common, *flags, "--label", "y"]) == 0
    profile = load_baseline(out)
    assert "y" not in profile.features  # the label is no feature
    measured = profile.performance
    assert not isinstance(measured, msgspec.UnsetType)
    assert (measured.kind, measured.classes, measured.label) == ("class", CLASSES, "y")
    correct = sum(p == y for p, y in zip(rows["prediction"], rows["y"], strict=True))
    assert measured.counts[0] == 600 and measured.counts[1] + measured.counts[4] == correct
    assert cli([*common, "--label", "y"]) == 1  # a label needs the prediction
    assert cli([*common, *flags, "--label", "outcome"]) == 1
    with pytest.raises(BaselineError, match=r"y\[1\]: expected one of the declared classes"):
        build_baseline(
            {"x": [1.0, 2.0], "prediction": ["good", "bad"], "y": ["good", "meh"]},
            prediction=SPEC["class"],
            label="y",
        )


def test_a_score_baseline_needs_the_monitors_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    score = rng.uniform(size=500).tolist()
    rows = {"x": rng.normal(size=500).tolist(), "s": score, "y": [int(s > 0.3) for s in score]}
    spec = PredictionSpec("score", column="s")
    profile = build_baseline(rows, prediction=spec, label="y", threshold=0.3)
    path = tmp_path / "score.json"
    path.write_bytes(encode_profile(profile))
    document = {"name": "s", "baseline": str(path), "prediction": msgspec.to_builtins(spec)}
    with pytest.raises(MonitorConfigError, match=r"labels\.threshold: 0\.5 differs from the 0\.3"):
        make_monitor({**document, "labels": {}})
    monitor = make_monitor({**document, "labels": {"threshold": 0.3}})
    assert verdict(monitor, np.zeros(monitor.window.width)).baseline.accuracy == 1.0


# ------------------------------------------------------------------ the tests


def test_accuracy_drop_is_a_one_sided_two_proportion_z_test() -> None:
    for correct, n, correct0, n0 in ((520, 600, 3600, 4000), (880, 1000, 900, 1000)):
        table = [[correct, n - correct], [correct0, n0 - correct0]]
        chi2 = stats.chi2_contingency(table, correction=False)
        # z^2 is the uncorrected chi-square; the one-sided p halves the two-sided one.
        assert accuracy_drop_p(correct, n, correct0, n0) == pytest.approx(chi2.pvalue / 2)
    assert accuracy_drop_p(950, 1000, 900, 1000) > 0.5  # better is never a drop
    assert accuracy_drop_p(10, 10, 10, 10) == 1.0


@pytest.mark.parametrize(
    ("accuracy", "severity"),
    # At a threshold exactly (0.9 - 0.88 is 0.02 up to float rounding) is past it.
    [(0.9, "none"), (0.885, "none"), (0.88, "warning"), (0.865, "warning"), (0.86, "critical")],
)
def test_accuracy_severity_needs_the_drop_and_significance(
    tmp_path: Path, accuracy: float, severity: str
) -> None:
    monitor = labelled_monitor("class", tmp_path)
    predicted, truth = exact_accuracy(np.random.default_rng(9), 2000, accuracy)
    found = verdict(monitor, window_vector(monitor, predicted, truth))
    check = found.checks["accuracy"]
    correct = round(2000 * accuracy)
    expected_p = stats.norm.sf(
        (0.9 - accuracy)
        / np.sqrt((correct + 3600) / 6000 * (1 - (correct + 3600) / 6000) * (1 / 2000 + 1 / 4000))
    )
    assert check.p_value == pytest.approx(expected_p, rel=1e-9)
    assert check.p_adjusted == check.p_value  # one check: a class has no AUC
    assert (check.baseline, check.value) == pytest.approx((0.9, accuracy))
    assert check.difference == pytest.approx(accuracy - 0.9)
    assert (check.warning_threshold, check.critical_threshold) == (0.02, 0.04)
    assert check.severity == severity and found.severity == severity


def test_a_drop_below_min_labels_or_not_significant_raises_nothing(tmp_path: Path) -> None:
    monitor = labelled_monitor("class", tmp_path)
    # 60 labels (min_samples is 100) at 50 %: a big drop, not enough labels yet.
    predicted, truth = exact_accuracy(np.random.default_rng(3), 60, 0.5)
    found = verdict(monitor, window_vector(monitor, predicted, truth))
    assert found.checks["accuracy"].p_value < 1e-6
    assert found.severity == "none" and found.min_labels == 100
    # 200 labels 3 points below: past the threshold, within chance.
    predicted, truth = exact_accuracy(np.random.default_rng(3), 200, 0.87)
    check = verdict(monitor, window_vector(monitor, predicted, truth)).checks["accuracy"]
    assert check.change == pytest.approx(0.03) and check.p_value > 0.05
    assert check.severity == "none"


def test_a_verdict_is_remembered_for_its_counts_and_only_for_them(tmp_path: Path) -> None:
    # Every flush of predictions asks for the performance; it changes only with labels.
    monitor = labelled_monitor("class", tmp_path)
    predicted, truth = exact_accuracy(np.random.default_rng(5), 400, 0.8)
    vector = window_vector(monitor, predicted, truth)
    first = verdict(monitor, vector)
    assert verdict(monitor, vector.copy()) is first  # the same counts: not computed again
    # Counts outside the performance slots (the features') do not change it.
    other = vector.copy()
    other[: monitor.layout.performance.first] += 7.0
    assert verdict(monitor, other) is first
    # A label joined: the new counts' verdict, as computed afresh.
    more = vector + window_vector(monitor, predicted[:1], truth[:1])
    assert verdict(monitor, more).labelled == first.labelled + 1
    # Another monitor with the same counts gets its own answer, not the first's.
    twin = labelled_monitor("class", tmp_path, labels={"accuracy_drop": 0.3})
    assert verdict(twin, vector) is not first
    assert verdict(twin, vector).checks["accuracy"].warning_threshold == 0.3


def test_auc_drop_uses_hanley_mcneil_standard_errors(tmp_path: Path) -> None:
    monitor = labelled_monitor("probabilities", tmp_path)
    rng = np.random.default_rng(12)
    positive = rng.uniform(size=3000) < 0.4
    score = np.clip(rng.normal(np.where(positive, 0.6, 0.42), 0.15), 0, 1)
    predicted = [[float(s), float(1 - s)] for s in score]
    labels = np.where(positive, "good", "bad").tolist()
    found = verdict(monitor, window_vector(monitor, predicted, labels))
    check = found.checks["roc_auc"]

    def se(auc: float, p: float, n: float) -> float:
        q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
        return float(
            np.sqrt((auc * (1 - auc) + (p - 1) * (q1 - auc**2) + (n - 1) * (q2 - auc**2)) / (p * n))
        )

    baseline_rows = validation_set("probabilities", 4000, 1)
    base_positive = np.array(baseline_rows["y"]) == "good"
    a1, a0 = check.value, check.baseline
    z = (a0 - a1) / np.hypot(
        se(a1, positive.sum(), (~positive).sum()),
        se(a0, base_positive.sum(), (~base_positive).sum()),
    )
    assert check.p_value == pytest.approx(stats.norm.sf(z), rel=1e-9)
    # Two checks (accuracy, AUC): Bonferroni doubles each p.
    assert check.p_adjusted == pytest.approx(min(1.0, 2 * check.p_value))
    assert check.change == pytest.approx(a0 - a1) and check.change > 0.04
    assert check.severity == "critical" and found.severity == "critical"


def test_mae_rise_is_welch_on_the_absolute_errors(tmp_path: Path) -> None:
    monitor = labelled_monitor("regression", tmp_path)
    rng = np.random.default_rng(8)
    label = rng.normal(10, 3, size=1500)
    predicted = label + rng.normal(0, 1.25, size=1500)
    found = verdict(monitor, window_vector(monitor, predicted.tolist(), label.tolist()))
    check = found.checks["mae"]
    rows = validation_set("regression", 4000, 1)
    baseline_abs = np.abs(np.array(rows["prediction"]) - np.array(rows["y"]))
    window_abs = np.abs(predicted - label)
    welch = stats.ttest_ind(window_abs, baseline_abs, equal_var=False, alternative="greater")
    # The sums are kept in 2^-20 of a baseline SD: p agrees to far below its use.
    assert check.p_value == pytest.approx(welch.pvalue, rel=1e-3)
    rise = (window_abs.mean() - baseline_abs.mean()) / baseline_abs.mean()
    assert check.change == pytest.approx(rise, rel=1e-5)
    assert (check.warning_threshold, check.critical_threshold) == (0.1, 0.2)
    assert check.severity == ("critical" if rise >= 0.2 else "warning")
    # As good as the baseline: nothing.
    same = label + rng.normal(0, 1, size=1500)
    calm = verdict(monitor, window_vector(monitor, same.tolist(), label.tolist()))
    assert calm.severity == "none"


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(datetime.now(UTC).timestamp() - seconds_ago, UTC).isoformat()


async def serve(aiohttp_client: Any, tmp_path: Path, store_url: str | None, hook: Endpoint) -> Any:
    rows = validation_set("class", 4000, 1)
    profile = build_baseline(rows, prediction=SPEC["class"], label="y")
    (tmp_path / "quality.profile.json").write_bytes(encode_profile(profile))
    monitors, alerts = tmp_path / "monitors", tmp_path / "alerts"
    monitors.mkdir()
    alerts.mkdir()
    config = {
        "name": "quality",
        "baseline": str(tmp_path / "quality.profile.json"),
        "prediction": msgspec.to_builtins(SPEC["class"]),
        "labels": {},
        "window_seconds": 7200,  # the predictions are an hour old when their labels come
    }
    (monitors / "quality.json").write_text(json.dumps(config))
    receivers = [{"name": "hook", "type": "webhook", "url": hook.url("/hook")}]
    (alerts / "quality.json").write_text(json.dumps({"receivers": receivers}))
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(monitors),
        redis_url=store_url,
        alerts_dir=str(alerts),
        flush_interval=0.001,
        alerts=AlertSettings(**ALERT_SETTINGS),
        defaults=MonitorDefaults(alert_hold_seconds=0.0, alert_cooldown_seconds=0.0),
    )
    return await aiohttp_client(create_app(settings))


async def predict_then_label(client: Any, accuracy: float) -> dict[str, Any]:
    """400 predictions with ids an hour ago, then their labels at `accuracy`: the report."""
    rng = np.random.default_rng(21)
    predicted, truth = exact_accuracy(rng, 400, accuracy)
    hour_ago = stamp(3600)
    events = [
        {
            "id": f"loan-{i}",
            "features": {"x": float(x)},
            "prediction": p,
            "timestamp": hour_ago,
        }
        for i, (x, p) in enumerate(zip(rng.normal(size=400), predicted, strict=True))
    ]
    response = await client.post("/v1/monitors/quality/events", json=events)
    assert response.status == 200, await response.text()
    labels = [{"id": f"loan-{i}", "label": t} for i, t in enumerate(truth)]
    response = await client.post("/v1/monitors/quality/labels", json=labels)
    body = await response.json()
    assert response.status == 200 and body["counted"] == 400, body
    response = await client.get("/v1/monitors/quality/drift")
    assert response.status == 200
    report: dict[str, Any] = await response.json()
    return report


async def test_an_accuracy_drop_is_reported_exported_and_alerted(
    aiohttp_client: Any,
    endpoints: Callable[..., Awaitable[Endpoint]],
    tmp_path: Path,
    store_url: str | None,
) -> None:
    hook = await endpoints()
    client = await serve(aiohttp_client, tmp_path, store_url, hook)
    report = await predict_then_label(client, 0.8)
    performance = report["performance"]
    assert performance["labelled"] == 400 and performance["accuracy"] == pytest.approx(0.8)
    assert performance["baseline"]["accuracy"] == pytest.approx(0.9)
    check = performance["checks"]["accuracy"]
    assert check["difference"] == pytest.approx(-0.1) and check["p_value"] < 1e-6
    assert check["severity"] == "critical" and performance["severity"] == "critical"
    assert report["severity"] == "critical"
    assert report["drifted_features"] == []  # the inputs did not move: the model did
    assert report["reasons"] == ["performance"]
    metrics = await (await client.get("/monitor/metrics")).text()
    assert 'driftline_performance_severity{monitor="quality"} 2' in metrics
    assert 'driftline_performance_baseline{metric="accuracy",monitor="quality"} 0.9' in metrics

    async def alerted() -> bool:
        return any(r.path == "/hook" for r in hook.requests)

    await wait_until(alerted, lambda: f"received {[r.path for r in hook.requests]}")
    alert = json.loads(hook.requests[0].body)
    assert (alert["monitor"], alert["severity"], alert["status"]) == (
        "quality",
        "critical",
        "firing",
    )
    assert alert["reasons"] == ["performance"]
    assert alert["degraded_performance"]["accuracy"]["value"] == pytest.approx(0.8)


async def test_labels_as_good_as_the_baseline_raise_nothing(
    aiohttp_client: Any,
    endpoints: Callable[..., Awaitable[Endpoint]],
    tmp_path: Path,
    store_url: str | None,
) -> None:
    hook = await endpoints()
    client = await serve(aiohttp_client, tmp_path, store_url, hook)
    report = await predict_then_label(client, 0.9)
    performance = report["performance"]
    assert performance["accuracy"] == pytest.approx(0.9)
    assert performance["checks"]["accuracy"]["severity"] == "none"
    assert performance["severity"] == "none" and report["severity"] == "none"
    assert report["reasons"] == []
    metrics = await (await client.get("/monitor/metrics")).text()
    assert 'driftline_performance_severity{monitor="quality"} 0' in metrics
