"""Which drift service URLs the operator may call for a DriftMonitor."""

from __future__ import annotations

import pytest

from driftline.operator.drift_service import refused_service_url


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
