"""The metrics a client cannot forge or blow up, read back by real Prometheus parsers.

The exposition is checked by `promtool check metrics` (Prometheus's own parser and
linter) and read back with prometheus_client's text parser, after requests carrying
hostile model versions; version labels rotate per monitor; a monitor's series start at
0 when it loads and are gone once it is unloaded.
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from support import wait_until
from test_core_report import events, monitor, vector_of

from driftline.core.report import assess
from driftline.core.severity import Severity
from driftline.core.window import WindowTotals
from driftline.http.app import create_app
from driftline.http.keys import SETTINGS
from driftline.settings import Settings
from driftline.telemetry import EVENT_REASONS, MAX_MODEL_VERSIONS, Telemetry, VersionSlots

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROMTOOL = shutil.which("promtool")
HOSTILE_VERSIONS = (
    'v1"} 1 driftline_monitor_severity{forged="',
    'x",forged="1',
    "back\\slash\\",
    "}{",
    "ünïcødé ✓ 版本",
    "v" * 128,
)


def _monitor_config(directory: Path, name: str, **extra: Any) -> Path:
    lines = [
        f"name: {name}",
        f"baseline: {EXAMPLES / 'baseline_data.json'}",
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    path = directory / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    monitors = tmp_path / "monitors"
    monitors.mkdir()
    _monitor_config(monitors, "credit-risk", model_versions='["v1.2.0", "v2.0.0"]')
    _monitor_config(monitors, "sensors")
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(monitors),
        default_monitor="credit-risk",
        flush_interval=0.001,
        reload_interval=0.05,
    )
    return await aiohttp_client(create_app(settings))


async def _exposition(client: TestClient) -> str:
    response = await client.get("/monitor/metrics")
    assert response.status == 200
    return await response.text()


def _samples(text: str, metric: str) -> list[dict[str, str]]:
    """Label sets of a metric's samples, as Prometheus's text parser reads them."""
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    ]


def _promtool_check(text: str) -> None:
    assert PROMTOOL, "promtool is not installed: `make promtool` (Debian package prometheus)"
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_hostile_model_versions_neither_break_nor_forge_the_exposition(
    client: TestClient,
) -> None:
    for version in HOSTILE_VERSIONS:
        response = await client.post(
            "/monitor/predict", json={"features": {"age": 30}, "model_version": version}
        )
        assert response.status == 200, await response.text()
    text = await _exposition(client)
    _promtool_check(text)
    counted = {
        s["model_version"]
        for s in _samples(text, "driftline_events_total")
        if s["monitor"] == "credit-risk"
    }
    assert set(HOSTILE_VERSIONS) <= counted
    severity = _samples(text, "driftline_monitor_severity")
    assert all(set(labels) == {"monitor"} for labels in severity), severity
    assert not any("forged" in labels for labels in _samples(text, "driftline_events_total"))


async def test_version_labels_rotate_per_monitor_and_declared_ones_stay(
    client: TestClient,
) -> None:
    async def send(monitor: str, version: str) -> None:
        response = await client.post(
            "/monitor/predict",
            json={"features": {"age": 30}, "model_version": version, "monitor": monitor},
        )
        assert response.status == 200

    await send("credit-risk", "v1.2.0")
    for i in range(MAX_MODEL_VERSIONS + 15):  # junk versions
        await send("credit-risk", f"junk-{i}")
    await send("sensors", "s1")
    await send("credit-risk", "v3.0.0")  # a real release after the junk still gets a label
    text = await _exposition(client)
    versions = {
        s["model_version"]: s
        for s in _samples(text, "driftline_events_total")
        if s["monitor"] == "credit-risk"
    }
    assert {"v1.2.0", "v2.0.0", "v3.0.0"} <= versions.keys()  # declared ones, even unseen
    assert len(versions) == MAX_MODEL_VERSIONS + 2  # declared + the rotating slots
    assert "junk-0" not in versions  # the least recently seen went first
    sensors = {
        s["model_version"]
        for s in _samples(text, "driftline_events_total")
        if s["monitor"] == "sensors"
    }
    assert sensors == {"s1"}  # the other monitor's slots are its own


def test_version_slots_evict_the_least_recently_seen() -> None:
    slots = VersionSlots(["prod"], size=2)
    assert [slots.admit(v) for v in ("a", "b", "a", "prod", "c")] == [None, None, None, None, "b"]
    assert slots.admit("d") == "a"


async def test_counters_start_at_zero_and_an_unloaded_monitor_leaves_no_series(
    client: TestClient,
) -> None:
    text = await _exposition(client)
    for name in ("credit-risk", "sensors"):
        for metric in ("driftline_late_events_total", "driftline_lost_events_total"):
            assert {"monitor": name} in _samples(text, metric), (metric, name)
        reasons = {
            s["reason"]
            for s in _samples(text, "driftline_invalid_events_total")
            if s["monitor"] == name
        }
        assert set(EVENT_REASONS) <= reasons
        severities = {
            s["severity"]
            for s in _samples(text, "driftline_alert_transitions_total")
            if s["monitor"] == name
        }
        assert severities == {str(severity) for severity in Severity}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("monitor") == "sensors":
                assert sample.value == 0, sample
    # Drift gauges of both, then `sensors` is removed from the monitors directory.
    await client.get("/v1/monitors/sensors/drift")
    assert {"monitor": "sensors"} in _samples(
        await _exposition(client), "driftline_monitor_severity"
    )
    (Path(client.app[SETTINGS].monitors_dir or "") / "sensors.yaml").unlink()

    async def gone() -> bool:
        text = await _exposition(client)
        return 'monitor="sensors"' not in text and 'monitor="credit-risk"' in text

    await wait_until(gone, "metrics of the removed monitor `sensors` are still exported")


def test_a_series_costs_bytes_not_kilobytes() -> None:
    # aioprometheus keys each series by orjson's serialised label set, which keeps a
    # 4 KiB buffer per key: 300 series of a 50-feature monitor took ~2 MiB of a replica.
    telemetry = Telemetry()
    features = tuple(f"x{i:02d}" for i in range(300))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        telemetry.feature_score.set("fleet-0001", features, [0.5] * len(features))
        for i in range(300):
            telemetry.severity.set({"monitor": f"fleet-{i:04d}"}, 1.0)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown / 600 < 1024, f"{grown / 600:.0f} bytes per series"
    assert telemetry.feature_score.gauge.get({"monitor": "fleet-0001", "feature": "x07"}) == 0.5
    assert telemetry.severity.get({"monitor": "fleet-0299"}) == 1.0


def test_an_assessment_of_unchanged_counts_is_not_published_again() -> None:
    # The evaluation loop re-assesses idle monitors every round: equal counts share their
    # evaluation, and its gauges already show it.
    telemetry = Telemetry()
    m = monitor()
    vector = vector_of(m, events(m, 400))
    telemetry.observe(assess(m, WindowTotals(vector=vector, start=0.0, now=60.0)))
    series = {"monitor": "m"}
    assert telemetry.window_events.get(series) == 400
    telemetry.window_events.set(series, -1)  # a marker: a publish would overwrite it
    telemetry.observe(assess(m, WindowTotals(vector=vector.copy(), start=1.0, now=61.0)))
    assert telemetry.window_events.get(series) == -1
    moved = vector_of(m, events(m, 401))
    telemetry.observe(assess(m, WindowTotals(vector=moved, start=2.0, now=62.0)))
    assert telemetry.window_events.get(series) == 401
