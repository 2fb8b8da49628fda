"""Alert history: what the API shows of a monitor's alerts, and acknowledgements."""

from __future__ import annotations

import time
from collections.abc import Callable

from driftline.alerts.store import Acknowledgement, AlertRecord, AlertStore
from driftline.core.severity import Severity
from driftline.settings import AlertSettings


class AlertLog:
    """A monitor's alerts newest first, with delivery states; acknowledgements."""

    def __init__(
        self, store: AlertStore, settings: AlertSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    async def latest(self, monitor: str, limit: int) -> tuple[Severity, list[AlertRecord]]:
        """The severity last announced and the monitor's latest `limit` alerts, newest first."""
        records = await self._store.history(monitor, limit)
        return await self._store.severity(monitor), records

    async def acknowledge(
        self, monitor: str, seq: int, by: str, comment: str
    ) -> tuple[AlertRecord, bool] | None:
        """Record that someone has seen an alert: (record, whether this was the first ack).

        None when the alert is unknown; an alert keeps its first acknowledgement.
        """
        ack = Acknowledgement(by=by, at=self._clock(), comment=comment)
        return await self._store.acknowledge(monitor, seq, ack, self._settings.history_seconds)
