"""Processes the harness starts: redis-server, the service, the framework app, generators.

Every process is started by the harness, pinned with `taskset` when the machine has at
least two cores (servers on SERVER_CPU, load generators and Redis on LOAD_CPU), and
stopped by its own pid when the measurement is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from driftline.eventloop import DEFAULT_EVENT_LOOP

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
LOAD_CPU = "1"


# Read at import, before the harness pins itself to LOAD_CPU (children inherit that).
_CPUS = len(os.sched_getaffinity(0))


def cpu_count() -> int:
    """Cores the harness was started with (what `nproc` says)."""
    return _CPUS


def pinning() -> bool:
    """Whether servers and generators get cores of their own."""
    return shutil.which("taskset") is not None and cpu_count() >= 2


def pinned(cpu: str, argv: Sequence[str]) -> list[str]:
    """`argv` under `taskset -c cpu` when pinning is possible."""
    return ["taskset", "-c", cpu, *argv] if pinning() else list(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, object]:
    """Cores, CPU model and memory of this machine, and how the harness pins processes."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "nproc": cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in load],
        "pinning": (
            f"server on core {SERVER_CPU}; load generator and redis-server on core {LOAD_CPU}"
            if pinning()
            else "no taskset or a single core: processes share cores"
        ),
    }


@dataclass
class Server:
    """A started process and where it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """The server's pid (taskset execs into it)."""
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the server used so far."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_http(server: Server, path: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.tail()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), timeout=1) as s,
        ):
            s.sendall(request)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(interval)
    raise RuntimeError(f"{server.name} not ready after {timeout} s:\n{server.tail()}")


def series(server: Server, metric: str) -> int:
    """How many series of `metric` the server's /monitor/metrics holds (0 if unreachable)."""
    url = f"http://127.0.0.1:{server.port}/monitor/metrics"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as answer:
        return sum(line.startswith(metric + "{") for line in answer.read().decode().splitlines())
    return 0


def read_window(server: Server, monitor: str) -> None:
    """GET the monitor's drift report: a read of its window, which folds the window's log."""
    url = f"http://127.0.0.1:{server.port}/v1/monitors/{monitor}/drift"
    with urllib.request.urlopen(url, timeout=30) as answer:
        answer.read()


def wait_monitor(server: Server, monitor: str, timeout: float) -> float:
    """Seconds until GET /v1/monitors/{monitor} answers 200 (the monitor is loaded)."""
    began = time.monotonic()
    # Polled often: the reload is what is timed.
    _wait_http(server, f"/v1/monitors/{monitor}", timeout, interval=0.02)
    return time.monotonic() - began


def wait_series(server: Server, metric: str, count: int, timeout: float) -> float:
    """Seconds until the server's /monitor/metrics holds `count` series of `metric`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if series(server, metric) >= count:
            return time.monotonic() - began
        time.sleep(0.5)
    raise RuntimeError(f"{server.name}: fewer than {count} {metric} series after {timeout} s")


def start(
    name: str,
    argv: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    cpu: str = SERVER_CPU,
    ready_path: str | None = "/monitor/ready",
    logs: Path,
    timeout: float = 60.0,
) -> Server:
    """Start a server process pinned to `cpu`; wait until `ready_path` answers 200."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            pinned(cpu, argv), env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
    server = Server(name, proc, port, log)
    try:
        if ready_path is not None:
            _wait_http(server, ready_path, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def driftline_argv(port: int) -> list[str]:
    """`driftline serve` from the same virtualenv as this interpreter."""
    script = Path(sys.executable).with_name("driftline")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "driftline.cli"]
    return [*base, "serve", "--host", "127.0.0.1", "--port", str(port)]


