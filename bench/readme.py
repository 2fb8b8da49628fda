"""The README's performance table, written from the latest full `make bench` run.

`python -m bench.readme` replaces the README's text between the two markers below with
the target rows of bench/results/latest.md (every row with a PASS or FAIL), headed by
the run's machine, time and command. It leaves the README alone when the latest run
was not the whole suite (`--only`, `--quick`): a partial run is no table of record.
tests/test_readme.py checks that the README holds what this renders from latest.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"
START = "<!-- bench table: written by `python -m bench.readme` from bench/results/latest.md -->"
END = "<!-- end of bench table -->"


def target_rows(latest_md: str) -> list[list[str]]:
    """The cells of latest.md's rows that have a target (result PASS or FAIL)."""
    rows = []
    for line in latest_md.splitlines():
        if not line.startswith("| "):
            continue
        # Cells hold escaped pipes (`\\|`): split on the others only.
        cells = [c.strip().replace("\\|", "|") for c in _split(line)]
        if cells[-1] in ("PASS", "FAIL"):
            rows.append(cells)
    return rows


def _split(line: str) -> list[str]:
    cells, current, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if char == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\"
    cells.append(current)
    return cells


def render(latest_md: str) -> str:
    """The README block: where and when the run was made, then its target rows."""
    lines = latest_md.splitlines()
    machine = lines[0].removeprefix("machine: ")
    footer = next(line for line in reversed(lines) if line.startswith("suite wall time"))
    rows = target_rows(latest_md)
    met = sum(row[-1] == "PASS" for row in rows)
    table = ["| # | metric | value | reference | ratio | target | result |", "|---" * 7 + "|"]
    table += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(
        [
            START,
            f"Latest full run: {met} of {len(rows)} targets met. Machine: {machine}; "
            f"{footer}. Every row of the run, with its notes: "
            "[bench/results/latest.md](bench/results/latest.md).",
            "",
            *table,
            END,
        ]
    )


def replaced(readme: str, block: str) -> str:
    """The README with its block between the markers replaced."""
    start = readme.index(START)
    end = readme.index(END, start) + len(END)
    return readme[:start] + block + readme[end:]


def current_block(readme: str) -> str:
    """The README's block between the markers, markers included."""
    start = readme.index(START)
    return readme[start : readme.index(END, start) + len(END)]


def main() -> int:
    """Write the table into the README when the latest run was the whole suite."""
    from .run import STEPS  # the harness's steps (imports its dependencies)

    config = json.loads((RESULTS / "latest.json").read_text())["config"]
    if config.get("quick") or list(config.get("steps", [])) != list(STEPS):
        print("bench.readme: the latest run was not the whole suite; README left as it is")
        return 0
    block = render((RESULTS / "latest.md").read_text())
    README.write_text(replaced(README.read_text(), block))
    print(f"bench.readme: wrote the table of {RESULTS / 'latest.md'} into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
