"""A real three-master Redis Cluster on 127.0.0.1, for the tests that claim cluster support."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

SLOTS = 16384


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
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
                        raise RuntimeError("cluster node did not start") from None
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
