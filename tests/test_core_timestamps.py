"""Timestamps as the API writes them, kept for repeats (driftline.core.timestamps)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from driftline.core.timestamps import RECENT, isoformat, parse_isoformat


def expected(moment: float) -> str:
    """RFC 3339 with milliseconds (truncated, as datetime.isoformat does) and `Z`."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=moment)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def test_epoch_seconds_format_alike_first_and_repeated() -> None:
    rnd = random.Random(3)
    moments = [rnd.uniform(0, 4e9) for _ in range(3 * RECENT)]
    # Each moment twice in a row (a kept text), then all again after the memo filled up.
    for moment in moments:
        assert isoformat(moment) == isoformat(moment) == expected(moment)
    assert [isoformat(m) for m in moments] == [expected(m) for m in moments]


def test_aware_datetimes_are_written_in_utc_and_read_back() -> None:
    local = datetime(2025, 5, 29, 12, 30, 0, 123456, tzinfo=UTC).astimezone()
    text = isoformat(local)
    assert text == "2025-05-29T12:30:00.123Z"
    assert parse_isoformat(text) == datetime(2025, 5, 29, 12, 30, 0, 123000, tzinfo=UTC)
    assert isoformat(1748521800.5) == "2025-05-29T12:30:00.500Z"
