"""The CloudEvents 1.0 HTTP binding, as KServe's InferenceService logger uses it.

Binary mode: the attributes are `ce-*` headers and the body is the event's data (the
logger's way). Structured mode: the body is a JSON envelope
(`application/cloudevents+json`) with the attributes and `data` (or `data_base64`).
An event without a required attribute, or of another spec version, is a 400 problem
naming the header (binary) or the envelope field (structured).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from driftline.core.timestamps import parse_isoformat
from driftline.http.codec import decode_body
from driftline.http.problems import FieldError, ProblemError

STRUCTURED = "application/cloudevents+json"
SPEC_VERSION = "1.0"
REQUIRED = ("specversion", "id", "source", "type")


class Envelope(msgspec.Struct, frozen=True):
    """A structured-mode CloudEvent (extension attributes are read by nobody here)."""

    specversion: str | None = None
    id: str | None = None
    source: str | None = None
    type: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    data: msgspec.Raw | None = None
    data_base64: str | None = None


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One received CloudEvent: its attributes, its data, and where its data sat (for paths)."""

    id: str
    type: str
    source: str
    time: datetime | None
    data: bytes
    data_path: str  # "" for a binary-mode body, "data." inside an envelope


def _invalid(field: str, message: str) -> ProblemError:
    return ProblemError(
        400, "invalid-cloudevent", f"{field}: {message}", [FieldError(field, message)]
    )


def _attributes(found: dict[str, str | None], prefix: str) -> dict[str, str]:
    """The required attributes, checked; `prefix` names them as sent (`ce-` for headers)."""
    for name in REQUIRED:
        if not found.get(name):
            raise _invalid(
                prefix + name,
                "required: a CloudEvent has specversion, id, source and type "
                "(KServe's logger sends them all)",
            )
    if found["specversion"] != SPEC_VERSION:
        raise _invalid(
            prefix + "specversion",
            f"expected {SPEC_VERSION!r}, got {found['specversion']!r}",
        )
    return {name: found[name] or "" for name in REQUIRED}


def _time(raw: str | None, field: str) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = parse_isoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _invalid(field, f"expected an RFC 3339 timestamp with a zone, got {raw!r}")
    return moment


def read_cloudevent(request: web.Request, body: bytes) -> CloudEvent:
    """The CloudEvent a request carries, in binary or structured content mode."""
    if request.content_type == STRUCTURED:
        envelope = decode_body(body, Envelope)
        found: dict[str, Any] = {name: getattr(envelope, name) for name in REQUIRED}
        attributes = _attributes(found, "")
        media = (envelope.datacontenttype or "application/json").split(";")[0].strip()
        if media != "application/json":
            message = f"expected application/json (a JSON inference body), got {media!r}"
            raise ProblemError(
                415,
                "unsupported-media-type",
                f"datacontenttype: {message}",
                [FieldError("datacontenttype", message)],
            )
        if envelope.data_base64 is not None:
            try:
                data = base64.b64decode(envelope.data_base64, validate=True)
            except binascii.Error as exc:
                raise _invalid("data_base64", f"not valid base64: {exc}") from None
        elif envelope.data is not None:
            data = bytes(envelope.data)
        else:
            raise _invalid("data", "required: the model server's request or response body")
        return CloudEvent(
            attributes["id"],
            attributes["type"],
            attributes["source"],
            _time(envelope.time, "time"),
            data,
            "data.",
        )
    headers = request.headers
    attributes = _attributes({name: headers.get("ce-" + name) for name in REQUIRED}, "ce-")
    return CloudEvent(
        attributes["id"],
        attributes["type"],
        attributes["source"],
        _time(headers.get("ce-time"), "ce-time"),
        body,
        "",
    )
