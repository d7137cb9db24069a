"""Stage streams stay small: entries every consumer is done with are trimmed, nothing else."""

from __future__ import annotations

from redis.asyncio import Redis

from vidstream.state import bus


async def test_trim_keeps_what_a_consumer_may_still_need(redis: Redis, prefix: str) -> None:
    """Acked entries go; pending and undelivered ones stay."""
    stream, group = f"{prefix}:stream:test", f"{prefix}:group"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    assert await bus.trim_point(redis, stream, group) is None  # nothing delivered yet
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(5)]
    read = await bus.read_group(redis, group, "c1", stream, ">", count=3, block_ms=None)
    assert [entry_id for entry_id, _ in read] == ids[:3]
    await redis.xack(stream, group, ids[0])

    safe = await bus.trim_point(redis, stream, group)
    assert safe == ids[1]  # the oldest pending entry
    await redis.xtrim(stream, minid=safe, approximate=False)
    assert [e[0] for e in await redis.xrange(stream)] == ids[1:]

    await redis.xack(stream, group, ids[1], ids[2])
    safe = await bus.trim_point(redis, stream, group)
    assert safe is not None
    await redis.xtrim(stream, minid=safe, approximate=False)
    assert [e[0] for e in await redis.xrange(stream)] == ids[3:]  # never delivered: kept


async def test_trim_never_removes_the_entry_in_flight(redis: Redis, prefix: str) -> None:
    """The one entry a worker is running (the last delivered) survives a trim, so a worker
    that dies while running it can still be relieved of it."""
    stream, group = f"{prefix}:stream:test", f"{prefix}:group"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    first = await redis.xadd(stream, {"n": "1"})
    await bus.read_group(redis, group, "c1", stream, ">", count=1, block_ms=None)
    await redis.xack(stream, group, first)
    running = await redis.xadd(stream, {"n": "2"})
    await bus.read_group(redis, group, "c1", stream, ">", count=1, block_ms=None)

    safe = await bus.trim_point(redis, stream, group)
    assert safe == running
    await redis.xtrim(stream, minid=safe, approximate=False)
    assert [e[0] for e in await redis.xrange(stream)] == [running]
    _, claimed = await bus.autoclaim(redis, stream, group, "c2", 0, "0-0")
    assert [entry_id for entry_id, _ in claimed] == [running]
