"""Prediction drift: a declared prediction is watched like a feature, on both window stores.

The core rules (declarations, values, training columns) without a server, then the real
app over real sockets: the statistics of the prediction recomputed with numpy and scipy
from the raw values, the answers, metrics and alerts, and every wrong-kind value refused
with a problem naming `prediction`.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats
from support import EXAMPLES, MONITOR, example_monitors, make_monitor, wait_until
from test_http_api import moment_matched_p

from driftline.cli import main as cli
from driftline.core.monitor import MonitorConfigError
from driftline.core.policy import MonitorDefaults
from driftline.core.prediction import Decoder, PredictionError, PredictionSpec, spec_problem
from driftline.core.profile import (
    BaselineError,
    CategoricalProfile,
    NumericProfile,
    build_profile,
    load_baseline,
)
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.simulate import SCENARIOS, ProfileSampler, payload, run_simulation

PROBLEM = "application/problem+json"
CLASSES = ["churn", "stay", "pause"]


def spec(kind: str, classes: list[str] | None = None, column: Any = "prediction") -> PredictionSpec:
    return PredictionSpec(kind, classes or [], column)  # type: ignore[arg-type]


def scored_rows() -> dict[str, list[str]]:
    with (EXAMPLES / "scored_baseline.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {name: [row[name] for row in rows] for name in rows[0]}


# ----------------------------------------------------------------- the core rules


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        (spec("class", ["a"]), "classes: class needs at least 2 declared classes, got 1"),
        (spec("score", ["a", "b"]), "classes: only class and probabilities predictions"),
        (spec("class", ["a", "b", "a"]), "classes: 'a' is declared twice"),
        (spec("probabilities", ["a", "b"], ["pa"]), None),
        (spec("probabilities", ["a", "b"], ["pa", "pb", "pc"]), "column: one column per class"),
        (spec("regression", column=["y", "z"]), "column: a regression prediction is one column"),
    ],
)
def test_declarations_that_cannot_work_are_named(
    declared: PredictionSpec, problem: str | None
) -> None:
    found = spec_problem(declared)
    assert (found is None) if problem is None else (found or "").startswith(problem), found


LABEL = spec("class", CLASSES)
PROBA = spec("probabilities", CLASSES)


@pytest.mark.parametrize(
    ("declared", "value", "message"),
    [
        (LABEL, "maybe", 'expected one of the declared classes (churn, stay, pause), got "maybe"'),
        (LABEL, {"churn": 1}, "expected a class label (one of churn, stay, pause)"),
        (PROBA, [0.5, 0.5], "expected 3 probabilities, one per class"),
        (PROBA, [0.5, 0.2, 0.1], "expected probabilities summing to 1 (within 0.01), got 0.8"),
        (PROBA, {"churn": 0.5, "gone": 0.5}, 'unknown class "gone"'),
        (PROBA, {"churn": 1.5}, "churn: expected a probability from 0 to 1, got 1.5"),
        (PROBA, [True, 0, 0], "[0]: expected a probability from 0 to 1, got true"),
        (PROBA, 0.7, "expected class probabilities, an object {class: probability}"),
    ],
)
def test_wrong_kind_predictions_say_what_is_allowed(
    declared: PredictionSpec, value: Any, message: str
) -> None:
    with pytest.raises(PredictionError) as raised:
        Decoder(declared).values(value)
    assert str(raised.value).startswith(message), str(raised.value)


def test_predictions_become_their_outputs() -> None:
    proba = Decoder(spec("probabilities", CLASSES))
    assert proba.names == ("@prediction.probability", "@prediction.class")
    assert proba.values({"stay": 0.7, "churn": 0.3}) == (0.3, "stay")  # absent classes: 0
    assert proba.values([0.4, 0.4, 0.2]) == (0.4, "churn")  # a tie: the first declared
    assert proba.values(None) == (None, None)
    labels = Decoder(spec("class", ["0", "1"]))
    assert labels.values(1) == ("1",) and labels.values("NA") == (None,)
    # A number is passed on as sent: binning checks it as a numeric feature's value.
    assert Decoder(spec("regression")).values("old") == ("old",)
    columns, refused = proba.columns([[0.2, 0.3, 0.5], [0.9, 0.0, 0.0], None])
    assert columns == {
        "@prediction.probability": [0.2, None, None],
        "@prediction.class": ["pause", None, None],
    }
    assert list(refused) == [1]


def test_baseline_profiles_the_prediction_as_a_feature() -> None:
    rng = np.random.default_rng(4)
    n = 600
    p = rng.dirichlet([2, 5, 1], n)
    table = {
        "x": rng.normal(size=n).tolist(),
        # A CSV's per-class columns: numeric strings, in declared class order.
        "p_churn": [f"{v:.6f}" for v in p[:, 0]],
        "p_stay": [f"{v:.6f}" for v in p[:, 1]],
        "p_pause": [f"{v:.6f}" for v in p[:, 2]],
    }
    declared = spec("probabilities", CLASSES, ["p_churn", "p_stay", "p_pause"])
    profile = build_profile(table, bins=5, top_k=2, prediction=declared)
    assert list(profile.features) == ["@prediction.class", "@prediction.probability", "x"]
    probability = profile.features["@prediction.probability"]
    assert isinstance(probability, NumericProfile)
    first = np.round(p[:, 0], 6)
    assert probability.mean == pytest.approx(float(first.mean()), rel=1e-12)
    cuts = np.unique(np.quantile(first, np.linspace(0, 1, 6)[1:-1]))
    assert probability.cuts == pytest.approx(cuts.tolist(), rel=1e-12)
    chosen = profile.features["@prediction.class"]
    assert isinstance(chosen, CategoricalProfile)
    # top_k 2 is raised to the 3 declared classes; the argmax's counts from numpy.
    argmax = np.argmax(np.round(p, 6), axis=1)
    assert sorted(chosen.categories) == sorted(CLASSES[i] for i in set(argmax.tolist()))
    assert chosen.n == n and sum(chosen.counts) + sum(chosen.selection or []) == n
    # A column named like a reserved one, and a prediction column that is not there.
    with pytest.raises(BaselineError, match=r"features\.@x: names starting with @ are reserved"):
        build_profile({"@x": [1.0, 2.0], "y": [1.0, 2.0]})
    with pytest.raises(BaselineError, match="prediction column 'pred' is not a column"):
        build_profile({"x": [1.0]}, prediction=spec("score", column="pred"))
    with pytest.raises(BaselineError, match=r"prediction column prediction: expected a number"):
        build_profile({"x": [1.0, 2.0], "prediction": [0.5, "high"]}, prediction=spec("score"))
    with pytest.raises(BaselineError, match=r"prediction\[1\]: expected one of the declared"):
        build_profile({"x": [1, 2], "prediction": ["a", "z"]}, prediction=spec("class", ["a", "b"]))


def test_a_monitor_takes_the_baseline_prediction_it_declares(tmp_path: Path) -> None:
    profile = EXAMPLES / "credit-risk-profile.json"
    plain = make_monitor({"name": "m", "baseline": str(profile)})
    # Without a declaration the monitor watches the features only, as before.
    assert plain.prediction is None
    assert not [n for n in plain.layout.features if n.startswith("@")]
    assert plain.profile.features == {
        n: f for n, f in load_baseline(profile).features.items() if not n.startswith("@")
    }
    two = {"kind": "class", "classes": ["a", "b"]}
    with pytest.raises(MonitorConfigError, match=r"the baseline has score; the monitor declares"):
        make_monitor({"name": "m", "baseline": str(profile), "prediction": two})
    allowed = "allowed: regression, score, class, probabilities"
    with pytest.raises(MonitorConfigError, match=rf"prediction\.kind: .* 'label'; {allowed}"):
        make_monitor({"name": "m", "baseline": str(profile), "prediction": {"kind": "label"}})
    labelled = build_profile(
        {"x": [1, 2] * 50, "prediction": ["a", "b"] * 50}, prediction=spec("class", ["a", "b"])
    )
    other = {"kind": "class", "classes": ["a", "c"]}
    with pytest.raises(MonitorConfigError, match=r"prediction.classes: the baseline predicts 'b'"):
        make_monitor({"name": "m", "baseline": msgspec.to_builtins(labelled), "prediction": other})
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x": i % 7, "prediction": "ab"[i % 2]} for i in range(100)]))
    monitor = make_monitor({"name": "m", "baseline": str(rows), "prediction": two})
    assert monitor.layout.features["@prediction.class"].kind == "categorical"
    assert msgspec.to_builtins(monitor.prediction) == {**two, "column": "prediction"}


# ------------------------------------------------------------- over real sockets


def write_monitors(directory: Path) -> Path:
    """The example monitor (a score), a class and a probabilities monitor, and a plain one."""
    directory.mkdir()
    (directory / "credit-risk.yaml").write_text(
        (example_monitors() / "credit-risk.yaml").read_text()
    )
    rng = np.random.default_rng(8)
    n = 2000
    p = rng.dirichlet([2, 5, 1], n)
    rows = [
        {
            "tenure": float(rng.gamma(2.0, 10.0)),
            "plan": ["basic", "pro"][int(rng.integers(0, 2))],
            "label": CLASSES[int(np.argmax(p[i]))],
            "proba": p[i].tolist(),
        }
        for i in range(n)
    ]
    (directory.parent / "churn.json").write_text(json.dumps(rows))
    churn = {"baseline": str(directory.parent / "churn.json"), "min_samples": 100}
    for name, declared in (
        ("churn-class", {"kind": "class", "classes": CLASSES, "column": "label"}),
        ("churn-proba", {"kind": "probabilities", "classes": CLASSES, "column": "proba"}),
    ):
        document = {"name": name, **churn, "prediction": declared}
        # The other prediction column is no feature of this monitor.
        document["baseline"] = str(directory.parent / f"{name}.json")
        other = "proba" if declared["column"] == "label" else "label"
        (directory.parent / f"{name}.json").write_text(
            json.dumps([{k: v for k, v in r.items() if k != other} for r in rows])
        )
        (directory / f"{name}.json").write_text(json.dumps(document))
    (directory / "plain.json").write_text(
        json.dumps({"name": "plain", "baseline": str(EXAMPLES / "baseline_data.json")})
    )
    return directory


@pytest.fixture(params=["memory", "redis"])
def prediction_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(write_monitors(tmp_path / "monitors")),
        redis_url=url,
        flush_interval=0.001,
        default_monitor=MONITOR,
        # Alerts at once (no flap protection): the test reads the one a change makes.
        defaults=MonitorDefaults(alert_hold_seconds=0.0, alert_cooldown_seconds=0.0),
    )


@pytest.fixture
async def api(aiohttp_client: Any, prediction_settings: Settings) -> TestClient:
    client: TestClient = await aiohttp_client(create_app(prediction_settings))
    return client


async def post(client: TestClient, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    response = await client.post(path, json=body, **kwargs)
    return response.status, await response.json(content_type=None)


def example_events(n: int, scenario: str, seed: int) -> list[dict[str, Any]]:
    """Events of the example monitor drawn from its profile, with their predictions."""
    profile = load_baseline(EXAMPLES / "credit-risk-profile.json")
    drawn = ProfileSampler(profile, np.random.default_rng(seed)).events(n, SCENARIOS[scenario])
    return [payload(e, spec("score")) for e in drawn]


async def test_prediction_statistics_match_numpy_and_scipy(api: TestClient) -> None:
    """The score's PSI, KL, test and moments, and the class's w and test, from the raw values."""
    events = example_events(400, "moderate", seed=3)
    status, body = await post(api, "/v1/monitors/credit-risk/events", events)
    assert status == 200 and body["accepted"] == 400, body
    report = await (await api.get("/v1/monitors/credit-risk/drift")).json()
    # The outcome (`defaulted`) labels the baseline's predictions: neither is a feature.
    assert set(report["features"]) == set(scored_rows()) - {"default_probability", "defaulted"}
    section = report["prediction"]
    assert (section["kind"], section["classes"], list(section["outputs"])) == (
        "score",
        [],
        ["score"],
    )
    score = section["outputs"]["score"]
    base = np.array(scored_rows()["default_probability"], dtype=float)
    cuts = np.unique(np.quantile(base, np.linspace(0, 1, 11)[1:-1]))
    expected = np.bincount(np.searchsorted(cuts, base, side="right"), minlength=len(cuts) + 1)
    values = np.array([e["prediction"] for e in events], dtype=float)
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    a, e = np.maximum(counts / counts.sum(), 1e-4), np.maximum(expected / expected.sum(), 1e-4)
    psi = float(np.sum((a - e) * np.log(a / e)))
    statistic, _, p = moment_matched_p(np.array([expected, counts]))
    assert score["window_count"] == 400 and score["baseline_count"] == 4000
    assert score["score"] == pytest.approx(psi, rel=1e-9)
    assert score["kl"] == pytest.approx(float(np.sum(a * np.log(a / e))), rel=1e-9)
    assert score["statistic"] == pytest.approx(statistic, rel=1e-9)
    assert score["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-300)
    assert score["mean"] == pytest.approx(values.mean(), abs=base.std(ddof=1) / 2**20)
    assert section["scores"] == {"score": score["score"]}
    assert report["drift_score"] >= score["score"]
    # A class prediction: Cohen's w and the homogeneity test of its counts.
    labels = ["churn"] * 90 + ["stay"] * 80 + ["pause"] * 30
    status, body = await post(
        api,
        "/v1/monitors/churn-class/events",
        [{"features": {"tenure": 12.0, "plan": "pro"}, "prediction": label} for label in labels],
    )
    assert status == 200 and body["accepted"] == 200, body
    report = await (await api.get("/v1/monitors/churn-class/drift")).json()
    detail = await (await api.get("/v1/monitors/churn-class")).json()
    kept = msgspec.convert(detail["baseline"]["features"]["@prediction.class"], CategoricalProfile)
    output = report["prediction"]["outputs"]["class"]
    reference = np.array(kept.counts)
    window = np.array([labels.count(c) for c in kept.categories] + [0])
    statistic, mean, p = moment_matched_p(np.array([reference, window]))
    n, m = window.sum(), reference.sum()
    assert output["statistic"] == pytest.approx(statistic, rel=1e-9)
    assert output["p_value"] == pytest.approx(p, rel=1e-7, abs=1e-300)
    w = np.sqrt(max(statistic - mean, 0.0) * (1 / n + 1 / m))
    assert output["score"] == pytest.approx(w, rel=1e-9)
    # Pearson's X² of the table, by scipy (the `other` bin is empty on both sides).
    table = np.array([reference[:-1], window[:-1]])
    pearson = stats.chi2_contingency(table, correction=False).statistic
    assert output["statistic"] == pytest.approx(float(pearson), rel=1e-9)
    assert report["prediction"]["severity"] == "critical" and report["prediction"]["drifted"]


async def test_prediction_drift_reaches_the_answers_metrics_and_alerts(api: TestClient) -> None:
    # Baseline-like inputs; only the model's answers move.
    status, body = await post(
        api, "/monitor/batch", {"events": example_events(400, "prediction", seed=5)}
    )
    assert status == 200, body
    drift = body["drift"]
    assert drift["severity"] == "critical" and drift["drift_detected"] is True
    assert drift["drifted_features"] == [] and drift["feature_reasons"] == {}
    assert "@prediction.score" not in drift["feature_scores"]
    assert drift["prediction"]["severity"] == "critical" and drift["prediction"]["drifted"] is True
    assert drift["prediction"]["reasons"]["score"][0] == "distribution"
    status, answer = await post(api, "/monitor/predict", example_events(1, "baseline", seed=6)[0])
    assert status == 200 and answer["warnings"] == []
    assert answer["prediction"]["kind"] == "score" and answer["prediction"]["drifted"] is True
    text = await (await api.get("/monitor/metrics")).text()
    assert 'driftline_feature_severity{feature="@prediction.score",monitor="credit-risk"} 2' in text
    assert 'driftline_drifted_features{monitor="credit-risk"} 0' in text
    assert 'driftline_monitor_severity{monitor="credit-risk"} 2' in text

    async def alerted() -> bool:
        history = await (await api.get("/v1/monitors/credit-risk/alerts")).json()
        return any(a["alert"]["severity"] == "critical" for a in history["alerts"])

    await wait_until(alerted, "no critical alert in the history")
    history = await (await api.get("/v1/monitors/credit-risk/alerts")).json()
    alert = next(a["alert"] for a in history["alerts"] if a["alert"]["severity"] == "critical")
    assert alert["reasons"] == ["prediction"]
    assert alert["drifted_features"] == []
    (output,) = alert["drifted_prediction"]
    assert (output["name"], output["severity"]) == ("score", "critical")
    assert output["reasons"][0] == "distribution"


async def test_events_without_prediction_leave_the_prediction_untested(api: TestClient) -> None:
    events = [{"features": e["features"]} for e in example_events(300, "baseline", seed=9)]
    status, body = await post(api, "/v1/monitors/credit-risk/events", events)
    assert status == 200, body
    assert body["drift"]["severity"] == "none"
    report = await (await api.get("/v1/monitors/credit-risk/drift")).json()
    score = report["prediction"]["outputs"]["score"]
    # Counted as missing, yet not a data-quality alarm: a client may send predictions
    # for some events only.
    assert score["missing_rate"] == 1.0 and score["status"] == "insufficient"
    assert score["severity"] == "none" and score["quality"]["missing"]["severity"] == "none"


@pytest.mark.parametrize(
    ("monitor", "bad", "message"),
    [
        ("credit-risk", "high", 'expected a number, got "high"'),
        ("credit-risk", True, "expected a number, got true"),
        ("churn-class", "gone", 'expected one of the declared classes (churn, stay, pause), got'),
        ("churn-proba", [0.5, 0.6, 0.1], "expected probabilities summing to 1 (within 0.01)"),
        ("churn-proba", [0.5, 0.5], "expected 3 probabilities, one per class in declared order"),
        ("churn-proba", {"churn": 0.5, "lost": 0.5}, 'unknown class "lost"; declared: churn, stay'),
    ],
)  # fmt: skip
async def test_wrong_kind_predictions_are_refused_by_field(
    api: TestClient, monitor: str, bad: Any, message: str
) -> None:
    good = {"credit-risk": 0.2, "churn-class": "stay", "churn-proba": [0.2, 0.7, 0.1]}[monitor]
    features = {"tenure": 3.0, "plan": "pro", "age": 30}
    # One event: a 422 problem naming the field.
    response = await api.post(
        "/monitor/predict", json={"monitor": monitor, "features": features, "prediction": bad}
    )
    problem = await response.json(content_type=None)
    assert response.status == 422 and response.content_type == PROBLEM, problem
    (error,) = problem["errors"]
    assert error["field"] == "prediction" and error["message"].startswith(message), error
    assert error["reason"] == "invalid_prediction"
    # A batch: the bad event is named, the good one counted.
    status, body = await post(
        api,
        f"/v1/monitors/{monitor}/events",
        [{"features": features, "prediction": good}, {"features": features, "prediction": bad}],
    )
    assert status == 200 and body["accepted"] == 1, body
    (error,) = body["errors"]
    assert (error["field"], error["index"]) == ("[1].prediction", 1)
    assert error["message"].startswith(message)
    # Columns: the same, by position.
    column = {"age": [30, 30]} if monitor == "credit-risk" else {"plan": ["pro", "pro"]}
    status, body = await post(
        api, f"/v1/monitors/{monitor}/columns", {"columns": column, "prediction": [good, bad]}
    )
    assert status == 200 and body["accepted"] == 1, body
    (error,) = body["errors"]
    assert error["field"] == "prediction[1]" and error["message"].startswith(message)


async def test_every_route_counts_the_same_predictions(api: TestClient) -> None:
    probabilities = [[0.1, 0.8, 0.1], {"churn": 0.6, "stay": 0.4}, None, [0.2, 0.2, 0.6]] * 30
    features = {"tenure": 5.0, "plan": "basic"}
    events = [{"features": features, "prediction": p} for p in probabilities]
    reports = []
    for send in ("events", "ndjson", "columns"):
        await api.delete("/v1/monitors/churn-proba/window")
        if send == "events":
            status, body = await post(api, "/v1/monitors/churn-proba/events", events)
        elif send == "ndjson":
            response = await api.post(
                "/v1/monitors/churn-proba/events",
                data=b"\n".join(msgspec.json.encode(e) for e in events),
                headers={"Content-Type": "application/x-ndjson"},
            )
            status, body = response.status, await response.json()
        else:
            columns = {"tenure": [5.0] * len(events), "plan": ["basic"] * len(events)}
            body = {"columns": columns, "prediction": probabilities}
            status, body = await post(api, "/v1/monitors/churn-proba/columns", body)
        assert status == 200 and body["accepted"] == len(events), body
        reports.append(await (await api.get("/v1/monitors/churn-proba/drift")).json())
    outputs = [r["prediction"]["outputs"] for r in reports]
    proportions = [o["probability"]["window_proportions"] for o in outputs]
    assert proportions[0] == proportions[1] == proportions[2]
    assert outputs[0]["class"]["window_count"] == outputs[2]["class"]["window_count"] == 90
    # The most probable class of each: stay, churn, (none), pause.
    chosen = outputs[0]["class"]
    shares = dict(zip(chosen["bins"], chosen["window_proportions"], strict=True))
    assert shares["stay"] == shares["churn"] == shares["pause"] == pytest.approx(1 / 3)
    assert outputs[0]["probability"]["missing_rate"] == pytest.approx(0.25)


async def test_a_prediction_for_a_monitor_without_one_is_ignored_with_a_warning(
    api: TestClient,
) -> None:
    status, answer = await post(
        api, "/monitor/predict", {"monitor": "plain", "features": {"age": 30}, "prediction": 0.3}
    )
    assert status == 200
    assert answer["prediction"] is None
    assert answer["warnings"] == [
        "prediction ignored: monitor 'plain' declares no prediction kind (docs/predictions.md)"
    ]
    status, body = await post(
        api, "/v1/monitors/plain/events", [{"features": {"age": 30}, "prediction": 1}]
    )
    assert status == 200 and body["warnings"][-1].startswith("prediction ignored")
    listing = await (await api.get("/v1/monitors")).json()
    declared = {m["name"]: m["prediction"] for m in listing["monitors"]}
    assert declared["plain"] is None and declared["credit-risk"]["kind"] == "score"
    features = next(m["features"] for m in listing["monitors"] if m["name"] == "credit-risk")
    assert not [name for name in features if name.startswith("@")]


async def test_a_feature_named_like_the_prediction_is_refused(api: TestClient) -> None:
    response = await api.post(
        "/monitor/predict", json={"features": {"@prediction.score": 0.4}, "prediction": 0.4}
    )
    problem = await response.json(content_type=None)
    assert response.status == 422, problem
    assert problem["errors"][0]["field"] == "features.@prediction.score"
    assert "reserved" in problem["errors"][0]["message"]


async def test_a_refused_keyed_event_is_a_problem_not_a_server_error(api: TestClient) -> None:
    # A keyed event is counted on its own at the flush; one refused there counts nothing.
    for body in ({"features": {}, "prediction": False}, {"features": {"age": True}}):
        response = await api.post("/monitor/predict", json=body, headers={"Idempotency-Key": "k1"})
        problem = await response.json(content_type=None)
        assert response.status == 422, problem
    text = await (await api.get("/monitor/metrics")).text()
    assert (
        'driftline_invalid_events_total{monitor="credit-risk",reason="invalid_prediction"} 1'
        in text
    )


async def test_simulate_shows_a_new_user_the_prediction_verdict(
    api: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        url=str(api.make_url("")).rstrip("/"),
        monitor=None,
        scenario="prediction",
        events=300,
        concurrency=8,
        seed=7,
        batch=0,
    )
    assert await run_simulation(args) == 0
    out = capsys.readouterr().out
    assert "drifted features: -" in out
    assert "prediction: critical, drifted; scores: score=" in out
    assert "failed_requests=0" in out
    args.monitor, args.batch = "plain", 100
    assert await run_simulation(args) == 2
    assert "plain declares no prediction" in capsys.readouterr().out


def test_baseline_build_takes_the_prediction_columns(tmp_path: Path) -> None:
    data = tmp_path / "rows.csv"
    lines = ["x,p_churn,p_stay"] + [f"{i % 13},{i % 10 / 10},{1 - i % 10 / 10}" for i in range(300)]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "profile.json"
    common = ["baseline", "build", str(data), "-o", str(out)]
    flags = ["--prediction-kind", "probabilities", "--classes", "churn,stay"]
    assert cli([*common, *flags, "--prediction", "p_churn", "--prediction", "p_stay"]) == 0
    profile = load_baseline(out)
    assert set(profile.features) == {"x", "@prediction.probability", "@prediction.class"}
    probability = profile.features["@prediction.probability"]
    assert isinstance(probability, NumericProfile)
    assert probability.mean == pytest.approx(np.mean([i % 10 / 10 for i in range(300)]))
    assert cli([*common, "--classes", "a,b"]) == 1
    assert cli([*common, *flags[:2], "--prediction", "p_churn"]) == 1  # no classes
