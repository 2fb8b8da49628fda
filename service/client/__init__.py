"""The Python client: send a model server's events to driftline, build baselines.

`DriftClient` (any code; a background thread sends) and `AsyncDriftClient` (asyncio)
queue events in memory and send them in batches, with retries, a bounded queue and
counters; `monitor_endpoint` and `DriftMiddleware` watch a FastAPI/Starlette endpoint;
`build_baseline` and `read_parquet` turn training data into a baseline profile. Modules:
`clients`, `queue` (bounded queue, batches, counters), `frames` (caller data as columns),
`wire` (request bodies), `sender` (batching, HTTP, retries), `endpoints`, `baseline`.
It talks HTTP to the service and imports nothing of the service's server side.
"""

from driftline.client.baseline import build_baseline, read_parquet
from driftline.client.clients import AsyncDriftClient, DriftClient
from driftline.client.endpoints import DriftMiddleware, monitor_endpoint
from driftline.client.queue import ClientStats
from driftline.core.profile import encode_profile

__all__ = [
    "AsyncDriftClient",
    "ClientStats",
    "DriftClient",
    "DriftMiddleware",
    "build_baseline",
    "encode_profile",
    "monitor_endpoint",
    "read_parquet",
]
