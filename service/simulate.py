"""`driftline simulate`: realistic traffic for a running service, and what it answered.

Events are drawn from the monitor's own baseline profile (fetched from the service), so
baseline-like traffic really is drift-free; the drift scenarios shift numeric features
by a number of baseline standard deviations and move categorical mass to the rarest
category. A monitor that declares a prediction gets one drawn from its baseline too
(the `prediction` scenario shifts only that).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import numpy as np

from driftline.core.prediction import PredictionSpec, is_prediction_column
from driftline.core.profile import BaselineProfile, CategoricalProfile, NumericProfile


@dataclass(frozen=True, slots=True)
class Scenario:
    """How far to push each feature away from its baseline."""

    name: str
    numeric_shift: float  # in baseline standard deviations
    categorical_mix: float  # share of events moved to the rarest category
    only: str | None = None  # shift just this feature (`prediction`: the prediction)

    def shifts(self, name: str) -> bool:
        """Whether the scenario moves this layout column."""
        if self.only == PREDICTION:
            return is_prediction_column(name)
        return self.only is None or self.only == name


PREDICTION = "prediction"
SCENARIOS = {
    "baseline": Scenario("baseline", 0.0, 0.0),
    "moderate": Scenario("moderate", 0.5, 0.15),
    "high": Scenario("high", 2.0, 0.6),
    # The model's answers move while its inputs stay: a new model, a broken feature
    # pipeline upstream of it, or a changed threshold.
    PREDICTION: Scenario(PREDICTION, 2.0, 0.6, only=PREDICTION),
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
