"""Alert receiver configuration: loading the alerts directory, and who hears which change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from driftline.core.receivers import Receiver, ReceiverConfigError, load_receivers
from driftline.core.severity import Severity

NONE, WARNING, CRITICAL = Severity.NONE, Severity.WARNING, Severity.CRITICAL


def write_alerts(directory: Path, name: str, document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    (directory / name).write_text(text)


def test_receivers_load_per_monitor(tmp_path: Path) -> None:
    write_alerts(
        tmp_path,
        "credit-risk.json",
        {
            "receivers": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": "https://hooks.example/x",
                    "signing_secret": "k",
                },
                {
                    "name": "pager",
                    "type": "alertmanager",
                    "url": "http://am:9093",
                    "min_severity": "critical",
                },
            ]
        },
    )
    write_alerts(tmp_path, "fraud.json", {"receivers": []})
    write_alerts(tmp_path, ".hidden.json", "not json")
    write_alerts(tmp_path, "notes.txt", "not json either")
    loaded = load_receivers(tmp_path)
    assert set(loaded) == {"credit-risk", "fraud"}
    hook, pager = loaded["credit-risk"]
    assert (hook.name, hook.type, hook.signing_secret, hook.min_severity) == (
        "hook",
        "webhook",
        "k",
        "warning",
    )
    assert (pager.type, pager.min_severity, pager.signing_secret) == (
        "alertmanager",
        "critical",
        None,
    )
    assert loaded["fraud"] == []


SECRET_URL = "https://hooks.example/T0KEN-abc123"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("{not json", "malformed"),
        ({"receivers": [{"name": "a", "type": "pager", "url": SECRET_URL}]}, "type"),
        ({"receivers": [{"name": "a", "type": "webhook"}]}, "url"),
        ({"receivers": [{"name": "a", "type": "webhook", "url": "ftp://T0KEN-abc123"}]}, "url"),
        ({"receivers": [{"name": "", "type": "webhook", "url": SECRET_URL}]}, "name"),
        (
            {"receivers": [{"name": "a", "type": "slack", "url": SECRET_URL, "min_severity": "x"}]},
            "min_severity",
        ),
        (
            {"receivers": [{"name": "a", "type": "slack", "url": SECRET_URL, "api_key": "t"}]},
            "api_key",
        ),
        (
            {
                "receivers": [
                    {"name": "a", "type": "slack", "url": SECRET_URL},
                    {"name": "a", "type": "webhook", "url": SECRET_URL},
                ]
            },
            "unique",
        ),
        ({"receivers": {"name": "a"}}, "receivers"),
    ],
)
def test_bad_receiver_files_name_file_and_field_not_url(
    tmp_path: Path, document: Any, expected: str
) -> None:
    write_alerts(tmp_path, "credit-risk.json", document)
    with pytest.raises(ReceiverConfigError) as caught:
        load_receivers(tmp_path)
    message = str(caught.value)
    assert message.startswith("credit-risk.json: "), message
    assert expected in message, message
    assert "T0KEN" not in message and "hooks.example" not in message, message


@pytest.mark.parametrize(
    ("min_severity", "previous", "severity", "wanted"),
    [
        ("warning", NONE, WARNING, True),
        ("warning", WARNING, CRITICAL, True),
        ("warning", WARNING, NONE, True),
        ("critical", NONE, WARNING, False),
        ("critical", WARNING, CRITICAL, True),
        ("critical", NONE, CRITICAL, True),
        ("critical", CRITICAL, WARNING, True),  # the end of the critical episode it heard of
        ("critical", CRITICAL, NONE, True),
        ("critical", WARNING, NONE, False),
    ],
)
def test_minimum_severity(
    min_severity: Any, previous: Severity, severity: Severity, wanted: bool
) -> None:
    receiver = Receiver("r", "webhook", "http://127.0.0.1/", min_severity=min_severity)
    assert receiver.wants(severity, previous) is wanted
