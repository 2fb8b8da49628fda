"""The Redis connection every Redis-backed store of a replica shares, and the key root.

Every key driftline writes starts with KEY_ROOT and carries its monitor's name as a
Redis Cluster hash tag (`{<monitor>}`), so each monitor's scripts run on one shard; the
stores that own the keys spell out the rest of their names.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

KEY_ROOT = "driftline"
# A single server, or Redis Cluster: every script's keys share one hash tag, one slot.
RedisClient = Redis | RedisCluster


def connect(
    url: str,
    *,
    socket_timeout: float = 2.0,
    socket_connect_timeout: float | None = None,
    health_check_interval: float = 30.0,
    cluster: bool = False,
    **opts: Any,
) -> RedisClient:
    """A client of `url` (a Redis Cluster node's when `cluster`); `opts` go to from_url.

    Retries default to none: the scripts are not idempotent, and re-sending one after a
    timeout could apply it twice. Callers retry whole operations instead. Replies stay
    bytes (decode_responses=False): the window totals are binary.
    """
    opts.setdefault("retry", Retry(NoBackoff(), 0))
    opts.update(
        socket_timeout=socket_timeout,
        socket_connect_timeout=(
            socket_timeout if socket_connect_timeout is None else socket_connect_timeout
        ),
        health_check_interval=health_check_interval,
        decode_responses=False,
    )
    client: RedisClient = (
        RedisCluster.from_url(url, **opts) if cluster else Redis.from_url(url, **opts)
    )
    return client
