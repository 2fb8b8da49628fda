"""Which ConfigMaps and Secrets each DriftMonitor reads; when a change must re-reconcile it.

A reconcile records the resourceVersion of every input it read in
status.inputRevisions. When a ConfigMap or Secret changes, the monitors whose recorded
version differs are re-reconciled (by touching an annotation, which kopf sees as an
update), so an edited baseline or a rotated webhook URL reaches the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .kube import KeyedKind

# Touched to make kopf re-run the reconcile of a monitor whose input changed.
INPUT_CHANGED_ANNOTATION = "driftline.io/input-changed"

InputKey = tuple[KeyedKind, str, str]  # kind, namespace, name


@dataclass(frozen=True, slots=True)
class InputUse:
    """A monitor reading an input, and the revision it last read (None: never, "": absent)."""

    monitor: str
    revision: str | None


def revision_key(kind: KeyedKind, name: str) -> str:
    """How an input is named in status.inputRevisions: `ConfigMap/<name>`, `Secret/<name>`."""
    return f"{kind}/{name}"


def _ref_name(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return str(value["name"])
    return None


def referenced_inputs(spec: Mapping[str, Any]) -> list[tuple[KeyedKind, str]]:
    """The ConfigMaps and Secrets a DriftMonitor spec (plain data) names, once each."""
    found: dict[tuple[KeyedKind, str], None] = {}
    baseline = spec.get("baseline")
    if isinstance(baseline, Mapping) and (name := _ref_name(baseline.get("configMapKeyRef"))):
        found[("ConfigMap", name)] = None
    alerts = spec.get("alerts")
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, Mapping):
            continue
        for field in ("urlSecretRef", "signingSecretRef"):
            if name := _ref_name(alert.get(field)):
                found[("Secret", name)] = None
    return list(found)


def monitor_inputs(monitor: Mapping[str, Any]) -> dict[InputKey, InputUse]:
    """Index entries of one DriftMonitor: each input it names -> the revision it last read."""
    metadata = monitor.get("metadata", {})
    if metadata.get("deletionTimestamp"):
        return {}  # being deleted: input changes no longer matter
    recorded = monitor.get("status", {}).get("inputRevisions", {})
    namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
    return {
        (kind, namespace, input_name): InputUse(name, recorded.get(revision_key(kind, input_name)))
        for kind, input_name in referenced_inputs(monitor.get("spec", {}))
    }


def freshest_uses(
    uses: Iterable[InputUse], reads: Mapping[str, Mapping[str, str]], kind: KeyedKind, name: str
) -> list[InputUse]:
    """Uses with the revision this process last read, where that is newer than the index's.

    The index follows the monitors' status, which lags a reconcile that has just read the
    input; `reads` (monitor -> revision key -> revision) is recorded as the input is read.
    """
    key = revision_key(kind, name)
    return [
        InputUse(use.monitor, reads.get(use.monitor, {}).get(key, use.revision)) for use in uses
    ]


def monitors_to_refresh(uses: Iterable[InputUse], revision: str) -> list[str]:
    """Monitors that last read another revision of the input ("" when it is deleted).

    A monitor that has not been reconciled yet (revision None) is left alone: its first
    reconcile reads the input as it is then, and touching it would only queue a second.
    """
    return sorted(
        {use.monitor for use in uses if use.revision is not None and use.revision != revision}
    )
