"""The README's quick start, word by word: its commands run against a real `driftline serve`.

The service is started with the arguments of the Makefile's `run` recipe (only the port
differs), and each shell snippet of the quick start is run by bash with curl, as a
reader would paste it. Answers are compared with what the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec.yaml
import pytest
from k8s_support import free_port, wait_for

from driftline.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DRIFTLINE = str(Path(sys.executable).with_name("driftline"))


def blocks(language: str, text: str = README) -> list[str]:
    """The README's fenced code blocks of one language, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def section(title: str) -> str:
    """The README text from a `## title` heading to the next one."""
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def commands(script: str) -> list[str]:
    """A snippet's commands: continued lines joined, multi-line quotes kept whole."""
    found: list[str] = []
    current = ""
    for line in script.splitlines():
        current += line + "\n"
        try:
            shlex.split(current, comments=True)
        except ValueError:
            continue  # an open quote: the command goes on
        if current.rstrip().endswith("\\"):
            continue
        if current.strip():
            found.append(current.strip())
        current = ""
    return found


def make_run_arguments() -> list[str]:
    """What `make run` passes to `driftline serve`."""
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [
        line for line in makefile.splitlines() if "driftline serve" in line and "$(BIN)" in line
    ]
    return shlex.split(line.split("driftline serve", 1)[1])


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    """`driftline serve` as `make run` starts it, on a free port, with no Redis."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "REDIS_"))}
    process = subprocess.Popen(
        [DRIFTLINE, "serve", *make_run_arguments(), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool | None:
            if process.poll() is not None:
                pytest.fail(f"driftline serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            return True if httpx2.get(f"{url}/monitor/ready").status_code == 200 else None

        wait_for("make run's service to be ready", ready, timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(command: str, url: str) -> str:
    """Run one README command as a reader would, against the test's service."""
    port = url.rsplit(":", 1)[1]
    command = command.replace("localhost:8080", f"127.0.0.1:{port}")
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    command = command.replace(".venv/bin/driftline", DRIFTLINE)
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def answer(output: str) -> Any:
    """A curl's JSON answer, failing on a problem document."""
    body = json.loads(output)
    assert not (isinstance(body, dict) and "type" in body and "status" in body), body
    return body


def test_make_run_names_its_default_monitor() -> None:
    arguments = make_run_arguments()
    assert arguments[arguments.index("--default-monitor") + 1] == "credit-risk"
    assert arguments[arguments.index("--monitors-dir") + 1] == "examples/monitors"


def test_the_first_predict_answers_what_the_readme_shows(service: str) -> None:
    quick_start = section("Quick start")
    first, shown = blocks("sh", quick_start)[1], blocks("json", quick_start)[0]
    (command,) = commands(first)
    got, expected = answer(run(command, service)), json.loads(shown)
    assert set(got) == set(expected)
    for key in ("drift_detected", "severity", "drifted_features", "monitor", "warnings"):
        assert got[key] == expected[key], key
    assert {k: v for k, v in got["window"].items() if k not in ("start", "end")} == {
        k: v for k, v in expected["window"].items() if k not in ("start", "end")
    }
    # A one-event window: the scores are a property of the baseline, the same every time.
    assert got["drift_score"] == pytest.approx(expected["drift_score"], abs=1e-4)
    assert got["feature_scores"] == pytest.approx(expected["feature_scores"], abs=1e-4)


def test_every_quick_start_command_works(service: str) -> None:
    snippets = blocks("sh", section("Quick start"))[2:]
    ran = 0
    for snippet in snippets:
        for command in commands(snippet):
            output = run(command, service)
            ran += 1
            if "/monitor/metrics" in command:
                assert "driftline_window_events" in output
            elif "--scenario performance" in command:
                # Labels 10 points less accurate than the baseline's: performance critical.
                assert "performance=critical labelled=500" in output, output
                assert re.search(r"accuracy: 0\.\d+ vs baseline 0\.796 .*: critical", output)
            elif "--scenario challenger" in command:
                # v2's labels 10 points less accurate than v1's, on the same traffic.
                assert "v2 vs v1: b_worse" in output, output
            elif "/compare?" in command:
                assert answer(output)["verdict"] == "b_worse", output
            elif "driftline simulate" in command:
                # baseline, moderate, high in turn, as the README says.
                severities = re.findall(r"severity=(\w+)", output)
                assert severities == ["none", "warning", "critical"], output
            else:
                answer(output)
    assert ran >= 10, "the quick start lost its commands"


