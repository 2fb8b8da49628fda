"""Which ConfigMaps and Secrets a DriftMonitor reads, and when a change re-reconciles it."""

from __future__ import annotations

from typing import Any

from driftline.operator.inputs import (
    InputUse,
    freshest_uses,
    monitor_inputs,
    monitors_to_refresh,
    referenced_inputs,
)

# ------------------------------------------------------------------------------ inputs


def monitor(status: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "credit-risk", "namespace": "ml", **metadata},
        "spec": {
            "baseline": {"configMapKeyRef": {"name": "rows", "key": "r.json"}},
            "alerts": [
                {"name": "a", "urlSecretRef": {"name": "hooks", "key": "url"}},
                {
                    "name": "b",
                    "urlSecretRef": {"name": "hooks", "key": "url2"},
                    "signingSecretRef": {"name": "keys", "key": "k"},
                },
            ],
        },
        "status": status or {},
    }


def test_referenced_inputs_are_listed_once() -> None:
    assert referenced_inputs(monitor()["spec"]) == [
        ("ConfigMap", "rows"),
        ("Secret", "hooks"),
        ("Secret", "keys"),
    ]
    assert referenced_inputs({"baseline": {"profile": {}}}) == []


def test_monitor_inputs_carry_the_revision_last_read() -> None:
    entries = monitor_inputs(
        monitor({"inputRevisions": {"ConfigMap/rows": "41", "Secret/hooks": ""}})
    )
    assert entries == {
        ("ConfigMap", "ml", "rows"): InputUse("credit-risk", "41"),
        ("Secret", "ml", "hooks"): InputUse("credit-risk", ""),
        ("Secret", "ml", "keys"): InputUse("credit-risk", None),
    }
    assert monitor_inputs(monitor(deletionTimestamp="2025-01-01T00:00:00Z")) == {}


def test_monitors_are_refreshed_only_when_they_read_another_revision() -> None:
    uses = [InputUse("a", "41"), InputUse("b", "40"), InputUse("c", None), InputUse("d", "")]
    # "c" has not been reconciled yet: its first reconcile reads the input anyway.
    assert monitors_to_refresh(uses, "41") == ["b", "d"]
    assert monitors_to_refresh(uses, "") == ["a", "b"]  # deleted: "d" saw it absent


def test_a_read_this_process_just_made_counts_before_the_status_shows_it() -> None:
    uses = [InputUse("a", None), InputUse("b", "40"), InputUse("c", None)]
    # "a" has just read the ConfigMap as absent; its status does not say so yet.
    reads = {"a": {"ConfigMap/rows": ""}, "b": {"Secret/rows": "7"}}
    fresh = freshest_uses(uses, reads, "ConfigMap", "rows")
    assert fresh == [InputUse("a", ""), InputUse("b", "40"), InputUse("c", None)]
    # The ConfigMap is created: "a" must read it again; "c" will on its first reconcile.
    assert monitors_to_refresh(fresh, "41") == ["a", "b"]
