"""The operator at fleet scale: how fast `driftline controller` renders N DriftMonitors.

Starts a throwaway control plane (bench/kubecluster.py, from the envtest binaries of
KUBEBUILDER_ASSETS), installs the CRD, creates one baseline ConfigMap holding a saved
50-feature profile of the fleet's shape (bench/fleet.py, built by driftline's own profile
builder) and `monitors` DriftMonitors that read it, then runs the real operator as a
process and times it until every monitor is ConfigRendered=True.

The objects exist before the operator starts and the clock starts with it, so the figure
is the operator's alone: resuming a backlog, as after an install or a restart (creating
the objects is reported beside it). No drift service runs: rendering needs none. Each
monitor's serviceUrl is a closed port on the loopback, so the status timers' calls fail
at once (Ready=False ServiceUnreachable) and cost the operator what a fast service would.
Everything started here is stopped here, by its own handle.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import psutil

from . import fleet, procs
from .kubecluster import control_plane

NAMESPACE = "fleet"
SERVICE = "driftline"
CRD = procs.REPO / "manifests" / "crd" / "driftmonitors.yaml"
ENVTEST = Path.home() / ".cache" / "driftline-envtest" / "v1.28.6" / "bin"
# Creating objects: a few requests in flight (the API server and etcd share the machine).
CREATE_THREADS = 8


def _say(message: str) -> None:
    print(f"[operator-fleet] {message}", flush=True)


def _assets() -> Path:
    assets = Path(os.environ.get("KUBEBUILDER_ASSETS") or ENVTEST)
    if not (assets / "kube-apiserver").exists():
        raise RuntimeError(
            f"no envtest binaries at {assets}: set KUBEBUILDER_ASSETS to a folder with etcd "
            "and kube-apiserver (`setup-envtest use 1.28.x -p path`)"
        )
    return assets


def _install_crd(client: Any) -> None:
    from lightkube import codecs
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    (crd,) = codecs.load_all_yaml(CRD.read_text())
    client.create(crd)
    name = crd.metadata.name if crd.metadata else "driftmonitors.driftline.io"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = client.get(CustomResourceDefinition, name)
        conditions = found.status.conditions if found.status else None
        if any(c.type == "Established" and c.status == "True" for c in conditions or []):
            return
        time.sleep(0.2)
    raise RuntimeError(f"CRD {name} not established after 60 s")


def _monitor(name: str, service_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "driftline.io/v1alpha1",
        "kind": "DriftMonitor",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": f"{name}-model",
            "service": SERVICE,
            "serviceUrl": service_url,
            "baseline": {"configMapKeyRef": {"name": "fleet-baseline", "key": "profile.json"}},
            "traffic": {"expectedEventsPerSecond": 20, "peakEventsPerSecond": 60},
        },
    }


def _control_plane_cpu(operator: int | None = None) -> dict[str, float]:
    """CPU seconds so far of the control plane's processes (this process's other children)."""
    used: dict[str, float] = {}
    for child in psutil.Process().children():
        if child.pid == operator:
            continue
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            used[child.name()] = used.get(child.name(), 0.0) + times.user + times.system
    return used


def _peak_rss(process: psutil.Process, sampled: int) -> int:
    """The process's peak resident memory (VmHWM), or the largest sample without /proc."""
    with contextlib.suppress(OSError), open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return sampled