def test_the_settings_file_example_loads(tmp_path: Path) -> None:
    (example,) = [b for b in blocks("yaml", section("Configuration")) if "limits:" in b]
    path = tmp_path / "settings.yaml"
    path.write_text(example)
    settings = load_settings(environ={"DRIFTLINE_SETTINGS_FILE": str(path)})
    written = msgspec.yaml.decode(example.encode())
    assert settings.port == written["port"]
    assert settings.limits.max_body_bytes == written["limits"]["max_body_bytes"]
    assert settings.defaults.min_samples == written["defaults"]["min_samples"]


def test_driftline_config_prints_a_settings_file_with_each_source(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("port: 9100\nlimits:\n  max_features: 50\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "REDIS_"))},
        "DRIFTLINE_SETTINGS_FILE": str(path),
        "DRIFTLINE_LOG_LEVEL": "DEBUG",
    }
    done = subprocess.run(
        [DRIFTLINE, "config", "--host", "127.0.0.2"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'host: "127.0.0.2"  # command line' in lines
    assert f"port: 9100  # DRIFTLINE_SETTINGS_FILE={path}" in lines
    assert f"  max_features: 50  # DRIFTLINE_SETTINGS_FILE={path}" in lines
    assert 'log_level: "DEBUG"  # DRIFTLINE_LOG_LEVEL' in lines
    assert "redis_url: null  # default" in lines
    # The output is a settings file that gives the same settings back.
    again = tmp_path / "again.yaml"
    again.write_text(done.stdout)
    assert load_settings(environ={"DRIFTLINE_SETTINGS_FILE": str(again)}) == load_settings(
        environ={"DRIFTLINE_SETTINGS_FILE": str(path), "DRIFTLINE_LOG_LEVEL": "DEBUG"},
        host="127.0.0.2",
    )


def test_a_settings_file_written_with_variable_names_says_what_it_takes(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("DRIFTLINE_PORT: 9000\n")
    env = {"DRIFTLINE_SETTINGS_FILE": str(path)}
    with pytest.raises(ValueError, match=r"unknown field `DRIFTLINE_PORT`.*here `port: \.\.\.`"):
        load_settings(environ=env)


def test_the_offline_gate_exits_as_the_readme_says(tmp_path: Path) -> None:
    text = section("Offline: compare files in CI")
    (script,) = blocks("sh", text)
    expected: int | None = None
    ran = []
    for line in script.splitlines():
        if said := re.search(r"exit status (\d)", line):
            expected = int(said.group(1))
            continue
        assert expected is not None, f"no exit status stated before {line}"
        command = line.replace(".venv/bin/driftline", DRIFTLINE)
        for name in ("report.json", "report.html"):
            command = command.replace(f" {name}", f" {tmp_path / name}")
        done = subprocess.run(
            ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == expected, f"{line}\n{done.stdout}\n{done.stderr}"
        ran.append(expected)
        expected = None
    assert ran == [0, 1]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["severity"] == "critical"
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    # The table documents every status the command uses.
    assert re.findall(r"^\| (\d) \|", text, flags=re.M) == ["0", "1", "2"]


def test_the_notebook_example_prints_what_the_readme_shows() -> None:
    (example,) = blocks("python", section("Offline: compare files in CI"))
    shown = re.search(r"print\(.*\)  # (.*)", example).group(1)  # type: ignore[union-attr]
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == shown


def test_the_performance_table_is_the_latest_bench_run() -> None:
    """The README's table holds the target rows of bench/results/latest.md, as written."""
    from bench import readme

    latest = (ROOT / "bench" / "results" / "latest.md").read_text()
    rows = readme.target_rows(latest)
    assert rows, "latest.md has no row with a target"
    assert readme.current_block(README) == readme.render(latest), (
        "README's performance table is not the latest run's: run `python -m bench.readme`"
    )
