"""One self-contained HTML page per drift report: the same object the JSON API returns.

No script, no external file, no font or image to fetch (the page's Content-Security-Policy
forbids it): CSS inline, charts as inline SVG (driftline.reporting.charts) with text
alternatives and table fallbacks. The page reads the report's fields generically where
it can (each feature's statistics and rates, the report's extra fields), so a field
added to the report shows up without a change here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import msgspec

from driftline.core.report import DriftReport, FeatureReport
from driftline.core.severity import SEVERITY_RANK
from driftline.reporting.charts import distribution_chart, percent, score_gauge

# (text, background) of each severity's badge; at least 4.5:1 contrast (WCAG AA).
BADGES: Mapping[str, tuple[str, str]] = {
    "none": ("#065f46", "#d1fae5"),
    "notice": ("#1e3a8a", "#dbeafe"),
    "warning": ("#78350f", "#fef3c7"),
    "critical": ("#ffffff", "#b91c1c"),
    "other": ("#1f2937", "#e5e7eb"),  # a severity this page has no colour for
}
# Chart fills on white: at least 3:1 (WCAG non-text contrast).
FILLS: Mapping[str, str] = {
    "b": "#6b7280",  # baseline bars
    "c": "#1d4ed8",  # current bars
    "g-none": "#047857",
    "g-notice": "#1d4ed8",
    "g-warning": "#b45309",
    "g-critical": "#b91c1c",
    "g-other": "#374151",
}
TEXT, MUTED, BORDER = "#111827", "#4b5563", "#d1d5db"

CSS = (
    "body{margin:0;background:#fff}"
    f".dlr{{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:{TEXT};"
    "background:#fff;max-width:1100px;margin:0 auto;padding:12px 16px}"
    ".dlr h1{font-size:1.5em;margin:.2em 0}"
    f".dlr h2{{font-size:1.2em;margin:1.4em 0 .5em;border-bottom:1px solid {BORDER}}}"
    ".dlr h3{font-size:1.05em;margin:0 0 .5em;overflow-wrap:anywhere}"
    f".dlr .m{{color:{MUTED}}}"
    ".dlr dl.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));"
    "gap:8px;margin:0}"
    f".dlr .cards div{{border:1px solid {BORDER};border-radius:6px;padding:6px 10px}}"
    f".dlr dt{{font-size:.85em;color:{MUTED}}}"
    ".dlr dd{margin:0;font-size:1.1em;font-weight:600;overflow-wrap:anywhere}"
    ".dlr .s{display:inline-block;padding:0 8px;border-radius:10px;font-weight:600;"
    "font-size:.85em}"
    + "".join(f".dlr .s-{name}{{color:{fg};background:{bg}}}" for name, (fg, bg) in BADGES.items())
    + ".dlr .x{overflow-x:auto}"
    ".dlr table{border-collapse:collapse;font-size:.9em;margin:.3em 0}"
    ".dlr th,.dlr td{padding:3px 8px;border-bottom:1px solid #e5e7eb;text-align:left;"
    "vertical-align:top}"
    ".dlr .n{text-align:right;font-variant-numeric:tabular-nums}"
    f".dlr section.f{{border:1px solid {BORDER};border-radius:8px;padding:12px;margin:14px 0}}"
    ".dlr .g{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px}"
    ".dlr svg{width:100%;height:auto;max-width:540px;display:block}"
    f".dlr svg text{{font-size:11px;fill:{TEXT}}}"
    ".dlr .t{fill:#e5e7eb}"
    + "".join(f".dlr .{name}{{fill:{colour}}}" for name, colour in FILLS.items())
    + f".dlr .w{{stroke:{FILLS['g-warning']};stroke-width:2}}"
    f".dlr .k{{stroke:{FILLS['g-critical']};stroke-width:2}}"
    f".dlr a,.dlr summary{{color:{FILLS['c']}}}"
    ".dlr summary{cursor:pointer;margin:.4em 0}"
    ".dlr :focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}"
    "@media (max-width:600px){.dlr{padding:8px;font-size:14px}}"
)
CSP = "default-src 'none'; style-src 'unsafe-inline'"

# Names a reader knows the numbers by; other fields are named after themselves.
LABELS: Mapping[str, str] = {
    "score": "Score (effect size)",
    "significant": "Significant",
    "psi": "PSI",
    "kl": "KL divergence",
    "js": "JS distance",
    "cohen_w": "Cohen's w (raw)",
    "statistic": "χ² statistic",
    "dof": "Degrees of freedom",
    "p_value": "p-value",
    "window_count": "Current count",
    "baseline_count": "Baseline count",
    "warning_threshold": "Warning threshold",
    "critical_threshold": "Critical threshold",
    "mean": "Mean (current)",
    "baseline_mean": "Mean (baseline)",
    "std": "SD (current)",
    "baseline_std": "SD (baseline)",
    "mean_shift_z": "Mean shift (baseline SDs)",
    "missing_rate": "Missing",
    "out_of_range_rate": "Outside the baseline's range",
}
# Feature fields with a place of their own on the page (the rest go in its table).
_PLACED = {"type", "severity", "bins", "baseline_proportions", "window_proportions"}
# Report fields the summary states (others are listed after it).
_SUMMARY = {
    "monitor",
    "model",
    "severity",
    "drift_score",
    "drift_detected",
    "drifted_features",
    "feature_scores",
    "window",
    "features",
    "evaluated_at",
    "alpha",
}


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def _value(value: Any) -> str:
    """A value as the page shows it (escaped)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return escape(str(value))
        return f"{value:.3e}" if not 1e-3 <= abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{escape(str(k))}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value) or "none"
    return escape(str(value))


