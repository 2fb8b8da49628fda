"""A real Redis Cluster on 127.0.0.1: for the tests that claim cluster support, and the bench."""

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


class Cluster:
    """The running nodes: their ports, and a way to stop and restart one (a master down)."""

    def __init__(self, directory: Path, ports: list[int]) -> None:
        self.directory = directory
        self.ports = ports
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A node's URL: a cluster client finds the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, port: int) -> None:
        """Start (or restart) one node; it finds its slots again in its nodes.conf."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed: `make redis-server` installs it")
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
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
            stdout=(node_dir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def stop(self, port: int) -> None:
        """Stop one node and wait for it to exit."""
        process = self.processes.pop(port)
        process.terminate()
        process.wait(timeout=10)

    def node_of(self, key: str) -> int:
        """The port of the master that owns `key`'s slot."""
        client = redis.Redis(host="127.0.0.1", port=self.ports[0])
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, (_host, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(port)
        finally:
            client.close()
        raise LookupError(f"no master owns the slot of {key!r}")

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every node answers and says cluster_state:ok."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                while True:
                    try:
                        if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                            break
                    except redis.ConnectionError:
                        pass
                    if time.monotonic() > deadline:
                        log = (self.directory / str(port) / "redis.log").read_text(
                            errors="replace"
                        )[-2000:]
                        raise RuntimeError(f"cluster node {port} not ok:\n{log}")
                    time.sleep(0.05)  # polling interval, not a synchronisation
            finally:
                client.close()

    def stop_all(self) -> None:
        """Stop every node and wait for each to exit."""
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[Cluster]:
    """Start `masters` cluster-enabled redis-servers, assign slots, join them."""
    cluster = Cluster(directory, [_free_port() for _ in range(masters)])
    try:
        for port in cluster.ports:
            cluster.start(port)
        clients = [redis.Redis(host="127.0.0.1", port=p) for p in cluster.ports]
        deadline = time.monotonic() + 10
        for port, client in zip(cluster.ports, clients, strict=True):
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        log = (directory / str(port) / "redis.log").read_text(errors="replace")
                        raise RuntimeError(f"cluster node did not start:\n{log[-2000:]}") from None
                    time.sleep(0.02)
        share = SLOTS // masters
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for port in cluster.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        for client in clients:
            client.close()
        cluster.wait_ok()
        yield cluster
    finally:
        cluster.stop_all()
