"""Detection delay and false alarms, driftline beside Evidently: `python -m bench.detection`.

Not a speed measurement: a statistical one, on seeded streams (docs/metrics.md,
"Detection, side by side"). Each stream has its own reference (5 000 rows, drawn
afresh) and then windows of n events from the scenario's distribution, judged one after
the other, up to WINDOWS of them:

- driftline, as a monitor of that one feature built from the reference with the
  default policy: the window is flagged when the monitor calls drift (warning or
  critical, for any reason), and noticed when its severity is at least a notice;
- driftline with `test: chisquare` for numeric features (the most sensitive test);
- Evidently (the `bench` extra), its data-drift defaults for the column: the stat test
  Evidently picks for the reference (Wasserstein distance for numeric and
  Jensen-Shannon for categorical references above 1 000 rows; missing values dropped,
  as its DataDriftPreset does) at its default threshold.

Drift-free scenarios report the share of all windows flagged (false alarms); the
others the share of first windows flagged and the median number of events until the
first flag (delay; `>` when a majority of streams had none within WINDOWS windows).
Writes bench/results/detection.md and prints it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftline.core.binning import bin_batch
from driftline.core.limits import Limits
from driftline.core.monitor import MonitorConfig, build_monitor
from driftline.core.policy import DEFAULTS
from driftline.core.profile import build_profile
from driftline.core.report import evaluate

RESULTS = Path(__file__).resolve().parent / "results" / "detection.md"
REFERENCE_ROWS = 5000
SIZES = (100, 500, 2000)
WINDOWS = 10
FEATURE = "x"

Draw = Callable[[np.random.Generator, int], list[Any]]


def _numeric(
    shift: float = 0.0, scale: float = 1.0, missing: float = 0.05, outliers: float = 0.0
) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> list[Any]:
        x = rng.normal(shift, scale, n)
        wild = rng.random(n) < outliers
        x[wild] = rng.uniform(1e4, 2e4, int(wild.sum()))
        gone = rng.random(n) < missing
        return [None if lost else float(v) for v, lost in zip(x, gone, strict=True)]

    return draw


def _zipf(categories: int, s: float = 1.1) -> np.ndarray:
    weights = np.arange(1, categories + 1, dtype=np.float64) ** -s
    return weights / weights.sum()


def _categorical(probs: np.ndarray, *, swap: float = 0.0, new: float = 0.0) -> Draw:
    """Category c<i> with probability probs[i], changed.

    `swap` of the events of the top category move to the 10th; `new` of all events are
    a category the reference never had.
    """
    p = probs.copy()
    p[0] -= swap
    p[9] += swap
    names = np.array([f"c{i:03d}" for i in range(p.size)] + ["never-seen"])
    p = np.append(p * (1 - new), new)

    def draw(rng: np.random.Generator, n: int) -> list[Any]:
        return names[rng.choice(p.size, n, p=p)].tolist()

    return draw


@dataclass(frozen=True)
class Scenario:
    """A stream: the reference's distribution and the windows'."""

    name: str
    kind: str  # numeric or categorical
    reference: Draw
    window: Draw
    drift: bool


def scenarios() -> list[Scenario]:
    """The rows of the table (issue 16's list)."""
    twenty, two_hundred = _zipf(20), _zipf(200)
    calm = _numeric()
    return [
        Scenario("no drift, numeric", "numeric", calm, calm, False),
        Scenario("mean +0.25 SD", "numeric", calm, _numeric(shift=0.25), True),
        Scenario("mean +0.5 SD", "numeric", calm, _numeric(shift=0.5), True),
        Scenario("variance x2", "numeric", calm, _numeric(scale=2**0.5), True),
        Scenario("missing 5 % -> 20 %", "numeric", calm, _numeric(missing=0.2), True),
        Scenario("1 % extreme outliers", "numeric", calm, _numeric(outliers=0.01), True),
        Scenario(
            "no drift, 20 categories",
            "categorical",
            _categorical(twenty),
            _categorical(twenty),
            False,
        ),
        Scenario(
            "5 % category swap (20)",
            "categorical",
            _categorical(twenty),
            _categorical(twenty, swap=0.05),
            True,
        ),
        Scenario(
            "new category at 1 % (20)",
            "categorical",
            _categorical(twenty),
            _categorical(twenty, new=0.01),
            True,
        ),
        Scenario(
            "no drift, 200 categories",
            "categorical",
            _categorical(two_hundred),
            _categorical(two_hundred),
            False,
        ),
    ]


# ---------------------------------------------------------------------- the judges

Judge = Callable[[list[Any]], tuple[bool, bool]]  # window -> (flagged, noticed)


def driftline_judge(reference: list[Any], kind: str, test: str | None = None) -> Judge:
    """A one-feature monitor built from the reference, default policy (or `test`)."""
    profile = build_profile({FEATURE: reference}, kinds={FEATURE: kind})  # type: ignore[dict-item]
    config = MonitorConfig(name="bench", baseline=profile, test=test)  # type: ignore[arg-type]
    monitor = build_monitor(config, DEFAULTS, base_dir=Path("."), source="bench")
    limits = Limits()

    def judge(window: list[Any]) -> tuple[bool, bool]:
        batch = bin_batch(monitor.layout, [{FEATURE: v} for v in window], limits)
        vector = batch.deltas(monitor.window.width, np.zeros(len(window), dtype=np.int64))[0][0]
        verdict = evaluate(monitor, vector).verdict
        return verdict.drift_detected, verdict.severity.rank >= 1

    return judge


def evidently_judge(reference: list[Any], kind: str) -> Judge:
    """Evidently's default drift test for the column, as its DataDriftPreset picks it."""
    import pandas as pd
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    dtype = "float64" if kind == "numeric" else "object"
    ref = pd.Series(reference, dtype=dtype).dropna()

    def judge(window: list[Any]) -> tuple[bool, bool]:
        cur = pd.Series(window, dtype=dtype).dropna()
        if cur.empty:
            return False, False
        test = get_stattest(ref, cur, column_type, None)
        drifted = bool(test(ref, cur, column_type, None).drifted)
        return drifted, drifted

    return judge


# ----------------------------------------------------------------------------- run


@dataclass
class Cell:
    """One judge on one scenario and window size, over every stream."""

    windows: int = 0
    flagged: int = 0
    noticed: int = 0
    first: int = 0  # streams flagged in their first window
    first_noticed: int = 0  # streams whose first window was a notice or worse
    delays: list[float] | None = None


def run_cell(
    scenario: Scenario,
    n: int,
    streams: int,
    judges: dict[str, Callable[[list[Any], str], Judge]],
    seed: int,
) -> dict[str, Cell]:
    """Every judge on the same seeded streams of one scenario and window size."""
    cells = {name: Cell(delays=[]) for name in judges}
    for stream in range(streams):
        rng = np.random.default_rng([seed, stream])
        reference = scenario.reference(rng, REFERENCE_ROWS)
        windows = [scenario.window(rng, n) for _ in range(WINDOWS)]
        for name, make in judges.items():
            judge, cell = make(reference, scenario.kind), cells[name]
            delay = float("inf")
            for i, window in enumerate(windows):
                flagged, noticed = judge(window)
                cell.windows += 1
                cell.flagged += flagged
                cell.noticed += noticed
                cell.first_noticed += noticed and i == 0
                if flagged and delay == float("inf"):
                    delay = (i + 1) * n
                    cell.first += i == 0
                    if scenario.drift:
                        break  # the delay is known: the rest of the stream is not needed
            assert cell.delays is not None
            cell.delays.append(delay)
    return cells


def _delay(cell: Cell, n: int) -> str:
    assert cell.delays is not None
    median = statistics.median(cell.delays)
    return f"> {WINDOWS * n:,}" if median == float("inf") else f"{median:,.0f}"


def table(results: list[tuple[Scenario, int, dict[str, Cell]]], streams: int) -> str:
    """The markdown table of every cell."""
    lines = [
        f"Seeded streams: {streams} per cell, each with a fresh {REFERENCE_ROWS:,}-row "
        f"reference and up to {WINDOWS} windows. Drift-free rows: share of all windows "
        "flagged (false alarms). Drift rows: share of first windows flagged / median "
        "events until the first flag. `driftline notice+`: the same share with notices "
        "counted (first windows for drift rows).",
        "",
        "| scenario | n | driftline defaults | driftline notice+ | driftline, chisquare "
        "| Evidently defaults |",
        "|---|---:|---|---|---|---|",
    ]
    for scenario, n, cells in results:
        row = [scenario.name, f"{n:,}"]
        for name in ("driftline", "driftline notice", "chisquare", "evidently"):
            key = "driftline" if name == "driftline notice" else name
            cell = cells.get(key)
            if cell is None:
                row.append("")
                continue
            if name == "driftline notice":
                drifted = cell.first_noticed / streams
                share = drifted if scenario.drift else cell.noticed / cell.windows
                row.append(f"{share:.1%}")
            elif scenario.drift:
                row.append(f"{cell.first / streams:.0%} / {_delay(cell, n)}")
            else:
                row.append(f"{cell.flagged / cell.windows:.1%}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every scenario and window size; print and write the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    parser.add_argument("--streams", type=int, default=40, help="streams per cell")
    parser.add_argument("--no-evidently", action="store_true", help="driftline only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    judges: dict[str, Callable[[list[Any], str], Judge]] = {
        "driftline": driftline_judge,
        "chisquare": lambda ref, kind: driftline_judge(ref, kind, "chisquare"),
    }
    if not args.no_evidently:
        judges["evidently"] = evidently_judge
    results = []
    started = time.monotonic()
    for index, scenario in enumerate(scenarios()):
        for n in SIZES:
            chosen = dict(judges)
            if scenario.kind == "categorical":
                chosen.pop("chisquare")  # the categorical default already
            cells = run_cell(scenario, n, args.streams, chosen, seed=index * 10 + SIZES.index(n))
            results.append((scenario, n, cells))
            print(f"{scenario.name}, n={n}: {time.monotonic() - started:.0f} s", flush=True)
    text = table(results, args.streams)
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
