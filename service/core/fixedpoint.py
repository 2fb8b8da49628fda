"""Fixed point: how a window keeps sums of real numbers in integer slots."""

from __future__ import annotations

MOMENT_SCALE = 2.0**20
"""Numeric moments are kept in fixed point, so every slot of a window is an integer.

A value adds round(z * MOMENT_SCALE) to its feature's `sum` slot and round(z^2 *
MOMENT_SCALE) to `sum_squares`, with z = (x - baseline mean) / baseline std. Integers
let the Redis window use fixed-width counters (constant memory, exact sums in any
order); 2^-20 of a standard deviation is far below what a report shows.
"""

MOMENT_CLIP = 2.0**10
"""|z| is clipped at 1024 standard deviations, so one event adds at most 2^40 to
`sum_squares` and 2^23 such events still fit a signed 64-bit counter. Values that far
out are also counted in `out_of_range`."""
