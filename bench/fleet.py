"""A platform's worth of monitors: many 50-feature monitors loaded in one replica.

The monitors share one synthetic training frame (30 numeric and 20 categorical
features) but each has its own profile file, so a replica holds one profile per
monitor as it would for different models. Predict bodies name their monitor in turn,
so traffic is spread evenly over the fleet (or sent to one monitor, the reference).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

NUMERIC_FEATURES = 30
CATEGORICAL_FEATURES = 20
CATEGORIES = [f"c{i}" for i in range(8)]


def frame(n: int, *, seed: int) -> dict[str, list[Any]]:
    """Columns of n rows: x00..x29 numeric (varied scales), k00..k19 categorical."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for i in range(NUMERIC_FEATURES):
        columns[f"x{i:02d}"] = np.round(rng.normal(i, 1 + i / 10, n), 4).tolist()
    weights = 1 / np.arange(1, len(CATEGORIES) + 1)
    weights /= weights.sum()
    for i in range(CATEGORICAL_FEATURES):
        columns[f"k{i:02d}"] = rng.choice(CATEGORIES, size=n, p=weights).tolist()
    return columns


def write_fleet(root: Path, monitors: int, *, seed: int = 3) -> tuple[Path, int]:
    """`monitors` configs with their own profile files; returns the directory and config bytes."""
    from driftline.core.profile import build_profile, encode_profile

    profile = encode_profile(build_profile(frame(20_000, seed=seed)))
    directory, baselines = root / "monitors", root / "baselines"
    directory.mkdir(parents=True, exist_ok=True)
    baselines.mkdir(parents=True, exist_ok=True)
    for i in range(monitors):
        name = f"fleet-{i:04d}"
        (baselines / f"{name}.profile.json").write_bytes(profile)
        config = {"name": name, "baseline": f"../baselines/{name}.profile.json"}
        (directory / f"{name}.json").write_bytes(msgspec.json.encode(config))
    return directory, len(profile)


def predict_bodies(count: int, monitors: int, *, seed: int = 5) -> list[bytes]:
    """Predict bodies of 50 features, naming the fleet's monitors in turn (1: all the first)."""
    rows = frame(count, seed=seed)
    names = list(rows)
    rnd = random.Random(seed)
    bodies = []
    for j in range(count):
        features = {name: rows[name][j] for name in names}
        body = {"monitor": f"fleet-{j % monitors:04d}", "features": features}
        if rnd.random() < 0.5:
            body["model_version"] = "v1"
        bodies.append(msgspec.json.encode(body))
    return bodies
