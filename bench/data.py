"""Synthetic data for the benchmarks: 20 features (15 numeric, 5 categorical).

One generator draws the reference (training) frame, the drifted current frame and the
request payloads in the original API's shape, so every measurement runs on the same distributions.
Everything is seeded: two runs draw the same data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from driftline.core.monitor import Monitor, build_monitor, decode_monitor_config
from driftline.core.policy import MonitorDefaults
from driftline.core.timestamps import isoformat

MONITOR = "bench"
NUMERIC = (
    "age",
    "income",
    "tenure_months",
    "credit_score",
    "num_products",
    "debt_ratio",
    "balance",
    "transactions_30d",
    "avg_txn_amount",
    "days_since_login",
    "loan_amount",
    "interest_rate",
    "utilization",
    "late_payments",
    "session_minutes",
)
CATEGORICAL = ("product_category", "region", "channel", "device", "occupation")
FEATURES = NUMERIC + CATEGORICAL

CATEGORIES: dict[str, tuple[list[str], list[float]]] = {
    "product_category": (["premium", "standard", "basic"], [0.2, 0.5, 0.3]),
    "region": (
        ["north", "south", "east", "west", "central", "islands", "coast", "mountain"],
        [0.2, 0.18, 0.16, 0.14, 0.12, 0.08, 0.07, 0.05],
    ),
    "channel": (["web", "app", "branch", "phone"], [0.45, 0.3, 0.15, 0.1]),
    "device": (["ios", "android", "desktop", "tablet", "other"], [0.3, 0.35, 0.25, 0.07, 0.03]),
    "occupation": ([f"occ_{i:02d}" for i in range(30)], []),  # Zipf-like, filled below
}
_ranks = np.arange(1, 31, dtype=np.float64)
CATEGORIES["occupation"] = (CATEGORIES["occupation"][0], list(1 / _ranks / (1 / _ranks).sum()))

# The current frame drifts on these features (and only these); the rest are redrawn
# from the reference distributions.
DRIFTED = ("income", "credit_score", "transactions_30d", "channel")


def _numeric(rng: np.random.Generator, name: str, n: int, drift: bool) -> np.ndarray:
    d = drift and name in DRIFTED
    if name == "age":
        return np.clip(np.round(rng.normal(41, 12, n)), 18, 95)
    if name == "income":
        return np.round(rng.lognormal(10.8, 0.5, n) * (1.6 if d else 1.0), 2)
    if name == "tenure_months":
        return np.round(rng.exponential(30, n))
    if name == "credit_score":
        return np.clip(np.round(rng.normal(680 - (45 if d else 0), 60, n)), 300, 850)
    if name == "num_products":
        return rng.choice([1, 2, 3, 4, 5], n, p=[0.35, 0.3, 0.2, 0.1, 0.05]).astype(np.float64)
    if name == "debt_ratio":
        return np.round(rng.beta(2, 5, n), 4)
    if name == "balance":
        return np.round(rng.lognormal(8, 1.2, n), 2)
    if name == "transactions_30d":
        return rng.poisson(30 if d else 20, n).astype(np.float64)
    if name == "avg_txn_amount":
        return np.round(rng.gamma(2.0, 40.0, n), 2)
    if name == "days_since_login":
        return np.round(rng.exponential(5, n), 1)
    if name == "loan_amount":
        return np.round(rng.lognormal(9.5, 0.8, n), 2)
    if name == "interest_rate":
        return np.round(rng.normal(7.5, 1.5, n), 3)
    if name == "utilization":
        return np.round(rng.beta(2, 3, n), 4)
    if name == "late_payments":
        return np.minimum(rng.poisson(0.6, n), 12).astype(np.float64)
    if name == "session_minutes":
        return np.round(rng.gamma(3.0, 4.0, n), 1)
    raise KeyError(name)


def _categorical(rng: np.random.Generator, name: str, n: int, drift: bool) -> np.ndarray:
    labels, p = CATEGORIES[name]
    if drift and name == "channel":
        p = [0.2, 0.6, 0.1, 0.1]
    return np.asarray(labels, dtype=object)[rng.choice(len(labels), n, p=p)]


def frame(n: int, *, seed: int, drift: bool = False) -> dict[str, np.ndarray]:
    """Columns of n rows: numeric as float64, categorical as object arrays of str."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        columns[name] = _numeric(rng, name, n, drift)
    for name in CATEGORICAL:
        columns[name] = _categorical(rng, name, n, drift)
    return columns


