"""Request bodies on the wire: hostile bodies on every POST route never get a 500.

Hand-made bodies (deeply nested, compressed or mis-encoded, huge numbers, odd
Unicode, wrong media types) go to every POST route over a real socket; each answer must
be a problem document with an `errors` array (or a success), never a 5xx.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient
from support import example_monitors

from driftline.http.app import create_app
from driftline.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MONITOR = "credit-risk"
PROBLEM = "application/problem+json"
JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
DEPTH = 100_000

POST_ROUTES = (
    ("/monitor/predict", (JSON,)),
    ("/monitor/batch", (JSON,)),
    (f"/v1/monitors/{MONITOR}/events", (JSON, NDJSON)),
    (f"/v1/monitors/{MONITOR}/columns", (JSON, MSGPACK)),
    (f"/v1/monitors/{MONITOR}/alerts/1/ack", (JSON,)),
)


def _nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE_JSON: tuple[bytes, ...] = (
    _nested_json(DEPTH),
    b'{"features": ' + _nested_json(DEPTH) + b"}",
    b'{"features": {"age": ' + _nested_json(DEPTH) + b"}}",
    b'{"events": [{"features": {"a": ' + _nested_json(DEPTH) + b"}}]}",
    b'[{"features": {"a": ' + _nested_json(DEPTH) + b"}}]",
    b'{"columns": {"age": ' + _nested_json(DEPTH) + b"}}",
    b'{"columns": {"age": [' + b"9" * 5000 + b"]}}",
    b'{"features": {"age": ' + b"9" * 5000 + b"}}",
    b'{"features": {"age": -' + b"9" * 5000 + b"e99999}}",
    b'{"features": {"age": 1e-99999}}',
    b'{"features": {"\xff\xfe": 1}}',
    b'{"features": {"age": "\\ud800"}}',
    b'{"features": {"\\u0000": "\\u0000"}}',
    b'{"features": {}, "model_version": "' + b"v" * 200 + b'"}',
    b'{"features": {}, "model_version": "a\\nforged=\\"1\\""}',
    b'{"features": {}, "timestamp": "9999-99-99T99:99:99Z"}',
    b'{"features": {}, "timestamp": "' + b"2" * 5000 + b'"}',
    b'{"columns": {"age": "AAAA"}}',
    b'{"columns": {}}',
    b'{"by": "' + b"x" * 5000 + b'"}',
    b'{"by": 3}',
    b"\xef\xbb\xbf{}",
    b"null",
    b"[]",
    b"{}",
    b'"\\u00b2"',
    b"\x00" * 64,
    b"{" * DEPTH,
    b"\n" * 1000,
    b"\n".join([b'{"features": {"age": 1}}', b"{", b'{"features": ' + _nested_json(DEPTH) + b"}"]),
)
HOSTILE_MSGPACK: tuple[bytes, ...] = (
    b"\x91" * DEPTH + b"\xc0",
    b"\x81\xa7columns" + b"\x81\xa1a" + b"\x91" * DEPTH + b"\xc0",
    b"\x81\xa7columns\x81\xa3age\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
    b"\xc1",
)


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    settings = Settings(
        host="127.0.0.1", monitors_dir=str(example_monitors()), flush_interval=0.001
    )
    return await aiohttp_client(create_app(settings))


def _assert_problem(status: int, content_type: str, body: bytes, what: str) -> dict[str, Any]:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status < 300:
        return {}
    assert content_type == PROBLEM, f"{what}: {content_type}"
    problem: dict[str, Any] = json.loads(body)
    assert problem["errors"], what
    for error in problem["errors"]:
        assert set(error) <= {"field", "message", "reason", "index"}
        assert None not in error.values(), f"{what}: null sent for {error}"
    return problem


async def test_hostile_bodies_on_every_post_route_never_get_a_5xx(client: TestClient) -> None:
    sent = server_errors = 0
    for path, media_types in POST_ROUTES:
        for media_type in media_types:
            bodies = HOSTILE_MSGPACK if media_type == MSGPACK else HOSTILE_JSON
            for body in bodies:
                response = await client.post(path, data=body, headers={"Content-Type": media_type})
                answer = await response.read()
                sent += 1
                server_errors += response.status >= 500
                _assert_problem(
                    response.status, response.content_type, answer, f"{path} {body[:40]!r}"
                )
    print(f"\n[hostile bodies] {sent} requests, {server_errors} answered 5xx")
    assert server_errors == 0


DEEP = _nested_json(DEPTH)


@pytest.mark.parametrize(
    ("path", "media_type", "body", "status"),
    [
        ("/monitor/predict", JSON, b'{"features": {"age": ' + DEEP + b"}}", 400),
        ("/monitor/batch", JSON, b'{"events": [' + DEEP + b"]}", 400),
        ("/monitor/batch", JSON, b"[" + DEEP + b"]", 400),
        (f"/v1/monitors/{MONITOR}/events", JSON, b"[" + DEEP + b"]", 400),
        # NDJSON: each line is an event of its own, refused alone (none left to count: 422).
        (f"/v1/monitors/{MONITOR}/events", NDJSON, b'{"features": {"a": ' + DEEP + b"}}", 422),
        (f"/v1/monitors/{MONITOR}/columns", JSON, b'{"columns": {"age": [' + DEEP + b"]}}", 400),
        (f"/v1/monitors/{MONITOR}/columns", MSGPACK, HOSTILE_MSGPACK[1], 400),
    ],
)
async def test_deep_nesting_is_refused_on_every_post_route(
    client: TestClient, path: str, media_type: str, body: bytes, status: int
) -> None:
    response = await client.post(path, data=body, headers={"Content-Type": media_type})
    problem = _assert_problem(response.status, response.content_type, await response.read(), path)
    assert response.status == status, problem
    assert "nested deeper" in problem["errors"][0]["message"], problem


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("deflate", b"x"),
        ("gzip", b"x"),
        ("gzip", gzip.compress(b'{"features": {"age": 30}}')),
        ("deflate", zlib.compress(b'{"features": {"age": 30}}')),
        ("gzip", b"".join(gzip.compress(b" ") for _ in range(1100)) + gzip.compress(b"{}")),
        ("br", b"\x0b\x02\x80{}\x03"),
        ("zstd", b"(\xb5/\xfd"),
        ("gzip, gzip", b"x"),
    ],
)
async def test_compressed_bodies_are_refused_with_415(
    client: TestClient, encoding: str, body: bytes
) -> None:
    for path, media_types in POST_ROUTES:
        response = await client.post(
            path, data=body, headers={"Content-Type": media_types[0], "Content-Encoding": encoding}
        )
        problem = _assert_problem(
            response.status, response.content_type, await response.read(), path
        )
        assert response.status == 415, (path, problem)
        assert problem["errors"][0]["field"] == "Content-Encoding"
    response = await client.post(
        "/monitor/predict",
        data=b'{"features": {"age": 30}}',
        headers={"Content-Type": JSON, "Content-Encoding": "identity"},
    )
    assert response.status == 200


async def test_unknown_top_level_event_fields_are_ignored(client: TestClient) -> None:
    event = {"features": {"age": 30}, "prediction": 0.93, "id": "req-1", "request": {"x": [1]}}
    response = await client.post("/monitor/predict", json=event)
    assert response.status == 200, await response.text()
    response = await client.post("/monitor/batch", json={"events": [event, event]})
    body = await response.json()
    assert response.status == 200 and body["accepted"] == 2, body
    lines = b"\n".join(msgspec.json.encode(event) for _ in range(3))
    response = await client.post(
        f"/v1/monitors/{MONITOR}/events", data=lines, headers={"Content-Type": NDJSON}
    )
    assert (await response.json())["accepted"] == 3


async def test_warnings_are_capped_with_a_count(client: TestClient) -> None:
    events = [{"features": {f"unknown_{i}_{j}": 1 for j in range(5)}} for i in range(200)]
    response = await client.post("/monitor/batch", json={"events": events})
    body = await response.json()
    assert response.status == 200, body
    warnings = body["warnings"]
    assert len(warnings) == 21
    assert warnings[0] == 'unknown feature "unknown_0_0" ignored'
    assert warnings[-1] == "and 980 more unknown features ignored"
    response = await client.post(
        "/monitor/predict", json={"features": {f"x{i:03}": 1 for i in range(400)}}
    )
    assert (await response.json())["warnings"][-1] == "and 380 more unknown features ignored"


@pytest.mark.parametrize(
    "version", ["v" * 129, "a\nb", "tab\there", "nul\x00", "c1\x85", "del\x7f"]
)
async def test_model_versions_are_bounded_and_printable(client: TestClient, version: str) -> None:
    response = await client.post(
        "/monitor/predict", json={"features": {}, "model_version": version}
    )
    problem = await response.json(content_type=None)
    assert response.status == 422, problem
    assert problem["errors"][0]["field"] == "model_version"
    response = await client.post(
        f"/v1/monitors/{MONITOR}/columns", json={"columns": {"age": [1]}, "model_version": version}
    )
    assert response.status == 422


async def test_field_errors_leave_out_what_does_not_apply(client: TestClient) -> None:
    response = await client.post("/monitor/predict", json={"features": {"age": "old"}})
    problem = await response.json(content_type=None)
    assert response.status == 422
    assert problem["errors"] == [
        {
            "field": "features.age",
            "message": 'expected a number, got "old"',
            "reason": "invalid_value",
        }
    ]
    response = await client.post("/monitor/predict", json={"features": []})
    assert (await response.json(content_type=None))["errors"] == [
        {"field": "features", "message": "expected `object`, got `array`"}
    ]
