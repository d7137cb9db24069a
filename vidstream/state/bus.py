"""Typed access to Redis Streams: reading entries as `(id, fields)` pairs of strings.

redis-py types stream replies loosely (bytes or str, nested unions); every role reads through
these helpers so the rest of the code sees one shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from vidstream.core.streams import BLOCK_MS, is_stream_id, stream_id

__all__ = ["BLOCK_MS", "Entry", "is_stream_id", "stream_id"]  # (ids: core.streams, re-exported)

Entry = tuple[str, dict[str, str]]


def _entries(raw: Any) -> list[Entry]:
    # An entry deleted while pending comes back with no fields (None).
    return [(str(entry_id), dict(fields or {})) for entry_id, fields in raw or ()]


async def read(
    redis: Redis, streams: dict[str, str], *, count: int, block_ms: int | None
) -> list[tuple[str, list[Entry]]]:
    """XREAD: entries after each stream's cursor, waiting up to `block_ms` for the first."""
    raw = cast(Any, await redis.xread(cast(Any, streams), count=count, block=block_ms))
    return [(str(stream), _entries(entries)) for stream, entries in raw or ()]


async def read_group(
    redis: Redis, group: str, consumer: str, stream: str, cursor: str, *, count: int,
    block_ms: int | None,
) -> list[Entry]:  # fmt: skip
    """XREADGROUP on one stream: `>` for new entries, an id for this consumer's pending ones."""
    raw = cast(Any, await redis.xreadgroup(group, consumer, {stream: cursor}, count=count,
                                           block=block_ms))  # fmt: skip
    return _entries(raw[0][1]) if raw else []


async def read_groups(
    redis: Redis, group: str, consumer: str, streams: Sequence[str], *, count: int,
    block_ms: int | None,
) -> list[tuple[str, Entry]]:  # fmt: skip
    """XREADGROUP > on several streams at once: (stream, entry) pairs, up to `count` each."""
    raw = cast(Any, await redis.xreadgroup(group, consumer, dict.fromkeys(streams, ">"),
                                           count=count, block=block_ms))  # fmt: skip
    return [(str(stream), entry) for stream, entries in raw or () for entry in _entries(entries)]


async def history(
    redis: Redis, stream: str, after: str = "0-0", *, count: int | None = None
) -> list[Entry]:
    """XRANGE: the entries after `after` (exclusive), oldest first."""
    return _entries(await redis.xrange(stream, f"({after}", "+", count=count))


async def last_id(redis: Redis, stream: str) -> str | None:
    """The id of the newest entry, or None for an empty or missing stream."""
    raw = cast(Any, await redis.xrevrange(stream, count=1))
    return str(raw[0][0]) if raw else None


async def trim_point(redis: Redis, stream: str, group: str) -> str | None:
    """The oldest id the consumer group may still need; everything before it can be trimmed:
    its oldest pending entry if any (XTRIM MINID keeps that id), else the first id after the
    last one delivered."""
    groups = cast(Any, await redis.xinfo_groups(stream))
    info = next((g for g in groups if g["name"] == group), None)
    if info is None or info["last-delivered-id"] in ("0-0", None):
        return None
    pending = cast(Any, await redis.xpending(stream, group))
    if pending and pending.get("pending"):
        return str(pending["min"])
    ms, seq = stream_id(str(info["last-delivered-id"]))
    return f"{ms}-{seq + 1}"


async def autoclaim(
    redis: Redis, stream: str, group: str, consumer: str, min_idle_ms: int, cursor: str
) -> tuple[str, list[Entry]]:
    """XAUTOCLAIM one entry idle for at least `min_idle_ms`; returns (next cursor, entries)."""
    raw = cast(Any, await redis.xautoclaim(stream, group, consumer, min_idle_ms, cursor, count=1))
    return str(raw[0]), _entries(raw[1])


async def pending_ids(redis: Redis, stream: str, group: str, consumer: str) -> set[str]:
    """The ids of the entries pending for `consumer` (up to 1000)."""
    raw = cast(
        Any, await redis.xpending_range(stream, group, "-", "+", 1000, consumername=consumer)
    )
    return {str(entry["message_id"]) for entry in raw}


class Waker:
    """Blocking reads on a connection of their own, which `wake()` ends at once.

    A read blocked in XREAD/XREADGROUP BLOCK would otherwise hold a stop up for a whole block,
    and cancelling it inside redis-py can be swallowed by the client's own timeout and retry;
    `CLIENT UNBLOCK` makes it return as if its block had run out.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.client: Redis | None = None  # made on first use: most wakers never block
        self._id: int | None = None

    async def connection(self) -> Redis:
        """The client to block on (its id learnt first, so `wake()` can name it)."""
        if self.client is None:
            self.client = Redis(connection_pool=self.redis.connection_pool,
                                single_connection_client=True)  # fmt: skip
        if self._id is None:
            self._id = int(await self.client.client_id())
        return self.client

    def lost(self) -> None:
        """The connection failed: it will have another id once it is back."""
        self._id = None

    async def wake(self) -> None:
        if self._id is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.client_unblock(self._id)

    async def aclose(self) -> None:
        client, self.client, self._id = self.client, None, None
        if client is not None:
            await client.aclose()


async def group_counts(redis: Redis, stream: str, group: str) -> tuple[int, int, int]:
    """(length, lag, pending) of `group` on `stream`: entries in the stream, not yet read by the
    group (all of them while no group exists), and read but not acked. Zeros for no stream."""
    try:
        length = int(await redis.xlen(stream))
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:
        return 0, 0, 0
    for info in groups:
        if info["name"] == group:
            return length, int(info.get("lag") or 0), int(info["pending"])
    return length, length, 0
