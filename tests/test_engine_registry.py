"""Monitor configs reloaded while the real app serves: new files, broken files, ConfigMap swaps.

The app runs over a real socket with a 50 ms reload poll; every change is written
atomically and then awaited by polling the API with a deadline.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient
from support import wait_until

from driftline.core.severity import Severity
from driftline.engine.registry import MonitorRegistry
from driftline.http.app import create_app
from driftline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "examples" / "baseline_data.json"
ORIGINAL_PAYLOAD = {
    "features": {"age": 35, "income": 50000, "tenure_months": 24, "product_category": "premium"}
}


def config(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": f"{name}-model",
        "baseline": str(BASELINE),
        "window_seconds": 600,
        "bucket_seconds": 60,
        "min_samples": 10,
        **fields,
    }


def write_atomically(path: Path, data: bytes) -> None:
    """Write next to `path` under a hidden name, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_config(path: Path, document: dict[str, Any]) -> None:
    write_atomically(path, msgspec.yaml.encode(document))


def reload_settings(monitors_dir: Path) -> Settings:
    return Settings(host="127.0.0.1", monitors_dir=str(monitors_dir), reload_interval=0.05)


async def get_json(client: TestClient, path: str) -> Any:
    response = await client.get(path)
    body = await response.json()
    assert response.status == 200, body
    return body


async def monitor_names(client: TestClient) -> set[str]:
    body = await get_json(client, "/v1/monitors")
    return {m["name"] for m in body["monitors"]}


async def warning_threshold(client: TestClient, name: str) -> float:
    body = await get_json(client, f"/v1/monitors/{name}")
    threshold: float = body["policy"]["warning_threshold"]
    return threshold


async def config_errors(client: TestClient) -> dict[str, str]:
    body = await get_json(client, "/monitor/health")
    errors: dict[str, str] = body["config_errors"]
    return errors


async def test_monitors_dir_hot_reload(aiohttp_client: Any, tmp_path: Path) -> None:
    monitors = tmp_path / "monitors"
    monitors.mkdir()
    write_config(monitors / "alpha.yaml", config("alpha"))
    client = await aiohttp_client(create_app(reload_settings(monitors)))
    assert await monitor_names(client) == {"alpha"}

    # A new file shows up as a new monitor.
    beta = monitors / "beta.yaml"
    write_config(beta, config("beta", warning_threshold=0.3, critical_threshold=0.6))

    async def both_loaded() -> bool:
        return await monitor_names(client) == {"alpha", "beta"}

    await wait_until(both_loaded, "beta.yaml was not picked up")
    assert await warning_threshold(client, "beta") == 0.3
    assert await config_errors(client) == {}

    # A bad field: beta keeps its last good version; health names the file and the field.
    write_config(beta, config("beta", warning_threshold="high", critical_threshold=0.6))
    errors: dict[str, str] = {}

    async def error_reported() -> bool:
        errors.update(await config_errors(client))
        return str(beta) in errors

    await wait_until(error_reported, lambda: f"no config error for {beta}: {errors}")
    assert "warning_threshold" in errors[str(beta)], errors
    assert await monitor_names(client) == {"alpha", "beta"}
    assert await warning_threshold(client, "beta") == 0.3
    response = await client.post("/monitor/predict", json=dict(ORIGINAL_PAYLOAD, monitor="beta"))
    assert response.status == 200, await response.text()

    # Invalid YAML: same story, with a message saying so.
    write_atomically(beta, b"name: beta\nbaseline: [unclosed\n")

    async def yaml_error_reported() -> bool:
        errors.clear()
        errors.update(await config_errors(client))
        return "yaml" in errors.get(str(beta), "").lower()

    await wait_until(yaml_error_reported, lambda: f"no YAML error for {beta}: {errors}")
    assert await monitor_names(client) == {"alpha", "beta"}
    assert await warning_threshold(client, "beta") == 0.3

    # Fixed again with a new threshold: loaded, and the error is gone.
    write_config(beta, config("beta", warning_threshold=0.25, critical_threshold=0.6))

    async def fixed() -> bool:
        return not await config_errors(client) and await warning_threshold(client, "beta") == 0.25

    await wait_until(fixed, "the fixed beta.yaml was not loaded")
    assert await monitor_names(client) == {"alpha", "beta"}


def configmap_version(root: Path, version: str, document: dict[str, Any]) -> None:
    """One kubelet payload directory (`..<timestamp>`) holding gamma.yaml."""
    directory = root / version
    directory.mkdir()
    (directory / "gamma.yaml").write_bytes(msgspec.yaml.encode(document))


