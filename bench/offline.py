"""`driftline compare` against Evidently's DataDriftPreset on the same files.

Reference and current frames of the peers step (100,000 x 20, the current one drifting
on `data.DRIFTED`) are written once as Parquet and CSV. Each tool then reads the files
and judges them: driftline through its command's own entry point (`driftline.cli.main`,
JSON report written), Evidently by reading the files with pandas and running the preset.

Warm (the target): both in this process after a warm-up run, so neither pays for
interpreter start and imports, as in the peers step. Cold (information): each as a
fresh process, what a CI step pays, imports included.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import msgspec

from . import data, peers

DRIFTLINE = str(Path(sys.executable).with_name("driftline"))
EVIDENTLY_SCRIPT = """\
import sys, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from bench import peers
reader = pd.read_parquet if sys.argv[1].endswith(".parquet") else pd.read_csv
peers._evidently_run(reader(sys.argv[1]), reader(sys.argv[2]))
"""


def write_files(root: Path, rows: int) -> dict[str, tuple[Path, Path]]:
    """The reference and current frames as Parquet and CSV files, by format."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    frames = {
        "ref": pd.DataFrame(data.frame(rows, seed=1)),
        "cur": pd.DataFrame(data.frame(rows, seed=2, drift=True)),
    }
    files: dict[str, tuple[Path, Path]] = {}
    for fmt in ("parquet", "csv"):
        paths = tuple(root / f"{name}.{fmt}" for name in frames)
        for (_, frame), path in zip(frames.items(), paths, strict=True):
            if fmt == "parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
        files[fmt] = (paths[0], paths[1])
    return files


def _driftline(ref: Path, cur: Path, out: Path) -> dict[str, Any]:
    """`driftline compare` in this process; its JSON report."""
    from driftline.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", "--reference", str(ref), "--current", str(cur), "--json", str(out)])
    if code != 0:
        raise RuntimeError(f"driftline compare exited {code}")
    report: dict[str, Any] = msgspec.json.decode(out.read_bytes())
    return report


def _evidently(ref: Path, cur: Path) -> dict[str, dict[str, Any]]:
    """Evidently's DataDriftPreset (as shipped) on the frames pandas reads from the files."""
    import pandas as pd

    reader = pd.read_parquet if ref.suffix == ".parquet" else pd.read_csv
    return peers._evidently_run(reader(ref), reader(cur))


def _best(repeat: int, fn: Any, *args: Any) -> tuple[Any, float, list[float]]:
    runs = []
    out = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        runs.append(time.perf_counter() - start)
    return out, min(runs), [round(r, 4) for r in runs]


def _process(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=Path(__file__).resolve().parent.parent, capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}: {done.stderr[-500:]!r}")
    return seconds


def measure(root: Path, rows: int = 100_000) -> dict[str, Any]:
    """Warm and cold timings of both tools on Parquet and CSV files, and their verdicts."""
    import evidently
    import pandas as pd

    warnings.filterwarnings("ignore")
    files = write_files(root, rows)
    out = root / "report.json"
    ref, cur = files["parquet"]
    # Warm-ups: imports, registries and pyarrow's pools are not timed.
    _driftline(ref, cur, out)
    peers._evidently_run(pd.read_parquet(ref).head(2000), pd.read_parquet(cur).head(2000))
    result: dict[str, Any] = {"rows": rows, "evidently_version": evidently.__version__}
    for fmt, (ref, cur) in files.items():
        report, seconds, runs = _best(3, _driftline, ref, cur, out)
        columns, ev_seconds, ev_runs = _best(2 if fmt == "parquet" else 1, _evidently, ref, cur)
        result[fmt] = {
            "driftline_seconds": seconds,
            "driftline_runs": runs,
            "evidently_seconds": ev_seconds,
            "evidently_runs": ev_runs,
            "ratio": ev_seconds / seconds,
            "driftline_drifted": sorted(report["drifted_features"]),
            "evidently_drifted": sorted(n for n, c in columns.items() if c["drift"]),
        }
    ref, cur = files["parquet"]
    html = root / "report.html"
    cold = _process([DRIFTLINE, "compare", "--reference", str(ref), "--current", str(cur),
                     "--json", str(out), "--html", str(html)])  # fmt: skip
    ev_cold = _process([sys.executable, "-c", EVIDENTLY_SCRIPT, str(ref), str(cur)])
    result["cold"] = {
        "driftline_seconds": cold,
        "evidently_seconds": ev_cold,
        "ratio": ev_cold / cold,
        "html_bytes": html.stat().st_size,
    }
    result["expected_drifted"] = sorted(data.DRIFTED)
    return result
