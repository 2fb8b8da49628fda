"""Timestamps as the API, alerts and logs write them: RFC 3339, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime

RECENT = 64
"""Epoch seconds formatted lately, kept with their text: an assessment writes its moment
twice and its window's start once, and the evaluation loop assesses a batch of windows
read at one server time (~3 µs a format, 3,000 a second for a fleet of 1,000)."""
_recent: dict[float, str] = {}


def isoformat(moment: float | datetime) -> str:
    """`2025-05-29T10:30:00.000Z` for epoch seconds or an aware datetime."""
    if isinstance(moment, datetime):
        return _written(moment)
    text = _recent.get(moment)
    if text is None:
        if len(_recent) >= RECENT:
            _recent.clear()
        text = _recent[moment] = _written(datetime.fromtimestamp(moment, UTC))
    return text


def _written(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_isoformat(text: str) -> datetime:
    """The aware datetime of a timestamp written by `isoformat` (or any RFC 3339 one)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
