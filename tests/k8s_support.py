"""What the live Kubernetes suites share: kubectl, polling, and the real processes they run.

The operator (`driftline controller`) and the drift service (`driftline serve`, started
by support.driftline_serve) run as real processes on 127.0.0.1. Only the kubelet cannot
run here: `MountedObjects` does its one job for the service, copying the keys of the
operator's ConfigMaps and Secret into the directories the service reads, as a volume
mount would.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx2
import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import ConfigMap, Secret

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "manifests" / "crd" / "driftmonitors.yaml"
CRD_NAME = "driftmonitors.driftline.io"
DRIFTLINE = str(Path(sys.executable).with_name("driftline"))
TIMEOUT = 60.0  # seconds any one reconciliation may take to show
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KubeTarget:
    """The cluster the live suite runs against."""

    kubeconfig: Path
    # kube-controller-manager runs: namespaces can be deleted, garbage is collected.
    controllers: bool
    where: str

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the target; a failure shows its stderr."""
        done = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def install_crd(self) -> None:
        """Server-side apply the DriftMonitor CRD and wait until it is served."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")

    def environment(self) -> dict[str, str]:
        """The environment of a process that talks to the target."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
    """Poll until `probe` returns something, or fail saying what never came."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            found = probe()
        except (ApiError, KeyError, TypeError, httpx2.HTTPError) as exc:
            found, last = None, exc
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")
        time.sleep(0.1)


def condition(monitor: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """A DriftMonitor's condition of one type, if it has one."""
    entries: list[dict[str, Any]] = (monitor.get("status") or {}).get("conditions", [])
    return next((entry for entry in entries if entry["type"] == kind), None)


def free_port() -> int:
    """A port nothing listens on (yet) on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A `driftline` subcommand run as a real process, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again), appending to its log."""
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: it dies wherever it is (mid-request), as an OOM-killed pod does."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def check_alive(self) -> None:
        """Fail with the log's tail when the process has died."""
        if self._process is not None and self._process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self._process.returncode}:\n{self.tail()}")

    def tail(self, size: int = 4000) -> str:
        """The end of its log."""
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


class MountedObjects:
    """A kubelet's volume mounts for the service: ConfigMap and Secret keys as files.

    Each directory is a projected volume of one or more objects of one kind: their keys
    are its files (written atomically, by rename), a key two sources hold is the later
    source's file (as the kubelet builds one payload from all sources), and files whose
    key is gone are removed. Missing sources are empty, as optional ones are.
    """

    def __init__(
        self, client: Client, namespace: str, mounts: Mapping[Path, Sequence[str]]
    ) -> None:
        # mounts: directory -> its sources in order, "ConfigMap/<name>" or "Secret/<name>"
        self.client = client
        self.namespace = namespace
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, args=(sources, directory), daemon=True)
            for directory, sources in mounts.items()
        ]

    @staticmethod
    def _write(directory: Path, values: Mapping[str, bytes]) -> None:
        for key, value in values.items():
            target = directory / key
            if not target.exists() or target.read_bytes() != value:
                staged = directory / f".{key}.tmp"
                staged.write_bytes(value)
                staged.rename(target)
        for stale in directory.iterdir():
            if not stale.name.startswith(".") and stale.name not in values:
                stale.unlink()

    def _follow(self, sources: Sequence[str], directory: Path) -> None:
        kinds = {ref.split("/", 1)[0] for ref in sources}
        assert len(kinds) == 1, f"one kind per mounted directory, got {sorted(kinds)}"
        kind = Secret if kinds == {"Secret"} else ConfigMap
        names = [ref.split("/", 1)[1] for ref in sources]
        # One object: watched by name. Several (a service's monitors shards): the
        # namespace's objects of the kind, the others ignored.
        fields = {"metadata.name": names[0]} if len(names) == 1 else None
        objects: dict[str, dict[str, bytes]] = {}
        version: str | None = None
        while not self._stop.is_set():
            try:
                for change, obj in self.client.watch(
                    kind,
                    namespace=self.namespace,
                    fields=fields,
                    server_timeout=1,  # come back to look at the stop flag
                    resource_version=version,
                ):
                    version = obj.metadata.resourceVersion if obj.metadata else None
                    name = obj.metadata.name if obj.metadata else None
                    if name not in names:
                        continue
                    data: Mapping[str, str] = {} if change == "DELETED" else (obj.data or {})
                    if kind is Secret:
                        objects[name] = {k: base64.b64decode(v) for k, v in data.items()}
                    else:
                        objects[name] = {k: v.encode() for k, v in data.items()}
                    projected: dict[str, bytes] = {}
                    for source in names:
                        projected.update(objects.get(source, {}))
                    self._write(directory, projected)
            except (ApiError, httpx2.HTTPError):
                version = None  # expired or cut: watch again from the current state
                self._stop.wait(0.2)

    def __enter__(self) -> MountedObjects:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


@dataclass
class Received:
    """What a webhook receiver got."""

    bodies: list[dict[str, Any]] = field(default_factory=list)


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1, serving from a thread for a `with` block."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def release(self) -> None:
        """Let go of requests still being answered (before the server stops)."""


class HeldDriftService(LoopbackServer):
    """A drift service that holds every drift report request until exit.

    DELETE of a window answers 204 at once. `held` is set when a drift request arrived.
    """

    def __init__(self) -> None:
        held = self.held = threading.Event()
        release = self._release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                held.set()
                release.wait()
                self.send_response(503)
                self.end_headers()

            def do_DELETE(self) -> None:
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a held request's client has gone: nothing to answer

        super().__init__(Server(("127.0.0.1", 0), Handler))
        # By name: the CRD refuses a serviceUrl at an IP address.
        self.url = f"http://localhost:{self.port}"

    def release(self) -> None:
        """Answer the held requests."""
        self._release.set()


class WebhookReceiver(LoopbackServer):
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received = self.received = Received()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.port}/hook"
