"""Which of a service's monitors ConfigMaps holds each DriftMonitor's config.

A ConfigMap holds at most 1 MiB and a 50-feature monitor config tens of kilobytes, so
one ConfigMap would cap a service at a few dozen monitors. The service mounts a fixed
number of them (shards) into its one monitors directory through a projected volume,
and the operator puts each monitor's key in exactly one shard:

- a key that fits where it already is stays there, so restarts, upgrades from the
  unsharded layout and a neighbour's growth move nothing;
- a new key (or one that no longer fits) goes to its preferred shard, a SHA-256 of the
  monitor's name, else to the next shard with room, in turn (linear probing);
- every other shard holding the key gives it up.

Plain functions of plain data; the operator feeds them kopf's index of the shards.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .render import CONFIG_MAP_LIMIT, monitor_key

# Shard numbers are written with three digits, so names sort in shard order.
SHARD_DIGITS = 3
MAX_SHARDS = 10**SHARD_DIGITS
_SHARD_NAME = re.compile(rf"^(?P<service>.+)-monitors(?:-(?P<shard>\d{{{SHARD_DIGITS}}}))?$")


class NoRoomError(Exception):
    """No monitors ConfigMap of the service has room for the monitor's config."""


def shard_name(service: str, shard: int) -> str:
    """The name of a service's monitors ConfigMap `shard` (0 keeps `<service>-monitors`)."""
    if not 0 <= shard < MAX_SHARDS:
        raise ValueError(f"shard: must be 0 to {MAX_SHARDS - 1}, got {shard}")
    base = f"{service}-monitors"
    return base if shard == 0 else f"{base}-{shard:0{SHARD_DIGITS}d}"


def shard_names(service: str, count: int) -> list[str]:
    """The names of a service's `count` monitors ConfigMaps, in shard order."""
    return [shard_name(service, shard) for shard in range(count)]


def parse_shard_name(name: str) -> tuple[str, int] | None:
    """(service, shard) of a monitors ConfigMap's name; None for any other ConfigMap."""
    match = _SHARD_NAME.match(name)
    if match is None:
        return None
    digits = match["shard"]
    if digits is not None and int(digits) == 0:
        return None  # shard 0 is `<service>-monitors`, never `-000`
    return match["service"], int(digits or 0)


def preferred_shard(monitor: str, count: int) -> int:
    """The shard a monitor's key goes to first: its name's SHA-256, the same in every process."""
    digest = hashlib.sha256(monitor.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class MonitorShard:
    """One monitors ConfigMap as the operator's index holds it: its shard and its keys' sizes."""

    shard: int
    sizes: Mapping[str, int]


def _value_bytes(value: Any, binary: bool) -> int:
    # What the API server counts against the limit: the bytes of each value (binaryData
    # decoded), keys not included.
    if not isinstance(value, str):
        return 0
    if binary:
        return len(base64.b64decode(value))
    return len(value) if value.isascii() else len(value.encode())


def shard_entry(config_map: Mapping[str, Any]) -> dict[tuple[str, str], MonitorShard]:
    """Index entry of a ConfigMap (raw object): (namespace, service) -> its shard and key sizes.

    Empty for a ConfigMap that is no service's monitors shard. By name only: the service
    mounts its shards by name, whoever created them.
    """
    metadata = config_map.get("metadata") or {}
    parsed = parse_shard_name(str(metadata.get("name", "")))
    if parsed is None:
        return {}
    service, shard = parsed
    sizes = {key: _value_bytes(v, False) for key, v in (config_map.get("data") or {}).items()}
    for key, value in (config_map.get("binaryData") or {}).items():
        sizes[key] = _value_bytes(value, True)
    return {(str(metadata.get("namespace", "")), service): MonitorShard(shard, sizes)}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a monitor's key is written, and the shards it must leave."""

    shard: int
    release: tuple[int, ...]


def key_holders(
    monitor: str, shards: Mapping[int, Mapping[str, int]], current: int | None = None
) -> set[int]:
    """The shards holding the monitor's key: those `shards` show, and `current` if given."""
    key = monitor_key(monitor)
    holders = {shard for shard, sizes in shards.items() if key in sizes}
    if current is not None:
        holders.add(current)
    return holders


def place_monitor(
    monitor: str,
    size: int,
    shards: Mapping[int, Mapping[str, int]],
    count: int,
    *,
    service: str,
    current: int | None = None,
    refused: Collection[int] = (),
    limit: int = CONFIG_MAP_LIMIT,
) -> Placement:
    """The shard for a monitor's config of `size` bytes, and the other shards holding its key.

    `shards` maps each existing shard to its keys' sizes; `current` is where this process
    last wrote the key (its index may not show that write yet); `refused` are shards the
    API server refused as too large. Raises NoRoomError when no shard below `count` fits it.
    """
    key = monitor_key(monitor)
    holders = key_holders(monitor, shards, current)
    free = {
        shard: limit - sum(v for k, v in shards.get(shard, {}).items() if k != key)
        for shard in range(count)
        if shard not in refused
    }
    first = preferred_shard(monitor, count)
    probe = [(first + step) % count for step in range(count)]
    # Where the key is first: staying moves nothing and reloads nothing elsewhere.
    staying = ([current] if current is not None else []) + [s for s in probe if s in holders]
    for shard in (*staying, *probe):
        if free.get(shard, -1) >= size:
            return Placement(shard, tuple(sorted(holders - {shard})))
    raise NoRoomError(_no_room(service, size, count, free, len(refused), limit))


def _no_room(
    service: str, size: int, count: int, free: Mapping[int, int], refused: int, limit: int
) -> str:
    most = max(free, key=lambda shard: (free[shard], -shard), default=None)
    emptiest = (
        f"the emptiest, {shard_name(service, most)}, has {max(free[most], 0)} bytes free"
        if most is not None
        else "none is left to try"
    )
    if refused:
        emptiest += f" ({refused} refused by the API server as full)"
    names = shard_name(service, 0)
    if count > 1:
        names += f" to {shard_name(service, count - 1)}"
    return (
        f"no monitors ConfigMap of service {service!r} has room for this monitor's config "
        f"({size} bytes; a ConfigMap holds {limit} in all): of {count} ({names}), {emptiest}. "
        "Raise DRIFTLINE_CONTROLLER_MONITOR_SHARDS together with the projected sources of "
        f"the monitors volume of Deployment {service}, or lower spec.baseline.topK or "
        "monitor fewer features"
    )
