"""The shared Redis connection: a connection closed while idle is replaced, not failed."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError

from driftline.stores.redis_client import connect

INTERVAL = 0.05  # seconds idle before a connection is checked


async def close_from_the_server(client: redis.asyncio.Redis, url: str) -> None:
    """Have the server drop the client's connection, as its `timeout` or a proxy would."""
    own = await client.client_id()
    killer = redis.asyncio.Redis.from_url(url)
    try:
        assert await killer.client_kill_filter(_id=own) == 1
    finally:
        await killer.aclose()
    await asyncio.sleep(2 * INTERVAL)  # idle past the health-check interval


async def test_a_connection_the_server_closed_is_replaced_before_the_next_command(
    redis_url: str,
) -> None:
    client = connect(redis_url, health_check_interval=INTERVAL)
    try:
        await client.set("k", "1")
        await close_from_the_server(client, redis_url)
        assert await client.get("k") == b"1"
    finally:
        await client.aclose()


async def test_without_it_the_command_after_an_idle_close_fails(redis_url: str) -> None:
    # The control: redis-py's own connection with retries off, as the stores need them.
    client = connect(redis_url, health_check_interval=INTERVAL, connection_class=Connection)
    try:
        await client.set("k", "1")
        await close_from_the_server(client, redis_url)
        with pytest.raises(ConnectionError):
            await client.get("k")
    finally:
        await client.aclose()
