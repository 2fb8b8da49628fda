"""Offline comparison: the CLI and the notebook API give the service's own report.

The same rows go to the in-process app over a real socket and, written to CSV, JSON and
Parquet files, to a real `driftline compare` process: the JSON reports agree to 1e-9.
Exit codes, input errors and the Python API are checked on the same data.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats

import driftline
from driftline.core.profile import build_profile, load_baseline
from driftline.http.app import create_app
from driftline.reporting import Comparison, InputError, compare
from driftline.settings import Settings

DRIFTLINE = str(Path(sys.executable).with_name("driftline"))
MONITOR = "parity"
# The times a report was made at differ between any two runs; everything else agrees.
TIME_FIELDS = {"evaluated_at", "start", "end"}
CONFIG = f"""\
name: {MONITOR}
model: parity-model
baseline: ref.csv
min_samples: 200
features:
  segment: {{type: categorical}}
  score: {{warning_threshold: 0.1, critical_threshold: 0.4}}
"""


def rows(n: int, seed: int, *, drift: bool) -> list[dict[str, Any]]:
    """Typed rows: continuous, discrete and integer-coded features, categories, gaps."""
    rng = np.random.default_rng(seed)
    shift = 0.6 if drift else 0.0
    out = []
    for i in range(n):
        row: dict[str, Any] = {
            "age": int(rng.integers(18, 80)) + (int(rng.integers(0, 15)) if drift else 0),
            "income": round(float(rng.lognormal(10.5 + shift / 3, 0.4)), 2),
            "score": float(rng.normal(shift, 1.0)),
            "kids": int(rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1])),
            "segment": int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1] if drift else [0.3, 0.4, 0.3])),
            "city": str(rng.choice(["oslo", "rome", "lima", "pune", "kyiv" if drift else "oslo"])),
        }
        if i % 37 == 0:
            row["income"] = None
        if i % 53 == 0:
            row["city"] = None
        out.append(row)
    return out


def write_csv(path: Path, data: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(data[0]))
        writer.writeheader()
        for row in data:
            writer.writerow(
                {
                    k: "" if v is None else repr(v) if isinstance(v, float) else v
                    for k, v in row.items()
                }
            )


def write(path: Path, data: list[dict[str, Any]]) -> Path:
    """The rows in the file format its suffix names."""
    if path.suffix == ".csv":
        write_csv(path, data)
    elif path.name.endswith(".records.json"):
        path.write_bytes(msgspec.json.encode(data))
    elif path.suffix == ".json":
        path.write_bytes(msgspec.json.encode({k: [r[k] for r in data] for k in data[0]}))
    else:
        pq.write_table(pa.Table.from_pylist(data), path)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    write(root / "ref.csv", rows(3000, 1, drift=False))
    write(root / "ref.parquet", rows(3000, 1, drift=False))
    (root / "monitors").mkdir()
    (root / "monitors" / "parity.yaml").write_text(CONFIG.replace("ref.csv", str(root / "ref.csv")))
    (root / "parity.yaml").write_text(CONFIG)
    return root


def run_compare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DRIFTLINE, "compare", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_same_report(got: Any, expected: Any, path: str = "$") -> None:
    """Equal structures; floats to 1e-9; the times the reports were made at ignored."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), path
        for key in expected:
            if key not in TIME_FIELDS:
                assert_same_report(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_report(a, b, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), (path, got, expected)
    else:
        assert got == expected, path


# --------------------------------------------------------------- the service's numbers


@pytest.mark.parametrize("current", ["cur.csv", "cur.records.json", "cur.json", "cur.parquet"])
async def test_cli_json_equals_the_services_drift_report(
    aiohttp_client: Any, workdir: Path, current: str
) -> None:
    current_rows = rows(1500, 2, drift=True)
    write(workdir / current, current_rows)
    settings = Settings(host="127.0.0.1", monitors_dir=str(workdir / "monitors"))
    client: TestClient = await aiohttp_client(create_app(settings))
    response = await client.post(
        f"/v1/monitors/{MONITOR}/events", json=[{"features": r} for r in current_rows]
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == len(current_rows)
    service = await (await client.get(f"/v1/monitors/{MONITOR}/drift")).json()
    assert service["severity"] == "critical"  # the comparison is not vacuous

    # The config names the baseline (relative to the config file) ...
    done = run_compare(
        "--monitor", "parity.yaml", "--current", current, "--json", "out.json", cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    assert_same_report(json.loads((workdir / "out.json").read_text()), service)
    # ... or the reference comes in a file of another format, with the config's policy.
    done = run_compare(
        "--monitor",
        "parity.yaml",
        "--reference",
        "ref.parquet",
        "--current",
        current,
        "--json",
        "-",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    assert_same_report(json.loads(done.stdout), service)


def test_psi_and_chi_square_agree_with_numpy_and_scipy(workdir: Path) -> None:
    reference, current = rows(3000, 1, drift=False), rows(1500, 2, drift=True)
    report = compare(reference, current, config=workdir / "parity.yaml").to_dict()
    profile = load_baseline(workdir / "ref.csv", kinds={"segment": "categorical"})
    # PSI of a numeric feature from the formula, on the profile's bins.
    income = profile.features["income"]
    cuts = np.asarray(income.cuts)  # type: ignore[union-attr]
    values = np.array([r["income"] for r in current if r["income"] is not None])
    a = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    a = np.maximum(a / a.sum(), 1e-4)
    e = np.maximum(np.asarray(income.counts) / sum(income.counts), 1e-4)
    psi = float(np.sum((a - e) * np.log(a / e)))
    assert report["features"]["income"]["psi"] == pytest.approx(psi, abs=1e-9)
    # The categorical test: chi-square of homogeneity, baseline counts against current.
    segment = profile.features["segment"]
    labels = segment.categories  # type: ignore[union-attr]
    window = [sum(1 for r in current if str(r["segment"]) == c) for c in labels]
    table = np.array([segment.counts[: len(labels)], window])
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    feature = report["features"]["segment"]
    assert (feature["statistic"], feature["dof"]) == (pytest.approx(chi2, abs=1e-9), dof)
    assert feature["p_value"] == pytest.approx(p, abs=1e-9)


# --------------------------------------------------------------------- the gate


def test_exit_status_is_the_gate(workdir: Path) -> None:
    write(workdir / "same.csv", rows(1500, 3, drift=False))
    write(workdir / "drifted.csv", rows(1500, 4, drift=True))
    gate = ["--reference", "ref.csv", "--fail-on", "warning", "--current"]
    drifted = run_compare(*gate, "drifted.csv", cwd=workdir)
    assert drifted.returncode == 1, drifted.stderr
    assert drifted.stdout.startswith("severity critical")
    same = run_compare(*gate, "same.csv", cwd=workdir)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("severity none")
    # Without --fail-on there is no gate.
    assert (
        run_compare("--reference", "ref.csv", "--current", "drifted.csv", cwd=workdir).returncode
        == 0
    )


def test_fail_on_critical_passes_a_warning(workdir: Path) -> None:
    config = workdir / "lenient.yaml"
    # Critical out of reach for every check: the drift scores, and the quality rules
    # (the drifted rows leave the baseline's range and bring new categories).
    unreachable = "{warning: 0.001, critical: 0.99}"
    config.write_text(
        "name: lenient\nbaseline: ref.csv\nwarning_threshold: 0.05\ncritical_threshold: 50\n"
        f"quality: {{range: {unreachable}, new_categories: {unreachable}}}\n"
    )
    write(workdir / "drifted.csv", rows(1500, 4, drift=True))
    common = ["--monitor", str(config), "--current", "drifted.csv", "--fail-on"]
    critical = run_compare(*common, "critical", cwd=workdir)
    assert critical.returncode == 0, critical.stderr
    assert critical.stdout.startswith("severity warning")
    assert run_compare(*common, "warning", cwd=workdir).returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--current", "cur.csv"], "reference: required unless a monitor config"),
        (["--reference", "nope.csv", "--current", "cur.csv"], "nope.csv: cannot read"),
        (["--reference", "ref.txt", "--current", "cur.csv"], "unsupported file type '.txt'"),
        (
            ["--reference", "ref.csv", "--current", "bad.csv"],
            "current.income: expected numbers, got 1 that are not (row 2: 'lots')",
        ),
        (["--reference", "ref.csv", "--current", "long.csv"], "expected at most 256 characters"),
        (["--monitor", "broken.yaml", "--current", "cur.csv"], "broken.yaml: min_samples"),
        (
            ["--reference", "ref.csv", "--current", "cur.csv", "--fail-on", "bad"],
            "invalid choice: 'bad'",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_problem(workdir: Path, args: list[str], message: str) -> None:
    write(workdir / "cur.csv", rows(50, 5, drift=False))
    (workdir / "ref.txt").write_text("age\n1\n")
    bad = rows(3, 6, drift=False)
    bad[1]["income"] = "lots"
    write(workdir / "bad.csv", bad)
    long = rows(3, 6, drift=False)
    long[2]["city"] = "x" * 300
    write(workdir / "long.csv", long)
    (workdir / "broken.yaml").write_text("name: broken\nbaseline: ref.csv\nmin_samples: many\n")
    done = run_compare(*args, cwd=workdir)
    assert done.returncode == 2
    assert message in done.stderr


def test_parquet_without_pyarrow_names_the_extra(workdir: Path) -> None:
    script = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "from driftline.cli import main\n"
        "sys.exit(main(['compare', '--reference', 'ref.parquet', '--current', 'ref.csv']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "reading Parquet needs pyarrow: pip install 'driftline[parquet]'" in done.stderr


def test_missing_and_extra_columns_are_warned_about(workdir: Path) -> None:
    current = [
        {k: v for k, v in r.items() if k != "city"} | {"note": "x"}
        for r in rows(300, 7, drift=False)
    ]
    write(workdir / "partial.csv", current)
    done = run_compare("--reference", "ref.csv", "--current", "partial.csv", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert 'current has no column "city": every row counts it as missing' in done.stderr
    assert 'column "note" is not a feature of the reference: ignored' in done.stderr
    result = compare(workdir / "ref.csv", workdir / "partial.csv")
    assert result.features["city"].missing_rate == 1.0


def test_html_and_json_files_are_written(workdir: Path) -> None:
    write(workdir / "drifted.csv", rows(1500, 4, drift=True))
    done = run_compare(
        "--reference",
        "ref.csv",
        "--current",
        "drifted.csv",
        "--html",
        "report.html",
        "--json",
        "report.json",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((workdir / "report.json").read_text())
    page = (workdir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert f"<title>Drift report: compare, {report['severity']}</title>" in page
    assert all(f">{name} <span" in page for name in report["features"])


# ------------------------------------------------------------------ the Python API


def test_python_api_on_dataframes_dicts_and_files_agree(workdir: Path) -> None:
    reference, current = rows(3000, 1, drift=False), rows(1500, 2, drift=True)
    from_files = compare(workdir / "ref.csv", write(workdir / "api.parquet", current))
    frame = driftline.compare(pd.DataFrame(reference), pd.DataFrame(current))
    columns = {k: np.array([r[k] for r in current], dtype=object) for k in current[0]}
    columns["score"] = np.array([r["score"] for r in current])  # a float64 array
    from_dict = driftline.compare({k: [r[k] for r in reference] for k in reference[0]}, columns)
    for other in (frame, from_dict):
        assert isinstance(other, Comparison)
        assert_same_report(other.to_dict(), from_files.to_dict())
    assert frame.severity == frame.report.severity == "critical"
    assert frame.to_dict() == json.loads(frame.to_json())
    assert frame.to_html().startswith("<!DOCTYPE html>")
    assert frame._repr_html_().startswith("<style>")


def test_python_api_refuses_what_it_cannot_read() -> None:
    with pytest.raises(InputError, match=r"current: expected a file path, a mapping"):
        compare({"a": [1.0, 2.0]}, 42)
    with pytest.raises(InputError, match=r"current: columns have different lengths"):
        compare({"a": [1.0, 2.0]}, {"a": [1.0], "b": [1, 2]})
    with pytest.raises(InputError, match=r"reference.a: expected a sequence of values"):
        compare({"a": "12"}, {"a": [1.0]})
    reference = {"a": [1.0, 2.0, 3.0]}
    with pytest.raises(InputError, match=r"current: expected rows of data, got a baseline"):
        compare(reference, build_profile(reference))
