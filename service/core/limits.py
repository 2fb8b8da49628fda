"""Limits: the bounds on what one request may carry, checked where events come in."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Explicit bounds on what one request may carry; larger input gets 413/422."""

    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    max_features: PositiveInt = 500
    max_batch_events: PositiveInt = 10_000
    max_string_length: PositiveInt = 256
    max_future_seconds: NonNegativeFloat = 300.0
    # Larger magnitudes would overflow the window's sums of squares.
    max_abs_value: PositiveFloat = 1e15
