"""`driftline simulate`: realistic traffic for a running service, and what it answered.

Events are drawn from the monitor's own baseline profile (fetched from the service), so
baseline-like traffic really is drift-free; the drift scenarios shift numeric features
by a number of baseline standard deviations and move categorical mass to the rarest
category. A monitor that declares a prediction gets one drawn from its baseline too
(the `prediction` scenario shifts only that). The `performance` scenario leaves inputs
and predictions as they were and sends the predictions with ids, an hour earlier in
event time, then their labels, drawn so that accuracy falls below the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import numpy as np

from driftline.core.prediction import PredictionSpec, is_prediction_column
from driftline.core.profile import BaselineProfile, CategoricalProfile, NumericProfile
from driftline.core.timestamps import isoformat


@dataclass(frozen=True, slots=True)
class Scenario:
    """How far to push each feature away from its baseline."""

    name: str
    numeric_shift: float  # in baseline standard deviations
    categorical_mix: float  # share of events moved to the rarest category
    only: str | None = None  # shift just this feature (`prediction`: the prediction)
    worse: float = 0.0  # labels: accuracy points lost against the baseline's (MAE: share)
    challenger: bool = False  # `worse` for the second declared version only, then compare

    def shifts(self, name: str) -> bool:
        """Whether the scenario moves this layout column."""
        if self.only == PREDICTION:
            return is_prediction_column(name)
        return self.only is None or self.only == name


PREDICTION = "prediction"
PERFORMANCE = "performance"
LABEL_DELAY = 3600.0  # how much older the predictions are than their labels (event time)
SCENARIOS = {
    "baseline": Scenario("baseline", 0.0, 0.0),
    "moderate": Scenario("moderate", 0.5, 0.15),
    "high": Scenario("high", 2.0, 0.6),
    # The model's answers move while its inputs stay: a new model, a broken feature
    # pipeline upstream of it, or a changed threshold.
    PREDICTION: Scenario(PREDICTION, 2.0, 0.6, only=PREDICTION),
    # The inputs and answers stay; the world changed under the model: its labels come
    # back worse (10 points of accuracy; for a regression, a 50 % larger MAE).
    PERFORMANCE: Scenario(PERFORMANCE, 0.0, 0.0, worse=0.1),
    # Two declared versions on the same traffic; the second's labels come back worse.
    "challenger": Scenario("challenger", 0.0, 0.0, worse=0.1, challenger=True),
}


def scenario(name: str) -> Scenario:
    """A named scenario, or `feature:NAME` for a high drift on one feature only."""
    if name.startswith("feature:"):
        return Scenario(name, 2.0, 0.6, only=name.split(":", 1)[1])
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"scenario: unknown {name!r}; allowed: {', '.join(SCENARIOS)}, feature:NAME, all"
        ) from None


class ProfileSampler:
    """Draws events that follow a baseline profile, optionally shifted."""

    def __init__(self, profile: BaselineProfile, rng: np.random.Generator) -> None:
        self._profile = profile
        self._rng = rng

    def _numeric(self, feature: NumericProfile, n: int, shift: float) -> np.ndarray:
        p = np.asarray(feature.counts, dtype=np.float64) / feature.n
        bins = self._rng.choice(len(p), size=n, p=p)
        # Outer bins are open: bound them by the baseline's tail cuts, so drift-free
        # traffic puts no more mass beyond them than the baseline has.
        tail_low, tail_high = feature.tail_cuts
        edges = np.array([tail_low, *feature.cuts, tail_high], dtype=np.float64)
        low, high = edges[bins], np.maximum(edges[bins + 1], edges[bins])
        values = low + (high - low) * self._rng.random(n)
        return values + shift * feature.std

    def _categorical(self, feature: CategoricalProfile, n: int, mix: float) -> list[str]:
        p = np.asarray(feature.counts[:-1], dtype=np.float64)
        if not p.sum():
            return ["unseen"] * n
        p = p / p.sum()
        picks = self._rng.choice(len(p), size=n, p=p)
        rarest = int(np.argmin(p))
        moved = self._rng.random(n) < mix
        picks[moved] = rarest
        return [feature.categories[i] for i in picks]

    def events(self, n: int, how: Scenario) -> list[dict[str, Any]]:
        """`n` events' feature dicts; missing values appear at the baseline's rate."""
        columns: dict[str, list[Any]] = {}
        for name, feature in self._profile.features.items():
            shifted = how.shifts(name)
            if isinstance(feature, NumericProfile):
                shift = how.numeric_shift if shifted else 0.0
                column: list[Any] = [float(v) for v in self._numeric(feature, n, shift)]
            else:
                mix = how.categorical_mix if shifted else 0.0
                column = list(self._categorical(feature, n, mix))
            missing_rate = feature.missing / max(feature.n + feature.missing, 1)
            for i in np.flatnonzero(self._rng.random(n) < missing_rate):
                column[i] = None
            columns[name] = column
        return [{name: columns[name][i] for name in columns} for i in range(n)]


def payload(event: dict[str, Any], spec: PredictionSpec | None) -> dict[str, Any]:
    """A drawn event as the API takes it: its features, and its prediction if declared.

    Probabilities are rebuilt from the drawn first-class probability (clipped to [0, 1])
    and class: the rest of the mass goes to the drawn class, or to the second one.
    """
    features = {k: v for k, v in event.items() if not is_prediction_column(k)}
    if spec is None:
        return {"features": features}
    values = [event.get(name) for name, _ in spec.outputs]
    if spec.kind != "probabilities":
        return {"features": features, "prediction": values[0]}
    first, drawn = values
    if first is None:
        return {"features": features, "prediction": None}
    first = min(max(first, 0.0), 1.0)
    rest = drawn if drawn not in (None, spec.classes[0]) else spec.classes[1]
    return {"features": features, "prediction": {spec.classes[0]: first, rest: 1.0 - first}}


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _send(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    monitor: str,
    events: list[dict[str, Any]],
) -> tuple[dict[str, Any], int]:
    """Send the events; return the last answer and how many requests failed."""
    semaphore = asyncio.Semaphore(args.concurrency)
    last: dict[str, Any] = {}
    failures = 0

    async def post(path: str, body: Any) -> None:
        nonlocal last, failures
        async with semaphore, session.post(args.url + path, json=body) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                failures += 1
                if failures == 1:
                    print(f"  error {response.status}: {data.get('detail')}")
            else:
                last = data

    if args.batch:
        await asyncio.gather(
            *(
                post(f"/v1/monitors/{monitor}/events", chunk)
                for chunk in _chunks(events, args.batch)
            )
        )
    else:
        await asyncio.gather(*(post("/monitor/predict", {**e, "monitor": monitor}) for e in events))
    return last, failures


def labels_for(
    events: list[dict[str, Any]],
    spec: PredictionSpec,
    baseline: dict[str, Any],
    threshold: float,
    worse: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Labels for predictions with ids: right at the baseline's accuracy less `worse`.

    A regression's labels miss by a normal error whose MAE is the baseline's times
    1 + 5 `worse`. A wrong label is another class, drawn evenly.
    """
    if spec.kind == "regression":
        sigma = baseline["mae"] * (1 + 5 * worse) * math.sqrt(math.pi / 2)
        return [
            {"id": e["id"], "label": e["prediction"] - float(rng.normal(0, sigma))} for e in events
        ]
    classes = ["1", "0"] if spec.kind == "score" else list(spec.classes)
    right = rng.random(len(events)) < max(baseline["accuracy"] - worse, 0.0)
    labels = []
    for event, ok in zip(events, right, strict=True):
        predicted = event["prediction"]
        if spec.kind == "score":
            predicted = "1" if predicted >= threshold else "0"
        elif spec.kind == "probabilities":
            predicted = max(predicted, key=predicted.get)  # the first on a tie
        others = [c for c in classes if c != predicted]
        label = predicted if ok else others[int(rng.integers(len(others)))]
        labels.append({"id": event["id"], "label": int(label) if spec.kind == "score" else label})
    return labels


