"""Bearer tokens with scopes, read from a file that is reloaded when it changes."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support import example_monitors, wait_until

from driftline.http.app import create_app, open_warning
from driftline.http.auth import TokensFileError, parse_tokens
from driftline.settings import AuthSettings, Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"
INGEST = "i" * 40
READER = "r" * 40
ADMIN = "a" * 40
TOKENS = f"""
tokens:
  - name: model-server
    token: {INGEST}
    scopes: [ingest]
  - name: dashboard
    sha256: {hashlib.sha256(READER.encode()).hexdigest()}
    scopes: [read]
  - name: operator
    token: {ADMIN}
    scopes: [read, admin]
"""
EVENT = {"features": {"age": 30}}


def _settings(tokens: Path, **auth: Any) -> Settings:
    return Settings(
        host="127.0.0.1",
        monitors_dir=str(example_monitors()),
        flush_interval=0.001,
        reload_interval=0.05,
        auth=AuthSettings(tokens_file=str(tokens), **auth),
    )


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(TOKENS)
    return path


@pytest.fixture
async def client(aiohttp_client: Any, tokens: Path) -> TestClient:
    return await aiohttp_client(create_app(_settings(tokens)))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_route_needs_its_scope(client: TestClient) -> None:
    calls = [
        ("POST", "/monitor/predict", "ingest"),
        ("POST", f"/v1/monitors/{MONITOR}/events", "ingest"),
        ("GET", f"/v1/monitors/{MONITOR}/drift", "read"),
        ("GET", "/v1/monitors", "read"),
        ("GET", "/openapi.json", "read"),
        ("DELETE", f"/v1/monitors/{MONITOR}/window", "admin"),
    ]
    tokens = {"ingest": INGEST, "read": READER, "admin": ADMIN}
    for method, path, scope in calls:
        body = [EVENT] if path.endswith("/events") else EVENT
        send = {"json": body} if method == "POST" else {}
        response = await client.request(method, path, **send)
        problem = await response.json(content_type=None)
        assert response.status == 401, (path, problem)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="driftline"'
        assert problem["errors"][0]["field"] == "Authorization"
        for other, token in tokens.items():
            response = await client.request(method, path, headers=_bearer(token), **send)
            # The operator's token has read and admin.
            allowed = other == scope or (other == "admin" and scope == "read")
            assert (response.status < 400) == allowed, (method, path, other, response.status)
            if not allowed:
                assert response.status == 403
                assert f'scope="{scope}"' in response.headers["WWW-Authenticate"]
    response = await client.get("/v1/monitors", headers=_bearer("x" * 40))
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    for scheme in ("Basic " + READER, READER, "Bearer", "Bearer  "):
        response = await client.get("/v1/monitors", headers={"Authorization": scheme})
        assert response.status == 401, scheme


async def test_probes_and_metrics_are_open_unless_configured(
    aiohttp_client: Any, client: TestClient, tokens: Path
) -> None:
    for path in ("/monitor/health", "/monitor/ready", "/monitor/metrics"):
        assert (await client.get(path)).status == 200, path
    closed = await aiohttp_client(
        create_app(_settings(tokens, open_probes=False, open_metrics=False))
    )
    for path in ("/monitor/health", "/monitor/ready", "/monitor/metrics"):
        assert (await closed.get(path)).status == 401, path
        assert (await closed.get(path, headers=_bearer(READER))).status == 200, path
        assert (await closed.get(path, headers=_bearer(INGEST))).status == 403, path


async def test_the_tokens_file_is_reloaded_and_a_broken_one_admits_nobody(
    client: TestClient, tokens: Path
) -> None:
    new = "n" * 40
    assert (await client.get("/v1/monitors", headers=_bearer(new))).status == 401

    async def status_with(token: str, expected: int) -> bool:
        return (await client.get("/v1/monitors", headers=_bearer(token))).status == expected

    await asyncio.to_thread(
        tokens.write_text, f"tokens: [{{name: new, token: {new}, scopes: [read]}}]\n"
    )
    await wait_until(lambda: status_with(new, 200), "the new token was never accepted")
    assert (await client.get("/v1/monitors", headers=_bearer(READER))).status == 401
    invalid = "tokens: [{name: short, token: abc, scopes: [read]}]\n"
    await asyncio.to_thread(tokens.write_text, invalid)
    await wait_until(lambda: status_with(new, 401), "a broken tokens file still admits tokens")
    await asyncio.to_thread(tokens.unlink)
    assert (await client.get("/monitor/health")).status == 200  # probes stay open
    await asyncio.to_thread(tokens.write_text, TOKENS)
    await wait_until(lambda: status_with(READER, 200), "the restored file was never loaded")


async def test_a_missing_tokens_file_fails_closed(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(_settings(tmp_path / "absent.yaml")))
    response = await client.post("/monitor/predict", json=EVENT, headers=_bearer(INGEST))
    assert response.status == 401


@pytest.mark.parametrize(
    "document",
    [
        "tokens: [{name: x, token: short, scopes: [read]}]",
        "tokens: [{name: x, scopes: [read]}]",
        f"tokens: [{{name: x, token: {'t' * 40}, sha256: {'0' * 64}, scopes: [read]}}]",
        f"tokens: [{{name: x, token: {'t' * 40}, scopes: [write]}}]",
        f"tokens: [{{name: x, token: {'t' * 40}, scopes: []}}]",
        "tokens: [{name: x, sha256: nothex, scopes: [read]}]",
        "- just a list",
    ],
)
def test_bad_tokens_files_are_refused_without_echoing_tokens(document: str) -> None:
    with pytest.raises(TokensFileError) as info:
        parse_tokens(document.encode(), "tokens.yaml")
    assert "t" * 40 not in str(info.value)


def test_an_open_service_on_a_public_address_is_warned_about() -> None:
    assert open_warning(Settings(host="0.0.0.0")) is not None
    assert open_warning(Settings(host="::")) is not None
    assert open_warning(Settings(host="driftline.example.com")) is not None
    assert open_warning(Settings(host="127.0.0.1")) is None
    assert open_warning(Settings(host="localhost")) is None
    assert open_warning(Settings(host="::1")) is None
    assert open_warning(Settings(auth=AuthSettings(tokens_file="/x"))) is None
