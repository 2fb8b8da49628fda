"""Timestamps as the API, alerts and logs write them: RFC 3339, UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat(moment: float | datetime) -> str:
    """`2025-05-29T10:30:00.000Z` for epoch seconds or an aware datetime."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_isoformat(text: str) -> datetime:
    """The aware datetime of a timestamp written by `isoformat` (or any RFC 3339 one)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
