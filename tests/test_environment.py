"""Settings from environment variables: types, precedence, lists, errors naming the variable."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest

from driftline.environment import decode_environment


class Inner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    size: Annotated[int, msgspec.Meta(gt=0)] = 1
    ratio: float = 0.5


class Outer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = "x"
    names: tuple[str, ...] = ()
    low: int = 1
    high: int = 2
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.high < self.low:
            raise ValueError(f"high: must be at least low ({self.low}), got {self.high}")


VARIABLES = {
    "T_NAME": "name",
    "T_NAMES": "names",
    "T_LOW": (None, "low"),
    "T_HIGH": "high",
    "T_SIZE": ("inner", "size"),
    "T_RATIO": ("inner", "ratio"),
}


class BadSettingsError(ValueError):
    pass


def decode(environ: dict[str, str], **kwargs: object) -> Outer:
    return decode_environment(
        Outer, VARIABLES, environ, lists={"names"}, error=BadSettingsError, **kwargs
    )


def test_strings_become_field_types_and_sections_fill_in() -> None:
    settings = decode({"T_LOW": "3", "T_HIGH": "4", "T_SIZE": "7", "T_NAME": ""})
    assert (settings.low, settings.high, settings.inner.size) == (3, 4, 7)
    assert settings.name == "x"  # an empty variable is unset
    assert settings.inner.ratio == 0.5


def test_comma_separated_lists() -> None:
    assert decode({"T_NAMES": "ml, fraud,,"}).names == ("ml", "fraud")


def test_base_then_environment_then_overrides() -> None:
    base = {"name": "file", "low": 0, "inner": {"size": 5, "ratio": 0.25}}
    settings = decode(
        {"T_NAME": "env", "T_SIZE": "6"}, base=base, overrides={"name": "flag", "low": None}
    )
    assert settings.name == "flag"  # overrides win over the environment ...
    assert settings.low == 0  # ... unless None
    assert (settings.inner.size, settings.inner.ratio) == (6, 0.25)  # siblings stay
    assert base == {"name": "file", "low": 0, "inner": {"size": 5, "ratio": 0.25}}


@pytest.mark.parametrize(
    ("environ", "overrides", "expected"),
    [
        ({"T_SIZE": "zero"}, {}, "T_SIZE: Expected `int`"),
        ({"T_SIZE": "0"}, {}, "T_SIZE: Expected `int` >= 1"),
        ({"T_HIGH": "0"}, {}, "T_HIGH (high): must be at least low (1), got 0"),
        ({"T_LOW": "zero"}, {"low": 1}, None),  # the flag replaced the bad variable
        ({"T_LOW": "5"}, {"high": 3}, "high: must be at least low (5), got 3"),
    ],
)
def test_errors_name_the_variable(
    environ: dict[str, str], overrides: dict[str, object], expected: str | None
) -> None:
    if expected is None:
        assert decode(environ, overrides=overrides).low == 1
        return
    with pytest.raises(BadSettingsError) as info:
        decode(environ, overrides=overrides)
    assert str(info.value).startswith(expected), str(info.value)
