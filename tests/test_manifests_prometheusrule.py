"""The shipped PrometheusRule: valid for Prometheus, and its alerts fire when they should.

`promtool check rules` validates the rule groups; `promtool test rules` runs the unit
tests in tests/fixtures/prometheusrule-tests.yaml against them (series from two
replicas, counters starting at 0 as the service exports them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
TESTS = ROOT / "tests" / "fixtures" / "prometheusrule-tests.yaml"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: `make promtool` (Debian package prometheus)"
    return found


def _run(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rule = yaml.safe_load(RULE.read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    checked = _run("check", "rules", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS" in checked
    tested = _run("test", "rules", TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in tested
