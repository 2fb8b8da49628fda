"""Batch and NDJSON ingestion: pre-encoded bodies posted back to back.

Bodies are encoded before the clock starts (clients send JSON they already have); the
client keeps `concurrency` connections busy so the single-process server never waits
for it. Throughput counts the events the service says it accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from .client import Connection, build_request
from .procs import Server


class _Answer(msgspec.Struct):
    accepted: int = 0
    late: int = 0
    rejected: int = 0


@dataclass
class IngestResult:
    """Events the service accepted and how long it took."""

    requests: int
    accepted: int
    late: int
    rejected: int
    failed: int  # non-2xx answers
    seconds: float
    server_cpu: float

    @property
    def events_per_second(self) -> float:
        """Accepted events per second."""
        return self.accepted / self.seconds if self.seconds else 0.0

    def as_dict(self, features: int) -> dict[str, float]:
        """For the JSON file."""
        return {
            "requests": self.requests,
            "accepted_events": self.accepted,
            "late_events": self.late,
            "rejected_events": self.rejected,
            "failed_requests": self.failed,
            "seconds": round(self.seconds, 4),
            "events_per_second": round(self.events_per_second, 1),
            "feature_values_per_second": round(self.events_per_second * features, 1),
            "server_cpu": round(self.server_cpu, 3),
        }


def prepare(server: Server, bodies: Sequence[bytes], path: str, content_type: str) -> list[bytes]:
    """Whole HTTP requests for the bodies."""
    return [build_request("127.0.0.1", server.port, path, b, content_type) for b in bodies]


async def _post_all(
    port: int,
    requests: Sequence[bytes],
    *,
    total: int | None,
    duration: float | None,
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> tuple[int, int, int, int, int, float]:
    decoder = msgspec.json.Decoder(_Answer)
    connections = [await Connection.open("127.0.0.1", port) for _ in range(concurrency)]
    sent = accepted = late = rejected = failed = 0
    start = time.perf_counter()
    deadline = start + duration if duration else None

    def more() -> bool:
        if total is not None and sent >= total:
            return False
        return deadline is None or time.perf_counter() < deadline

    async def worker(connection: Connection) -> None:
        nonlocal sent, accepted, late, rejected, failed
        while more():
            request = requests[sent % len(requests)]
            sent += 1
            response = await connection.send(request)
            # 202: a CloudEvent waiting for its other half (counted with it, by its answer).
            if response.status in (200, 202):
                answer = decoder.decode(response.body)
                accepted += answer.accepted
                late += answer.late
                rejected += answer.rejected
                if progress:
                    progress(accepted)
            else:
                failed += 1

    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - start
    for connection in connections:
        await connection.close()
    return sent, accepted, late, rejected, failed, seconds


def post(
    server: Server,
    requests: Sequence[bytes],
    *,
    total: int | None = None,
    duration: float | None = None,
    concurrency: int = 2,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Post `total` requests (cycling through `requests`) or for `duration` seconds."""
    cpu_before = server.cpu_seconds()
    sent, accepted, late, rejected, failed, seconds = asyncio.run(
        _post_all(
            server.port,
            requests,
            total=total,
            duration=duration,
            concurrency=concurrency,
            progress=progress,
        )
    )
    server_cpu = (server.cpu_seconds() - cpu_before) / seconds if seconds else 0.0
    return IngestResult(sent, accepted, late, rejected, failed, seconds, server_cpu)
