"""Rolling references (previous window, period) on both stores, over the real app.

Events are placed in the reference window and the current one by their timestamps; the
drift report's numbers are checked against scipy and numpy on the two windows' bin
counts, binned here from the events with the profile's cuts.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec.yaml
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats
from support import make_monitor

from driftline.core.monitor import MonitorConfigError
from driftline.core.policy import MAX_KEPT_BUCKETS
from driftline.core.profile import NumericProfile, load_baseline
from driftline.core.timestamps import isoformat
from driftline.http.app import create_app
from driftline.settings import Settings
from driftline.stores.redis import window_key

EVENTS = 400
WINDOW = 600
BUCKET = 60
PERIOD = 1200
COLORS = ["red", "green", "blue"]


def _monitor(name: str, reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "baseline": "baseline.csv",
        "window_seconds": WINDOW,
        "bucket_seconds": BUCKET,
        "reference": reference,
    }


@pytest.fixture
def monitors_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    colors = rng.choice(COLORS, 5000, p=[0.5, 0.3, 0.2])
    rows = "\n".join(
        f"{v:.6f},{c}" for v, c in zip(rng.normal(0.0, 1.0, 5000), colors, strict=True)
    )
    (tmp_path / "baseline.csv").write_text("x,color\n" + rows + "\n")
    configs = {
        "prev-shift": {"kind": "previous_window"},
        "prev-steady": {"kind": "previous_window"},
        "prev-new": {"kind": "previous_window"},
        "daily-shift": {"kind": "period", "period_seconds": PERIOD},
    }
    for name, reference in configs.items():
        (tmp_path / f"{name}.yaml").write_bytes(msgspec.yaml.encode(_monitor(name, reference)))
    for name in ("by-events", "by-events-quiet"):
        config = dict(_monitor(name, {"kind": "baseline"}), window_events=200)
        (tmp_path / f"{name}.yaml").write_bytes(msgspec.yaml.encode(config))
    return tmp_path


@pytest.fixture(params=["memory", "redis"])
async def app(
    request: pytest.FixtureRequest, aiohttp_client: Any, monitors_dir: Path
) -> TestClient:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = Settings(
        host="127.0.0.1", monitors_dir=str(monitors_dir), redis_url=url, flush_interval=0.001
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


async def _post(
    client: TestClient, name: str, values: np.ndarray, at: float, colors: list[str] | None = None
) -> None:
    events: list[dict[str, Any]] = [
        {"features": {"x": float(v)}, "timestamp": isoformat(at)} for v in values
    ]
    for event, color in zip(events, colors or [], strict=False):
        event["features"]["color"] = color
    answer = await client.post(f"/v1/monitors/{name}/events", json=events)
    body = await answer.json()
    assert answer.status == 200, body
    assert (body["accepted"], body["rejected"]) == (len(values), 0), body


def _binned(profile: NumericProfile, values: np.ndarray) -> np.ndarray:
    # Bin i holds cuts[i-1] <= x < cuts[i] (profile.NumericProfile).
    index = np.searchsorted(np.asarray(profile.cuts), values, side="right")
    return np.bincount(index, minlength=profile.bins).astype(np.float64)


def _expected(reference: np.ndarray, window: np.ndarray) -> dict[str, float]:
    """PSI (proportions floored at 1e-4) and Pearson's X² of the 2 x k table, from scratch."""
    e = np.maximum(reference / reference.sum(), 1e-4)
    a = np.maximum(window / window.sum(), 1e-4)
    used = (reference + window) > 0
    table = np.vstack([reference[used], window[used]])
    chi2 = stats.chi2_contingency(table, correction=False)
    return {"psi": float(((a - e) * np.log(a / e)).sum()), "statistic": chi2.statistic}


async def _report(client: TestClient, name: str) -> dict[str, Any]:
    answer = await client.get(f"/v1/monitors/{name}/drift")
    assert answer.status == 200, await answer.text()
    report: dict[str, Any] = await answer.json()
    return report