async def test_configmap_symlink_swap_is_picked_up(aiohttp_client: Any, tmp_path: Path) -> None:
    # The layout kubelet gives a ConfigMap volume:
    #   gamma.yaml -> ..data/gamma.yaml,  ..data -> ..2026_01_01_v1
    root = tmp_path / "configmap"
    root.mkdir()
    configmap_version(
        root, "..2026_01_01_v1", config("gamma", warning_threshold=0.2, critical_threshold=0.5)
    )
    (root / "..data").symlink_to("..2026_01_01_v1")
    (root / "gamma.yaml").symlink_to("..data/gamma.yaml")

    client = await aiohttp_client(create_app(reload_settings(root)))
    assert await monitor_names(client) == {"gamma"}
    assert await warning_threshold(client, "gamma") == 0.2

    # kubelet's update: write the new payload dir, point a new link at it, rename the
    # link over ..data in one step, then delete the old payload. Same file size.
    configmap_version(
        root, "..2026_01_02_v2", config("gamma", warning_threshold=0.3, critical_threshold=0.6)
    )
    (root / "..data_tmp").symlink_to("..2026_01_02_v2")
    os.replace(root / "..data_tmp", root / "..data")
    shutil.rmtree(root / "..2026_01_01_v1")

    seen: list[float] = []

    async def swapped() -> bool:
        seen.append(await warning_threshold(client, "gamma"))
        return seen[-1] == 0.3

    await wait_until(swapped, lambda: f"warning_threshold still {seen[-1:]} after the swap")
    detail = await get_json(client, "/v1/monitors/gamma")
    assert detail["policy"]["critical_threshold"] == 0.6
    assert detail["source"] == str(root / "gamma.yaml")
    assert await monitor_names(client) == {"gamma"}
    assert await config_errors(client) == {}


async def test_baseline_data_path_serves_default_monitor(aiohttp_client: Any) -> None:
    settings = load_settings(
        environ={"BASELINE_DATA_PATH": str(BASELINE), "DRIFTLINE_HOST": "127.0.0.1"}
    )
    assert settings.baseline_data_path == str(BASELINE)
    assert settings.monitors_dir is None
    client = await aiohttp_client(create_app(settings))

    listing = await get_json(client, "/v1/monitors")
    assert [m["name"] for m in listing["monitors"]] == ["default"]
    assert listing["default_monitor"] == "default"
    health = await get_json(client, "/monitor/health")
    assert health["baseline_data_loaded"] is True
    assert health["default_monitor"] == "default"

    response = await client.post("/monitor/predict", json=ORIGINAL_PAYLOAD)
    body = await response.json()
    assert response.status == 200, body
    for key in ("drift_detected", "drift_score", "severity", "feature_scores", "timestamp"):
        assert key in body, f"{key} missing from {sorted(body)}"
    assert isinstance(body["drift_detected"], bool)
    assert isinstance(body["drift_score"], float)
    assert body["severity"] in {s.value for s in Severity}
    assert set(body["feature_scores"]) >= {"age", "income", "tenure_months", "product_category"}
    assert body["monitor"] == "default"
    assert body["timestamp"].endswith("Z")


async def test_adding_a_second_monitor_keeps_a_named_default_and_says_why_one_is_lost(
    aiohttp_client: Any, tmp_path: Path, caplog: Any
) -> None:
    write_config(tmp_path / "credit-risk.yaml", config("credit-risk"))
    client = await aiohttp_client(create_app(reload_settings(tmp_path)))
    assert (await client.post("/monitor/predict", json=ORIGINAL_PAYLOAD)).status == 200

    caplog.set_level("WARNING", logger="driftline.engine.registry")
    write_config(tmp_path / "fraud.yaml", config("fraud"))

    async def both_loaded() -> bool:
        return await monitor_names(client) == {"credit-risk", "fraud"}

    await wait_until(both_loaded, "the second monitor to load")
    refused = await client.post("/monitor/predict", json=ORIGINAL_PAYLOAD)
    problem = await refused.json()
    assert refused.status == 422
    assert "DRIFTLINE_DEFAULT_MONITOR" in problem["detail"]
    assert "credit-risk, fraud" in problem["detail"]
    assert any("no default monitor any more" in r.getMessage() for r in caplog.records)

    # Naming the default keeps the quick start's requests working with any number of monitors.
    named = Settings(
        host="127.0.0.1",
        monitors_dir=str(tmp_path),
        reload_interval=0.05,
        default_monitor="credit-risk",
    )
    client = await aiohttp_client(create_app(named))
    answer = await client.post("/monitor/predict", json=ORIGINAL_PAYLOAD)
    assert answer.status == 200
    assert (await answer.json())["monitor"] == "credit-risk"


def test_a_reload_rebuilds_only_the_monitors_whose_files_changed(tmp_path: Path) -> None:
    monitors_dir, baselines = tmp_path / "monitors", tmp_path / "baselines"
    monitors_dir.mkdir()
    baselines.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(BASELINE, baselines / f"{name}.json")
        write_config(
            monitors_dir / f"{name}.yaml", config(name, baseline=str(baselines / f"{name}.json"))
        )
    registry = MonitorRegistry(reload_settings(monitors_dir))
    registry.load()
    before = {m.name: m for m in registry}
    write_config(
        monitors_dir / "a.yaml",
        config("a", baseline=str(baselines / "a.json"), warning_threshold=0.15),
    )
    # A new file (a new inode, the same bytes): how a ConfigMap volume's swap looks.
    write_atomically(baselines / "b.json", (baselines / "b.json").read_bytes())
    registry.load()
    after = {m.name: m for m in registry}
    assert after["a"] is not before["a"]
    assert after["a"].policy.thresholds.warning == 0.15
    assert after["b"] is not before["b"]
    assert after["c"] is before["c"]  # untouched: not read again, the same Monitor
    registry.load()
    assert {m.name: m for m in registry} == after
