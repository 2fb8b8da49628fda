"""Where the server's time goes: py-spy samples of the server process under load.

py-spy attaches to the running server (no restart, no instrumentation), samples its
Python stacks for the duration of a wrk run and writes collapsed stacks; this module
folds them into self time per function, inclusive time per function and self time per
package, as shares of all samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy binary of this virtualenv or PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, duration: float, output: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `duration` seconds into `output` (collapsed stacks)."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    argv = [
        binary, "record",
        "--pid", str(pid),
        "--duration", str(max(1, round(duration))),
        "--rate", str(rate),
        "--format", "raw",
        "--full-filenames",
        "--gil",
        "--output", str(output),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    match = re.search(r"/(service|bench)/(\w+)\.py$", path)
    if match:
        return f"{match[1]}.{match[2]}"
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[1]
        return "stdlib." + rest.split("/", 1)[0].removesuffix(".py")
    return Path(path).name or "(native)"


def _name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    path = match["file"]
    short = re.sub(r"^.*?(site-packages/|/work/[^/]+/|/lib/python3\.\d+/)", "", path)
    return f"{match['func']} ({short})", _package(path)


# Where a sample's time belongs: the first rule matching a frame, from the leaf up.
CATEGORIES: list[tuple[str, Any]] = [
    (
        "response: timestamp + encode (per request)",
        lambda f, p: f == "isoformat" or (p.endswith("driftline/http/codec.py") and f == "encode"),
    ),
    (
        "drift report (per flush)",
        lambda f, p: p.endswith(
            ("driftline/core/report.py", "driftline/core/drift.py", "driftline/engine/verdicts.py")
        ),
    ),
    ("binning (per event)", lambda f, p: p.endswith("driftline/core/binning.py")),
    ("group commit (batching, futures)", lambda f, p: p.endswith("driftline/engine/commit.py")),
    ("window store", lambda f, p: "driftline/stores/" in p),
    ("redis client", lambda f, p: "/redis/" in p or "hiredis" in p),
    (
        "telemetry (aioprometheus, service middleware)",
        lambda f, p: (
            "aioprometheus" in p
            or p.endswith("driftline/telemetry.py")
            or f == "service_middleware"
        ),
    ),
    ("request decode + validation", lambda f, p: f == "decode_body" or "msgspec" in p),
    (
        "engine bookkeeping (admit, ingest)",
        lambda f, p: p.endswith(("driftline/engine/facade.py", "driftline/engine/admission.py")),
    ),
    ("handlers + problem middleware", lambda f, p: "driftline/http/" in p),
    ("aiohttp + asyncio (framework)", lambda f, p: True),
]


def _category(frames: list[tuple[str, str]]) -> str:
    for frame in reversed(frames):
        func, path = frame
        for name, rule in CATEGORIES[:-1]:
            if rule(func, path):
                return name
    return CATEGORIES[-1][0]


def summarize(collapsed: Path, top: int = 25) -> dict[str, Any]:
    """Self, inclusive and per-package shares from py-spy's raw (collapsed) output."""
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        names = [_name(f) for f in frames]
        raw = []
        for f in frames:
            m = _FRAME.match(f.strip())
            raw.append((m["func"], m["file"]) if m else (f.strip(), ""))
        categories[_category(raw)] += count
        leaf, package = names[-1]
        self_time[leaf] += count
        packages[package] += count
        for name in {n for n, _ in names}:
            inclusive[name] += count

    def shares(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"name": name, "share": round(c / total, 4)} for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "self": shares(self_time, top),
        "inclusive": shares(inclusive, top),
        "packages": shares(packages, 15),
        "categories": shares(categories, len(CATEGORIES)),
    }


def render(title: str, summary: dict[str, Any], top: int = 15) -> str:
    """A plain-text report of a summary."""
    lines = [f"## {title}  ({summary['samples']} samples)", "", "where the time goes:"]
    lines += [f"  {r['share'] * 100:5.1f}%  {r['name']}" for r in summary["categories"]]
    lines += ["", "self time by package:"]
    lines += [f"  {r['share'] * 100:5.1f}%  {r['name']}" for r in summary["packages"]]
    lines += ["", "self time by function:"]
    lines += [f"  {r['share'] * 100:5.1f}%  {r['name']}" for r in summary["self"][:top]]
    lines += ["", "inclusive time by function:"]
    lines += [f"  {r['share'] * 100:5.1f}%  {r['name']}" for r in summary["inclusive"][:top]]
    return "\n".join(lines) + "\n"
