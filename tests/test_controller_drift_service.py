"""Which drift service URLs the operator may call (with which token), and what it logs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import example_monitors

from driftline.http.app import create_app
from driftline.operator.drift_service import (
    DriftSummary,
    ServiceFailure,
    bearer_token,
    fetch_drift_summary,
    forget_window,
    refused_service_url,
)
from driftline.settings import AuthSettings, Settings

OPERATOR_TOKEN = "o" * 48


@pytest.mark.parametrize(
    "url",
    [
        "http://driftline.ml.svc:8080",
        "https://driftline.ml.svc",
        "http://drift-2.ml.svc.cluster.local:8080/base",
    ],
)
def test_services_of_the_monitors_namespace_are_called(url: str) -> None:
    assert refused_service_url(url, "ml", cluster_domain="cluster.local", extra_hosts=()) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://driftline.other.svc:8080", "not a service of namespace 'ml'"),
        ("http://driftline:8080", "not a service of namespace 'ml'"),  # resolves in *its* ns
        ("http://ml.svc:8080", "not a service of namespace 'ml'"),
        ("http://x.ml.svc.evil.example:8080", "not a service of namespace 'ml'"),
        ("http://metadata.google.internal/computeMetadata/v1", "not a service"),
        ("http://169.254.169.254/latest", "not a service"),
        ("http://user:pw@driftline.ml.svc:8080", "not an http(s) URL"),
        ("ftp://driftline.ml.svc", "not an http(s) URL"),
        ("http://driftline.ml.svc:port", "not an http(s) URL"),
    ],
)
def test_other_hosts_are_refused_with_the_reason(url: str, why: str) -> None:
    refused = refused_service_url(url, "ml", cluster_domain="cluster.local", extra_hosts=())
    assert refused is not None
    assert refused.reason == "ServiceUrlRefused"
    assert why in refused.message


def test_the_operators_settings_allow_more_hosts() -> None:
    allowed = ("localhost", "*.drift.internal")
    for url in ("http://localhost:8080", "http://a.drift.internal"):
        assert refused_service_url(url, "ml", cluster_domain="c.l", extra_hosts=allowed) is None
    assert refused_service_url("http://b.other", "ml", cluster_domain="c.l", extra_hosts=allowed)
    # The cluster domain is a setting too.
    ok = refused_service_url("http://d.ml.svc.c.l", "ml", cluster_domain="c.l", extra_hosts=())
    assert ok is None


async def test_the_operator_calls_a_protected_service_with_its_token(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The service's tokens give the operator read and admin; its token file is re-read."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens: [{{name: operator, token: {OPERATOR_TOKEN}, scopes: [read, admin]}}]\n"
    )
    settings = Settings(
        host="127.0.0.1",
        monitors_dir=str(example_monitors()),
        auth=AuthSettings(tokens_file=str(tokens)),
    )
    server = await aiohttp_server(create_app(settings))
    base = str(server.make_url("")).rstrip("/")
    token_file = tmp_path / "token"
    async with aiohttp.ClientSession(middlewares=(bearer_token(str(token_file)),)) as session:
        # No token file yet: the service refuses, and the failure says so.
        refused = await fetch_drift_summary(session, base, "credit-risk")
        assert isinstance(refused, ServiceFailure) and "401" in refused.message
        await asyncio.to_thread(token_file.write_text, OPERATOR_TOKEN + "\n")
        summary = await fetch_drift_summary(session, base, "credit-risk")
        assert isinstance(summary, DriftSummary), summary
        assert await forget_window(session, base, "credit-risk") is None
        await asyncio.to_thread(token_file.write_text, "rotated-away" * 4)
        assert isinstance(await forget_window(session, base, "credit-risk"), ServiceFailure)
