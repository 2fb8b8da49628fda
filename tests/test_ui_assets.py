"""The web UI's files: served from the package, open without a token, while the data is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from test_http_auth import READER, TOKENS, _bearer, _settings

from driftline.http.app import create_app
from driftline.reporting.html import BADGES


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    """The app with tokens configured."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS)
    app_client: TestClient = await aiohttp_client(create_app(_settings(tokens)))
    return app_client


async def test_the_shell_and_files_are_open_and_the_data_needs_read(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    for path in ("/ui/app.js", "/ui/ui.css", "/ui/report.css"):
        assert f'"{path}"' in html
        answer = await client.get(path)
        assert answer.status == 200, path
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    script = await client.get("/ui/app.js")
    assert script.content_type == "text/javascript"
    assert "Authorization" in await script.text()  # the page sends the user's token
    # The report's colours: one severity looks the same in the UI and in a report.
    css = await (await client.get("/ui/report.css")).text()
    assert all(
        f".s-{name}{{color:{fg};background:{bg}}}" in css for name, (fg, bg) in BADGES.items()
    )
    assert (await client.get("/v1/monitors")).status == 401
    assert (await client.get("/v1/monitors", headers=_bearer(READER))).status == 200


async def test_an_unknown_file_is_a_problem(client: TestClient) -> None:
    answer = await client.get("/ui/secret.py")
    assert answer.status == 404
    body: dict[str, Any] = await answer.json()
    assert answer.content_type == "application/problem+json"
    assert body["status"] == 404
    assert (await client.get("/ui/../settings.py")).status == 404
