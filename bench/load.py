"""Load generators: wrk for maximum throughput, an open-loop generator for fixed rates."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .procs import LOAD_CPU, Server, pinned

LUA = Path(__file__).with_name("bodies.lua")


@dataclass
class LoadResult:
    """What one load run measured."""

    tool: str
    requests: int
    errors: int  # non-2xx answers plus socket errors and timeouts
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    generator_cpu: float  # share of one core the generator used
    server_cpu: float  # share of one core the server used
    connections: int
    target_rps: float | None = None
    other_cpu: float = 0.0  # cores busy with anything but server and generator (noise)
    steal: float = 0.0  # cores the hypervisor gave to other machines (noise)
    p99_ms_per_second: list[float | None] | None = None
    runs_rps: list[float] | None = None  # every measured run when the best of several is kept

    def as_dict(self) -> dict[str, object]:
        """For the JSON file."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _busy_cpu() -> float:
    """CPU seconds this machine's processes used, all cores (steal excluded)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0))


def _steal() -> float:
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def have_wrk() -> bool:
    """Whether wrk is installed."""
    return shutil.which("wrk") is not None


def wrk(
    server: Server,
    bodies: Path,
    *,
    duration: float,
    connections: int = 64,
    path: str = "/monitor/predict",
    content_type: str = "application/json",
    threads: int = 1,
    timeout: float = 10.0,
) -> LoadResult:
    """Closed-loop maximum throughput: wrk with `connections` keep-alive connections."""
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_PATH": path,
        "BENCH_CONTENT_TYPE": content_type,
    }
    argv = pinned(
        LOAD_CPU,
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={timeout:g}s",
            "-s", str(LUA),
            f"http://127.0.0.1:{server.port}",
        ],
    )  # fmt: skip
    cpu_before, server_before, start = _children_cpu(), server.cpu_seconds(), time.monotonic()
    busy_before, steal_before = _busy_cpu(), _steal()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    server_cpu = (server.cpu_seconds() - server_before) / wall
    generator_cpu = (_children_cpu() - cpu_before) / wall
    other_cpu = (_busy_cpu() - busy_before) / wall - server_cpu - generator_cpu
    steal = (_steal() - steal_before) / wall
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = data["duration_us"] / 1e6
    lat = data["latency_us"]
    errors = sum(data["errors"].values())
    return LoadResult(
        tool="wrk",
        requests=data["requests"],
        errors=errors,
        seconds=seconds,
        rps=(data["requests"] - data["errors"]["status"]) / seconds,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        max_ms=lat["max"] / 1000,
        generator_cpu=generator_cpu,
        server_cpu=server_cpu,
        connections=connections,
        other_cpu=max(0.0, other_cpu),
        steal=steal,
    )


def open_loop(
    server: Server,
    bodies: Path,
    *,
    rate: float,
    duration: float,
    warmup: float = 1.0,
    connections: int = 64,
    path: str = "/monitor/predict",
) -> LoadResult:
    """Constant-rate open-loop load; latency counted from each request's intended send time."""
    argv = pinned(
        LOAD_CPU,
        [
            sys.executable, "-m", "bench.openloop",
            "--port", str(server.port),
            "--path", path,
            "--bodies", str(bodies),
            "--rate", f"{rate:.3f}",
            "--duration", f"{duration:g}",
            "--warmup", f"{warmup:g}",
            "--connections", str(connections),
        ],
    )  # fmt: skip
    cpu_before, server_before, start = _children_cpu(), server.cpu_seconds(), time.monotonic()
    busy_before, steal_before = _busy_cpu(), _steal()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent
    )
    wall = time.monotonic() - start
    server_cpu = (server.cpu_seconds() - server_before) / wall
    generator_cpu = (_children_cpu() - cpu_before) / wall
    other_cpu = (_busy_cpu() - busy_before) / wall - server_cpu - generator_cpu
    steal = (_steal() - steal_before) / wall
    if done.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {done.stdout}\n{done.stderr}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return LoadResult(
        tool="open-loop (bench/openloop.py)",
        requests=data["completed"],
        errors=data["errors"],
        seconds=data["seconds"],
        rps=data["achieved_rps"],
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
        p999_ms=data["p999_ms"],
        max_ms=data["max_ms"],
        generator_cpu=generator_cpu,
        server_cpu=server_cpu,
        connections=connections,
        target_rps=rate,
        other_cpu=max(0.0, other_cpu),
        steal=steal,
        p99_ms_per_second=data.get("p99_ms_per_second"),
    )