async def test_rolling_references_flag_a_change_and_not_a_steady_stream(
    app: TestClient, monitors_dir: Path
) -> None:
    profile = load_baseline(monitors_dir / "baseline.csv").features["x"]
    assert isinstance(profile, NumericProfile)
    rng = np.random.default_rng(2)
    now = time.time()
    previous, current = now - WINDOW - 300, now - 30  # mid previous window; current
    streams = {
        "prev-shift": (rng.normal(0, 1, EVENTS), rng.normal(0.8, 1, EVENTS), previous),
        "prev-steady": (rng.normal(0, 1, EVENTS), rng.normal(0, 1, EVENTS), previous),
        # A day earlier is PERIOD here; the previous window stays empty.
        "daily-shift": (rng.normal(0, 1, EVENTS), rng.normal(-0.8, 1, EVENTS), now - PERIOD - 300),
    }
    # The categorical feature too: a steady mix, or one whose green and blue swap.
    steady, swapped = [0.5, 0.3, 0.2], [0.5, 0.1, 0.4]
    colors = {
        name: (
            list(rng.choice(COLORS, EVENTS, p=steady)),
            list(rng.choice(COLORS, EVENTS, p=steady if name == "prev-steady" else swapped)),
        )
        for name in streams
    }
    for name, (before, after, at) in streams.items():
        await _post(app, name, before, at, colors[name][0])
        await _post(app, name, after, current, colors[name][1])
    for name, (before, after, _) in streams.items():
        report = await _report(app, name)
        kind = "period" if name == "daily-shift" else "previous_window"
        assert report["window"]["reference"] == {
            "kind": kind,
            "fallback": False,
            "events": EVENTS,
        }
        assert report["window"]["events"] == EVENTS
        feature = report["features"]["x"]
        reference, window = _binned(profile, before), _binned(profile, after)
        assert feature["baseline_count"] == EVENTS and feature["window_count"] == EVENTS
        np.testing.assert_allclose(feature["baseline_proportions"], reference / EVENTS, atol=1e-12)
        np.testing.assert_allclose(feature["window_proportions"], window / EVENTS, atol=1e-12)
        expected = _expected(reference, window)
        assert feature["psi"] == pytest.approx(expected["psi"], rel=1e-9)
        assert feature["statistic"] == pytest.approx(expected["statistic"], rel=1e-9)
        # The missing rate is compared with the reference's (none missing in either).
        assert feature["baseline_missing_rate"] == 0.0
        # Three large categories: no pooling, Pearson's X² of the 3-column table.
        color = report["features"]["color"]
        table = np.array([[c.count(k) for k in COLORS] for c in colors[name]], dtype=float)
        assert color["statistic"] == pytest.approx(
            stats.chi2_contingency(table, correction=False).statistic, rel=1e-9
        )
        assert color["baseline_count"] == EVENTS
        flagged = color["severity"] != "none"
        assert flagged is (name != "prev-steady"), color
        if name == "prev-steady":
            assert feature["severity"] == "none" and report["severity"] == "none", feature
            assert feature["p_value"] > 0.05
        else:
            assert feature["p_value"] < 1e-10, feature
            assert feature["severity"] == "critical", feature
            assert report["drift_detected"] is True


async def test_a_reference_below_min_samples_falls_back_to_the_baseline(
    app: TestClient, monitors_dir: Path
) -> None:
    profile = load_baseline(monitors_dir / "baseline.csv").features["x"]
    assert isinstance(profile, NumericProfile)
    rng = np.random.default_rng(4)
    now = time.time()
    await _post(app, "prev-new", rng.normal(0, 1, 50), now - WINDOW - 300)  # < min_samples
    shifted = rng.normal(0.8, 1, EVENTS)
    await _post(app, "prev-new", shifted, now - 30)
    report = await _report(app, "prev-new")
    assert report["window"]["reference"] == {
        "kind": "previous_window",
        "fallback": True,
        "events": 50,
    }
    feature = report["features"]["x"]
    baseline = np.asarray(profile.counts, dtype=np.float64)
    assert feature["baseline_count"] == profile.n
    expected = _expected(baseline, _binned(profile, shifted))
    assert feature["statistic"] == pytest.approx(expected["statistic"], rel=1e-9)
    assert feature["severity"] == "critical"


