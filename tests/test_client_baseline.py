"""Baselines from where training data lives: DataFrames, Parquet, and the ConfigMap recipe.

A profile built from a DataFrame or a Parquet file must be the one `driftline baseline
build` makes from the same rows as JSON (same content hash), with bins from numpy's
quantiles; the recipe of docs/baselines.md runs as written, up to a real API server.
"""

from __future__ import annotations

import json
import re
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
from k8s_support import DRIFTLINE, ROOT, KubeTarget
from support import EXAMPLES

from driftline.client import build_baseline
from driftline.core.profile import (
    BaselineError,
    NumericProfile,
    build_profile,
    decode_profile,
    rows_to_columns,
)
from driftline.operator.kube import KeyedObject
from driftline.operator.render import encode_monitor_config, render_monitor_config, resolve_baseline
from driftline.operator.spec import parse_spec

ROWS: list[dict[str, Any]] = json.loads((EXAMPLES / "baseline_data.json").read_text())
RECIPE = (ROOT / "docs" / "baselines.md").read_text()
FEATURES = list(ROWS[0])


def block(language: str, index: int = 0) -> str:
    found: list[str] = re.findall(rf"^```{language}\n(.*?)^```", RECIPE, flags=re.M | re.S)
    return found[index]


@pytest.fixture
def train(tmp_path: Path) -> Path:
    """The example rows as train.parquet, with a label and a timestamp beside the features."""
    frame = pd.DataFrame(ROWS)
    frame["defaulted"] = np.arange(len(frame)) % 7 == 0
    frame["scored_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    return path


def test_a_dataframe_gives_the_profile_of_the_same_rows_as_json() -> None:
    from_json = build_profile(rows_to_columns(ROWS))
    from_frame = build_baseline(pd.DataFrame(ROWS))
    assert from_frame == from_json
    assert from_frame.content_hash == from_json.content_hash
    # The bins are numpy's quantiles of the present values.
    income = np.array([r["income"] for r in ROWS if r["income"] is not None], dtype=np.float64)
    profile = from_frame.features["income"]
    assert isinstance(profile, NumericProfile)
    assert profile.cuts == list(np.unique(np.quantile(income, np.linspace(0, 1, 11)[1:-1])))
    assert profile.missing == sum(r["income"] is None for r in ROWS)


def test_arrays_mappings_and_integer_coded_categories() -> None:
    ages = np.array([r["age"] for r in ROWS], dtype=np.float64)
    codes = np.array([r["num_products"] or 0 for r in ROWS], dtype=np.int64)
    by_array = build_baseline(np.column_stack([ages, codes]), columns=["age", "num_products"],
                              kinds={"num_products": "categorical"})  # fmt: skip
    by_rows = build_profile(
        {"age": [r["age"] for r in ROWS], "num_products": [int(c) for c in codes]},
        kinds={"num_products": "categorical"},
    )
    assert by_array == by_rows  # category `3`, not `3.0`
    with pytest.raises(BaselineError, match="training data: columns have different lengths"):
        build_baseline({"a": [1, 2], "b": [1]})


def test_parquet_from_the_command_line(train: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    command = [DRIFTLINE, "baseline", "build", str(train), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1
    assert "columns.scored_at: a timestamp[" in done.stderr
    assert "column is not a feature" in done.stderr and "--column" in done.stderr
    columns = [arg for name in FEATURES for arg in ("--column", name)]
    done = subprocess.run(command + columns, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    profile = decode_profile(msgspec.json.decode(out.read_bytes()))
    assert profile == build_profile(rows_to_columns(ROWS))
    # pyarrow reads the same file for a Table: the same profile again.
    assert build_baseline(pq.read_table(train), columns=FEATURES) == profile


def test_without_pyarrow_the_command_names_the_extra(train: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None  # not installed\n"
        "from driftline.cli import main\n"
        f"sys.exit(main(['baseline', 'build', {str(train)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "reading Parquet needs pyarrow: pip install 'driftline[parquet]'" in done.stderr


def test_the_recipe_commands_make_one_profile(train: Path, tmp_path: Path) -> None:
    shell = block("sh")
    assert shell.startswith("driftline baseline build train.parquet -o profile.json")
    done = subprocess.run(
        ["bash", "-c", shell.replace("driftline ", f"{DRIFTLINE} ", 1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from_cli = (tmp_path / "profile.json").read_bytes()
    (tmp_path / "profile.json").unlink()
    subprocess.run([sys.executable, "-c", block("python")], cwd=tmp_path, check=True)
    assert (tmp_path / "profile.json").read_bytes() == from_cli


@pytest.mark.k8s
def test_the_recipe_ships_the_profile_the_operator_renders(
    kube: KubeTarget, train: Path, tmp_path: Path
) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts",
                 "-f", str(ROOT / "manifests" / "crd" / "driftmonitors.yaml"))  # fmt: skip
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/driftmonitors.driftline.io")  # fmt: skip
    namespace = f"recipe-{tmp_path.name[-6:].lower().replace('_', '-')}"
    kube.kubectl("create", "namespace", namespace)
    try:
        subprocess.run([sys.executable, "-c", block("python")], cwd=tmp_path, check=True)
        shipped = block("sh", 1).replace("-n driftline", f"-n {namespace}")
        for _ in range(2):  # the pipeline runs again: the same command updates the key
            done = subprocess.run(["bash", "-c", shipped], cwd=tmp_path, env=kube.environment(),
                                  capture_output=True, text=True)  # fmt: skip
            assert done.returncode == 0, done.stderr
        monitor = block("yaml").replace("namespace: driftline", f"namespace: {namespace}")
        kube.kubectl("apply", "-f", "-", stdin=monitor)
        stored = json.loads(
            kube.kubectl("get", "dm", "credit-risk", "-n", namespace, "-o", "json").stdout
        )
        found = kube.kubectl(
            "get", "configmap", "credit-risk-baseline", "-n", namespace, "-o", "json"
        )
        config_map = json.loads(found.stdout)
        keyed = KeyedObject(
            config_map["metadata"]["resourceVersion"],
            {k: v.encode() for k, v in config_map["data"].items()},
        )
        spec = parse_spec(stored["spec"])
        profile = resolve_baseline(spec, keyed)
        assert profile == build_profile(rows_to_columns(ROWS))
        rendered = json.loads(
            encode_monitor_config(render_monitor_config("credit-risk", spec, profile))
        )
        assert rendered["baseline"]["features"].keys() == set(FEATURES)
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false")


def test_arrow_columns_refuse_what_is_not_a_feature() -> None:
    table = pa.table({"when": pa.array([1, 2], type=pa.date32())})
    with pytest.raises(BaselineError, match=r"columns.when: a date32\[day\] column"):
        build_baseline(table)
