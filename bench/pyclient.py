"""driftline.client: what `log()` costs the caller, and what one client sends per second.

Runs in the harness process (the load core) against a service on the server core. The
per-call cost is the mean over a loop of `log()` calls while the client's own sender
thread sends the earlier ones (its work shares the interpreter with the caller's);
throughput is events logged with `overflow="block"` (nothing dropped) over the time
until `flush()` returned, times the features per event.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import data, procs

FEATURES = len(data.FEATURES)


def _per_call(url: str, calls: int, log: Any) -> dict[str, float]:
    from driftline.client import DriftClient

    with DriftClient(url, data.MONITOR, capacity=max(calls, 1000)) as client:
        started = time.perf_counter()
        log(client, calls)
        seconds = time.perf_counter() - started
        client.flush(timeout=120)
        stats = client.stats()
    return {"us_per_call": seconds / calls * 1e6, "sent": stats.sent, "dropped": stats.dropped}


def _throughput(url: str, seconds: float, log: Any) -> dict[str, float]:
    from driftline.client import DriftClient

    with DriftClient(url, data.MONITOR, overflow="block", block_timeout=60) as client:
        started = time.perf_counter()
        events = 0
        while time.perf_counter() - started < seconds:
            events += log(client)
        client.flush(timeout=120)
        elapsed = time.perf_counter() - started
        stats = client.stats()
    return {
        "feature_values_per_second": stats.sent * FEATURES / elapsed,
        "events": events,
        "sent": stats.sent,
        "failed": stats.failed + stats.dropped + stats.rejected,
    }


def measure(server: procs.Server, duration: float) -> dict[str, Any]:
    """Per-call cost of log() and log_batch(one row); throughput of dicts and of frames."""
    url = f"http://127.0.0.1:{server.port}"
    columns = data.frame(20_000, seed=5)
    rows = data.rows(columns)
    numeric = np.column_stack([columns[name] for name in data.NUMERIC])
    names = list(data.NUMERIC)
    chunks = [{k: v[i : i + 1000] for k, v in columns.items()} for i in range(0, 20_000, 1000)]

    def dicts(client: Any, calls: int) -> None:
        for i in range(calls):
            client.log(rows[i % len(rows)])

    def arrays(client: Any, calls: int) -> None:
        for i in range(calls):
            client.log_batch(numeric[i % len(numeric)], columns=names)

    def dict_batch(client: Any) -> int:
        for row in rows[:1000]:
            client.log(row)
        return 1000

    position = [0]

    def frame_batch(client: Any) -> int:
        client.log_batch(chunks[position[0] % len(chunks)])
        position[0] += 1
        return 1000

    calls = 200_000
    return {
        "log_dict": _per_call(url, calls, dicts),
        "log_batch_row": _per_call(url, calls // 2, arrays),
        "dicts": _throughput(url, duration, dict_batch),
        "frames": _throughput(url, duration, frame_batch),
        "features": FEATURES,
    }