def test_reference_config_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "baseline.csv").write_text("x\n" + "\n".join(str(i) for i in range(200)) + "\n")

    def error(reference: dict[str, Any], **extra: Any) -> str:
        config = dict(_monitor("m", reference), **extra)
        with pytest.raises(MonitorConfigError) as caught:
            make_monitor(config, base_dir=tmp_path)
        return str(caught.value)

    assert error({"kind": "period"}) == (
        "test.yaml: reference.period_seconds: required with kind period "
        "(e.g. 86400 for a day, 604800 for a week)"
    )
    assert "must be a whole number of buckets (60 s) and at least window_seconds (600), got 90" in (
        error({"kind": "period", "period_seconds": 90})
    )
    assert "at least window_seconds (600), got 540" in error(
        {"kind": "period", "period_seconds": 540}
    )
    assert error({"kind": "previous_window", "period_seconds": 600}) == (
        "test.yaml: reference.period_seconds: only kind period takes one; kind is previous_window"
    )
    too_long = error({"kind": "period", "period_seconds": 14 * 86400})
    assert too_long == (
        f"test.yaml: reference.period_seconds: the window and its reference keep 20170 "
        f"buckets of 60 s; at most {MAX_KEPT_BUCKETS} are allowed (use longer buckets or "
        "a shorter span)"
    )
    assert error({"kind": "weekly"}).startswith("test.yaml: reference.kind: invalid enum value")
    assert error({"kind": "weekly"}).endswith("; allowed: baseline, previous_window, period")


def test_the_store_keeps_the_reference_span(tmp_path: Path) -> None:
    (tmp_path / "baseline.csv").write_text("x\n" + "\n".join(str(i) for i in range(200)) + "\n")
    kept = {
        "baseline": WINDOW,
        "previous_window": 2 * WINDOW,
        "period": PERIOD + WINDOW,
    }
    windows = {}
    for kind, seconds in kept.items():
        reference: dict[str, Any] = {"kind": kind}
        if kind == "period":
            reference["period_seconds"] = PERIOD
        monitor = make_monitor(_monitor("m", reference), base_dir=tmp_path)
        assert monitor.window.window_seconds == seconds
        assert monitor.choice.window_seconds == WINDOW
        windows[kind] = monitor.window
    # The layout is the same; the store's key changes with the ring it keeps.
    assert len({w.layout_id for w in windows.values()}) == 1
    assert len({window_key(w, 300.0) for w in windows.values()}) == len(kept)


async def test_a_window_of_events_is_the_newest_buckets_holding_them(
    app: TestClient, monitors_dir: Path
) -> None:
    profile = load_baseline(monitors_dir / "baseline.csv").features["x"]
    assert isinstance(profile, NumericProfile)
    rng = np.random.default_rng(6)
    now = time.time()
    old, middle, new = rng.normal(3, 1, 300), rng.normal(0, 1, 150), rng.normal(0, 1, 120)
    # Three buckets: the newest two hold 270 >= 200 events; the shifted oldest is left out.
    await _post(app, "by-events", old, now - 400)
    await _post(app, "by-events", middle, now - 200)
    await _post(app, "by-events", new, now - 30)
    report = await _report(app, "by-events")
    window = report["window"]
    assert (window["events"], window["target_events"], window["seconds"]) == (270, 200, WINDOW)
    assert "reference" not in window  # compared with the baseline
    assert window["start"] == isoformat(float((now - 200) // BUCKET * BUCKET))
    feature = report["features"]["x"]
    counts = _binned(profile, np.concatenate([middle, new]))
    expected = _expected(np.asarray(profile.counts, dtype=np.float64), counts)
    assert feature["statistic"] == pytest.approx(expected["statistic"], rel=1e-9)
    assert feature["psi"] == pytest.approx(expected["psi"], rel=1e-9)
    assert feature["severity"] == "none", feature  # the shifted oldest bucket is not in it
    # Fewer events than asked for: the whole time window.
    await _post(app, "by-events-quiet", middle, now - 200)
    quiet = (await _report(app, "by-events-quiet"))["window"]
    assert quiet["events"] == 150
    span = datetime.fromisoformat(quiet["end"]) - datetime.fromisoformat(quiet["start"])
    assert span.total_seconds() == pytest.approx(WINDOW, abs=0.002)


def test_window_events_config_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "baseline.csv").write_text("x\n" + "\n".join(str(i) for i in range(200)) + "\n")

    def error(**extra: Any) -> str:
        config = dict(_monitor("m", {"kind": "baseline"}), **extra)
        with pytest.raises(MonitorConfigError) as caught:
            make_monitor(config, base_dir=tmp_path)
        return str(caught.value)

    assert error(window_events=50) == (
        "test.yaml: window_events: must be at least min_samples (100), got 50"
    )
    assert error(window_events=500, reference={"kind": "previous_window"}) == (
        "test.yaml: window_events: a window of events is compared with the baseline; "
        "reference.kind previous_window needs a window of time (unset window_events)"
    )
    assert error(window_events=0).startswith("test.yaml: window_events: expected `int` >= 1")
