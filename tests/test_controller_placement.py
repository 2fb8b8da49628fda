"""Which monitors ConfigMap (shard) holds each DriftMonitor's config (no cluster).

Placement is a plain function of the shards' key sizes: these tests drive it the way the
operator does, applying each placement to the shards as the API server would.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Mapping

import pytest

from driftline.operator.placement import (
    MAX_SHARDS,
    NoRoomError,
    Placement,
    parse_shard_name,
    place_monitor,
    preferred_shard,
    shard_entry,
    shard_name,
    shard_names,
)
from driftline.operator.render import CONFIG_MAP_LIMIT
from driftline.operator.settings import ControllerSettings, load_controller_settings

Shards = dict[int, dict[str, int]]
DEFAULT_SHARDS = ControllerSettings().monitor_shards
# A 50-feature monitor config (30 numeric, 20 categorical features) at the default bins
# and topK: ~22 KB with 8 categories per feature (bench/fleet.py), ~61 KB when every
# categorical feature keeps its 100 categories; the brief's realistic figure is ~39 KB.
FLEET_CONFIG = 39_000
WIDE_CONFIG = 61_000


def apply(shards: Shards, monitor: str, size: int, placement: Placement) -> None:
    """What the operator's writes do: set the key in one shard, remove it from the others."""
    key = f"{monitor}.json"
    shards.setdefault(placement.shard, {})[key] = size
    for shard in placement.release:
        shards[shard].pop(key, None)


def holders(shards: Mapping[int, Mapping[str, int]], monitor: str) -> list[int]:
    return sorted(s for s, sizes in shards.items() if f"{monitor}.json" in sizes)


def name_preferring(shard: int, count: int, prefix: str = "m") -> str:
    return next(
        f"{prefix}-{i}" for i in range(10_000) if preferred_shard(f"{prefix}-{i}", count) == shard
    )


# ----------------------------------------------------------------------------- names


def test_shard_zero_keeps_the_unsharded_name_and_the_others_sort_in_order() -> None:
    names = shard_names("driftline", MAX_SHARDS)
    assert names[:3] == ["driftline-monitors", "driftline-monitors-001", "driftline-monitors-002"]
    assert names[-1] == "driftline-monitors-999"
    assert sorted(names) == names  # kubectl lists them in shard order
    assert [parse_shard_name(n) for n in names] == [("driftline", s) for s in range(MAX_SHARDS)]
    with pytest.raises(ValueError, match="shard: must be 0 to 999, got 1000"):
        shard_name("driftline", MAX_SHARDS)


def test_the_settings_allow_as_many_shards_as_there_are_names() -> None:
    most = load_controller_settings({"DRIFTLINE_CONTROLLER_MONITOR_SHARDS": str(MAX_SHARDS)})
    assert len(set(shard_names("driftline", most.monitor_shards))) == MAX_SHARDS


@pytest.mark.parametrize(
    "name",
    [
        "driftline",
        "driftline-monitors-000",
        "driftline-monitors-1",
        "driftline-monitors-1000",
        "driftline-monitors-01a",
        "credit-risk-baseline",
        "-monitors",
    ],
)
def test_other_config_map_names_are_no_shard(name: str) -> None:
    assert parse_shard_name(name) is None


def test_a_service_whose_name_looks_like_a_shard_still_parses_as_itself() -> None:
    assert parse_shard_name("a-monitors-003-monitors") == ("a-monitors-003", 0)
    assert parse_shard_name("a-monitors-003-monitors-004") == ("a-monitors-003", 4)


# ------------------------------------------------------------------------ preference


