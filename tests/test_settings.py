"""Settings decoded from environment dicts and settings files, and the CLI's refusal of bad ones."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from driftline.core.limits import Limits
from driftline.core.policy import MonitorDefaults
from driftline.settings import (
    ENVIRONMENT,
    SETTINGS_FILE_VARIABLE,
    Settings,
    SettingsError,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
DRIFTLINE = ROOT / ".venv" / "bin" / "driftline"
if not DRIFTLINE.exists():
    DRIFTLINE = Path(sys.executable).with_name("driftline")


def test_defaults_without_any_environment() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.port == 8080
    assert settings.redis_url is None
    assert settings.monitors_dir is None
    assert settings.baseline_data_path is None
    assert settings.ack_mode == "durable"
    assert settings.limits == Limits()
    assert settings.defaults == MonitorDefaults()
    assert settings.defaults.warning_threshold < settings.defaults.critical_threshold


def test_environment_strings_become_typed_fields() -> None:
    settings = load_settings(
        environ={
            "DRIFTLINE_PORT": "9000",
            "DRIFTLINE_HOST": "127.0.0.1",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "DRIFTLINE_ACK_MODE": "async",
            "DRIFTLINE_FLUSH_INTERVAL": "0.5",
            "DRIFTLINE_MAX_BATCH_EVENTS": "20",
            "DRIFTLINE_BONFERRONI": "true",
            "UNRELATED": "ignored",
        }
    )
    assert settings.port == 9000
    assert isinstance(settings.port, int)
    assert settings.host == "127.0.0.1"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.ack_mode == "async"
    assert settings.flush_interval == 0.5
    assert settings.limits.max_batch_events == 20
    assert settings.defaults.bonferroni is True


def test_tests_and_multiple_testing_defaults() -> None:
    settings = load_settings(
        environ={
            "DRIFTLINE_TEST": "jensenshannon",
            "DRIFTLINE_MULTIPLE_TESTING": "bh",
            "DRIFT_NOTICE_THRESHOLD": "0.05",
        }
    )
    assert settings.defaults.test == "jensenshannon"
    assert settings.defaults.multiple_testing == "bh"
    assert settings.defaults.notice_threshold == 0.05


def test_empty_variable_means_unset() -> None:
    assert load_settings(environ={"DRIFTLINE_PORT": "", "REDIS_URL": ""}) == Settings()


def test_drift_thresholds_map_into_defaults() -> None:
    settings = load_settings(
        environ={"DRIFT_WARNING_THRESHOLD": "0.1", "DRIFT_CRITICAL_THRESHOLD": "0.3"}
    )
    assert settings.defaults.warning_threshold == 0.1
    assert settings.defaults.critical_threshold == 0.3
    # Only the two thresholds moved.
    assert settings.defaults.alpha == MonitorDefaults().alpha
    assert settings.defaults.window_seconds == MonitorDefaults().window_seconds


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"DRIFTLINE_PORT": "abc"}, ("DRIFTLINE_PORT",)),
        ({"DRIFTLINE_PORT": "70000"}, ("DRIFTLINE_PORT",)),
        ({"DRIFTLINE_ACK_MODE": "sometimes"}, ("DRIFTLINE_ACK_MODE",)),
        ({"DRIFT_WARNING_THRESHOLD": "-1"}, ("DRIFT_WARNING_THRESHOLD",)),
        (
            {"DRIFT_CRITICAL_THRESHOLD": "0.1"},
            ("DRIFT_CRITICAL_THRESHOLD", "critical_threshold"),
        ),
        (
            {"DRIFT_WARNING_THRESHOLD": "0.4", "DRIFT_CRITICAL_THRESHOLD": "0.3"},
            ("DRIFT_CRITICAL_THRESHOLD", "critical_threshold"),
        ),
        (
            {"DRIFTLINE_WINDOW_SECONDS": "100", "DRIFTLINE_BUCKET_SECONDS": "60"},
            ("DRIFTLINE_WINDOW_SECONDS", "window_seconds"),
        ),
        ({"DRIFTLINE_MIN_SAMPLES": "9"}, ("DRIFTLINE_MIN_SAMPLES",)),
        ({"DRIFTLINE_TEST": "t-test"}, ("DRIFTLINE_TEST",)),
        ({"DRIFTLINE_EVENT_LOOP": "trio"}, ("DRIFTLINE_EVENT_LOOP",)),
        (
            {"DRIFT_NOTICE_THRESHOLD": "0.3"},
            ("DRIFT_NOTICE_THRESHOLD", "defaults.notice_threshold"),
        ),
        (
            {"DRIFTLINE_MULTIPLE_TESTING": "holm", "DRIFTLINE_BONFERRONI": "true"},
            ("DRIFTLINE_MULTIPLE_TESTING (defaults.multiple_testing): holm contradicts",),
        ),
    ],
)
def test_bad_value_names_the_variable_or_field(
    environ: dict[str, str], names: tuple[str, ...]
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ=environ)
    message = str(info.value)
    assert any(name in message for name in names), message


def test_the_event_loop_is_uvloop_unless_asked_for_asyncio() -> None:
    assert load_settings(environ={}).event_loop == "uvloop"
    assert load_settings(environ={"DRIFTLINE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_uvloop_where_it_is_not_installed_is_refused_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a platform without uvloop (Windows) sees when a file or variable asks for it.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"DRIFTLINE_EVENT_LOOP": "uvloop"})
    message = str(info.value)
    assert message.startswith("DRIFTLINE_EVENT_LOOP (event_loop): "), message
    assert 'expected "asyncio"' in message and "pip install uvloop" in message, message
    assert load_settings(environ={"DRIFTLINE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_every_documented_variable_maps_to_a_real_field() -> None:
    for variable, (section, field) in ENVIRONMENT.items():
        target = Settings if section is None else type(getattr(Settings(), section))
        assert field in target.__struct_fields__, f"{variable} -> {section}.{field}"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_settings_file_is_read_and_environment_wins(tmp_path: Path, suffix: str) -> None:
    document = {
        "port": 9100,
        "host": "127.0.0.1",
        "ack_mode": "async",
        "redis_url": "redis://127.0.0.1:1/0",
        "defaults": {"warning_threshold": 0.15, "critical_threshold": 0.45},
        "limits": {"max_features": 50},
    }
    path = tmp_path / f"settings{suffix}"
    path.write_bytes(
        msgspec.yaml.encode(document) if suffix == ".yaml" else json.dumps(document).encode()
    )

    from_file = load_settings(environ={SETTINGS_FILE_VARIABLE: str(path)})
    assert from_file.port == 9100
    assert from_file.ack_mode == "async"
    assert from_file.defaults.warning_threshold == 0.15
    assert from_file.defaults.critical_threshold == 0.45
    assert from_file.limits.max_features == 50

    both = load_settings(
        environ={
            SETTINGS_FILE_VARIABLE: str(path),
            "DRIFTLINE_PORT": "9200",
            "DRIFT_WARNING_THRESHOLD": "0.1",
        }
    )
    assert both.port == 9200  # env wins
    assert both.defaults.warning_threshold == 0.1  # env wins inside a section ...
    assert both.defaults.critical_threshold == 0.45  # ... and the file's siblings stay
    assert both.ack_mode == "async"
    assert both.limits.max_features == 50


def test_settings_file_with_bad_field_names_it(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("port: 8080\nflush_intervall: 0.1\n")
    with pytest.raises(SettingsError, match="flush_intervall"):
        load_settings(environ={SETTINGS_FILE_VARIABLE: str(path)})


def _clean_environment() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != SETTINGS_FILE_VARIABLE
    }


@pytest.mark.parametrize(
    ("variable", "value", "args"),
    [
        # No --port here: the command line would win over the variable.
        ("DRIFTLINE_PORT", "abc", ["--host", "127.0.0.1"]),
        ("DRIFT_CRITICAL_THRESHOLD", "0.01", ["--host", "127.0.0.1", "--port", "0"]),
    ],
)
def test_serve_with_invalid_environment_exits_2(variable: str, value: str, args: list[str]) -> None:
    env = _clean_environment()
    env[variable] = value
    # A server that started anyway would block here until the timeout kills it and fails.
    result = subprocess.run(
        [str(DRIFTLINE), "serve", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "invalid settings" in result.stderr
    assert variable in result.stderr or "critical_threshold" in result.stderr, result.stderr
    assert result.stdout == ""
