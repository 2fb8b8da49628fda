"""The HTML report: self-contained, small, accessible, and true to the report it renders.

The page is well-formed XML, so it is parsed here as a browser's accessibility tree
would see it: charts with their text alternatives, tables with the report's numbers.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest

from driftline.core.report import DriftReport
from driftline.reporting import compare, render_html
from driftline.reporting.charts import MAX_CHART_BINS
from driftline.reporting.html import BADGES, FILLS

SVG = "{http://www.w3.org/2000/svg}"


def frame(n: int, seed: int, *, drift: bool, numeric: int, categorical: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(numeric):
        shift = 0.8 if drift and i % 10 == 0 else 0.0
        columns[f"num_{i:02d}"] = rng.normal(shift, 1.0 + i / 10, n)
    for i in range(categorical):
        p = np.arange(1, 31, dtype=float)[::-1]
        if drift and i % 5 == 0:
            p = p[::-1]
        columns[f"cat_{i:02d}"] = rng.choice([f"c{k:02d}" for k in range(30)], n, p=p / p.sum())
    return columns


@pytest.fixture(scope="module")
def fifty() -> tuple[DriftReport, str]:
    """50 features (35 numeric, 15 categorical of 30 categories), some drifted."""
    shape = {"numeric": 35, "categorical": 15}
    result = compare(frame(5000, 1, drift=False, **shape), frame(3000, 2, drift=True, **shape))
    return result.report, result.to_html()


def parse(page: str) -> ET.Element:
    return ET.fromstring(page.removeprefix("<!DOCTYPE html>"))


def test_fifty_features_fit_in_less_than_a_megabyte(fifty: tuple[DriftReport, str]) -> None:
    report, page = fifty
    assert len(report.features) == 50
    assert len(page.encode()) < 1_000_000


def test_the_page_needs_nothing_from_the_network(fifty: tuple[DriftReport, str]) -> None:
    _, page = fifty
    root = parse(page)
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use"}
    for element in root.iter():
        for name, value in element.attrib.items():
            if name in {"href", "src"}:
                assert value.startswith("#"), (element.tag, value)
            assert not name.startswith("on"), name  # no event handlers
    css = "".join(style.text or "" for style in root.iter("style"))
    assert "url(" not in css
    assert "@import" not in css
    csp = root.find(".//meta[@http-equiv='Content-Security-Policy']")
    assert csp is not None
    assert csp.get("content") == "default-src 'none'; style-src 'unsafe-inline'"


def test_drifted_features_come_first_with_their_numbers(fifty: tuple[DriftReport, str]) -> None:
    report, page = fifty
    root = parse(page)
    overview = root.find(".//section[@aria-labelledby='features']//tbody")
    assert overview is not None
    names = [row.find("th/a").text for row in overview]  # type: ignore[union-attr]
    flagged = [n for n in names if report.features[n].severity != "none"]
    assert flagged, "the fixture should drift"
    assert names[: len(flagged)] == flagged
    assert set(flagged) >= set(report.drifted_features)
    first = report.features[names[0]]
    assert all(first.score >= report.features[n].score for n in flagged)
    # The detail sections follow the same order.
    details = [s.find("h3").text.strip() for s in root.iter("section") if s.get("class") == "f"]  # type: ignore[union-attr]
    assert details == names


def test_each_chart_has_a_text_alternative_and_a_table(fifty: tuple[DriftReport, str]) -> None:
    report, page = fifty
    root = parse(page)
    ids = {element.get("id") for element in root.iter()}
    charts = list(root.iter(f"{SVG}svg"))
    assert len(charts) == 2 * len(report.features)  # a gauge and a distribution each
    for chart in charts:
        assert chart.get("role") == "img"
        labelled = chart.get("aria-labelledby", "").split()
        assert len(labelled) == 2
        assert set(labelled) <= ids
        assert chart.find(f"{SVG}title") is not None
        assert (chart.find(f"{SVG}desc").text or "").strip()  # type: ignore[union-attr]
    for section in root.iter("section"):
        if section.get("class") != "f":
            continue
        name = section.find("h3").text.strip()  # type: ignore[union-attr]
        feature = report.features[name]
        rows = section.findall(".//details//tbody/tr")
        assert [r.find("th").text for r in rows] == list(feature.bins)  # type: ignore[union-attr]
        for row, b, c in zip(
            rows, feature.baseline_proportions, feature.window_proportions, strict=True
        ):
            cells = [td.text for td in row.findall("td")]
            assert cells[:2] == [f"{b * 100:.1f}%", f"{c * 100:.1f}%"]
        labels = [t.text for t in section.iter(f"{SVG}text")]
        assert f"warning {feature.warning_threshold:g}" in labels
        assert f"critical {feature.critical_threshold:g}" in labels
        assert all(label in labels for label in feature.bins if len(label) <= 22)


def test_many_categories_keep_the_chart_small_and_the_table_whole() -> None:
    names = [f"category-{i:03d}" for i in range(150)]
    rng = np.random.default_rng(3)
    reference = {"kind": list(rng.choice(names, 20_000))}
    result = compare(reference, {"kind": list(rng.choice(names[:60], 5000))})
    root = parse(result.to_html())
    feature = result.report.features["kind"]
    assert len(feature.bins) == 101  # the top 100 and `other`
    chart = next(c for c in root.iter(f"{SVG}svg") if c.get("class") == "dist")
    assert len([r for r in chart.iter(f"{SVG}rect") if r.get("class") == "c"]) <= (
        MAX_CHART_BINS + 1
    )
    assert f"shows the {MAX_CHART_BINS} bins with the largest shares" in (
        chart.find(f"{SVG}desc").text or ""  # type: ignore[union-attr]
    )
    assert len(root.findall(".//details//tbody/tr")) == 101


def relative_luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_colours_have_readable_contrast(fifty: tuple[DriftReport, str]) -> None:
    _, page = fifty
    css = page[page.index("<style>") : page.index("</style>")]
    for name in BADGES:
        text, background = re.search(rf"\.s-{name}{{color:(#\w+);background:(#\w+)}}", css).groups()  # type: ignore[union-attr]
        assert contrast(text, background) >= 4.5, name  # WCAG AA, text
    for name in FILLS:
        (fill,) = re.search(rf"\.dlr \.{name}{{fill:(#\w+)}}", css).groups()  # type: ignore[union-attr]
        assert contrast(fill, "#ffffff") >= 3, name  # WCAG AA, graphics
    body = re.search(r"\.dlr{font:[^;]+;color:(#\w+)", css).group(1)  # type: ignore[union-attr]
    muted = re.search(r"\.dlr \.m{color:(#\w+)}", css).group(1)  # type: ignore[union-attr]
    assert contrast(body, "#ffffff") >= 7
    assert contrast(muted, "#ffffff") >= 4.5


def test_the_page_fits_a_phone(fifty: tuple[DriftReport, str]) -> None:
    _, page = fifty
    root = parse(page)
    viewport = root.find(".//meta[@name='viewport']")
    assert viewport is not None
    assert viewport.get("content") == "width=device-width, initial-scale=1"
    css = page[page.index("<style>") : page.index("</style>")]
    # Nothing is wider than a phone: charts scale with their box, wide tables scroll.
    fixed = [int(w) for w in re.findall(r"(?<!max-)(?<!min-)width:(\d+)px", css)]
    assert all(w <= 320 for w in fixed), fixed
    assert "svg{width:100%;height:auto" in css
    parents = {child: parent for parent in root.iter() for child in parent}
    assert all(parents[table].get("class") == "x" for table in root.iter("table"))


def test_a_notice_and_the_reasons_of_a_feature_are_shown() -> None:
    # A 0.4 SD shift of a normal feature over 5,000 events: significant, a moderate PSI.
    rng = np.random.default_rng(21)
    base = compare({"a": rng.normal(0, 1, 20_000)}, {"a": rng.normal(0.4, 1, 5_000)}).report
    feature = base.features["a"]
    assert feature.severity == "notice", feature.score
    root = parse(render_html(base))
    cells = {
        row.find("th").text: row.find("td").text  # type: ignore[union-attr]
        for row in root.iter("tr")
        if row.find("th") is not None and row.find("td") is not None
    }
    assert cells["Reasons"] == ", ".join(feature.reasons)
    badges = [s for s in root.iter("span") if s.text == "notice"]
    assert badges
    assert all(b.get("class") == "s s-notice" for b in badges)


def test_notes_are_shown_and_text_is_escaped() -> None:
    result = compare({"<b>": ["x", "y"] * 100}, {"<b>": ["x", "<i>"] * 100, "extra": [1] * 200})
    page = result.to_html()
    assert "<b>" not in page.replace("<body>", "")
    root = parse(page)
    notes = [li.text for li in root.iter("li")]
    assert notes == ['column "extra" is not a feature of the reference: ignored']
