"""Request and response bodies on the wire: media types, reading, msgspec decoding, encoding.

Malformed bodies (and bodies nested deeper than the decoder recurses) become 400
problems, bodies of the wrong shape 422 problems naming the field, unsupported media
types and compressed bodies 415, bodies past the limit 413, bodies that arrive too
slowly 408.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from driftline.http.keys import SETTINGS
from driftline.http.problems import FieldError, ProblemError, field_error

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
    """Refuse (415) a Content-Type outside `allowed`; none at all is "" (JSON where allowed)."""
    raw = request.headers.get("Content-Type")
    if not raw:
        if "" in allowed:
            return
    # Most clients send the bare type: that needs no parsing.
    elif raw in allowed or request.content_type in allowed:
        return
    expected = " or ".join(t for t in allowed if t)
    raise ProblemError(
        415,
        "unsupported-media-type",
        f"Content-Type {request.content_type if raw else None!r} is not supported; send {expected}",
        [FieldError("Content-Type", f"expected {expected}")],
    )


async def read_body(request: web.Request) -> bytes:
    """The body as sent: 415 when compressed, 413 past the limit, 408 when it comes too slowly.

    Compressed bodies are refused rather than inflated: decompression would run on the
    event loop that answers every other request, and a small body can inflate a
    thousandfold. The compact way to send many values is the columns route.
    """
    settings = request.app[SETTINGS]
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ProblemError(
            415,
            "unsupported-content-encoding",
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            [FieldError("Content-Encoding", "expected identity (an uncompressed body)")],
        )
    limit = settings.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        message = f"expected at most {limit} bytes, got {request.content_length}"
        raise ProblemError(413, "body-too-large", f"body: {message}", [FieldError("body", message)])
    if request.content.is_eof():
        # The whole body came with the headers (the usual small request): nothing to wait
        # for, so no timer (arming one costs a request about 10 us).
        return await request.read()  # aiohttp stops a chunked body at the same limit
    try:
        async with asyncio.timeout(settings.server.body_timeout):
            return await request.read()
    except TimeoutError:
        message = f"the body did not arrive within {settings.server.body_timeout:g} s"
        raise ProblemError(
            408, "body-timeout", f"body: {message}", [FieldError("body", message)]
        ) from None


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


TOO_DEEP = "nested deeper than the decoder allows"


def decode_body(body: bytes, schema: type[T], *, msgpack: bool = False) -> T:
    """Decode JSON (or msgpack) into `schema`: 400 when malformed, 422 naming the bad field."""
    kind = "msgpack" if msgpack else "JSON"
    try:
        decoded: T = _decoder(schema, msgpack).decode(body)
        return decoded
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        raise ProblemError(
            422, "invalid-request", f"{error.field}: {error.message}", [error]
        ) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        if not body.strip():
            message = f"empty; expected {kind}"
        elif isinstance(exc, RecursionError):
            message = f"not valid {kind}: {TOO_DEEP}"
        else:
            message = f"not valid {kind}: {exc}"
        raise ProblemError(
            400, f"malformed-{kind.lower()}", f"body: {message}", [FieldError("body", message)]
        ) from None