def _tone(severity: str) -> str:
    return severity if severity in BADGES else "other"


def _badge(severity: str) -> str:
    return f'<span class="s s-{_tone(severity)}">{escape(severity)}</span>'


def _rank(severity: str) -> int:
    return SEVERITY_RANK.get(severity, 0)


def flagged_first(report: DriftReport) -> list[str]:
    """Flagged features first (worst severity, then largest score), then the rest in order."""
    names = list(report.features)
    flagged = [n for n in names if _rank(report.features[n].severity) > 0]
    flagged.sort(key=lambda n: (-_rank(report.features[n].severity), -report.features[n].score))
    return flagged + [n for n in names if n not in flagged]


def _card(term: str, value: str) -> str:
    return f"<div><dt>{escape(term)}</dt><dd>{value}</dd></div>"


def _summary(report: DriftReport, notes: Sequence[str]) -> str:
    window = report.window
    ready = "yes" if window.ready else f"no: needs {window.min_samples:,} events"
    drifted = ", ".join(escape(n) for n in report.drifted_features) or "none"
    cards = [
        _card("Severity", _badge(report.severity)),
        _card("Drift score", _value(report.drift_score)),
        _card("Window events", _value(window.events)),
        _card("Ready", ready),
        _card("Drifted features", drifted),
        _card("Significance level (alpha)", _value(report.alpha)),
    ]
    extra = msgspec.structs.asdict(report)
    cards += [_card(_label(k), _value(v)) for k, v in extra.items() if k not in _SUMMARY]
    parts = [
        '<section aria-labelledby="summary"><h2 id="summary">Summary</h2>',
        f'<dl class="cards">{"".join(cards)}</dl>',
    ]
    if notes:
        items = "".join(f"<li>{escape(note)}</li>" for note in notes)
        parts.append(f'<h3>Notes</h3><ul class="notes">{items}</ul>')
    parts.append("</section>")
    return "".join(parts)


def _overview(report: DriftReport, order: list[str], ids: Mapping[str, str]) -> str:
    rows = []
    for name in order:
        f = report.features[name]
        rows.append(
            f'<tr><th scope="row"><a href="#{ids[name]}">{escape(name)}</a></th>'
            f"<td>{escape(f.type)}</td><td>{_badge(f.severity)}</td>"
            f'<td class="n">{_value(f.score)}</td>'
            f'<td class="n">{_value(f.warning_threshold)} / {_value(f.critical_threshold)}</td>'
            f'<td class="n">{_value(f.p_value)}</td>'
            f'<td class="n">{percent(f.missing_rate)} / {percent(f.baseline_missing_rate)}</td>'
            "</tr>"
        )
    return (
        '<section aria-labelledby="features"><h2 id="features">Features</h2>'
        '<div class="x"><table><caption class="m">Flagged features first</caption><thead><tr>'
        '<th scope="col">Feature</th><th scope="col">Type</th><th scope="col">Severity</th>'
        '<th scope="col">Score</th><th scope="col">Warning / critical</th>'
        '<th scope="col">p-value</th><th scope="col">Missing, current / baseline</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _bins_table(feature: FeatureReport) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(label)}</th><td class="n">{percent(b)}</td>'
        f'<td class="n">{percent(c)}</td><td class="n">{(c - b) * 100:+.1f}</td></tr>'
        for label, b, c in zip(
            feature.bins, feature.baseline_proportions, feature.window_proportions, strict=True
        )
    )
    return (
        '<details><summary>Distribution table</summary><div class="x"><table><thead><tr>'
        '<th scope="col">Bin</th><th scope="col">Baseline</th><th scope="col">Current</th>'
        '<th scope="col">Change (points)</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div></details>"
    )


