"""Drift history in Redis: one fixed-size ring string per monitor layout, beside the window.

    driftline:{<monitor>}:history:<layout_id>:<slots>

holds `slots` records of `record_bytes` each (driftline.core.history), allocated whole
on the first write, so a monitor's history costs the same memory whatever its traffic.
`history.lua` writes a bucket's record only when its slot holds an older bucket, so of
the replicas that close a bucket one writes it. The `{<monitor>}` hash tag keeps the
ring in the window's Redis Cluster slot, and the window's drop (a SCAN of the tag)
deletes it with the window.
"""

from __future__ import annotations

import importlib.resources

from driftline.core.history import HistorySpec
from driftline.stores.protocol import StoreUnavailableError, validate_record
from driftline.stores.redis import delete_matching, monitor_pattern
from driftline.stores.redis_client import KEY_ROOT, REDIS_FAILURES, RedisClient, StoredScript

SCRIPT = (
    importlib.resources.files("driftline.stores")
    .joinpath("history.lua")
    .read_text(encoding="utf-8")
)


def history_key(spec: HistorySpec) -> str:
    """The key holding one monitor layout's history ring."""
    return f"{KEY_ROOT}:{{{spec.monitor}}}:history:{spec.layout_id}:{spec.slots}"


def lifetime(spec: HistorySpec) -> int:
    """How long a ring outlives its last write: the horizon and two buckets more."""
    return (spec.slots + 2) * spec.bucket_seconds


class RedisHistoryStore:
    """History rings in Redis, shared by every replica."""

    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._script = StoredScript(client, SCRIPT)

    async def record(self, spec: HistorySpec, bucket: int, record: bytes) -> bool:
        """Write the bucket's record unless its slot holds this bucket or a later one."""
        validate_record(spec, bucket, record)
        try:
            written = await self._script(
                keys=[history_key(spec)],
                args=[record, spec.slot_of(bucket), spec.slots, lifetime(spec)],
            )
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"history write failed: {exc}") from exc
        return bool(int(written))

    async def read(self, spec: HistorySpec, first: int, last: int) -> list[bytes]:
        """GETRANGE of the slots of buckets `first`..`last` (two when the range wraps)."""
        key = history_key(spec)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for offset, length in spec.ranges(first, last):
                    pipe.getrange(key, offset, offset + length - 1)
                chunks: list[bytes] = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"history read failed: {exc}") from exc
        return spec.records_in(chunks, first, last)

    async def drop(self, monitor: str) -> None:
        """Delete the monitor's rings, every layout."""
        try:
            await delete_matching(self._client, monitor_pattern(monitor, "history:*"))
        except REDIS_FAILURES as exc:
            raise StoreUnavailableError(f"history drop of {monitor!r} failed: {exc}") from exc
