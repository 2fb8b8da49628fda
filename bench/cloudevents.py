"""KServe logger CloudEvents against POST /monitor/batch, for the same events.

Each inference of `rows` rows is two binary-mode CloudEvents (KServe's logger: ce-*
headers, the V2 body as sent and answered), its request (one tensor per feature) and its
response (the score tensor), with one ce-id; the reference posts the same rows, with
their scores, as one `/monitor/batch` body. Both go to one service whose monitor
declares the score, so every pair is joined and counted as the batch's events are.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .data import MONITOR

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def _cloudevent(port: int, kind: str, inference_id: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/monitors/{MONITOR}/cloudevents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nce-specversion: 1.0\r\n"
        f"ce-id: {inference_id}\r\nce-type: {kind}\r\nce-source: http://localhost:9081/\r\n"
        "ce-inferenceservicename: bench\r\nce-namespace: bench\r\nce-component: predictor\r\n"
        f"ce-endpoint: default\r\nContent-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _datatype(value: Any) -> str:
    return "BYTES" if isinstance(value, str) else "INT64" if isinstance(value, int) else "FP64"


def inference_requests(
    port: int, events: list[dict[str, Any]], scores: list[float], rows: int
) -> list[bytes]:
    """Request then response CloudEvents of each inference of `rows` events."""
    requests = []
    for n, start in enumerate(range(0, len(events), rows)):
        chunk, answers = events[start : start + rows], scores[start : start + rows]
        inputs = [
            {
                "name": name,
                "datatype": _datatype(chunk[0][name]),
                "shape": [len(chunk)],
                "data": [row[name] for row in chunk],
            }
            for name in chunk[0]
        ]
        output = {"name": "score", "datatype": "FP32", "shape": [len(chunk)], "data": answers}
        inference_id = f"bench-{n}"
        request = msgspec.json.encode({"inputs": inputs})
        response = msgspec.json.encode({"model_name": "bench", "outputs": [output]})
        requests.append(_cloudevent(port, REQUEST, inference_id, request))
        requests.append(_cloudevent(port, RESPONSE, inference_id, response))
    return requests


def batch_bodies(events: list[dict[str, Any]], scores: list[float], rows: int) -> list[bytes]:
    """The same events, with their scores, as `/monitor/batch` bodies of `rows` events."""
    return [
        msgspec.json.encode(
            {
                "monitor": MONITOR,
                "events": [
                    {"features": row, "prediction": score}
                    for row, score in zip(
                        events[start : start + rows], scores[start : start + rows], strict=True
                    )
                ],
            }
        )
        for start in range(0, len(events), rows)
    ]
