"""Constant-rate, open-loop load generator (what wrk2 does; wrk2 is not in Debian).

Request i is due at t0 + i / rate whatever happened to earlier requests. A due request
takes the next free keep-alive connection; if none is free it waits, and that wait
counts: latency runs from the *intended* send time to the end of the answer, so a
stalled server cannot hide its stall by slowing the generator (no coordinated
omission). Requests due in the first `--warmup` seconds are sent but not counted.

    python -m bench.openloop --port 8080 --bodies bodies.txt --rate 2000 --duration 10

Prints one JSON line: completed, errors, achieved rate and latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .client import Connection, build_request


async def run(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    """Drive the load; return the summary."""
    requests = [build_request("127.0.0.1", args.port, args.path, body) for body in bodies]
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    total = int((args.warmup + args.duration) * args.rate)
    latencies = np.full(total, np.nan)
    errors = 0
    counted_from = int(args.warmup * args.rate)
    connections = [await Connection.open("127.0.0.1", args.port) for _ in range(args.connections)]

    async def worker(connection: Connection) -> None:
        nonlocal errors
        while True:
            job = await queue.get()
            if job is None:
                return
            index, intended = job
            try:
                response = await connection.send(requests[index % len(requests)])
                ok = 200 <= response.status < 300
            except (OSError, asyncio.IncompleteReadError):
                ok = False
            if index >= counted_from:
                if ok:
                    latencies[index] = time.perf_counter() - intended
                else:
                    errors += 1

    workers = [asyncio.create_task(worker(c)) for c in connections]
    start = time.perf_counter() + 0.05
    interval = 1.0 / args.rate
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) / interval) + 1) if now >= start else 0
        while sent < due:
            queue.put_nowait((sent, start + sent * interval))
            sent += 1
        # Sleep until the next request is due (asyncio wakes within ~1 ms; lateness
        # shows up in the measured latency, never hidden).
        await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    end = time.perf_counter()
    for connection in connections:
        await connection.close()
    measured = latencies[counted_from:]
    done = measured[~np.isnan(measured)] * 1000
    seconds = end - (start + counted_from * interval)
    percentiles = np.percentile(done, [50, 99, 99.9]) if len(done) else [np.nan] * 3
    # p99 of each second of the measured run (by intended send time): shows whether a
    # high p99 is one stall or a steady state.
    per_second = []
    step = int(args.rate)
    for first in range(counted_from, total, max(step, 1)):
        chunk = latencies[first : first + step]
        chunk = chunk[~np.isnan(chunk)] * 1000
        per_second.append(round(float(np.percentile(chunk, 99)), 2) if len(chunk) else None)
    return {
        "target_rps": args.rate,
        "intended": int(total - counted_from),
        "completed": len(done),
        "errors": errors,
        "seconds": seconds,
        "achieved_rps": len(done) / seconds if seconds > 0 else 0.0,
        "p50_ms": float(percentiles[0]),
        "p99_ms": float(percentiles[1]),
        "p999_ms": float(percentiles[2]),
        "max_ms": float(done.max()) if len(done) else float("nan"),
        "p99_ms_per_second": per_second,
    }


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/monitor/predict")
    parser.add_argument("--bodies", required=True, help="one JSON body per line")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent, not counted")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    bodies = [line for line in Path(args.bodies).read_bytes().splitlines() if line.strip()]
    print(json.dumps(asyncio.run(run(args, bodies))))


if __name__ == "__main__":
    main()
