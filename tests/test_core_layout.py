"""The slot layout of a monitor's window vector, and the id that names it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from support import make_monitor, small_profile

from driftline.core.layout import EVENTS_SLOT, Layout
from driftline.core.profile import BaselineProfile, NumericProfile, load_baseline

EXAMPLE_DATA = Path(__file__).resolve().parent.parent / "examples" / "baseline_data.json"


def _expected_width(profile: BaselineProfile) -> int:
    width = 1
    for feature in profile.features.values():
        width += feature.bins + 1
        if isinstance(feature, NumericProfile):
            width += 3
    return width


@pytest.mark.parametrize("bins", [2, 10, 33])
def test_layout_slots_are_disjoint_and_within_width(bins: int) -> None:
    profile = load_baseline(EXAMPLE_DATA, bins=bins, top_k=3)
    layout = Layout.of(profile)
    assert layout.width == _expected_width(profile)
    used: list[int] = [EVENTS_SLOT]
    for name, slots in layout.features.items():
        feature = profile.features[name]
        assert slots.profile is feature
        own = [*range(slots.first_bin, slots.first_bin + feature.bins), slots.missing]
        if isinstance(feature, NumericProfile):
            assert slots.kind == "numeric"
            own += [slots.out_of_range, slots.sum, slots.sum_squares]
            assert slots.index is None
        else:
            assert slots.kind == "categorical"
            assert slots.out_of_range == slots.sum == slots.sum_squares == -1
            assert slots.index is not None
            assert list(slots.index) == feature.categories
            assert sorted(slots.index.values()) == own[: len(feature.categories)]
        used += own
    assert len(used) == len(set(used))  # disjoint
    assert sorted(used) == list(range(layout.width))  # every slot used, none beyond width
    assert list(layout.features) == list(profile.features)


def test_layout_id_depends_on_profile_and_bucket() -> None:
    profile = msgspec.to_builtins(small_profile())
    a = make_monitor({"name": "a", "baseline": profile})
    b = make_monitor({"name": "b", "baseline": profile})
    c = make_monitor({"name": "a", "baseline": profile, "bucket_seconds": 30})
    assert a.window.layout_id == b.window.layout_id
    assert a.window.layout_id != c.window.layout_id
    profile["features"]["age"]["counts"][0] += 1
    d = make_monitor({"name": "a", "baseline": profile})
    assert d.window.layout_id != a.window.layout_id


def test_same_layout_id_means_same_slots() -> None:
    profile = msgspec.to_builtins(small_profile())
    reordered = dict(profile, features=dict(reversed(list(profile["features"].items()))))
    a = make_monitor({"name": "m", "baseline": profile})
    b = make_monitor({"name": "m", "baseline": reordered})
    assert a.window.layout_id == b.window.layout_id
    for name in a.layout.features:
        assert a.layout.features[name].first_bin == b.layout.features[name].first_bin