def rows(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Row dicts (feature -> value) with plain Python values: ints stay ints."""
    names = list(columns)
    lists = []
    for name in names:
        col = columns[name]
        if col.dtype == object:
            lists.append(col.tolist())
        else:
            values = col.tolist()
            if all(float(v).is_integer() for v in values[:1000]):
                values = [int(v) for v in values]
            lists.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]


def scores(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The bench model's score of each row: a fixed logistic function of two features."""
    first, second = columns[NUMERIC[0]], columns[NUMERIC[1]]
    logit = (first - first.mean()) / first.std() - 0.5 * (second - second.mean()) / second.std()
    scored: np.ndarray = np.round(1 / (1 + np.exp(-logit)), 4)
    return scored


def write_monitor(
    root: Path,
    reference: dict[str, np.ndarray],
    name: str = MONITOR,
    *,
    scored: bool = False,
    labelled: bool = False,
    scoped: bool = False,
) -> Path:
    """`root/monitors/<name>.json` and its profile (built by driftline) in `root/baselines/`.

    Returns the monitors directory (DRIFTLINE_MONITORS_DIR). The profile sits outside it:
    every `*.json` in the monitors directory is read as a monitor config. `scored`: the
    monitor declares a score prediction (`scores` of the reference rows); `labelled`: it
    also takes delayed labels; `scoped`: it declares the bodies' model versions and a
    segment per category of the first categorical feature (docs/versions.md).
    """
    from driftline.core.prediction import PredictionSpec
    from driftline.core.profile import build_profile, encode_profile

    monitors, baselines = root / "monitors", root / "baselines"
    monitors.mkdir(parents=True, exist_ok=True)
    baselines.mkdir(parents=True, exist_ok=True)
    kinds = {n: "numeric" for n in NUMERIC} | {n: "categorical" for n in CATEGORICAL}
    table = {k: v.tolist() for k, v in reference.items()}
    prediction = PredictionSpec("score", column="score") if scored else None
    if scored:
        table["score"] = scores(reference).tolist()
    profile = build_profile(table, kinds=kinds, prediction=prediction)
    (baselines / f"{name}.profile.json").write_bytes(encode_profile(profile))
    config: dict[str, Any] = {
        "name": name,
        "model": "bench-model",
        "baseline": f"../baselines/{name}.profile.json",
        "window_seconds": 3600,
        "bucket_seconds": 60,
    }
    if scored:
        config["prediction"] = {"kind": "score", "column": "score"}
    if labelled:
        config["labels"] = {"horizon_seconds": 3600}
    if scoped:
        config["model_versions"] = list(VERSIONS)
        config["segments"] = {"by": CATEGORICAL[0]}
    (monitors / f"{name}.json").write_bytes(msgspec.json.encode(config))
    return monitors


def load_monitor(monitors: Path, name: str = MONITOR) -> Monitor:
    """The monitor `write_monitor` wrote into `monitors`, built as the service builds it."""
    path = monitors / f"{name}.json"
    config = decode_monitor_config(msgspec.json.decode(path.read_bytes()), str(path))
    return build_monitor(config, MonitorDefaults(), base_dir=monitors, source=str(path))


VERSIONS = ("v1.2.0", "v1.2.1", "v1.3.0")  # the model versions predict bodies carry


def predict_bodies(
    count: int,
    *,
    seed: int = 11,
    drift_share: float = 0.0,
    scored: bool = False,
    ids: bool = False,
) -> list[bytes]:
    """`POST /monitor/predict` bodies in the original API's shape, 20 features each.

    `scored`: each also carries its `prediction` (the bench model's score); `ids`: and
    an event `id` (for delayed labels), the placeholder @ID@ the load generator replaces
    with a new id per request (bench/bodies.lua).
    """
    cols = frame(count, seed=seed)
    if drift_share:
        drifted = frame(count, seed=seed + 1, drift=True)
        k = int(count * drift_share)
        for name in FEATURES:
            cols[name][:k] = drifted[name][:k]
    rnd = random.Random(seed)
    predictions = scores(cols).tolist() if scored else [None] * count
    bodies = []
    for r, prediction in zip(rows(cols), predictions, strict=True):
        body: dict[str, Any] = {"features": r, "model_version": rnd.choice(VERSIONS)}
        if scored:
            body["prediction"] = prediction
        if ids:
            body["id"] = "@ID@"
        bodies.append(msgspec.json.encode(body))
    return bodies


def event_bodies(
    events: Sequence[dict[str, Any]],
    per_body: int,
    *,
    spread_from: float | None = None,
    spread_seconds: float = 0.0,
    ndjson: bool = False,
    seed: int = 5,
) -> list[bytes]:
    """Batch bodies (`{"events": [...]}` or NDJSON) of `per_body` events each.

    With `spread_from`, events get timestamps uniformly spread over
    [spread_from, spread_from + spread_seconds] so every bucket of the window fills.
    """
    rnd = random.Random(seed)
    bodies = []
    for start in range(0, len(events), per_body):
        chunk = []
        for features in events[start : start + per_body]:
            event: dict[str, Any] = {"features": features, "model_version": "v1.2.0"}
            if spread_from is not None:
                event["timestamp"] = isoformat(spread_from + rnd.random() * spread_seconds)
            chunk.append(event)
        if ndjson:
            bodies.append(b"\n".join(msgspec.json.encode(e) for e in chunk) + b"\n")
        else:
            bodies.append(msgspec.json.encode({"events": chunk}))
    return bodies
