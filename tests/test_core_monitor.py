"""Monitor configs: defaults, overrides, baselines and errors that name the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import msgspec.yaml
import pytest
from support import make_monitor, small_profile

from driftline.core.monitor import (
    MonitorConfig,
    MonitorConfigError,
    build_monitor,
    decode_monitor_config,
)
from driftline.core.policy import TEST_THRESHOLDS, MonitorDefaults, QualityThresholds, Thresholds
from driftline.core.profile import (
    BaselineProfile,
    CategoricalProfile,
    NumericProfile,
    encode_profile,
    load_baseline,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DATA = ROOT / "examples" / "baseline_data.json"
EXAMPLE_CONFIG = ROOT / "examples" / "monitors" / "credit-risk.yaml"
DEFAULTS = MonitorDefaults()


@pytest.fixture(scope="module")
def example_profile() -> BaselineProfile:
    return load_baseline(EXAMPLE_DATA)


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
    m = make_monitor({"name": "m", "baseline": "examples/baseline_data.json"}, defaults=defaults)
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
    m = make_monitor({"name": "m", "baseline": "examples/baseline_data.json"})
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
    m = make_monitor(
        {
            "name": "m",
            "model": "xgb-7",
            "baseline": "examples/baseline_data.json",
            "warning_threshold": 0.3,
            "critical_threshold": 0.9,
            "alpha": 0.2,
            "bonferroni": True,
            "min_samples": 17,
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
    assert (m.policy.min_samples, m.policy.min_drifted_features) == (17, 3)
    assert (m.window.window_seconds, m.window.bucket_seconds) == (120, 10)
    assert m.profile == load_baseline(EXAMPLE_DATA, bins=4, top_k=1)


def test_more_drifted_features_than_the_baseline_has_is_refused() -> None:
    # Such a monitor could never call drift; the example baseline has 8 features.
    config = {"name": "m", "baseline": "examples/baseline_data.json", "min_drifted_features": 8}
    assert make_monitor(config).policy.min_drifted_features == 8
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: min_drifted_features: 9 is more than the baseline's 8 features",
    ):
        make_monitor({**config, "min_drifted_features": 9})


def test_per_feature_thresholds() -> None:
    m = make_monitor(
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
    # The scored training rows give the training rows' profile, and the model's score.
    features = {n: f for n, f in m.profile.features.items() if n != "@prediction.score"}
    assert features == example_profile.features
    assert m.prediction is not None and m.prediction.kind == "score"
    assert isinstance(m.profile.features["@prediction.score"], NumericProfile)
    assert m.policy.thresholds_for("credit_score") == Thresholds(0.15, 0.4)
    assert m.policy.thresholds_for("age") == Thresholds(0.2, 0.5)
    assert isinstance(m.profile.features["num_products"], NumericProfile)


def test_relative_baseline_path_resolves_against_config_dir(tmp_path: Path) -> None:
    sub = tmp_path / "configs"
    (sub / "data").mkdir(parents=True)
    (sub / "data" / "rows.json").write_text(json.dumps({"x": [1, 2, 3], "c": ["a", "b", "a"]}))
    m = make_monitor({"name": "m", "baseline": "data/rows.json"}, base_dir=sub)
    assert list(m.profile.features) == ["c", "x"]
    assert m.profile.rows == 3
    # The same relative path against another directory does not exist.
    with pytest.raises(MonitorConfigError, match=r"^test\.yaml: baseline: .*cannot read baseline"):
        make_monitor({"name": "m", "baseline": "data/rows.json"}, base_dir=tmp_path)
    # An absolute path ignores base_dir.
    m2 = make_monitor(
        {"name": "m", "baseline": str(sub / "data" / "rows.json")}, base_dir=Path("/")
    )
    assert m2.profile == m.profile


def test_saved_profile_as_baseline(tmp_path: Path, example_profile: BaselineProfile) -> None:
    (tmp_path / "profile.json").write_bytes(encode_profile(example_profile))
    m = make_monitor({"name": "m", "baseline": "profile.json", "bins": 3}, base_dir=tmp_path)
    assert m.profile == example_profile  # bins only apply to raw rows
    raw = make_monitor({"name": "m", "baseline": "examples/baseline_data.json"})
    assert m.window.layout_id == raw.window.layout_id


def test_inline_profile_accepted() -> None:
    profile = small_profile()
    m = make_monitor({"name": "inline", "baseline": msgspec.to_builtins(profile)})
    assert m.profile == profile
    assert m.profile.content_hash == profile.content_hash


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
        make_monitor({"name": "m", "baseline": "examples/baseline_data.json", **overrides})


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
        make_monitor(
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
        make_monitor(
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
        make_monitor(
            {"name": "m", "baseline": "profile.json", "features": {"region": {"type": "numeric"}}},
            base_dir=tmp_path,
        )
    # The matching type is fine.
    make_monitor(
        {"name": "m", "baseline": "profile.json", "features": {"age": {"type": "numeric"}}},
        base_dir=tmp_path,
    )


def test_type_override_applies_when_building_from_rows() -> None:
    m = make_monitor(
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
        # Below 10 events no drift test is run: such a window could not be judged.
        ("min_samples", 9, r"^test\.yaml: min_samples: expected `int` >= 10$"),
        (
            "test",
            "t-test",
            r"^test\.yaml: test: invalid enum value 't-test'; allowed: psi, jensenshannon, "
            r"wasserstein, ks, hellinger, chisquare$",
        ),
        (
            "multiple_testing",
            "fdr",
            r"^test\.yaml: multiple_testing: invalid enum value 'fdr'; "
            r"allowed: none, bonferroni, holm, bh$",
        ),
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
        make_monitor({"name": "m", "baseline": "rows.json"}, base_dir=tmp_path)


# ------------------------------------------------------------- regressions


def test_inline_profile_with_wrong_number_of_counts_is_rejected() -> None:
    profile = msgspec.to_builtins(small_profile())
    profile["features"]["age"]["counts"] = [10]  # cuts say len(cuts) + 1 bins
    with pytest.raises(MonitorConfigError, match=r"features\.age\.counts"):
        make_monitor({"name": "m", "baseline": profile})


def test_infinite_critical_threshold_is_a_config_error() -> None:
    with pytest.raises(MonitorConfigError, match=r"critical_threshold"):
        make_monitor(
            {
                "name": "m",
                "baseline": "examples/baseline_data.json",
                "critical_threshold": math.inf,
            }
        )


# ------------------------------------------------------------- tests and thresholds

EXAMPLE = {"name": "m", "baseline": "examples/baseline_data.json"}
NUMERIC = ("age", "credit_score", "income", "num_products", "tenure_months")
CATEGORICAL = ("channel", "product_category", "region")


def test_default_tests_are_psi_for_numbers_and_chisquare_for_categories() -> None:
    m = make_monitor(EXAMPLE)
    assert {n: m.policy.test_for(n, "numeric") for n in NUMERIC} == dict.fromkeys(NUMERIC, "psi")
    assert {n: m.policy.test_for(n, "categorical") for n in CATEGORICAL} == dict.fromkeys(
        CATEGORICAL, "chisquare"
    )
    assert m.policy.feature_thresholds == {}  # both on the monitor's scale


def test_the_monitors_test_applies_where_it_can() -> None:
    js = make_monitor({**EXAMPLE, "test": "jensenshannon"})
    assert set(js.policy.tests.values()) == {"jensenshannon"}
    # Every feature's thresholds are then the test's own (the monitor's are PSI and w's).
    assert set(js.policy.feature_thresholds.values()) == {TEST_THRESHOLDS["jensenshannon"]}
    ks = make_monitor({**EXAMPLE, "test": "ks"})
    assert {ks.policy.tests[n] for n in NUMERIC} == {"ks"}
    assert {ks.policy.tests[n] for n in CATEGORICAL} == {"chisquare"}  # ks needs an order


def test_a_features_test_and_thresholds_on_its_scale() -> None:
    m = make_monitor(
        {
            **EXAMPLE,
            "warning_threshold": 0.25,
            "features": {
                "age": {"test": "ks"},
                "income": {"test": "wasserstein", "warning_threshold": 0.5},
                "channel": {"test": "hellinger"},
                "region": {"notice_threshold": 0.05},
            },
        }
    )
    assert m.policy.thresholds == Thresholds(0.25, 0.5, 0.1)
    assert m.policy.thresholds_for("age") == TEST_THRESHOLDS["ks"]
    wasserstein = TEST_THRESHOLDS["wasserstein"]
    assert m.policy.thresholds_for("income") == Thresholds(0.5, wasserstein.critical, 0.3)
    assert m.policy.thresholds_for("channel") == TEST_THRESHOLDS["hellinger"]
    assert m.policy.thresholds_for("region") == Thresholds(0.25, 0.5, 0.05)
    assert m.policy.thresholds_for("credit_score") == m.policy.thresholds


def test_a_numeric_only_test_on_a_category_is_refused() -> None:
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: features\.channel\.test: wasserstein needs a numeric feature; a "
        r"categorical one can use psi, jensenshannon, hellinger or chisquare$",
    ):
        make_monitor({**EXAMPLE, "features": {"channel": {"test": "wasserstein"}}})


def test_notice_threshold_defaults_below_the_warning() -> None:
    assert make_monitor(EXAMPLE).policy.thresholds.notice == DEFAULTS.notice_threshold == 0.1
    low = make_monitor({**EXAMPLE, "warning_threshold": 0.05})
    assert low.policy.thresholds == Thresholds(0.05, 0.5, 0.05)  # no notice tier then
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: notice_threshold: must not exceed warning_threshold \(0\.2\), "
        r"got 0\.3$",
    ):
        make_monitor({**EXAMPLE, "notice_threshold": 0.3})
    with pytest.raises(MonitorConfigError, match=r"features\.age\.notice_threshold: must not"):
        make_monitor({**EXAMPLE, "features": {"age": {"notice_threshold": 0.3}}})


@pytest.mark.parametrize(
    ("config", "method"),
    [
        ({}, "none"),
        ({"multiple_testing": "holm"}, "holm"),
        ({"multiple_testing": "bh"}, "bh"),
        ({"bonferroni": True}, "bonferroni"),
        ({"bonferroni": True, "multiple_testing": "bonferroni"}, "bonferroni"),
        ({"bonferroni": False, "multiple_testing": "holm"}, "holm"),
    ],
)
def test_multiple_testing_and_its_bonferroni_alias(config: dict[str, Any], method: str) -> None:
    policy = make_monitor({**EXAMPLE, **config}).policy
    assert policy.multiple_testing == method
    assert policy.bonferroni is (method == "bonferroni")


def test_multiple_testing_contradicting_bonferroni_is_refused() -> None:
    with pytest.raises(
        MonitorConfigError,
        match=r"^test\.yaml: multiple_testing: holm contradicts bonferroni: true \(an alias of "
        r"multiple_testing: bonferroni\); set only one$",
    ):
        make_monitor({**EXAMPLE, "multiple_testing": "holm", "bonferroni": True})


def test_service_default_multiple_testing_is_inherited() -> None:
    holm = MonitorDefaults(multiple_testing="holm")
    assert make_monitor(EXAMPLE, defaults=holm).policy.multiple_testing == "holm"
    alias = MonitorDefaults(bonferroni=True)
    assert make_monitor(EXAMPLE, defaults=alias).policy.multiple_testing == "bonferroni"
    # The monitor's own choice wins, even "none".
    own = make_monitor({**EXAMPLE, "multiple_testing": "none"}, defaults=holm)
    assert own.policy.multiple_testing == "none"


def test_quality_thresholds_per_rule() -> None:
    m = make_monitor({**EXAMPLE, "quality": {"missing": {"warning": 0.1, "critical": 0.3}}})
    assert m.policy.quality.missing == QualityThresholds(0.1, 0.3)
    assert m.policy.quality.range == DEFAULTS.quality.range
    with pytest.raises(MonitorConfigError, match=r"critical: must be greater than warning"):
        make_monitor({**EXAMPLE, "quality": {"range": {"warning": 0.1, "critical": 0.05}}})
