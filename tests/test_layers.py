"""The import graph: layers import only downwards, never in a cycle, and the core stays pure.

Parses every module of the package with `ast` (imports inside functions and under
TYPE_CHECKING included), so the layering of README's Layout section cannot rot.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders the import names map to (pyproject.toml's package-dir).
FOLDERS = {"driftline": ROOT / "service", "driftline.operator": ROOT / "controller"}

# Each part of driftline (`driftline.<part>`) and the parts it may import besides itself.
# Bottom to top; README's Layout section states the same.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "environment": set(),
    "eventloop": set(),
    "lifecycle": set(),
    "targets": set(),
    "settings": {"core", "environment", "eventloop"},
    "telemetry": {"core"},
    "logs": {"core"},
    "stores": {"core"},
    "engine": {"core", "settings", "telemetry", "lifecycle", "stores"},
    "alerts": {"core", "settings", "telemetry", "lifecycle", "targets", "stores", "engine"},
    "reporting": {"core"},
    # The web UI's files and their handlers; the page reads the JSON API like any client.
    "ui": {"reporting"},
    "http": {
        "core",
        "settings",
        "telemetry",
        "lifecycle",
        "stores",
        "engine",
        "alerts",
        "reporting",
        "ui",
    },
    "simulate": {"core"},
    # Talks HTTP to a service: nothing of the server side.
    "client": {"core"},
    "cli": {
        "core",
        "settings",
        "eventloop",
        "logs",
        "http",
        "reporting",
        "simulate",
        "client",
        "operator",
    },
    "operator": {"core", "environment", "targets"},
}
# The package root (`driftline`): its version, and `driftline.compare` loaded on first use.
ROOT_IMPORTS = {"reporting"}
# Third-party packages a part may use; parts not listed may use any dependency.
THIRD_PARTY: dict[str, set[str]] = {
    "core": {"numpy", "scipy", "msgspec"},
    "environment": {"msgspec"},
    "eventloop": {"uvloop"},
    "lifecycle": set(),
    "targets": {"aiohttp"},
    "engine": {"numpy", "msgspec"},
    # pandas, FastAPI and Starlette are the caller's, never imported; pyarrow is optional.
    "client": {"aiohttp", "msgspec", "numpy", "pyarrow"},
    # pyarrow: the optional `parquet` extra, imported only when a Parquet file is read.
    "reporting": {"numpy", "msgspec", "pyarrow"},
}
# Never imported by these parts: stores know nothing of HTTP, HTTP nothing of Redis (the
# core and the engine, listed above, use neither).
FORBIDDEN: dict[str, set[str]] = {"stores": {"aiohttp"}, "http": {"redis"}}


@dataclass(frozen=True)
class Import:
    """One imported name, resolved: the driftline module it comes from, or a top-level package."""

    source: str  # importing module
    target: str  # imported module (driftline.x.y) or top-level package (numpy)
    line: int


def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "driftline" and parts[:1] == ["operator"]:
                continue
            found.setdefault(name, path)
    return found


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    """The imports of one module, relative ones resolved against its package."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, _module_or_root(alias.name, known), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                target = submodule if submodule in known else module
                yield Import(name, _module_or_root(target, known), node.lineno)


def _module_or_root(module: str, known: set[str]) -> str:
    return module if module in known else module.split(".")[0]


def part_of(module: str) -> str:
    """`core` for driftline.core.drift, `operator` for driftline.operator.kube."""
    return module.split(".")[1] if module.count(".") else ""


MODULES = modules()
KNOWN = set(MODULES)
IMPORTS = [i for name, path in MODULES.items() for i in imports_of(name, path, KNOWN)]


def test_every_module_belongs_to_a_known_part() -> None:
    unknown = {m for m in MODULES if m != "driftline" and part_of(m) not in ALLOWED}
    assert not unknown, f"add these to ALLOWED (and README's Layout): {sorted(unknown)}"


def test_imports_point_down() -> None:
    upward = []
    for imp in IMPORTS:
        if imp.target not in KNOWN or imp.target == "driftline":  # the version: anyone
            continue
        source, target = part_of(imp.source), part_of(imp.target)
        allowed = ALLOWED.get(source, set()) if source else ROOT_IMPORTS
        if source != target and target not in allowed:
            upward.append(f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line} -> {imp.target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in KNOWN and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if not state.get(target):
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module)


def test_third_party_imports_stay_within_each_part() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for imp in IMPORTS:
        if imp.target in KNOWN or imp.target in stdlib or imp.target == "driftline":
            continue
        part = part_of(imp.source)
        allowed = THIRD_PARTY.get(part)
        if (allowed is not None and imp.target not in allowed) or imp.target in FORBIDDEN.get(
            part, set()
        ):
            wrong.append(f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line} -> {imp.target}")
    assert not wrong, "third-party imports outside what the part may use:\n" + "\n".join(wrong)


def test_the_core_imports_neither_aiohttp_nor_redis() -> None:
    # Said by THIRD_PARTY already; stated on its own because the design depends on it.
    core = [i for i in IMPORTS if part_of(i.source) == "core"]
    assert core, "no core modules found"
    assert not [i for i in core if i.target in {"aiohttp", "redis"}]


def test_pyproject_lists_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {
        name: str(folder.relative_to(ROOT)) for name, folder in FOLDERS.items()
    }
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert set(config["packages"]) == packages
