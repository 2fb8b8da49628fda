"""A monitor's window and reference: which buckets it judges, and against what.

By default a monitor judges the buckets of its last `window_seconds` against its
training baseline, and reads them as the store's running totals. A rolling reference
(`previous_window`, or `period`: the same window `period_seconds` earlier) and a window
of at least `window_events` events are sums of per-bucket vectors (`Buckets`) the store
reads for the spans `WindowChoice.spans` names; `WindowChoice.view` sums them.
`window_seconds` bounds how far back a window of events reaches.
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
    # The window as the newest buckets holding at least this many events (None: by time).
    window_events: int | None = None

    @property
    def kept_seconds(self) -> int:
        """The span the store keeps: the window, and the reference window behind it."""
        return self.window_seconds + self.offset_seconds

    @property
    def reads_buckets(self) -> bool:
        """Whether the window is read as per-bucket vectors rather than running totals."""
        return self.reference != "baseline" or self.window_events is not None

    @property
    def spans(self) -> tuple[Span, ...]:
        """The spans to read: the current window, then the reference window if rolling."""
        current = Span(0, self.window_seconds)
        if self.reference == "baseline":
            return (current,)
        return current, Span(self.offset_seconds, self.window_seconds)

    def view(self, buckets: Buckets, spec: WindowSpec, min_samples: int) -> WindowTotals:
        """The current window's totals and its reference (the baseline's below min_samples).

        A window of `window_events` is the newest buckets until they hold that many.
        """
        now = buckets.now
        spans = self.spans
        if self.window_events is not None:
            return self._newest(buckets, spec, self.window_events)
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

    def _newest(self, buckets: Buckets, spec: WindowSpec, events: int) -> WindowTotals:
        """The newest buckets of the window until they hold `events` (all of them if fewer).

        The window starts at its oldest bucket then, else window_seconds back.
        """
        now = buckets.now
        after, _ = Span(0, self.window_seconds).bounds(now, spec.bucket_seconds)
        total = np.zeros(spec.width, dtype=np.float64)
        start = now - self.window_seconds
        for bucket in sorted((b for b in buckets.vectors if b > after), reverse=True):
            total += buckets.vectors[bucket]
            if total[EVENTS_SLOT] >= events:
                start = max(start, float(bucket))
                break
        return WindowTotals(total, start, now)


def _summed(buckets: Buckets, span: Span, spec: WindowSpec) -> Vector:
    """The sum of the span's buckets (zeros when none is live)."""
    after, upto = span.bounds(buckets.now, spec.bucket_seconds)
    total = np.zeros(spec.width, dtype=np.float64)
    for bucket, vector in buckets.vectors.items():
        if bucket > after and (upto is None or bucket <= upto):
            total += vector
    return total
