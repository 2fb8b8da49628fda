"""Monitor configs, layouts and event binning checked against independent computations."""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from pathlib import Path
from typing import Any

import msgspec
import msgspec.yaml
import numpy as np
import pytest

from driftline.core import binning
from driftline.core.binning import BinnedEvent, EventError
from driftline.core.layout import EVENTS_SLOT, Layout
from driftline.core.limits import Limits
from driftline.core.monitor import (
    Monitor,
    MonitorConfig,
    MonitorConfigError,
    build_monitor,
    decode_monitor_config,
)
from driftline.core.policy import MonitorDefaults, Thresholds
from driftline.core.profile import (
    BaselineProfile,
    CategoricalProfile,
    NumericProfile,
    build_profile,
    encode_profile,
    load_baseline,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DATA = ROOT / "examples" / "baseline_data.json"
EXAMPLE_CONFIG = ROOT / "examples" / "monitors" / "credit-risk.yaml"
DEFAULTS = MonitorDefaults()
MAX_LEN = 16
LIMITS = Limits(max_string_length=MAX_LEN)


def bin_event(m: Monitor, features: dict[str, Any]) -> BinnedEvent:
    """Bin one event of the monitor's layout with LIMITS."""
    return binning.bin_event(m.layout, features, LIMITS)


@pytest.fixture(scope="module")
def example_profile() -> BaselineProfile:
    return load_baseline(EXAMPLE_DATA)


def make(
    data: dict[str, Any], *, base_dir: Path = ROOT, defaults: MonitorDefaults = DEFAULTS
) -> Monitor:
    config = decode_monitor_config(data, "test.yaml")
    return build_monitor(config, defaults, base_dir=base_dir, source="test.yaml")


def small_profile() -> BaselineProfile:
    rng = np.random.default_rng(5)
    return build_profile(
        {
            "age": rng.integers(18, 90, size=300).astype(float).tolist(),
            "kids": [int(v) for v in rng.integers(0, 4, size=300)],
            "city": [["oslo", "rome", "lima", "pune"][int(v)] for v in rng.integers(0, 4, 300)],
            "vip": [bool(v) for v in rng.integers(0, 2, size=300)],
        },
        bins=5,
        top_k=3,
    )


@pytest.fixture
def monitor() -> Monitor:
    profile = small_profile()
    return make({"name": "small", "baseline": msgspec.to_builtins(profile)})


# ----------------------------------------------------------------- config + defaults


def test_defaults_fill_every_unset_field(example_profile: BaselineProfile) -> None:
    defaults = MonitorDefaults(
        warning_threshold=0.11,
        critical_threshold=0.77,
        alpha=0.01,
        bonferroni=True,
        min_samples=42,
        min_drifted_features=2,
        window_seconds=600,
        bucket_seconds=30,
        bins=7,
        top_k=2,
    )
    m = make({"name": "m", "baseline": "examples/baseline_data.json"}, defaults=defaults)
    assert m.policy.thresholds == Thresholds(0.11, 0.77)
    assert m.policy.feature_thresholds == {}
    assert m.policy.alpha == 0.01
    assert m.policy.bonferroni is True
    assert m.policy.min_samples == 42
    assert m.policy.min_drifted_features == 2
    assert m.window.window_seconds == 600
    assert m.window.bucket_seconds == 30
    assert m.window.monitor == "m"
    assert m.window.width == m.layout.width
    assert m.model == ""
    assert m.source == "test.yaml"
    # bins and top_k apply when building from raw rows.
    assert m.profile == load_baseline(EXAMPLE_DATA, bins=7, top_k=2)
    channel = m.profile.features["channel"]
    assert isinstance(channel, CategoricalProfile)
    assert len(channel.categories) == 2
    age = m.profile.features["age"]
    assert isinstance(age, NumericProfile)
    assert age.bins == 7


def test_service_defaults_when_nothing_is_set() -> None:
    m = make({"name": "m", "baseline": "examples/baseline_data.json"})
    assert m.policy.thresholds == Thresholds(
        DEFAULTS.warning_threshold, DEFAULTS.critical_threshold
    )
    assert m.policy.alpha == DEFAULTS.alpha
    assert m.policy.bonferroni == DEFAULTS.bonferroni
    assert m.policy.min_samples == DEFAULTS.min_samples
    assert m.policy.min_drifted_features == DEFAULTS.min_drifted_features
    assert m.window.window_seconds == DEFAULTS.window_seconds
    assert m.window.bucket_seconds == DEFAULTS.bucket_seconds
    assert m.profile == load_baseline(EXAMPLE_DATA, bins=DEFAULTS.bins, top_k=DEFAULTS.top_k)


def test_per_monitor_overrides_win() -> None:
    m = make(
        {
            "name": "m",
            "model": "xgb-7",
            "baseline": "examples/baseline_data.json",
            "warning_threshold": 0.3,
            "critical_threshold": 0.9,
            "alpha": 0.2,
            "bonferroni": True,
            "min_samples": 7,
            "min_drifted_features": 3,
            "window_seconds": 120,
            "bucket_seconds": 10,
            "bins": 4,
            "top_k": 1,
        }
    )
    assert m.model == "xgb-7"
    assert m.policy.thresholds == Thresholds(0.3, 0.9)
    assert (m.policy.alpha, m.policy.bonferroni) == (0.2, True)
    assert (m.policy.min_samples, m.policy.min_drifted_features) == (7, 3)
    assert (m.window.window_seconds, m.window.bucket_seconds) == (120, 10)
    assert m.profile == load_baseline(EXAMPLE_DATA, bins=4, top_k=1)


def test_per_feature_thresholds() -> None:
    m = make(
        {
            "name": "m",
            "baseline": "examples/baseline_data.json",
            "warning_threshold": 0.25,
            "critical_threshold": 0.6,
            "features": {
                "age": {"warning_threshold": 0.1, "critical_threshold": 0.3},
                "income": {"warning_threshold": 0.4},  # critical from the monitor
                "region": {"critical_threshold": 0.9},  # warning from the monitor
                "channel": {"type": "categorical"},  # no thresholds: not listed
            },
        }
    )
    base = Thresholds(0.25, 0.6)
    assert m.policy.thresholds == base
    assert m.policy.feature_thresholds == {
        "age": Thresholds(0.1, 0.3),
        "income": Thresholds(0.4, 0.6),
        "region": Thresholds(0.25, 0.9),
    }
    assert m.policy.thresholds_for("age") == Thresholds(0.1, 0.3)
    assert m.policy.thresholds_for("credit_score") == base
    assert m.policy.thresholds_for("channel") == base


def test_example_config_file(example_profile: BaselineProfile) -> None:
    data = msgspec.yaml.decode(EXAMPLE_CONFIG.read_bytes())
    config = decode_monitor_config(data, str(EXAMPLE_CONFIG))
    assert isinstance(config, MonitorConfig)
    m = build_monitor(config, DEFAULTS, base_dir=EXAMPLE_CONFIG.parent, source=str(EXAMPLE_CONFIG))
    assert m.name == "credit-risk"
    assert m.model == "credit-risk-xgb"
    assert m.profile == example_profile
    assert m.policy.thresholds_for("credit_score") == Thresholds(0.15, 0.4)
    assert m.policy.thresholds_for("age") == Thresholds(0.2, 0.5)
    assert isinstance(m.profile.features["num_products"], NumericProfile)


def test_relative_baseline_path_resolves_against_config_dir(tmp_path: Path) -> None:
    sub = tmp_path / "configs"
    (sub / "data").mkdir(parents=True)
    (sub / "data" / "rows.json").write_text(json.dumps({"x": [1, 2, 3], "c": ["a", "b", "a"]}))
    m = make({"name": "m", "baseline": "data/rows.json"}, base_dir=sub)
    assert list(m.profile.features) == ["c", "x"]
    assert m.profile.rows == 3
    # The same relative path against another directory does not exist.
    with pytest.raises(MonitorConfigError, match=r"^test\.yaml: baseline: .*cannot read baseline"):
        make({"name": "m", "baseline": "data/rows.json"}, base_dir=tmp_path)
    # An absolute path ignores base_dir.
    m2 = make({"name": "m", "baseline": str(sub / "data" / "rows.json")}, base_dir=Path("/"))
    assert m2.profile == m.profile


def test_saved_profile_as_baseline(tmp_path: Path, example_profile: BaselineProfile) -> None:
    (tmp_path / "profile.json").write_bytes(encode_profile(example_profile))
    m = make({"name": "m", "baseline": "profile.json", "bins": 3}, base_dir=tmp_path)
    assert m.profile == example_profile  # bins only apply to raw rows
    raw = make({"name": "m", "baseline": "examples/baseline_data.json"})
    assert m.window.layout_id == raw.window.layout_id


def test_inline_profile_accepted() -> None:
    profile = small_profile()
    m = make({"name": "inline", "baseline": msgspec.to_builtins(profile)})
    assert m.profile == profile
    assert m.profile.content_hash == profile.content_hash


def test_layout_id_depends_on_profile_and_bucket() -> None:
    profile = msgspec.to_builtins(small_profile())
    a = make({"name": "a", "baseline": profile})
    b = make({"name": "b", "baseline": profile})
    c = make({"name": "a", "baseline": profile, "bucket_seconds": 30})
    assert a.window.layout_id == b.window.layout_id
    assert a.window.layout_id != c.window.layout_id
    profile["features"]["age"]["counts"][0] += 1
    d = make({"name": "a", "baseline": profile})
    assert d.window.layout_id != a.window.layout_id


# -------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"warning_threshold": 0.5, "critical_threshold": 0.5},
            r"^test\.yaml: critical_threshold: must be greater than warning_threshold "
            r"\(0\.5\), got 0\.5$",
        ),
        (
            {"warning_threshold": 0.6},  # default critical 0.5
            r"^test\.yaml: critical_threshold: must be greater than warning_threshold "
            r"\(0\.6\), got 0\.5$",
        ),
        (
            {"window_seconds": 100},
            r"^test\.yaml: window_seconds: must be a whole number of buckets \(60 s\), got 100$",
        ),
        (
            {"window_seconds": 60, "bucket_seconds": 120},
            r"^test\.yaml: window_seconds: must be a whole number of buckets \(120 s\), got 60$",
        ),
        (
            {"features": {"nope": {"warning_threshold": 0.1}}},
            r"^test\.yaml: features\.nope: not a feature of the baseline \(has age, channel, ",
        ),
        (
            {"features": {"channel": {"type": "numeric"}}},
            r"channel: expected a number, got 'web'",
        ),
    ],
)
def test_build_monitor_errors_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MonitorConfigError, match=message):
        make({"name": "m", "baseline": "examples/baseline_data.json", **overrides})


