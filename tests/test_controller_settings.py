"""The operator's settings from the environment and flags, and `driftline controller`."""

from __future__ import annotations

from typing import Any

import pytest

from driftline.cli import parser
from driftline.operator.settings import ControllerSettingsError, load_controller_settings

# ---------------------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    settings = load_controller_settings({})
    assert settings.namespaces == ()
    assert settings.replica_capacity == 2000
    assert (settings.min_replicas, settings.max_replicas) == (2, 20)
    assert settings.cpu_utilization == 70
    assert settings.status_interval == 30
    assert settings.monitor_shards == 128


def test_monitor_shards_from_the_environment() -> None:
    settings = load_controller_settings({"DRIFTLINE_CONTROLLER_MONITOR_SHARDS": "4"})
    assert settings.monitor_shards == 4


def test_settings_from_environment_and_flags_win() -> None:
    env = {
        "DRIFTLINE_CONTROLLER_NAMESPACES": "ml, fraud",
        "DRIFTLINE_CONTROLLER_REPLICA_CAPACITY": "1500",
        "DRIFTLINE_CONTROLLER_MAX_REPLICAS": "8",
    }
    settings = load_controller_settings(env, max_replicas=12, namespaces=[])
    assert settings.namespaces == ("ml", "fraud")
    assert settings.replica_capacity == 1500
    assert settings.max_replicas == 12


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        ({"DRIFTLINE_CONTROLLER_MIN_REPLICAS": "zero"}, {}, "DRIFTLINE_CONTROLLER_MIN_REPLICAS"),
        (
            {"DRIFTLINE_CONTROLLER_REPLICA_CAPACITY": "-5"},
            {},
            "DRIFTLINE_CONTROLLER_REPLICA_CAPACITY",
        ),
        ({"DRIFTLINE_CONTROLLER_MAX_REPLICAS": "1"}, {}, "DRIFTLINE_CONTROLLER_MAX_REPLICAS"),
        # Shard names carry three digits: -001 to -999 beside <service>-monitors.
        ({"DRIFTLINE_CONTROLLER_MONITOR_SHARDS": "0"}, {}, "DRIFTLINE_CONTROLLER_MONITOR_SHARDS"),
        (
            {"DRIFTLINE_CONTROLLER_MONITOR_SHARDS": "1001"},
            {},
            "DRIFTLINE_CONTROLLER_MONITOR_SHARDS",
        ),
        ({}, {"min_replicas": 5, "max_replicas": 3}, "max_replicas: must be at least"),
    ],
)
def test_bad_settings_name_the_variable(
    env: dict[str, str], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ControllerSettingsError, match=message):
        load_controller_settings(env, **overrides)


def test_cli_controller_subcommand_takes_namespaces_and_settings() -> None:
    args = parser().parse_args(
        ["controller", "--namespace", "ml", "--namespace", "fraud", "--replica-capacity", "900"]
    )
    assert args.namespace == ["ml", "fraud"]
    assert args.replica_capacity == 900.0
    assert args.max_replicas is None  # unset flags leave the environment's value
    assert parser().parse_args(["controller"]).namespace == []


def test_cli_controller_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.cli import main

    assert main(["controller", "--min-replicas", "9", "--max-replicas", "3"]) == 2
    assert "invalid controller settings" in capsys.readouterr().err
