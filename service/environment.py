"""Settings from environment variables: a msgspec Struct decoded from strings.

The service (driftline.settings) and the operator (driftline.operator.settings) both
read their settings this way: variables name fields (or fields of a section), strings
are converted to the field types, explicit overrides (command-line flags) win, and a
value that cannot work raises an error naming the variable it came from.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
# A variable's field: `name`, or (section, name) for a field of a nested struct.
Target = str | tuple[str | None, str]


def decode_environment(
    kind: type[T],
    variables: Mapping[str, Target],
    environ: Mapping[str, str],
    *,
    base: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    lists: Collection[str] = (),
    error: type[ValueError] = ValueError,
) -> T:
    """Decode `kind` from `base` (e.g. a settings file), then `environ`, then `overrides`.

    Later sources win; empty variables and overrides of None or an empty sequence are
    skipped. Fields in `lists` take comma-separated values. A bad value raises `error`
    naming the variable it came from (or the field, for a value from elsewhere).
    """
    data: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()
    }
    origin: dict[tuple[str | None, str], str] = {}
    for variable, target in variables.items():
        value = environ.get(variable, "")
        if value == "":
            continue
        section, field = (None, target) if isinstance(target, str) else target
        into = data if section is None else data.setdefault(section, {})
        into[field] = (
            [item.strip() for item in value.split(",") if item.strip()] if field in lists else value
        )
        origin[(section, field)] = variable
    for field, value in (overrides or {}).items():
        if value is not None and value != [] and value != ():
            data[field] = value
            origin.pop((None, field), None)
    try:
        return msgspec.convert(data, kind, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise error(_naming_variables(str(exc), origin)) from exc


def _naming_variables(message: str, origin: Mapping[tuple[str | None, str], str]) -> str:
    """Msgspec's or a cross-field check's message, led by the variable at fault."""
    for (section, field), variable in origin.items():
        path = f"$.{section}.{field}" if section else f"$.{field}"
        name = f"{section}.{field}" if section else field
        if path in message:
            message = f"{variable}: {message.replace(f' - at `{path}`', '')}"
        elif message.startswith(f"{name}:"):  # a cross-field check in __post_init__
            message = f"{variable} ({name}){message[len(name) :]}"
    return message
