"""What one Redis core spends per event when writes keep it busy.

The predict lines measure Redis beside one replica, which keeps it a few per cent busy
(~90 script calls a second). Each call then finds the core's caches cold after ~10 ms
idle, and costs about three times what the same call costs back to back
(docs/performance.md has the measurement). A Redis that carries many replicas is busy,
so its capacity is measured here under such a load: a writer process, on the server's
core, runs the store's own write (`RedisWindowStore.apply`, what a flush calls once it
has binned its events) with the deltas of EVENTS bench events per call, one call in
flight per window over WINDOWS windows of the bench monitor's layout, as fast as it
can. Folds happen as in a replica: a window's log is folded when the writer's view of it
is a second old, or the log is nearly full.

`python -m bench.rediscapacity URL MONITORS_DIR SECONDS` writes for SECONDS after a
second's warm-up, then prints the calls it made as JSON; the harness reads Redis's INFO
around the measured part (the warm-up is over once the first line, "ready", is printed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

from driftline.core.window import WindowSpec

from . import data

EVENTS = 64  # per call: a full flush under the closed-loop load (64 connections)
WINDOWS = 8  # windows written at once: one call in flight each, as a replica's flushers


def _deltas(monitors_dir: Path) -> tuple[WindowSpec, np.ndarray]:
    """The bench monitor's window spec and the delta vector of EVENTS of its events."""
    from driftline.core.binning import bin_batch
    from driftline.core.limits import Limits

    monitor = data.load_monitor(monitors_dir)
    rows = data.rows(data.frame(EVENTS, seed=11))
    batch = bin_batch(monitor.layout, rows, Limits())
    vectors = batch.deltas(monitor.window.width, np.zeros(len(rows), dtype=np.int64))
    return monitor.window, vectors[0][0]


async def _write(url: str, spec: WindowSpec, vector: np.ndarray, seconds: float) -> int:
    """Calls made in `seconds` of writing, after a second of the same unmeasured."""
    from driftline.stores.redis import RedisWindowStore

    store = RedisWindowStore.from_url(url)
    specs = [dataclasses.replace(spec, monitor=f"capacity-{i}") for i in range(WINDOWS)]
    calls = 0
    stop = 0.0

    async def loop(window: WindowSpec) -> None:
        nonlocal calls
        while time.monotonic() < stop:
            await store.apply(window, {window.bucket_of(time.time()): vector})
            calls += 1

    try:
        stop = time.monotonic() + 1.0
        await asyncio.gather(*(loop(w) for w in specs))
        print("ready", flush=True)
        sys.stdin.readline()  # the harness has read Redis's INFO
        calls, stop = 0, time.monotonic() + seconds
        await asyncio.gather(*(loop(w) for w in specs))
    finally:
        await store.close()
    return calls


def main() -> int:
    """Write, then print {"calls", "events"} as JSON."""
    url, monitors_dir, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    spec, vector = _deltas(monitors_dir)
    calls = asyncio.run(_write(url, spec, vector, seconds))
    print(msgspec.json.encode({"calls": calls, "events": calls * EVENTS}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
