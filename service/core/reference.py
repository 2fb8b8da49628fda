"""A monitor's window and reference: which buckets it judges, and against what.

By default a monitor judges the buckets of its last `window_seconds` against its
training baseline, and reads them as the store's running totals. A rolling reference
(`previous_window`, or `period`: the same window `period_seconds` earlier) and a window
of at least `window_events` events are sums of per-bucket vectors (`Buckets`) the store
reads for the spans `WindowChoice.spans` names; `WindowChoice.view` sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftline.core.layout import EVENTS_SLOT
from driftline.core.policy import ReferenceKind
from driftline.core.window import (
    Buckets,
    ReferenceInfo,
    Span,
    Vector,
    WindowSpec,
    WindowTotals,
)


@dataclass(frozen=True, slots=True)
class WindowChoice:
    """The monitor's window (seconds) and reference, resolved from its config."""

    window_seconds: int
    reference: ReferenceKind = "baseline"
    offset_seconds: int = 0  # how far back the reference window lies (0: the baseline)

    @property
    def kept_seconds(self) -> int:
        """The span the store keeps: the window, and the reference window behind it."""
        return self.window_seconds + self.offset_seconds

    @property
    def reads_buckets(self) -> bool:
        """Whether the window is read as per-bucket vectors rather than running totals."""
        return self.reference != "baseline"

    @property
    def spans(self) -> tuple[Span, ...]:
        """The spans to read: the current window, then the reference window if rolling."""
        current = Span(0, self.window_seconds)
        if self.reference == "baseline":
            return (current,)
        return current, Span(self.offset_seconds, self.window_seconds)

    def view(self, buckets: Buckets, spec: WindowSpec, min_samples: int) -> WindowTotals:
        """The current window's totals and its reference (the baseline's below min_samples)."""
        now = buckets.now
        spans = self.spans
        vector = _summed(buckets, spans[0], spec)
        if len(spans) == 1:
            return WindowTotals(vector, now - self.window_seconds, now)
        reference = _summed(buckets, spans[1], spec)
        events = round(float(reference[EVENTS_SLOT]))
        fallback = events < min_samples
        info = ReferenceInfo(self.reference, fallback, events)
        return WindowTotals(
            vector, now - self.window_seconds, now, None if fallback else reference, info
        )


def _summed(buckets: Buckets, span: Span, spec: WindowSpec) -> Vector:
    """The sum of the span's buckets (zeros when none is live)."""
    after, upto = span.bounds(buckets.now, spec.bucket_seconds)
    total = np.zeros(spec.width, dtype=np.float64)
    for bucket, vector in buckets.vectors.items():
        if bucket > after and (upto is None or bucket <= upto):
            total += vector
    return total
