"""The Redis connection every Redis-backed store of a replica shares, and the key root.

Every key driftline writes starts with KEY_ROOT and carries its monitor's name as a
Redis Cluster hash tag (`{<monitor>}`), so each monitor's scripts run on one shard; the
stores that own the keys spell out the rest of their names.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisClusterException, RedisError, TimeoutError

KEY_ROOT = "driftline"
# A single server, or Redis Cluster: every script's keys share one hash tag, one slot.
RedisClient = Redis | RedisCluster
# What a call may raise when Redis fails: the cluster client's own errors (no slot map,
# slot not covered) are not RedisErrors.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError)


class PingedConnection(Connection):
    """A connection that replaces itself when a health-check PING finds it closed.

    Redis's `timeout`, proxies and load balancers close idle connections. With retries
    off (below), redis-py's own health check would fail the command that follows; here a
    PING that fails is followed by a fresh connection instead. That is safe without
    idempotent commands: the command has not been sent yet.
    """

    async def check_health(self) -> None:
        """PING when idle past the interval; reconnect when the PING fails."""
        if not self.health_check_interval:
            return
        if asyncio.get_running_loop().time() <= self.next_health_check:
            return
        # redis-py leaves these two untyped.
        try:
            await self._send_ping()  # type: ignore[no-untyped-call]
        except (ConnectionError, TimeoutError, OSError):
            await self.disconnect()
            await self.connect()  # type: ignore[no-untyped-call]


def connect(
    url: str,
    *,
    socket_timeout: float = 2.0,
    socket_connect_timeout: float | None = None,
    health_check_interval: float = 10.0,
    cluster: bool = False,
    **opts: Any,
) -> RedisClient:
    """A client of `url` (a Redis Cluster node's when `cluster`); `opts` go to from_url.

    Retries default to none: the scripts are not idempotent, and re-sending one after a
    timeout could apply it twice. Callers retry whole operations instead. Replies stay
    bytes (decode_responses=False): the window totals are binary.
    """
    opts.setdefault("retry", Retry(NoBackoff(), 0))
    opts.setdefault("connection_class", PingedConnection)
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
