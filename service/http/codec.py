"""Request and response bodies on the wire: media types, msgspec decoding, JSON encoding.

Malformed bodies become 400 problems, bodies of the wrong shape 422 problems naming the
field, unsupported media types 415.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from driftline.http.problems import ProblemError, field_error

T = TypeVar("T")
JSON_TYPES = ("application/json", "")
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-seq")
MSGPACK_TYPES = ("application/msgpack", "application/vnd.msgpack", "application/x-msgpack")


def encode(payload: Any, status: int = 200) -> web.Response:
    """A JSON response encoded by msgspec."""
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


def check_content_type(request: web.Request, allowed: Sequence[str]) -> None:
    """Refuse (415) a Content-Type outside `allowed`; none at all is read as JSON."""
    # Most clients send the bare type: that needs no parsing.
    raw = request.headers.get("Content-Type")
    if raw and raw not in allowed and request.content_type not in allowed:
        raise ProblemError(
            415,
            "unsupported-media-type",
            f"Content-Type {request.content_type!r} is not supported; "
            f"send {' or '.join(t for t in allowed if t)}",
        )


_DECODERS: dict[tuple[object, bool], msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]] = {}


def _decoder(
    schema: object, msgpack: bool
) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
    # A decoder per schema, built once: decode(body, type=...) looks the type up per call.
    decoder = _DECODERS.get((schema, msgpack))
    if decoder is None:
        decoder = msgspec.msgpack.Decoder(schema) if msgpack else msgspec.json.Decoder(schema)
        _DECODERS[(schema, msgpack)] = decoder
    return decoder


def decode_body(body: bytes, schema: type[T], *, msgpack: bool = False) -> T:
    """Decode JSON (or msgpack) into `schema`: 400 when malformed, 422 naming the bad field."""
    try:
        decoded: T = _decoder(schema, msgpack).decode(body)
        return decoded
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        raise ProblemError(
            422, "invalid-request", f"{error.field}: {error.message}", [error]
        ) from None
    except msgspec.DecodeError as exc:
        kind = "msgpack" if msgpack else "JSON"
        if not body.strip():
            raise ProblemError(
                400, f"malformed-{kind.lower()}", f"request body is empty; expected {kind}"
            ) from None
        raise ProblemError(
            400, f"malformed-{kind.lower()}", f"request body is not valid {kind}: {exc}"
        ) from None