async def _simulate_performance(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    monitor: str,
    detail: dict[str, Any],
    sampler: ProfileSampler,
    how: Scenario,
    rng: np.random.Generator,
) -> int:
    """Predictions with ids an hour ago, their (worse) labels now, and the verdict."""
    spec = msgspec.convert(detail.get("prediction"), PredictionSpec | None)
    measured = detail["baseline"].get("performance")
    async with session.get(f"{args.url}/v1/monitors/{monitor}/drift") as response:
        report = await response.json()
    if spec is None or report.get("performance") is None or measured is None:
        print(
            f"driftline simulate: {monitor} takes no labels with a baseline's performance: "
            "declare `labels` and build its baseline with --label (docs/labels.md)"
        )
        return 2
    # An hour before now, as long as the window still holds it.
    delay = min(LABEL_DELAY, detail["window_seconds"] - 2 * detail["bucket_seconds"])
    stamp = isoformat(time.time() - delay)
    run = secrets.token_hex(4)  # ids of this run: earlier runs' were labelled already
    events = [
        {**payload(e, spec), "id": f"sim-{run}-{i}", "timestamp": stamp}
        for i, e in enumerate(sampler.events(args.events, how))
    ]
    events = [e for e in events if e["prediction"] is not None]
    versions = detail.get("model_versions") or []
    if how.challenger:
        if len(versions) < 2:
            print(
                f"driftline simulate: {monitor} declares fewer than two model_versions "
                "(docs/versions.md)"
            )
            return 2
        for i, event in enumerate(events):
            event["model_version"] = versions[i % 2]
    print(
        f"== {how.name}: {len(events)} predictions with ids to {monitor}, "
        f"{delay / 60:.0f} min ago in event time; their labels now"
    )
    _, failures = await _send(session, args, monitor, events)
    baseline = report["performance"].get("baseline") or {}
    threshold = measured["threshold"]
    if how.challenger:
        champion = [e for e in events if e["model_version"] == versions[0]]
        challenger = [e for e in events if e["model_version"] == versions[1]]
        labels = labels_for(champion, spec, baseline, threshold, 0.0, rng)
        labels += labels_for(challenger, spec, baseline, threshold, how.worse, rng)
    else:
        labels = labels_for(events, spec, baseline, threshold, how.worse, rng)
    counts: dict[str, int] = {}
    for chunk in _chunks(labels, args.batch or 1000):
        url = f"{args.url}/v1/monitors/{monitor}/labels"
        async with session.post(url, json=chunk) as response:
            answer = await response.json(content_type=None)
            if response.status >= 400:
                failures += 1
                print(f"  error {response.status}: {answer.get('detail')}")
                continue
        for outcome in ("counted", "late", "unmatched", "duplicate", "after_horizon"):
            counts[outcome] = counts.get(outcome, 0) + answer[outcome]
    print("  labels: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    if how.challenger:
        query = f"a={versions[0]}&b={versions[1]}"
        async with session.get(f"{args.url}/v1/monitors/{monitor}/compare?{query}") as response:
            compared = await response.json()
        found = compared.get("difference") or {}
        print(f"  {versions[1]} vs {versions[0]}: {compared['verdict']} ({compared['reason']})")
        if found:
            print(
                f"  {found['metric']}: {found['b']:.3f} vs {found['a']:.3f}, p="
                f"{found['p_value']:.2g}, failed_requests={failures}"
            )
        return 0
    async with session.get(f"{args.url}/v1/monitors/{monitor}/drift") as response:
        report = await response.json()
    performance = report["performance"]
    print(
        f"  severity={report['severity']} performance={performance.get('severity')} "
        f"labelled={performance['labelled']} failed_requests={failures}"
    )
    for metric, check in (performance.get("checks") or {}).items():
        print(
            f"  {metric}: {check['value']:.3f} vs baseline {check['baseline']:.3f} "
            f"({check['difference']:+.3f}), p={check['p_value']:.2g}: {check['severity']}"
        )
    return 0


async def run_simulation(args: argparse.Namespace) -> int:
    """Run the scenarios against the service at args.url and print its answers."""
    names = ["baseline", "moderate", "high"] if args.scenario == "all" else [args.scenario]
    try:
        scenarios = [scenario(name) for name in names]
    except ValueError as exc:
        print(f"driftline simulate: {exc}")
        return 2
    rng = np.random.default_rng(args.seed)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(f"{args.url}/v1/monitors") as response:
                listing = await response.json()
            monitor = args.monitor or listing["default_monitor"]
            async with session.get(f"{args.url}/v1/monitors/{monitor}") as response:
                if response.status != 200:
                    print(f"driftline simulate: monitor {monitor!r}: {await response.text()}")
                    return 1
                detail = await response.json()
        except aiohttp.ClientError as exc:
            print(f"driftline simulate: cannot reach {args.url}: {exc}")
            return 1
        profile = msgspec.convert(detail["baseline"], BaselineProfile)
        spec = msgspec.convert(detail.get("prediction"), PredictionSpec | None)
        sampler = ProfileSampler(profile, rng)
        for how in scenarios:
            if how.worse:
                code = await _simulate_performance(
                    session, args, monitor, detail, sampler, how, rng
                )
                if code:
                    return code
                continue
            if how.only == PREDICTION and spec is None:
                print(f"driftline simulate: {monitor} declares no prediction")
                return 2
            if how.only and how.only != PREDICTION and how.only not in profile.features:
                print(f"driftline simulate: {how.only!r} is not a feature of {monitor}")
                return 2
            print(f"== {how.name}: {args.events} events to {monitor}")
            events = [payload(e, spec) for e in sampler.events(args.events, how)]
            answer, failures = await _send(session, args, monitor, events)
            summary = answer.get("drift", answer)
            window = summary.get("window", {})
            scores = sorted(summary.get("feature_scores", {}).items(), key=lambda kv: -kv[1])
            print(
                f"  severity={summary.get('severity')} drift_score="
                f"{summary.get('drift_score', 0.0):.3f} window_events={window.get('events')} "
                f"failed_requests={failures}"
            )
            print(f"  drifted features: {', '.join(summary.get('drifted_features', [])) or '-'}")
            print("  top scores: " + ", ".join(f"{k}={v:.3f}" for k, v in scores[:5]))
            prediction = summary.get("prediction")
            if prediction:
                outputs = ", ".join(f"{k}={v:.3f}" for k, v in prediction["scores"].items())
                drifted = "drifted" if prediction["drifted"] else "not drifted"
                print(f"  prediction: {prediction['severity']}, {drifted}; scores: {outputs}")
    return 0
