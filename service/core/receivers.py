"""Alert receivers as configured: who hears of a monitor's severity changes, in which format.

Receivers come from the alerts directory (the operator's `<service>-alerts` Secret,
mounted): one `<monitor>.json` per monitor, `{"receivers": [...]}`. Each receiver is a
generic webhook, a Slack incoming webhook, Alertmanager's v2 alerts API, or a retraining
trigger: a GitHub Actions `repository_dispatch`, an Argo Events webhook event source or
a generic CI trigger (the payloads are driftline.alerts.payloads'; docs/retraining.md).
URLs, keys and tokens are secrets: they are never logged, and receivers are named in
logs and metrics by their `name` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from driftline.core.severity import Severity

ReceiverType = Literal["webhook", "slack", "alertmanager", "github", "argo", "ci"]
TRIGGERS = frozenset({"github", "argo", "ci"})
"""Receivers that start a retraining pipeline: they hear escalations only."""


class Receiver(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One alert endpoint of a monitor."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    type: ReceiverType
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    signing_secret: str | None = None
    # notice: also the informational tier (a significant change below warning)
    min_severity: Literal["notice", "warning", "critical"] = "warning"
    # Sent as `Authorization: Bearer <token>`: required by github, optional for argo and ci.
    token: str | None = None
    # github: the repository_dispatch event type the workflow listens for.
    event_type: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "driftline-drift"

    def wants(self, severity: Severity, previous: Severity) -> bool:
        """Whether this receiver hears of a change from `previous` to `severity`.

        Escalations reach it at or above its minimum; a change down (or resolved) reaches
        it when the severity it was told about was at or above it, so it hears the end
        of every episode it heard the start of. A retraining trigger hears escalations
        only: a pipeline runs when drift starts or worsens, not when it ends.
        """
        floor = Severity(self.min_severity).rank
        if self.type in TRIGGERS:
            return severity.rank >= floor and severity.rank > previous.rank
        return max(severity.rank, previous.rank) >= floor


class ReceiverFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A `<monitor>.json` file of the alerts directory."""

    receivers: list[Receiver] = []


class ReceiverConfigError(ValueError):
    """An alerts file that cannot be used; the message names the file and field (never a URL)."""


def load_receivers(directory: Path) -> dict[str, list[Receiver]]:
    """Receivers per monitor name from `<monitor>.json` files; bad files raise."""
    receivers: dict[str, list[Receiver]] = {}
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            parsed = msgspec.json.decode(path.read_bytes(), type=ReceiverFile)
        except (OSError, msgspec.DecodeError) as exc:
            # msgspec messages quote the offending value's path, not the value: safe to log.
            raise ReceiverConfigError(f"{path.name}: {exc}") from None
        names = [r.name for r in parsed.receivers]
        if len(names) != len(set(names)):
            raise ReceiverConfigError(f"{path.name}: receivers: names must be unique")
        for i, receiver in enumerate(parsed.receivers):
            if receiver.type == "github" and not receiver.token:
                raise ReceiverConfigError(
                    f"{path.name}: receivers[{i}].token: required for a github receiver "
                    "(a token that may create repository_dispatch events)"
                )
        receivers[path.stem] = parsed.receivers
    return receivers
