"""The route table's OpenAPI document: per-route media types and statuses, fuzzed for real.

Schemathesis generates requests from the /openapi.json of a real `driftline serve`
(deterministic generation, at most 50 cases per operation and phase) and checks that no
answer is a server error and that every answer's status, media type and body are the
ones the document declares. The service's own request metric counts what it served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, driftline_serve

from driftline.http.routes import ROUTES, openapi_document

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def _operation(method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = openapi_document(ROUTES)["paths"][path][method]
    return operation


def test_each_route_documents_its_own_media_types_and_statuses() -> None:
    delete = _operation("delete", "/v1/monitors/{name}/window")
    assert "204" in delete["responses"] and "content" not in delete["responses"]["204"]
    assert "200" not in delete["responses"] and "requestBody" not in delete
    events = _operation("post", "/v1/monitors/{name}/events")["requestBody"]["content"]
    assert set(events) == {"application/json", "application/x-ndjson"}
    columns = _operation("post", "/v1/monitors/{name}/columns")["requestBody"]["content"]
    assert set(columns) == {"application/json", "application/msgpack"}
    ack = _operation("post", "/v1/monitors/{name}/alerts/{alert_id}/ack")
    assert ack["requestBody"]["required"] is False
    assert set(ack["responses"]["409"]["content"]) == {"application/problem+json"}
    ready = _operation("get", "/monitor/ready")["responses"]["503"]["content"]
    assert set(ready) == {"application/json"}  # readiness answers 503 with its reasons
    metrics = _operation("get", "/monitor/metrics")["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
    limit = _operation("get", "/v1/monitors/{name}/alerts")["parameters"][-1]
    assert limit["name"] == "limit" and limit["schema"]["maximum"] == 1000
    monitor = _operation("get", "/monitor/drift")["parameters"][0]
    assert monitor["name"] == "monitor" and monitor["in"] == "query"
    for path, methods in openapi_document(ROUTES)["paths"].items():
        for method, operation in methods.items():
            assert {"401", "403"} <= operation["responses"].keys(), (method, path)
            assert operation["x-driftline-scope"] in {"ingest", "read", "admin", "probe", "metrics"}


def test_unknown_top_level_event_fields_are_documented_as_ignored() -> None:
    document = openapi_document(ROUTES)
    schemas = document["components"]["schemas"]
    for name in ("Event", "PredictRequest"):
        assert schemas[name].get("additionalProperties", True) is not False, name
        assert "ignored" in schemas[name]["description"], name
    version = schemas["Event"]["properties"]["model_version"]["anyOf"][0]
    assert version["maxLength"] == 128 and "printable" in version["description"]


def _served(url: str) -> tuple[int, int]:
    """Requests the service answered, and how many of them with a 5xx (its own metric)."""
    with urllib.request.urlopen(url + "/monitor/metrics") as response:
        text = response.read().decode()
    total = errors = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "driftline_request_duration_seconds_count":
                total += int(sample.value)
                errors += int(sample.value) * sample.labels["status"].startswith("5")
    return total, errors


def test_schemathesis_finds_no_server_error_and_no_breach_of_the_document(
    tmp_path: Path,
) -> None:
    with driftline_serve(tmp_path / "serve.log") as url:
        environment = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",  # NDJSON and msgpack serializers
            "PYTHONPATH": str(ROOT / "tests"),
        }
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                url + "/openapi.json",
                f"--checks={CHECKS}",
                "--phases=examples,coverage,fuzzing",
                "--max-examples=50",
                "--generation-deterministic",
                "--workers=1",
                "--no-color",
                "--report=json",
                f"--report-json-path={tmp_path / 'report.json'}",
            ],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
        report = json.loads((tmp_path / "report.json").read_text())
        # Every operation but the document's own (schemathesis does not test its source).
        assert report["operations"]["tested"] == len(ROUTES) - 1
        served, server_errors = _served(url)
    print(
        f"\n[schemathesis] {report['test_cases']['generated']} cases, "
        f"{served} requests served, {server_errors} answered 5xx, "
        f"{report['running_time']:.1f} s"
    )
    assert server_errors == 0