def _quality_and_statistics(feature: FeatureReport) -> str:
    """Rates (current against baseline) and every other statistic, read from the fields."""
    fields = {k: v for k, v in msgspec.structs.asdict(feature).items() if k not in _PLACED}
    rates = [k for k in fields if k.endswith("_rate") and not k.startswith("baseline_")]
    quality = []
    for key in rates:
        current = fields.pop(key)
        baseline = fields.pop(f"baseline_{key}", None)
        if current is None:
            continue
        shown = percent(baseline) if isinstance(baseline, float) else "-"
        quality.append(
            f'<tr><th scope="row">{escape(_label(key))}</th><td class="n">{percent(current)}</td>'
            f'<td class="n">{shown}</td></tr>'
        )
    stats = "".join(
        f'<tr><th scope="row">{escape(_label(k))}</th><td class="n">{_value(v)}</td></tr>'
        for k, v in fields.items()
        if v is not None
    )
    return (
        '<div class="g"><div><h4>Data quality</h4><div class="x"><table><thead><tr>'
        '<th scope="col">Rate</th><th scope="col">Current</th><th scope="col">Baseline</th>'
        f"</tr></thead><tbody>{''.join(quality)}</tbody></table></div></div>"
        '<div><h4>Statistics</h4><div class="x"><table><tbody>'
        f"{stats}</tbody></table></div></div></div>"
    )


def _feature(name: str, feature: FeatureReport, section_id: str) -> str:
    return (
        f'<section class="f" id="{section_id}" aria-labelledby="{section_id}-h">'
        f'<h3 id="{section_id}-h">{escape(name)} {_badge(feature.severity)} '
        f'<span class="m">{escape(feature.type)}</span></h3><div class="g"><div>'
        + score_gauge(
            f"{section_id}-s",
            name,
            feature.score,
            (feature.warning_threshold, feature.critical_threshold),
            feature.severity,
            _tone(feature.severity),
        )
        + f'<p class="m">p-value {_value(feature.p_value)}'
        f"{'' if feature.significant else ' (not significant)'}</p></div><div>"
        + distribution_chart(
            f"{section_id}-d",
            name,
            feature.bins,
            feature.baseline_proportions,
            feature.window_proportions,
        )
        + "</div></div>"
        + _bins_table(feature)
        + _quality_and_statistics(feature)
        + "</section>"
    )


def render_html(report: DriftReport, *, notes: Sequence[str] = (), fragment: bool = False) -> str:
    """The report as an HTML page; `fragment`: without the document around it (notebooks)."""
    order = flagged_first(report)
    ids = {name: f"f{i}" for i, name in enumerate(report.features)}
    subtitle = f"model {escape(report.model)} · " if report.model else ""
    window = report.window
    # Offline, the current data has no time span: its window starts and ends at once.
    span = (
        f" · window {escape(window.start)} to {escape(window.end)}"
        if window.start != window.end
        else ""
    )
    body = (
        '<main class="dlr"><header>'
        f"<h1>Drift report: {escape(report.monitor)}</h1>"
        f'<p class="m">{subtitle}evaluated {escape(report.evaluated_at)}{span}</p></header>'
        + _summary(report, notes)
        + _overview(report, order, ids)
        + '<section aria-labelledby="detail"><h2 id="detail">Feature detail</h2>'
        + "".join(_feature(name, report.features[name], ids[name]) for name in order)
        + "</section>"
        '<footer class="m"><p>driftline drift report: the numbers the JSON API returns, '
        "rendered on the server</p></footer></main>"
    )
    style = f"<style>{CSS}</style>"
    if fragment:
        return style + body
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"/>'
        f"<title>Drift report: {escape(report.monitor)}, {escape(report.severity)}</title>"
        f"{style}</head><body>{body}</body></html>\n"
    )
