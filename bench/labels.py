"""Labels ingest: delayed labels joined and counted per second, in process, in batches.

Counts 100,000 events with ids and probabilities predictions on the embedded store,
then times `POST /v1/monitors/{name}/labels`'s work for batches of 5,000 labels: each
item decoded (msgspec, as the handler does), looked up, joined and counted by the
engine. The target (issue 10): at least 200,000 labels/s per process.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

EVENTS = 100_000
BATCH = 5_000


async def _measure() -> dict[str, Any]:
    from driftline.core.prediction import PredictionSpec
    from driftline.core.profile import build_profile
    from driftline.engine.admission import Event, Label
    from driftline.engine.facade import DriftEngine
    from driftline.engine.registry import MonitorRegistry
    from driftline.settings import Settings
    from driftline.stores.memory import MemoryWindowStore
    from driftline.telemetry import Telemetry

    rng = np.random.default_rng(1)
    p = rng.uniform(size=2000).tolist()
    declared = PredictionSpec("probabilities", ["yes", "no"])
    profile = build_profile(
        {"x": rng.normal(size=2000).tolist(), "prediction": [[a, 1 - a] for a in p]},
        prediction=declared,
    )
    config = {
        "name": "labels",
        "baseline": msgspec.to_builtins(profile),
        "prediction": msgspec.to_builtins(declared),
        "labels": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "labels.json").write_bytes(msgspec.json.encode(config))
        settings = Settings(monitors_dir=directory, flush_interval=0.0)
        registry = MonitorRegistry(settings)
        registry.load()
    engine = DriftEngine(settings, registry, MemoryWindowStore(), Telemetry())
    monitor = registry.get("labels")
    scores = rng.uniform(size=EVENTS)
    for start in range(0, EVENTS, BATCH):
        events = [
            Event({"x": 0.0}, id=f"e{i}", prediction=[float(scores[i]), float(1 - scores[i])])
            for i in range(start, start + BATCH)
        ]
        await engine.ingest(monitor, events)
    bodies = [
        [
            msgspec.json.encode({"id": f"e{i}", "label": "yes" if rng.uniform() < 0.5 else "no"})
            for i in range(start, start + BATCH)
        ]
        for start in range(0, EVENTS, BATCH)
    ]
    decoder = msgspec.json.Decoder(Label)
    counted = 0
    t0 = time.perf_counter()
    for lines in bodies:
        result = await engine.labels(monitor, [decoder.decode(line) for line in lines])
        counted += result.counted
    seconds = time.perf_counter() - t0
    await engine.close()
    return {
        "labels": EVENTS,
        "counted": counted,
        "batch": BATCH,
        "seconds": round(seconds, 4),
        "labels_per_second": round(EVENTS / seconds),
    }


def measure() -> dict[str, Any]:
    """Labels joined and counted per second on the embedded store (see the module doc)."""
    return asyncio.run(_measure())
