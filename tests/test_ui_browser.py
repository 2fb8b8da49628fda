"""The web UI in a real browser: Debian's chromium driven by Playwright against `driftline serve`.

What a person sees is asserted: the token prompt, the overview, the severity badge
going from none to critical as drifted traffic arrives, the drifted feature's bars
apart from its baseline while another feature's stay close, points on the history
chart, an alert acknowledged, the monitor link reached with the keyboard, and no
horizontal scrolling at phone width. Screenshots land in build/ui-screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import ROOT, driftline_serve, example_monitor, fast_monitors

from driftline.simulate import SCENARIOS, ProfileSampler, payload, scenario

SCREENSHOTS = ROOT / "build" / "ui-screenshots"
READER = "r" * 40  # read and admin: what a person at the UI holds
INGEST = "i" * 40
MONITOR = "credit-risk"
PREDICTION = example_monitor().prediction  # the example declares its model's score


def chromium() -> str | None:
    """The distribution's chromium binary (the real one, not the launcher script)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    if executable is None:
        reason = "chromium is not installed (make chromium, or apt-get install chromium)"
        print(f"\n[ui] skipped: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`driftline serve` on 1 s buckets with tokens, alerts announced at once."""
    directory = tmp_path_factory.mktemp("ui")
    tokens = directory / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: person, token: {READER}, scopes: [read, admin]}}\n"
        f"  - {{name: model, token: {INGEST}, scopes: [ingest]}}\n"
    )
    with driftline_serve(
        directory / "serve.log",
        monitors_dir=fast_monitors(directory / "monitors"),
        DRIFTLINE_TOKENS_FILE=str(tokens),
        DRIFTLINE_EVALUATION_INTERVAL="0.3",
        DRIFTLINE_HISTORY_HORIZON="3600",
        DRIFTLINE_ALERT_HOLD_SECONDS="0",
        DRIFTLINE_ALERT_COOLDOWN_SECONDS="0",
        DRIFTLINE_LOG_LEVEL="WARNING",
    ) as url:
        yield url


def post(url: str, path: str, body: Any) -> Any:
    """POST JSON as the model server would, with its ingest token: the answer."""
    request = urllib.request.Request(
        f"{url}/v1/monitors/{MONITOR}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {INGEST}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        return json.load(answer)


def send(url: str, events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """POST events with their predictions: the id the service gave each, and its score."""
    payloads = [payload(e, PREDICTION) for e in events]
    ids = post(url, "events", payloads)["ids"]
    return [(i, p["prediction"]) for i, p in zip(ids, payloads, strict=True)]


def shares(page: Any, feature: str) -> tuple[list[float], list[float]]:
    """Bar widths of the feature's chart as drawn: baseline and current, bin by bin."""
    widths = page.eval_on_selector_all(
        f'svg.dist[data-feature="{feature}"] rect[data-bin]',
        "rects => rects.map(r => [r.getAttribute('class'), Number(r.getAttribute('width'))])",
    )
    baseline = [w for css, w in widths if css == "b"]
    current = [w for css, w in widths if css == "c"]
    assert baseline and len(baseline) == len(current)
    return baseline, current


def test_a_person_watches_a_monitor_drift(browser: Any, service: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sampler = ProfileSampler(example_monitor().profile, np.random.default_rng(11))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(service + "/")
        # Tokens are configured: the page asks for one before it shows anything.
        page.wait_for_selector("#auth:not([hidden])")
        page.fill("#token", READER)
        page.press("#token", "Enter")
        page.wait_for_selector("a.monitor-link")

        send(service, sampler.events(400, SCENARIOS["baseline"]))
        badge = page.locator(f"#severity-{MONITOR}")
        page.wait_for_function(
            "() => /400/.test(document.querySelector('main table tbody').textContent)"
        )
        assert badge.inner_text() == "none"
        page.screenshot(path=str(SCREENSHOTS / "overview.png"))

        # The keyboard reaches the monitor link from the top of the page, and opens it.
        page.locator("body").focus()
        for _ in range(12):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.classList.contains('monitor-link')"):
                break
        else:
            pytest.fail("Tab never reached the monitor link")
        page.keyboard.press("Enter")
        page.wait_for_selector("#severity")
        assert page.locator("#severity").inner_text() == "none"
        baseline, current = shares(page, "age")
        assert max(abs(b - c) for b, c in zip(baseline, current, strict=True)) < 0.25 * max(
            baseline
        )

        sent = send(service, sampler.events(2000, scenario("feature:age")))
        page.wait_for_function(
            "() => document.querySelector('#severity')?.textContent === 'critical'"
        )
        # The drifted feature's bars move apart; an untouched one's stay together.
        baseline, current = shares(page, "age")
        apart = max(abs(b - c) for b, c in zip(baseline, current, strict=True))
        baseline, current = shares(page, "credit_score")
        together = max(abs(b - c) for b, c in zip(baseline, current, strict=True))
        assert apart > 0.5 * max(baseline)
        assert together < 0.25 * max(baseline)
        assert page.locator('[data-feature="age"] #severity-f-age').inner_text() == "critical"
        # The example declares a score prediction: its panel has bars of its own.
        assert page.locator("#prediction-h").inner_text() == "Prediction (score)"
        score = page.locator('[data-feature="prediction-score"]')
        assert score.locator("#severity-f-prediction-score").inner_text() == "none"
        assert len(shares(page, "prediction-score")[0]) > 1

        # History: points on the chart, the latest critical, thresholds drawn.
        page.wait_for_selector("#history-chart circle.point.g-critical")
        assert page.locator("#history-chart circle.point").count() >= 2
        assert page.locator("#history-chart line.w").count() == 1
        assert page.locator("#history-chart line.k").count() == 1
        label = page.get_attribute("#history-chart", "aria-label")
        assert label is not None and "critical" in label

        # The critical alert is acknowledged from its row.
        page.wait_for_selector("button[id^=ack-]")
        page.screenshot(path=str(SCREENSHOTS / "monitor.png"), full_page=False)
        page.locator("button[id^=ack-]").first.click()
        page.wait_for_selector("text=acknowledged by web UI")

        # Labels that contradict every prediction: the performance panel turns critical.
        threshold = 0.5  # the example's labels.threshold (the default)
        post(service, "labels", [{"id": i, "label": int(s < threshold)} for i, s in sent])
        page.wait_for_function(
            "() => document.querySelector('#severity-performance')?.textContent === 'critical'"
        )
        assert page.locator("#severity-perf-accuracy").inner_text() == "critical"
        assert "labelled events" in page.locator("#performance").inner_text()

        # Phone width: the page reflows, nothing scrolls sideways.
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
        page.screenshot(path=str(SCREENSHOTS / "monitor-phone.png"))
    finally:
        context.close()
