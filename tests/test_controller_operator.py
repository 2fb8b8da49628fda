"""The operator's kopf settings: change detection, its own names, standalone mode, logging."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf

from driftline.operator import QuietTimerSuccess
from driftline.operator.inputs import (
    INPUT_CHANGED_ANNOTATION,
)
from driftline.operator.operator import STATUS_TIMER, SpecDigestDiffBaseStorage, operator_settings

# ----------------------------------------------------------------------- kopf settings


def test_kopf_keeps_a_digest_of_the_spec_not_the_spec() -> None:
    storage = SpecDigestDiffBaseStorage(prefix="driftline.io", key="last-handled-configuration")
    big = {"baseline": {"profile": {"features": {"x": list(range(50_000))}}}, "model": "m"}
    body = kopf.Body({"metadata": {"name": "m", "annotations": {"a": "1"}}, "spec": big})
    essence = storage.build(body=body)
    assert set(essence["spec"]) == {"sha256"}
    assert essence["metadata"]["annotations"] == {"a": "1"}
    changed = kopf.Body({"metadata": {"name": "m"}, "spec": {**big, "model": "n"}})
    assert storage.build(body=changed)["spec"] != essence["spec"]
    same = kopf.Body({"metadata": {"name": "m"}, "spec": dict(reversed(big.items()))})
    assert storage.build(body=same)["spec"] == essence["spec"]


def kopf_essence(settings: kopf.OperatorSettings, raw: dict[str, Any]) -> Any:
    """What kopf compares to decide an update happened (as kopf's processing does)."""
    body = kopf.Body(raw)
    essence = settings.persistence.diffbase_storage.build(body=body)
    return settings.persistence.progress_storage.clear(essence=essence)


def test_an_input_change_annotation_is_an_update_for_kopf_but_its_own_are_not() -> None:
    settings = operator_settings()
    raw: dict[str, Any] = {"metadata": {"name": "m", "annotations": {}}, "spec": {"model": "x"}}
    before = kopf_essence(settings, raw)
    progress = copy.deepcopy(raw)
    progress["metadata"]["annotations"]["kopf.driftline.io/reconcile"] = '{"retries": 1}'
    assert kopf_essence(settings, progress) == before
    touched = copy.deepcopy(raw)
    touched["metadata"]["annotations"][INPUT_CHANGED_ANNOTATION] = "ConfigMap/rows@42"
    assert kopf_essence(settings, touched) != before


def test_kopf_settings_use_driftline_names_and_standalone_mode() -> None:
    settings = operator_settings()
    assert settings.persistence.finalizer == "driftline.io/finalizer"
    assert settings.peering.standalone is True
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)


def test_kopf_waits_for_its_own_patch_longer_than_a_busy_watch_lags() -> None:
    # With kopf's default 5 s, a watch that lagged ~30 s (200 monitors created on a loaded
    # 2-core machine) had kopf handle each pre-patch event again: a second "creation".
    assert operator_settings().persistence.consistency_timeout >= 60


def test_status_refresh_successes_are_not_logged_but_everything_else_is() -> None:
    quiet = QuietTimerSuccess()

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    assert not quiet.filter(record(logging.INFO, f"Timer '{STATUS_TIMER}' succeeded."))
    assert quiet.filter(record(logging.ERROR, f"Timer '{STATUS_TIMER}' failed temporarily: x"))
    assert quiet.filter(record(logging.INFO, "Handler 'reconcile' succeeded."))