@contextlib.contextmanager
def _operator(kubeconfig: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`driftline controller` on the fleet's namespace; stopped (SIGTERM) when done."""
    script = Path(sys.executable).with_name("driftline")
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        # The closed port the monitors name is on the loopback: let the timers call it.
        "DRIFTLINE_CONTROLLER_SERVICE_HOSTS": "localhost",
        "DRIFTLINE_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "controller", "--namespace", NAMESPACE],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _rendered(monitor: Any) -> tuple[bool, str, str]:
    for condition in (monitor.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ConfigRendered":
            reason, message = condition.get("reason", ""), condition.get("message", "")
            return condition.get("status") == "True", reason, message
    return False, "", ""


class _Watch:
    """The namespace's DriftMonitors as they change, from a thread, into a queue.

    A watch, not a poll: listing 1,000 monitors a second would load the API server the
    operator is measured on. Its own client, closed to end it.
    """

    def __init__(self, kubeconfig: Path, resource: Any) -> None:
        import httpx2
        from lightkube import Client, KubeConfig

        self.changes: queue.Queue[Any] = queue.Queue()
        self.listed = threading.Event()  # the first list is in: the watch follows
        self._client = Client(config=KubeConfig.from_file(kubeconfig), timeout=httpx2.Timeout(60.0))
        self._resource = resource
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:  # (re)start from a list: every monitor as it is
                    listing = self._client.list(self._resource, namespace=NAMESPACE)
                    for monitor in listing:
                        self.changes.put(monitor)
                    version = listing.resourceVersion
                    self.listed.set()
                for _, monitor in self._client.watch(
                    self._resource, namespace=NAMESPACE, resource_version=version
                ):
                    version = monitor["metadata"]["resourceVersion"]
                    self.changes.put(monitor)
            except Exception:  # expired, cut, or closed by close(): list again or stop
                version = None
                self._stop.wait(0.5)

    def close(self) -> None:
        """Stop following (closing the client ends the watch's read)."""
        self._stop.set()
        self._client.close()
        self._thread.join(10)


def _wait_rendered(
    watch: _Watch,
    names: set[str],
    operator: subprocess.Popen[bytes],
    began: float,
    timeout: float,
) -> tuple[dict[str, float], dict[str, tuple[str, str]]]:
    """Seconds from `began` at which each monitor showed ConfigRendered=True.

    Returns those and, for the rest, their last (reason, message).
    """
    done: dict[str, float] = {}
    last: dict[str, tuple[str, str]] = {}
    reported = 0
    while len(done) < len(names) and time.monotonic() - began < timeout:
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}")
        try:
            monitor = watch.changes.get(timeout=1.0)
        except queue.Empty:
            continue
        name = monitor["metadata"]["name"]
        ok, reason, message = _rendered(monitor)
        if not ok:
            last[name] = (reason, message)
        elif name in names and name not in done:
            done[name] = time.monotonic() - began
            if len(done) >= reported + max(len(names) // 10, 1) or len(done) == len(names):
                reported = len(done)
                _say(f"{len(done)}/{len(names)} rendered at {done[name]:.1f} s")
    return done, {n: last.get(n, ("", "")) for n in names - done.keys()}


def measure(
    monitors: int = 1000,
    work: Path | None = None,
    logs: Path | None = None,
    *,
    timeout: float = 1200.0,
) -> dict[str, Any]:
    """Seconds, monitors/s, CPU and peak memory of the operator rendering `monitors` monitors.

    `work` holds the throwaway control plane (removed after), `logs` the operator's log.
    Keys: render_seconds (operator start until every monitor is ConfigRendered=True),
    monitors_per_second, first_rendered_seconds, operator_cpu_seconds, operator_peak_rss
    (bytes), shards_used, largest_shard_bytes, keys_in_two_shards, not_rendered (name,
    reason, message of each), and for context monitors, shards_setting, profile_bytes,
    config_bytes, create_seconds, control_plane_cpu_seconds (per process, same span).
    """
    import httpx2
    from lightkube import Client, KubeConfig
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.core_v1 import ConfigMap, Namespace

    from driftline.core.profile import build_profile, encode_profile
    from driftline.operator.placement import parse_shard_name
    from driftline.operator.settings import ControllerSettings

    assets = _assets()
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="operator-fleet-", dir=work))
    logs = logs or scratch
    logs.mkdir(parents=True, exist_ok=True)
    resource = create_namespaced_resource(
        "driftline.io", "v1alpha1", "DriftMonitor", "driftmonitors"
    )
    try:
        _say(f"control plane from {assets}")
        with control_plane(assets, scratch / "k8s") as plane:
            client = Client(
                config=KubeConfig.from_file(plane.kubeconfig),
                field_manager="driftline-bench",
                timeout=httpx2.Timeout(60.0),
            )
            _install_crd(client)
            client.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": NAMESPACE}})))
            profile = encode_profile(build_profile(fleet.frame(20_000, seed=3)))
            baseline = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "fleet-baseline", "namespace": NAMESPACE},
                "data": {"profile.json": profile.decode()},
            }
            client.create(cast(ConfigMap, ConfigMap.from_dict(baseline)))
            service_url = f"http://localhost:{procs.free_port()}"
            names = [f"fleet-{i:04d}" for i in range(monitors)]
            _say(f"creating {monitors} DriftMonitors ({CREATE_THREADS} at a time)")
            began = time.monotonic()
            with ThreadPoolExecutor(CREATE_THREADS) as pool:
                list(
                    pool.map(
                        lambda n: client.create(resource.from_dict(_monitor(n, service_url))),
                        names,
                    )
                )
            create_seconds = time.monotonic() - began
            _say(f"created in {create_seconds:.1f} s; starting the operator")

            # Following the monitors from before the clock starts: its list is not timed.
            watch = _Watch(plane.kubeconfig, resource)
            log = logs / "operator-fleet.log"
            with contextlib.ExitStack() as stack:
                stack.callback(watch.close)
                watch.listed.wait(60)
                plane_cpu = _control_plane_cpu()
                operator = stack.enter_context(_operator(plane.kubeconfig, log))
                began = time.monotonic()
                process = psutil.Process(operator.pid)
                sampled = [0]
                stop = threading.Event()

                def sample() -> None:
                    while not stop.wait(0.5):
                        with contextlib.suppress(psutil.Error):
                            sampled[0] = max(sampled[0], process.memory_info().rss)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                try:
                    done, missing = _wait_rendered(watch, set(names), operator, began, timeout)
                    seconds = max(done.values(), default=time.monotonic() - began)
                    times = process.cpu_times()
                    cpu = float(times.user + times.system)
                    peak = _peak_rss(process, sampled[0])
                    plane_cpu = {
                        name: used - plane_cpu.get(name, 0.0)
                        for name, used in _control_plane_cpu(operator.pid).items()
                    }
                finally:
                    stop.set()
                    sampler.join(5)

            sizes: dict[str, int] = {}
            holders: dict[str, int] = {}
            for config_map in client.list(ConfigMap, namespace=NAMESPACE):
                name = config_map.metadata.name if config_map.metadata else None
                parsed = parse_shard_name(name or "")
                if name is None or parsed is None or parsed[0] != SERVICE:
                    continue
                data = config_map.data or {}
                if data:
                    sizes[name] = sum(len(v.encode()) for v in data.values())
                for key in data:
                    holders[key] = holders.get(key, 0) + 1
            client.close()
    finally:
        shutil.rmtree(scratch / "k8s", ignore_errors=True)  # etcd's data: hundreds of MB
    result: dict[str, Any] = {
        "monitors": monitors,
        "shards_setting": ControllerSettings().monitor_shards,
        "profile_bytes": len(profile),
        "config_bytes": (sum(sizes.values()) // len(holders)) if holders else 0,
        "create_seconds": round(create_seconds, 2),
        "render_seconds": round(seconds, 2),
        "monitors_per_second": round(len(done) / seconds, 1) if seconds else 0.0,
        "first_rendered_seconds": round(min(done.values(), default=0.0), 2),
        "operator_cpu_seconds": round(cpu, 2),
        "operator_peak_rss": peak,
        # The API server's and etcd's CPU over the same span (they share the machine).
        "control_plane_cpu_seconds": {k: round(v, 2) for k, v in sorted(plane_cpu.items())},
        "shards_used": len(sizes),
        "largest_shard_bytes": max(sizes.values(), default=0),
        "keys_in_two_shards": sum(1 for count in holders.values() if count > 1),
        "not_rendered": [
            {"name": name, "reason": reason, "message": message}
            for name, (reason, message) in sorted(missing.items())
        ],
    }
    _say(f"operator log: {log}")
    _say(
        f"{len(done)}/{monitors} rendered in {seconds:.1f} s ({result['monitors_per_second']}"
        f" monitors/s); operator {cpu:.1f} CPU s, peak RSS {peak / 2**20:.0f} MiB; "
        f"{len(sizes)} shards, largest {result['largest_shard_bytes']} bytes"
    )
    return result


if __name__ == "__main__":  # python -m bench.operator_fleet [monitors]
    import json

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(measure(count), indent=2))
