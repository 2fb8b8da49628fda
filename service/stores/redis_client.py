"""The Redis connection every Redis-backed store of a replica shares, and the key root.

Every key driftline writes starts with KEY_ROOT and carries its monitor's name as a
Redis Cluster hash tag (`{<monitor>}`), so each monitor's scripts run on one shard; the
stores that own the keys spell out the rest of their names.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TimeoutError,
)

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


ScriptArg = bytes | str | int | float


class StoredScript:
    """A Lua script run by EVALSHA, or by EVAL on a node that lacks it (restart, failover).

    redis-py's own Script loads a missing script on every primary of a cluster: with one
    primary down, every call that met a node without the script failed, on any shard.
    Here the text goes only to the node that runs the call, which caches it.
    """

    def __init__(self, client: RedisClient, text: str) -> None:
        self._client = client
        self._text = text
        self._sha = hashlib.sha1(text.encode()).hexdigest()
        # A single server's pipelines load what they run with redis-py's Script.
        self._pipelined = client.register_script(text)

    async def __call__(
        self, *, keys: Sequence[str], args: Sequence[ScriptArg], client: Any = None
    ) -> Any:
        """The script's reply; `client`: a pipeline to queue the call on instead."""
        if client is not None:
            return await self._pipelined(keys=keys, args=args, client=client)
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._text, len(keys), *keys, *args)
