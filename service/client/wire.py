"""What the client sends and reads: request bodies for the two ingestion routes, answers.

Rows go to `POST /v1/monitors/{name}/events` as a JSON array, each with its own time.
Blocks go to `POST /v1/monitors/{name}/columns` as msgpack: a numeric feature's column
as packed little-endian float64 bytes (NaN missing), which the service reads without
parsing; other columns as value lists. The batch carries its first block's time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import numpy as np

from driftline.client.queue import Block, Row
from driftline.core.values import category_values

T = TypeVar("T")
# What msgspec raises for a value it cannot encode (an object, a huge int, NaN in JSON).
UNENCODABLE = (TypeError, ValueError, OverflowError)

JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/msgpack"


class WireEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event of the events route."""

    features: Mapping[str, Any]
    timestamp: datetime
    model_version: str | None = None


class WireColumns(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of the columns route."""

    columns: dict[str, bytes | list[Any]]
    timestamp: datetime
    model_version: str | None = None


class RejectedValue(msgspec.Struct, frozen=True):
    """One refusal in a batch answer or problem document."""

    field: str
    message: str


class BatchAnswer(msgspec.Struct, frozen=True):
    """What the service did with a batch (the routes' 200 answer)."""

    accepted: int
    late: int
    rejected: int
    errors: list[RejectedValue] = []


class Problem(msgspec.Struct, frozen=True):
    """An RFC 9457 problem document, as far as the client reads it."""

    type: str = ""
    detail: str = ""
    errors: list[RejectedValue] = []


class _FeatureKind(msgspec.Struct, frozen=True):
    type: str


class _Baseline(msgspec.Struct, frozen=True):
    features: dict[str, _FeatureKind]


class MonitorKinds(msgspec.Struct, frozen=True):
    """`GET /v1/monitors/{name}`, as far as the client reads it: each feature's kind."""

    baseline: _Baseline

    def kinds(self) -> dict[str, str]:
        """`numeric` or `categorical` by feature name."""
        return {name: f.type for name, f in self.baseline.features.items()}


def _plain(value: Any) -> Any:
    """NumPy scalars as Python values; anything else cannot be sent."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a value of type {type(value).__name__}")


_JSON = msgspec.json.Encoder(enc_hook=_plain)
_MSGPACK = msgspec.msgpack.Encoder(enc_hook=_plain)


def utc(at: float) -> datetime:
    """Unix seconds as an aware datetime."""
    return datetime.fromtimestamp(at, UTC)


def events_body(rows: list[Row]) -> tuple[bytes | None, list[str]]:
    """The events route's body, and why each row that cannot be encoded was left out.

    None when no row can be encoded.
    """
    events = [WireEvent(r.features, utc(r.at), r.model_version) for r in rows]
    return _encodable(events, _JSON.encode, lambda event: 1)


def _encodable(
    items: list[T], encode: Callable[[list[T]], bytes], events: Callable[[T], int]
) -> tuple[bytes | None, list[str]]:
    """`encode(items)`, or of those that encode alone, and why each other event was left out.

    None when no item encodes.
    """
    try:
        return encode(items), []
    except UNENCODABLE:
        pass  # find the items at fault; the others go
    good: list[T] = []
    refused: list[str] = []
    for item in items:
        try:
            encode([item])
        except UNENCODABLE as exc:
            refused.extend([str(exc)] * events(item))
        else:
            good.append(item)
    return (encode(good) if good else None), refused


def _values(column: np.ndarray, kind: str | None) -> bytes | list[Any]:
    """One column on the wire: packed float64 for numeric features, else a value list."""
    if column.dtype == np.float64:
        if kind != "categorical":
            return np.ascontiguousarray(column, dtype="<f8").tobytes()
        return category_values(column)  # integer codes of a categorical feature
    return [None if isinstance(v, float) and v != v else v for v in column.tolist()]


def columns_body(blocks: list[Block], kinds: Mapping[str, str]) -> tuple[bytes | None, list[str]]:
    """The columns route's body, and why each event of a block that cannot be encoded was left out.

    A block's events go together (its columns are encoded whole), so a bad value leaves
    out its whole block, not the blocks beside it. None when no block can be encoded.
    """
    return _encodable(blocks, lambda chosen: _columns_body(chosen, kinds), lambda b: b.events)


def _columns_body(blocks: list[Block], kinds: Mapping[str, str]) -> bytes:
    """The columns route's body for blocks of the same columns (msgpack)."""
    first = blocks[0]
    if all(isinstance(b.columns, np.ndarray) for b in blocks):
        # Numeric arrays (a row per name): one join for all, not one per column.
        joined: Sequence[np.ndarray] | np.ndarray = np.concatenate(
            [b.columns for b in blocks], axis=1
        )
    else:
        joined = [
            np.concatenate([b.columns[j] for b in blocks]) if len(blocks) > 1 else column
            for j, column in enumerate(first.columns)
        ]
    columns = {name: _values(joined[j], kinds.get(name)) for j, name in enumerate(first.names)}
    return _MSGPACK.encode(WireColumns(columns, utc(first.at), first.model_version))