@pytest.mark.parametrize(
    "feature",
    [
        {"warning_threshold": 0.3, "critical_threshold": 0.2},
        {"warning_threshold": 0.3, "critical_threshold": 0.3},
        {"warning_threshold": 0.6},  # above the monitor's critical (0.5)
    ],
)
def test_per_feature_critical_not_above_warning_is_rejected(feature: dict[str, float]) -> None:
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: features\.age\.critical_threshold: must be greater than "
        r"warning_threshold",
    ):
        make(
            {
                "name": "m",
                "baseline": "examples/baseline_data.json",
                "features": {"age": feature},
            }
        )


def test_type_override_conflicting_with_saved_profile_is_rejected(
    tmp_path: Path, example_profile: BaselineProfile
) -> None:
    (tmp_path / "profile.json").write_bytes(encode_profile(example_profile))
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: features\.age\.type: the baseline profile has it as numeric, "
        r"not categorical$",
    ):
        make(
            {
                "name": "m",
                "baseline": "profile.json",
                "features": {"age": {"type": "categorical"}},
            },
            base_dir=tmp_path,
        )
    with pytest.raises(
        MonitorConfigError,
        match=r"features\.region\.type: the baseline profile has it as categorical, not numeric",
    ):
        make(
            {"name": "m", "baseline": "profile.json", "features": {"region": {"type": "numeric"}}},
            base_dir=tmp_path,
        )
    # The matching type is fine.
    make(
        {"name": "m", "baseline": "profile.json", "features": {"age": {"type": "numeric"}}},
        base_dir=tmp_path,
    )


