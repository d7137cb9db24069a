"""A connection pool that finds the Redis primary through Sentinel and follows it through a
failover (`REDIS_SENTINELS`, `REDIS_MASTER_NAME`).

redis-py's `SentinelConnectionPool` asks the Sentinels for the primary's address when it opens
a connection, and drops a connection whose server turned out to be a replica (READONLY, or a
blocked read ended by a demotion); `FollowingConnection` asks them again on every reconnect.
Everything else is as without Sentinel: the same blocking pool bound (`BlockingConnectionPool`),
timeouts and retries on every command, the same client class (a request's Redis budget), and
the blocking reads' own connections (`bus.Waker`) come from the same pool, so every role
follows the primary.

While no primary is known (the old one down, no replica promoted yet: `down-after-milliseconds`
plus an election, a few seconds) a command fails as it would against a Redis that is away:
`MasterNotFoundError` is a `ConnectionError`, retried, then handled by each role as an outage.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import RedisError


class FollowingConnection(SentinelManagedConnection):
    """A connection to the primary that asks the Sentinels where it is whenever it (re)connects.

    redis-py's own asks only when its pool hands it out: a command retried after its server
    died reconnects through `connect_check_health` to the address it had (redis-py #3874). In
    tests/test_failover.py the roles' connections kept dialling the dead primary for 16 s after
    the replica was promoted, and a connection of its own failed its next command there."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # asks the Sentinels first

    async def connect_to(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        await super().connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )


class FollowingSSLConnection(FollowingConnection, SSLConnection):
    pass


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """`SentinelConnectionPool` whose checkout waits for a free connection, up to its `timeout`,
    rather than failing at `max_connections` (`BlockingConnectionPool`)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing: so are its Sentinels' connections
            assert isinstance(self.sentinel_manager, Sentinel)
            with contextlib.suppress(RedisError, OSError):
                await self.sentinel_manager.aclose()


def sentinel_client(
    client_class: type[Redis], sentinels: list[tuple[str, int]], master_name: str, *,
    timeout_s: float, ssl: bool, options: dict[str, Any],
) -> Redis:  # fmt: skip
    """A `client_class` on the primary named `master_name`, with the pool `options` (those of
    `BlockingConnectionPool`: max_connections, timeout, and each connection's); the Sentinels
    themselves are asked with `timeout_s` and no retries (the next Sentinel is the retry)."""
    manager = Sentinel(
        sentinels, sentinel_kwargs={"socket_timeout": timeout_s,
                                    "socket_connect_timeout": timeout_s},
    )  # fmt: skip
    client: Redis = manager.master_for(
        master_name, redis_class=client_class, connection_pool_class=BlockingSentinelPool,
        connection_class=FollowingSSLConnection if ssl else FollowingConnection, **options,
    )  # fmt: skip
    return client