def test_the_preferred_shard_is_the_same_in_every_process() -> None:
    # SHA-256, not Python's hash(): another interpreter (another PYTHONHASHSEED) agrees.
    code = (
        "from driftline.operator.placement import preferred_shard;"
        "print([preferred_shard(f'm-{i}', 128) for i in range(50)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == str([preferred_shard(f"m-{i}", 128) for i in range(50)])
    assert preferred_shard("credit-risk", 128) == 28  # pinned: a change would move every key


def test_preferences_spread_over_every_shard() -> None:
    counts = Counter(preferred_shard(f"fleet-{i:04d}", DEFAULT_SHARDS) for i in range(1000))
    assert set(counts) == set(range(DEFAULT_SHARDS))
    assert max(counts.values()) <= 20  # mean 7.8


# ------------------------------------------------------------------------- placement


def test_a_new_key_goes_to_its_preferred_shard() -> None:
    placed = place_monitor("credit-risk", 10_000, {}, 128, service="driftline")
    assert placed == Placement(preferred_shard("credit-risk", 128), ())


def test_a_full_preferred_shard_passes_the_key_to_the_next_with_room_wrapping_around() -> None:
    monitor = name_preferring(3, 4)
    shards: Shards = {3: {"big.json": CONFIG_MAP_LIMIT - 100}, 0: {"other.json": 500}}
    assert place_monitor(monitor, 200, shards, 4, service="s").shard == 0
    shards[0]["other.json"] = CONFIG_MAP_LIMIT - 100
    assert place_monitor(monitor, 200, shards, 4, service="s").shard == 1


def test_a_key_that_fills_a_shard_exactly_fits() -> None:
    monitor = name_preferring(0, 2)
    shards: Shards = {0: {"other.json": CONFIG_MAP_LIMIT - 1000}}
    assert place_monitor(monitor, 1000, shards, 2, service="s").shard == 0
    assert place_monitor(monitor, 1001, shards, 2, service="s").shard == 1


def test_a_key_that_fits_where_it_is_stays_there_even_off_its_preference() -> None:
    # The unsharded layout: every key in <service>-monitors. Nothing moves on upgrade.
    monitor = name_preferring(5, 8)
    shards: Shards = {0: {f"{monitor}.json": 30_000, "other.json": 40_000}}
    assert place_monitor(monitor, 31_000, shards, 8, service="s") == Placement(0, ())


def test_a_key_in_two_shards_keeps_one_and_leaves_the_other() -> None:
    monitor = name_preferring(5, 8)
    shards: Shards = {0: {f"{monitor}.json": 30_000}, 5: {f"{monitor}.json": 30_000}}
    placed = place_monitor(monitor, 30_000, shards, 8, service="s")
    assert placed == Placement(5, (0,))
    apply(shards, monitor, 30_000, placed)
    assert holders(shards, monitor) == [5]


def test_a_key_that_outgrew_its_shard_moves_and_leaves_it() -> None:
    monitor = name_preferring(1, 4)
    shards: Shards = {1: {f"{monitor}.json": 10_000, "neighbour.json": CONFIG_MAP_LIMIT - 20_000}}
    placed = place_monitor(monitor, 30_000, shards, 4, service="s")
    assert placed == Placement(2, (1,))


def test_a_key_beyond_a_lowered_shard_count_moves_below_it() -> None:
    monitor = name_preferring(2, 4)
    shards: Shards = {9: {f"{monitor}.json": 10_000}}
    assert place_monitor(monitor, 10_000, shards, 4, service="s") == Placement(2, (9,))


def test_the_last_write_of_this_process_wins_over_a_lagging_index() -> None:
    # Written to shard 3 a moment ago; the watch still shows the key where it was (1).
    monitor = name_preferring(1, 4)
    shards: Shards = {1: {f"{monitor}.json": 10_000}}
    assert place_monitor(monitor, 10_000, shards, 4, service="s", current=3) == Placement(3, (1,))


def test_shards_the_api_server_refused_are_skipped() -> None:
    monitor = name_preferring(1, 4)
    placed = place_monitor(monitor, 10_000, {}, 4, service="s", refused={1, 2})
    assert placed.shard == 3


def test_no_room_anywhere_names_the_sizes_and_what_to_do() -> None:
    shards: Shards = {s: {f"o{s}.json": CONFIG_MAP_LIMIT - 5_000 + s} for s in range(4)}
    with pytest.raises(NoRoomError) as raised:
        place_monitor("credit-risk", 20_000, shards, 4, service="driftline", refused={3})
    message = str(raised.value)
    assert "service 'driftline'" in message
    assert "(20000 bytes; a ConfigMap holds 1048576 in all)" in message
    assert "of 4 (driftline-monitors to driftline-monitors-003)" in message
    assert "the emptiest, driftline-monitors, has 5000 bytes free" in message
    assert "(1 refused by the API server as full)" in message
    assert "DRIFTLINE_CONTROLLER_MONITOR_SHARDS" in message
    assert "Deployment driftline" in message
    assert "spec.baseline.topK" in message


def test_no_room_with_one_shard_names_it_once() -> None:
    shards: Shards = {0: {"other.json": CONFIG_MAP_LIMIT}}
    with pytest.raises(NoRoomError, match=r"of 1 \(driftline-monitors\), the emptiest"):
        place_monitor("credit-risk", 1, shards, 1, service="driftline")


# ------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("size", [FLEET_CONFIG, WIDE_CONFIG])
def test_the_default_shards_hold_a_thousand_fifty_feature_monitors(size: int) -> None:
    shards: Shards = {}
    names = [f"fleet-{i:04d}" for i in range(1000)]
    for name in names:
        apply(shards, name, size, place_monitor(name, size, shards, DEFAULT_SHARDS, service="s"))
    assert all(len(holders(shards, name)) == 1 for name in names)
    assert max(sum(s.values()) for s in shards.values()) <= CONFIG_MAP_LIMIT
    # A restart derives the same places from the shards: nothing moves, nothing released.
    for name in names:
        (shard,) = holders(shards, name)
        assert place_monitor(name, size, shards, DEFAULT_SHARDS, service="s") == Placement(
            shard, ()
        )


def test_probing_fills_shards_far_beyond_what_preferences_alone_would() -> None:
    # 2 shards of 1 MiB, 46 monitors of 44 KB (2 MB): preferences alone overflow one.
    shards: Shards = {}
    names = [f"wide-{i:02d}" for i in range(46)]
    preferred = Counter(preferred_shard(name, 2) for name in names)
    assert max(preferred.values()) * 44_000 > CONFIG_MAP_LIMIT
    for name in names:
        apply(shards, name, 44_000, place_monitor(name, 44_000, shards, 2, service="s"))
    assert sorted(len(s) for s in shards.values()) == [23, 23]
    with pytest.raises(NoRoomError):
        place_monitor("one-more", 44_000, shards, 2, service="s")


# ------------------------------------------------------------------------ index entry


def test_a_shard_config_map_is_indexed_by_its_service_with_value_bytes() -> None:
    entry = shard_entry(
        {
            "metadata": {"name": "driftline-monitors-007", "namespace": "ml"},
            "data": {"a.json": "x" * 10, "b.json": "é" * 10},
            "binaryData": {"c.bin": "AAAA"},
        }
    )
    ((key, shard),) = entry.items()
    assert key == ("ml", "driftline")
    assert shard.shard == 7
    # The API server counts UTF-8 bytes of data and decoded bytes of binaryData.
    assert dict(shard.sizes) == {"a.json": 10, "b.json": 20, "c.bin": 3}


def test_other_config_maps_are_not_indexed() -> None:
    assert shard_entry({"metadata": {"name": "credit-risk-baseline", "namespace": "ml"}}) == {}
    empty = shard_entry({"metadata": {"name": "driftline-monitors", "namespace": "ml"}})
    assert dict(empty[("ml", "driftline")].sizes) == {}
