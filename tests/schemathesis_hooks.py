"""Schemathesis serializers for the media types driftline takes besides JSON.

Loaded by the fuzzing test through SCHEMATHESIS_HOOKS: NDJSON bodies are the generated
array written one JSON value per line; msgpack bodies are the generated value packed.
"""

from __future__ import annotations

from typing import Any

import msgspec
import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(context: Any, value: Any) -> dict[str, Any]:
    """One generated value per line (a non-array value is one line)."""
    items = value if isinstance(value, list) else [value]
    return {"data": b"".join(msgspec.json.encode(item) + b"\n" for item in items)}


def _packable(value: Any) -> Any:
    # msgpack has no integers past 64 bits: send those as floats, as JSON would read them.
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def msgpack(context: Any, value: Any) -> dict[str, Any]:
    """The generated value, packed."""
    return {"data": msgspec.msgpack.encode(_packable(value))}