def test_type_override_applies_when_building_from_rows() -> None:
    m = make(
        {
            "name": "m",
            "baseline": "examples/baseline_data.json",
            "features": {"num_products": {"type": "categorical"}},
        }
    )
    feature = m.profile.features["num_products"]
    assert isinstance(feature, CategoricalProfile)
    records = json.loads(EXAMPLE_DATA.read_text())
    assert set(feature.categories) == {str(r["num_products"]) for r in records}


@pytest.mark.parametrize(
    "name", ["Credit", "-lead", "trail-", "has space", "a" * 64, "", "under_score_ok_but_UPPER"]
)
def test_bad_name_is_rejected(name: str) -> None:
    with pytest.raises(MonitorConfigError, match=r"^test\.yaml: name: expected `str` matching"):
        decode_monitor_config({"name": name, "baseline": "x.json"}, "test.yaml")


@pytest.mark.parametrize("name", ["a", "credit-risk", "m.v2", "a_b", "a" * 63, "0"])
def test_good_names_are_accepted(name: str) -> None:
    assert decode_monitor_config({"name": name, "baseline": "x.json"}, "t").name == name


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(MonitorConfigError, match=r"^test\.yaml: .*unknown field `windows`"):
        decode_monitor_config({"name": "m", "baseline": "x", "windows": 3}, "test.yaml")
    with pytest.raises(MonitorConfigError, match=r"unknown field `treshold`"):
        decode_monitor_config(
            {"name": "m", "baseline": "x", "features": {"age": {"treshold": 1}}}, "test.yaml"
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bins", 1, r"^test\.yaml: bins: expected `int` >= 2"),
        ("bins", 101, r"^test\.yaml: bins: expected `int` <= 100"),
        ("alpha", 1.0, r"^test\.yaml: alpha: expected `float` < 1"),
        ("warning_threshold", 0, r"^test\.yaml: warning_threshold: expected `float` > 0"),
        ("min_samples", "ten", r"^test\.yaml: min_samples: expected `int.*`, got `str`$"),
        ("bucket_seconds", 0, r"^test\.yaml: bucket_seconds: expected `int` >= 1$"),
    ],
)
def test_field_constraints_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(MonitorConfigError, match=message):
        decode_monitor_config({"name": "m", "baseline": "x", field: value}, "test.yaml")