def start_driftline(
    name: str,
    monitors_dir: Path,
    logs: Path,
    *,
    redis_url: str | None = None,
    ack_mode: str = "durable",
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Server:
    """The service on a free port with the bench monitors (embedded store unless redis_url)."""
    port = free_port()
    env = {
        "DRIFTLINE_MONITORS_DIR": str(monitors_dir),
        "DRIFTLINE_ACK_MODE": ack_mode,
        "DRIFTLINE_LOG_LEVEL": "WARNING",
        "REDIS_URL": redis_url or "",
        "BASELINE_DATA_PATH": "",
        "DRIFTLINE_ALERTS_DIR": "",
        **(extra_env or {}),
    }
    return start(name, driftline_argv(port), port, env=env, logs=logs, timeout=timeout)


def start_framework(logs: Path, event_loop: str = DEFAULT_EVENT_LOOP) -> Server:
    """The minimal aiohttp app of bench/framework_app.py, on the named event loop."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.framework_app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--event-loop", event_loop]
    return start(f"framework-{event_loop}", argv, port, ready_path="/monitor/health", logs=logs)


def node_snapshot(client: Any) -> dict[str, float]:
    """Command calls (all, EVALSHA/EVAL alone), CPU seconds and memory of one Redis, now.

    Calls count every command Redis executed, the ones run by scripts included
    (Redis counts `redis.call` in commandstats); INFO itself is left out.
    """
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    memory = client.info("memory")
    traffic = client.info("stats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    scripts = {"evalsha", "eval", "evalsha_ro", "fcall"}
    return {
        "time": time.monotonic(),
        "calls": float(sum(n for k, n in calls.items() if k != "info")),
        "script_calls": float(sum(n for k, n in calls.items() if k in scripts)),
        # Redis's own time in the scripts, the commands they call included.
        "script_usec": float(
            sum(int(v["usec"]) for k, v in stats.items() if k.removeprefix("cmdstat_") in scripts)
        ),
        "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        # Bytes Redis read from and wrote to its clients (the network to Redis).
        "net_in": float(traffic["total_net_input_bytes"]),
        "net_out": float(traffic["total_net_output_bytes"]),
        "used_memory": float(memory["used_memory"]),
        "used_memory_dataset": float(memory.get("used_memory_dataset", 0)),
        "keys": float(client.dbsize()),
    }


def summed(snapshots: Sequence[dict[str, float]]) -> dict[str, float]:
    """The snapshots of several Redis servers (a cluster's masters) as one: figures added."""
    total = {k: sum(s[k] for s in snapshots) for k in snapshots[0]}
    return total | {"time": max(s["time"] for s in snapshots)}


class Redis:
    """A redis-server of the harness's own: no persistence, on a free port."""

    def __init__(self, logs: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--protected-mode", "no",
        ]  # fmt: skip
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / "redis.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                pinned(LOAD_CPU, argv), stdout=out, stderr=subprocess.STDOUT
            )
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {self.log.read_text()}"
                    ) from exc
                time.sleep(0.05)

    @property
    def url(self) -> str:
        """redis:// URL for REDIS_URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        """Empty the database and reset nothing else."""
        self.client.flushall()

    def snapshot(self) -> dict[str, float]:
        """`node_snapshot` of this server."""
        return node_snapshot(self.client)

    def reset_stats(self) -> None:
        """Zero Redis's INFO commandstats (CONFIG RESETSTAT) before a measured run."""
        self.client.config_resetstat()

    def key_bytes(self) -> float:
        """Bytes the keyspace holds by MEMORY USAGE (every key, sampled exactly)."""
        return float(
            sum(self.client.memory_usage(k, samples=0) or 0 for k in self.client.scan_iter())
        )

    def settled_snapshot(self, timeout: float = 6.0) -> dict[str, float]:
        """A snapshot once client buffers stop shrinking.

        A large script call leaves its arguments in the client's query buffer, counted in
        used_memory until Redis trims idle buffers (within about a second); reading at
        once would measure the last request, not the window.
        """
        deadline = time.monotonic() + timeout
        last = -1.0
        while True:
            clients = float(self.client.info("memory")["mem_clients_normal"])
            if clients == last or time.monotonic() > deadline:
                break
            last = clients
            time.sleep(0.75)
        return self.snapshot() | {"mem_clients_normal": clients, "key_bytes": self.key_bytes()}

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Stop the server when the block ends."""
    try:
        yield server
    finally:
        server.stop()
