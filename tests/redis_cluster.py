"""A real three-master Redis Cluster on 127.0.0.1, for the tests that claim cluster support."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

SLOTS = 16384


BUS_OFFSET = 10000  # a cluster node also listens on port + 10000 (the cluster bus)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    """A free port whose cluster-bus port (+10000) is valid and free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 65535 - BUS_OFFSET)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[str]:
    """Start `masters` cluster-enabled redis-servers, assign slots, join them; yield a URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: `make redis-server` installs it")
    ports = [_free_port() for _ in range(masters)]
    processes = []
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        executable,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--dir",
                        str(node_dir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=(node_dir / "redis.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        clients = [redis.Redis(host="127.0.0.1", port=p) for p in ports]
        deadline = time.monotonic() + 10
        for client in clients:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        log = (
                            directory
                            / str(client.connection_pool.connection_kwargs["port"])
                            / "redis.log"
                        ).read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"cluster node did not start:\n{log}") from None
                    time.sleep(0.02)
        share = SLOTS // masters
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        deadline = time.monotonic() + 20
        while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not converge to state ok")
            time.sleep(0.05)
        for client in clients:
            client.close()
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