def test_missing_baseline_is_rejected() -> None:
    with pytest.raises(MonitorConfigError, match=r"missing required field `baseline`"):
        decode_monitor_config({"name": "m"}, "test.yaml")


def test_bad_raw_baseline_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "rows.json").write_text('{"a": [1], "b": [1, 2]}')
    with pytest.raises(
        MonitorConfigError, match=r"^test\.yaml: baseline: .*columns have different lengths"
    ):
        make({"name": "m", "baseline": "rows.json"}, base_dir=tmp_path)


# -------------------------------------------------------------------------- layout


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


# ---------------------------------------------------------------------- bin_event


def fixed_point_moments(slots: Any, profile: NumericProfile, value: float) -> dict[int, int]:
    """The documented encoding: z = (x - mean) / std, clipped; z and z^2 in units of 2^-20."""
    z = float(np.clip((value - profile.mean) / profile.std, -1024.0, 1024.0))
    return {slots.sum: int(np.rint(z * 2**20)), slots.sum_squares: int(np.rint(z * z * 2**20))}


def _numeric(m: Monitor, name: str) -> tuple[Any, NumericProfile]:
    slots = m.layout.features[name]
    assert isinstance(slots.profile, NumericProfile)
    return slots, slots.profile


def test_numeric_value_lands_in_searchsorted_slot(monitor: Monitor) -> None:
    slots, profile = _numeric(monitor, "age")
    cuts = np.asarray(profile.cuts)
    probes = [profile.min, profile.max, *profile.cuts, *(c - 0.5 for c in profile.cuts), 50.25]
    for value in probes:
        event = bin_event(monitor, {"age": value})
        expected = slots.first_bin + int(np.searchsorted(cuts, value, side="right"))
        assert expected == slots.first_bin + bisect_right(profile.cuts, value)
        assert expected in event.slots
        assert slots.out_of_range not in event.slots
        sums = dict(event.sums)
        assert sums == fixed_point_moments(slots, profile, value)


