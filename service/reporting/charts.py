"""Charts as inline SVG drawn on the server: no script, no external file.

Each chart has a text alternative (`<title>` and `<desc>`, named by `aria-labelledby`)
and the page puts a table with the same numbers beside it.

Colours come from CSS classes the page defines (driftline.reporting.html), so a chart
carries only geometry and text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

MAX_CHART_BINS = 40  # more bins are listed in the table; the chart shows the largest shares
LABEL_CHARS = 22
WIDTH = 360
LABEL_RIGHT = 128  # bin labels end here; bars start a little to the right
BAR_LEFT = 134
BAR_WIDTH = WIDTH - BAR_LEFT - 6
ROW = 24
LEGEND = 20


def _svg(chart_id: str, title: str, desc: str, height: int, body: str, css: str) -> str:
    return (
        f'<svg class="{css}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>{body}</svg>'
    )


def percent(share: float) -> str:
    """A proportion as a percentage, e.g. `12.3%`."""
    return f"{share * 100:.1f}%"


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def distribution_chart(
    chart_id: str,
    feature: str,
    bins: Sequence[str],
    baseline: Sequence[float],
    current: Sequence[float],
) -> str:
    """Baseline and current share of every bin, as pairs of horizontal bars."""
    shown = list(range(len(bins)))
    if len(shown) > MAX_CHART_BINS:
        largest = sorted(shown, key=lambda i: -max(baseline[i], current[i]))[:MAX_CHART_BINS]
        shown = sorted(largest)
    top = max((max(baseline[i], current[i]) for i in shown), default=0.0) or 1.0
    parts = [
        f'<rect class="b" x="{BAR_LEFT}" y="4" width="10" height="10"/>'
        f'<text x="{BAR_LEFT + 14}" y="13">baseline</text>'
        f'<rect class="c" x="{BAR_LEFT + 90}" y="4" width="10" height="10"/>'
        f'<text x="{BAR_LEFT + 104}" y="13">current</text>'
    ]
    for row, i in enumerate(shown):
        y = LEGEND + row * ROW
        label = escape(_short(bins[i]))
        parts.append(f'<text x="{LABEL_RIGHT}" y="{y + 15}" text-anchor="end">{label}</text>')
        for css, share, dy in (("b", baseline[i], 3), ("c", current[i], 12)):
            width = share / top * BAR_WIDTH
            if width >= 0.05:
                parts.append(
                    f'<rect class="{css}" x="{BAR_LEFT}" y="{y + dy}" width="{width:.1f}" '
                    'height="8"/>'
                )
    changed = max(range(len(bins)), key=lambda i: abs(current[i] - baseline[i]), default=None)
    desc = f"{len(bins)} bins."
    if changed is not None:
        desc += (
            f" Largest change in bin {bins[changed]}: {percent(baseline[changed])} of the "
            f"baseline, {percent(current[changed])} of the current data."
        )
    if len(shown) < len(bins):
        desc += f" The chart shows the {len(shown)} bins with the largest shares."
    desc += " Every bin's share is in the table that follows."
    return _svg(
        chart_id,
        f"Distribution of {feature}: baseline vs current",
        desc,
        LEGEND + len(shown) * ROW + 4,
        "".join(parts),
        "dist",
    )


def score_gauge(
    chart_id: str,
    feature: str,
    score: float,
    thresholds: tuple[float, float],
    severity: str,
    tone: str,
) -> str:
    """The score on a bar against the (warning, critical) thresholds, drawn to 2x critical.

    `tone` names the bar's colour class (`g-<tone>`), the severity's on the page.
    """
    warning, critical = thresholds
    top = critical * 2
    left, span = 6, WIDTH - 12

    def x(value: float) -> float:
        return left + min(max(value, 0.0), top) / top * span

    off_scale = score > top
    parts = [
        f'<text x="{left}" y="12">score {score:.4g}{" (off scale)" if off_scale else ""}</text>',
        f'<rect class="t" x="{left}" y="18" width="{span}" height="12"/>',
        f'<rect class="g-{tone}" x="{left}" y="18" width="{x(score) - left:.1f}" height="12"/>',
    ]
    for css, value, name, anchor in (
        ("w", warning, "warning", "end"),
        ("k", critical, "critical", "start"),
    ):
        parts.append(
            f'<line class="{css}" x1="{x(value):.1f}" y1="14" x2="{x(value):.1f}" y2="34"/>'
            f'<text x="{x(value):.1f}" y="46" text-anchor="{anchor}">{name} {value:g}</text>'
        )
    return _svg(
        chart_id,
        f"Score of {feature} against its thresholds",
        f"Score {score:.4g}; warning at {warning:g}, critical at {critical:g}; "
        f"severity {severity}.",
        50,
        "".join(parts),
        "gauge",
    )
