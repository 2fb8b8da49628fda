"""Limits: the bounds on what one request may carry, checked where events come in."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]

MAX_MODEL_VERSION_LENGTH = 128
ModelVersion = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_MODEL_VERSION_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
        description="At most 128 printable characters (no control characters): it becomes "
        "the model_version label of driftline_events_total.",
    ),
]
"""A model version as clients send it: it becomes a Prometheus label value, so it is
bounded (a 4 MiB version would make every scrape megabytes long) and printable."""


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Explicit bounds on what one request may carry; larger input gets 413/422."""

    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    max_features: PositiveInt = 500
    max_batch_events: PositiveInt = 10_000
    max_string_length: PositiveInt = 256
    max_future_seconds: NonNegativeFloat = 300.0
    # Larger magnitudes would overflow the window's sums of squares.
    max_abs_value: PositiveFloat = 1e15