def test_discrete_value_lands_in_its_own_bin(monitor: Monitor) -> None:
    slots, profile = _numeric(monitor, "kids")
    assert profile.discrete
    for k, value in enumerate([0, 1, 2, 3], start=1):
        event = bin_event(monitor, {"kids": value})
        assert slots.first_bin + k in event.slots


def test_full_event_slots_and_sums(monitor: Monitor) -> None:
    event = bin_event(monitor, {"age": 40, "kids": 2, "city": "rome", "vip": True})
    layout = monitor.layout.features
    age_slots, age = _numeric(monitor, "age")
    kids_slots, kids = _numeric(monitor, "kids")
    city = layout["city"]
    vip = layout["vip"]
    assert city.index is not None and vip.index is not None
    expected = [
        EVENTS_SLOT,
        age_slots.first_bin + int(np.searchsorted(age.cuts, 40, side="right")),
        city.index["rome"] if "rome" in city.index else city.first_bin + city.profile.bins - 1,
        kids_slots.first_bin + int(np.searchsorted(kids.cuts, 2, side="right")),
        vip.index["true"],
    ]
    assert sorted(event.slots) == sorted(expected)
    assert dict(event.sums) == {
        **fixed_point_moments(age_slots, age, 40),
        **fixed_point_moments(kids_slots, kids, 2),
    }
    assert event.unknown == []


def test_missing_feature_goes_to_missing_slot(monitor: Monitor) -> None:
    event = bin_event(monitor, {"age": None})
    expected = [EVENTS_SLOT] + [s.missing for s in monitor.layout.features.values()]
    assert sorted(event.slots) == sorted(expected)
    assert event.sums == []


def test_unknown_features_are_reported(monitor: Monitor) -> None:
    event = bin_event(monitor, {"age": 30, "height": 180, "zz": "x"})
    assert event.unknown == ["height", "zz"]


def test_out_of_range_is_flagged(monitor: Monitor) -> None:
    slots, profile = _numeric(monitor, "age")
    for value in (profile.min - 1, profile.max + 0.001, -1e12, 1e12):
        event = bin_event(monitor, {"age": value})
        assert slots.out_of_range in event.slots
        edge = slots.first_bin if value < profile.min else slots.first_bin + profile.bins - 1
        assert edge in event.slots
    kids_slots, kids = _numeric(monitor, "kids")
    event = bin_event(monitor, {"kids": 7})
    assert kids_slots.out_of_range in event.slots
    assert kids_slots.first_bin + kids.bins - 1 in event.slots  # the empty top bin
    event = bin_event(monitor, {"kids": -1})
    assert kids_slots.first_bin in event.slots  # the empty bottom bin


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("old", 'age: expected a number, got "old"'),
        ("42", 'age: expected a number, got "42"'),
        (True, "age: expected a number, got true"),
        (False, "age: expected a number, got false"),
        ([1], "age: expected a number, got [1]"),
        ({"v": 1}, 'age: expected a number, got {"v":1}'),
        ("x" * 60, 'age: expected a number, got "' + "x" * 36 + "..."),
    ],
)
def test_bad_numeric_values_raise_event_error(monitor: Monitor, value: Any, message: str) -> None:
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"age": value})
    assert str(info.value) == message
    assert info.value.feature == "age"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, -(10**400)])
def test_non_finite_numbers_are_rejected(monitor: Monitor, value: float) -> None:
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"age": value})
    assert info.value.feature == "age"
    assert info.value.message.startswith("expected a finite number")


