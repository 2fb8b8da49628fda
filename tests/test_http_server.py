"""The connections of a real `driftline serve`: slow, idle, too many, broken, hostile clients.

Raw sockets speak to the process, so what aiohttp's parser sees is exactly what was sent.
Timings are printed (the issue's closing note quotes them), never asserted: each test
asserts what happened in order instead (an answer before the body was finished, a
connection cut while normal requests were served).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import driftline_serve, wait_until

PROBLEM = "application/problem+json"
PREDICT = b'{"features": {"age": 41}}'
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One service for the module, with short timeouts: its URL and log file."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with driftline_serve(
        log,
        DRIFTLINE_HEADER_TIMEOUT="1",
        DRIFTLINE_BODY_TIMEOUT="1",
        DRIFTLINE_KEEPALIVE_TIMEOUT="3",
        DRIFTLINE_LOG_LEVEL="DEBUG",
    ) as url:
        yield url, log


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _exchange(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and read one answer: status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
    writer.write(raw)
    await writer.drain()
    answer = await _answer(reader)
    writer.close()
    return answer


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer read from a connection (its body by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, headers, _ = _parse(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return status, headers, body


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _problem(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith(PROBLEM), (headers, body)
    problem: dict[str, Any] = json.loads(body)
    assert problem["errors"] and all(e["field"] and e["message"] for e in problem["errors"])
    assert all(None not in e.values() for e in problem["errors"])
    return problem


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"GET /monitor/health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "request"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "request"),
        (b"GET /monitor/health HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 9000 + b"\r\n\r\n", "request"),
        (b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n", "request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP\r\n\r\n", "request"),
        (
            b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\nzz\r\n",
            "request",
        ),
    ],
)
async def test_what_the_parser_refuses_is_a_problem_document(
    service: tuple[str, Path], raw: bytes, field: str
) -> None:
    status, headers, body = await _exchange(service[0], raw)
    assert status == 400, body
    problem = _problem(headers, body)
    assert problem["status"] == 400
    assert problem["errors"][0]["field"] == field


async def test_routing_errors_are_problems_with_allow(service: tuple[str, Path]) -> None:
    url = service[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/nope") as response:
            problem = _problem(
                dict(response.headers.items()) | {"content-type": response.headers["Content-Type"]},
                await response.read(),
            )
            assert response.status == 404 and problem["errors"][0]["field"] == "path"
        async with session.put(url + "/monitor/predict", data=PREDICT) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
            assert (await response.json(content_type=None))["errors"][0]["field"] == "method"
        async with session.delete(url + "/v1/monitors") as response:
            assert response.status == 405 and response.headers["Allow"] == "GET"


async def test_slow_loris_is_cut_off_while_normal_traffic_is_served(
    service: tuple[str, Path],
) -> None:
    """Clients dribbling their headers are answered 408 and closed; the others are served."""
    url = service[0]
    request = b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request += b"X-Pad: " + b"p" * 40  # one byte every 100 ms: the headers would take 10 s
    slow = [await asyncio.open_connection("127.0.0.1", _port(url)) for _ in range(20)]
    started = time.monotonic()
    cut: list[float] = []

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        answer = asyncio.create_task(reader.read())  # everything until the server closes
        for byte in request:
            if answer.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.wait([answer], timeout=0.1)
        if not answer.done():
            answer.cancel()
            return b""  # it sent every header byte and was never cut off
        cut.append(time.monotonic() - started)
        return answer.result()

    served = 0
    done = asyncio.Event()

    async def normal_traffic() -> None:
        nonlocal served
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                async with session.post(
                    url + "/monitor/predict", data=PREDICT, headers=JSON
                ) as response:
                    assert response.status == 200
                    served += 1
                async with session.get(url + "/monitor/health") as response:
                    assert response.status == 200

    traffic = asyncio.create_task(normal_traffic())
    try:
        answers = await asyncio.gather(*(dribble(r, w) for r, w in slow))
    finally:
        done.set()
        await traffic
        for _, writer in slow:
            writer.close()
    for answer in answers:
        assert answer, "a slow client sent its whole headers: it was never cut off"
        status, headers, body = _parse(answer)
        assert status == 408 and _problem(headers, body)["errors"][0]["field"] == "headers"
    assert served > 0
    print(
        f"\n[slow-loris] {len(slow)} clients cut after {min(cut):.2f}-{max(cut):.2f} s "
        f"(header timeout 1 s); {served} predicts served meanwhile"
    )


async def test_a_body_that_comes_too_slowly_gets_408(service: tuple[str, Path]) -> None:
    url = service[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
    writer.write(
        b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + PREDICT[:10]
    )
    await writer.drain()
    status, headers, body = await _answer(reader)
    writer.close()
    assert status == 408 and _problem(headers, body)["errors"][0]["field"] == "body"


async def test_idle_connections_close_after_the_keepalive_timeout(
    service: tuple[str, Path],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service[0]))
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the server, silently
    print(f"\n[keep-alive] idle connection closed after {time.monotonic() - started:.2f} s (3 s)")
    writer.close()


async def test_gzip_bomb_is_refused_before_its_body_is_read(service: tuple[str, Path]) -> None:
    """1 MiB of gzip (1 GiB inflated): answered 415 from its headers; health stays responsive."""
    url = service[0]
    bomb = gzip.compress(b"\0" * (1 << 30), 9)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
    started = time.monotonic()
    writer.write(
        b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb[:65536]
    )
    await writer.drain()
    # The rest of the body is never sent: the answer cannot have waited for it.
    status, headers, body = await _answer(reader)
    answered = time.monotonic() - started
    assert status == 415
    assert _problem(headers, body)["errors"][0]["field"] == "Content-Encoding"
    assert headers["connection"] == "close"
    async with aiohttp.ClientSession() as session:
        health_started = time.monotonic()
        async with session.get(url + "/monitor/health") as response:
            assert response.status == 200
        health = time.monotonic() - health_started
    writer.close()
    print(
        f"\n[gzip bomb] {len(bomb)} bytes gzip: 415 after {answered * 1000:.1f} ms; "
        f"/monitor/health right after: {health * 1000:.1f} ms"
    )


async def test_a_client_leaving_mid_body_is_a_client_abort(service: tuple[str, Path]) -> None:
    url, log = service
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        writer.write(
            b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + PREDICT[:10]
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    metrics: list[str] = []

    async def recorded() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/monitor/metrics") as response,
        ):
            metrics[:] = (await response.text()).splitlines()
        return any('status="499"' in line and "/monitor/predict" in line for line in metrics)

    await wait_until(recorded, "no client abort (status 499) recorded for /monitor/predict")
    assert not any('status="500"' in line for line in metrics)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not [e for e in entries if e["level"] == "error"], (
        "a client abort was logged as an error"
    )
    assert any(e["message"] == "client closed the request" for e in entries)


async def test_connections_past_the_limit_get_503(tmp_path: Path) -> None:
    with driftline_serve(tmp_path / "serve.log", DRIFTLINE_MAX_CONNECTIONS="4") as url:
        idle = [await asyncio.open_connection("127.0.0.1", _port(url)) for _ in range(4)]
        status, headers, body = await _exchange(
            url, b"GET /monitor/health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status == 503 and headers["retry-after"] == "1"
        assert _problem(headers, body)["errors"][0]["field"] == "connection"
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()

        async def served() -> bool:
            status, _, _ = await _exchange(
                url, b"GET /monitor/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            return status == 200

        await wait_until(served, "connections freed but new ones still refused")


@pytest.mark.parametrize(
    ("setting", "loop_class"),
    [("uvloop", "uvloop.Loop"), ("asyncio", "asyncio.unix_events._UnixSelectorEventLoop")],
)
def test_the_service_runs_on_the_event_loop_its_settings_name(
    tmp_path: Path, setting: str, loop_class: str
) -> None:
    log = tmp_path / "serve.log"
    with driftline_serve(log, DRIFTLINE_EVENT_LOOP=setting, DRIFTLINE_LOG_LEVEL="INFO") as url:
        status, _, body = asyncio.run(
            _exchange(
                url,
                b"POST /monitor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(PREDICT), PREDICT),
            )
        )
        assert status == 200, body
        assert json.loads(body)["window"]["events"] >= 1
    listening = [json.loads(line) for line in log.read_text().splitlines() if '"listening"' in line]
    assert [entry["event_loop"] for entry in listening] == [loop_class], listening
