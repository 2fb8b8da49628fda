"""`python -m bench.keys`: what idempotency keys cost Redis, per flush and per event.

Drives the engine itself (group commit, the window script) in process against a
redis-server of its own, on the bench monitor: flushes of 64 single events, as under
full load, without keys, with one key in each, with a key on every event, and with
every key a repeat (a flush of retries). For each: the Redis commands a flush costs (as
`INFO commandstats` counts them, the script's own included), the script's time
(`usec` of EVALSHA, which includes the commands it calls; of it, the key commands'
own) and Redis's CPU (`INFO cpu`,
user + sys) per flush. The cases take turns, three rounds; the least of each is shown
(this host's speed drifts). Not part of `make bench`; about half a minute on one core.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from . import data, procs

FLUSHES = 200
EVENTS = 64  # per flush, every connection of the bench in flight
ROUNDS = 3


async def _flushes(
    redis: procs.Redis, monitors: Path, keyed: int, repeat: bool
) -> dict[str, float]:
    """Run FLUSHES flushes of EVENTS predicts, `keyed` of them with an event id."""
    from driftline.engine.admission import Event
    from driftline.engine.facade import DriftEngine
    from driftline.engine.registry import MonitorRegistry
    from driftline.settings import Settings
    from driftline.stores.redis import RedisWindowStore
    from driftline.telemetry import Telemetry

    settings = Settings(redis_url=redis.url, monitors_dir=str(monitors), flush_interval=0.05)
    registry = MonitorRegistry(settings)
    registry.load()
    store = RedisWindowStore.from_url(redis.url)
    engine = DriftEngine(settings, registry, store, Telemetry())
    monitor = engine.monitor(data.MONITOR)
    bodies = [msgspec.json.decode(b, type=Event) for b in data.predict_bodies(EVENTS)]
    try:

        def flush_of(n: int) -> list[Any]:
            events = [
                msgspec.structs.replace(e, id=f"{0 if repeat else n}-{i}") if i < keyed else e
                for i, e in enumerate(bodies)
            ]
            return [engine.predict(monitor, e, _key(e)) for e in events]

        await asyncio.gather(*flush_of(-1))  # the window exists, the bucket has its slot
        if repeat:
            await asyncio.gather(*flush_of(0))
        redis.client.config_resetstat()
        before = redis.snapshot()
        started = time.perf_counter()
        for n in range(FLUSHES):
            await asyncio.gather(*flush_of(n + 1))
        wall = time.perf_counter() - started
        after = redis.snapshot()
        stats = redis.client.info("commandstats")
        evalsha = stats["cmdstat_evalsha"]
        key_commands = sum(
            float(stats.get(f"cmdstat_{name}", {}).get("usec", 0))
            for name in ("hmget", "hset", "expireat")
        )
    finally:
        await engine.close()
        await store.close()
    return {
        "commands": (after["calls"] - before["calls"]) / FLUSHES,
        "evalsha_calls": float(evalsha["calls"]) / FLUSHES,
        "script_us": float(evalsha["usec"]) / FLUSHES,
        "key_commands_us": key_commands / FLUSHES,
        "cpu_us": (after["cpu"] - before["cpu"]) * 1e6 / FLUSHES,
        "wall_ms": wall * 1e3 / FLUSHES,
    }


def _key(event: Any) -> Any:
    from driftline.core.idempotency import request_key

    return None if event.id is None else request_key("event", event.id, msgspec.json.encode(event))


def main() -> int:
    """Print one row per kind of flush."""
    work = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    monitors = data.write_monitor(work / "service", data.frame(20_000, seed=1))
    redis = procs.Redis(work / "logs")
    cases = (
        ("no keys", 0, False),
        ("1 key in 64 events", 1, False),
        ("64 keys (every event)", EVENTS, False),
        ("64 repeated keys (retries)", EVENTS, True),
    )
    try:
        best: dict[str, dict[str, float]] = {}
        for _ in range(ROUNDS):
            for label, keyed, repeat in cases:
                redis.flush()
                m = asyncio.run(_flushes(redis, monitors, keyed, repeat))
                held = best.setdefault(label, m)
                for name, value in m.items():
                    held[name] = min(held[name], value)
        print(f"{EVENTS} events per flush, {FLUSHES} flushes, best of {ROUNDS} rounds")
        print(
            "| flush | commands | EVALSHA µs (HMGET, HSET, EXPIREAT in it) | Redis CPU µs "
            "| CPU µs/event | flush ms |"
        )
        print("|---|---|---|---|---|---|")
        for label, m in best.items():
            print(
                f"| {label} | {m['commands']:.2f} | {m['script_us']:.0f} "
                f"({m['key_commands_us']:.0f}) | {m['cpu_us']:.0f} "
                f"| {m['cpu_us'] / EVENTS:.1f} | {m['wall_ms']:.2f} |"
            )
    finally:
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