def test_bool_is_rejected_for_discrete_numeric(monitor: Monitor) -> None:
    # bool is an int subclass in Python: it must still not count as 0/1.
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"kids": True})
    assert str(info.value) == "kids: expected a number, got true"


def test_event_error_names_the_feature(monitor: Monitor) -> None:
    # Where the value sits in a request (events[3].features.kids) is the HTTP layer's.
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"kids": "two"})
    assert info.value.feature == "kids"
    assert info.value.message == 'expected a number, got "two"'


def test_categorical_values(monitor: Monitor) -> None:
    city = monitor.layout.features["city"]
    profile = city.profile
    assert isinstance(profile, CategoricalProfile)
    assert city.index is not None
    other = city.first_bin + profile.bins - 1
    for category in profile.categories:
        event = bin_event(monitor, {"city": category})
        assert city.first_bin + profile.categories.index(category) in event.slots
    pooled = next(c for c in ["oslo", "rome", "lima", "pune"] if c not in profile.categories)
    assert other in bin_event(monitor, {"city": pooled}).slots
    assert other in bin_event(monitor, {"city": "never-seen"}).slots
    vip = monitor.layout.features["vip"]
    assert vip.index is not None
    assert vip.index["false"] in bin_event(monitor, {"vip": False}).slots


def test_numbers_accepted_as_categories_via_label() -> None:
    profile = build_profile({"code": [1, 2, 2, 2.5, True]}, kinds={"code": "categorical"}, top_k=10)
    m = make({"name": "m", "baseline": msgspec.to_builtins(profile)})
    slots = m.layout.features["code"]
    assert slots.index is not None
    assert set(slots.index) == {"1", "2", "2.5", "true"}
    assert slots.index["2"] in bin_event(m, {"code": 2}).slots
    assert slots.index["2"] in bin_event(m, {"code": "2"}).slots
    assert slots.index["2.5"] in bin_event(m, {"code": 2.5}).slots
    assert slots.index["true"] in bin_event(m, {"code": True}).slots
    other = slots.first_bin + slots.profile.bins - 1
    assert other in bin_event(m, {"code": 2.0}).slots  # "2.0"


def test_category_longer_than_limit_is_rejected(monitor: Monitor) -> None:
    ok = "y" * MAX_LEN
    bin_event(monitor, {"city": ok})
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"city": ok + "y"})
    assert str(info.value) == f"city: expected at most {MAX_LEN} characters, got 17"


@pytest.mark.parametrize(("value", "shown"), [([1, 2], "[1,2]"), ({"a": "b"}, '{"a":"b"}')])
def test_structured_category_is_rejected(monitor: Monitor, value: Any, shown: str) -> None:
    with pytest.raises(EventError) as info:
        bin_event(monitor, {"city": value})
    assert str(info.value) == (
        f"city: expected a category (string, number or boolean), got {shown}"
    )


# ------------------------------------------------------------- regressions


def test_inline_profile_with_wrong_number_of_counts_is_rejected() -> None:
    profile = msgspec.to_builtins(small_profile())
    profile["features"]["age"]["counts"] = [10]  # cuts say len(cuts) + 1 bins
    with pytest.raises(MonitorConfigError, match=r"features\.age\.counts"):
        make({"name": "m", "baseline": profile})


def test_infinite_critical_threshold_is_a_config_error() -> None:
    with pytest.raises(MonitorConfigError, match=r"critical_threshold"):
        make(
            {
                "name": "m",
                "baseline": "examples/baseline_data.json",
                "critical_threshold": math.inf,
            }
        )


def test_same_layout_id_means_same_slots() -> None:
    profile = msgspec.to_builtins(small_profile())
    reordered = dict(profile, features=dict(reversed(list(profile["features"].items()))))
    a = make({"name": "m", "baseline": profile})
    b = make({"name": "m", "baseline": reordered})
    assert a.window.layout_id == b.window.layout_id
    for name in a.layout.features:
        assert a.layout.features[name].first_bin == b.layout.features[name].first_bin
