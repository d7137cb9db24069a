"""Priorities: each stage takes high before normal before low, and low still moves under a
steady load of high."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from vidstream.actors.consumer import FAIR_EVERY, StageConsumer
from vidstream.jobs import Job, Options, Priority, Stage
from vidstream.jobstore import JobStore
from vidstream.keys import Keys


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


async def queue(store: JobStore, priority: Priority, count: int = 1) -> list[str]:
    ids = []
    for _ in range(count):
        job = Job.new("uploads/x/source", Options()).with_changes(priority=priority)
        await store.create(job)
        ids.append(job.id)
    return ids


async def take(consumer: StageConsumer, count: int) -> list[str]:
    taken = []
    for _ in range(count):
        found = await consumer.next()
        assert found is not None
        (entry_id, fields), _ = found
        taken.append(fields["job_id"])
        await consumer.ack(entry_id)
    return taken


@pytest.fixture
async def consumer(redis: Redis, keys: Keys) -> StageConsumer:
    reader = StageConsumer(
        redis, keys.stage_streams(Stage.TRANSCRIBE), keys.stage_group(Stage.TRANSCRIBE),
        "host-transcribe-0", 60_000,
    )  # fmt: skip
    await reader.ensure_group()
    return reader


async def test_a_high_job_behind_many_normal_ones_starts_first(
    redis: Redis, keys: Keys, consumer: StageConsumer
) -> None:
    """Submitted after 20 normal jobs, a high one is the next to start; low ones wait."""
    store = JobStore(redis, keys, ttl_s=60)
    low = await queue(store, Priority.LOW, 2)
    normal = await queue(store, Priority.NORMAL, 20)
    [high] = await queue(store, Priority.HIGH)
    first = await take(consumer, 1)
    assert first == [high]
    rest = await take(consumer, 22)
    assert set(rest) == {*normal, *low}
    assert rest.index(low[0]) < len(rest) - 1  # low did not wait for every normal job
    await consumer.close()


async def test_low_still_moves_under_a_steady_high_load(
    redis: Redis, keys: Keys, consumer: StageConsumer
) -> None:
    """While high jobs keep arriving, a low one starts within a few picks (one in FAIR_EVERY
    looks at the lowest priority first)."""
    store = JobStore(redis, keys, ttl_s=60)
    [low] = await queue(store, Priority.LOW)
    taken: list[str] = []
    for _ in range(3 * FAIR_EVERY):
        await queue(store, Priority.HIGH)  # a steady load: more high than can be run
        taken += await take(consumer, 1)
        if low in taken:
            break
    assert low in taken and taken.index(low) < FAIR_EVERY
    await consumer.close()


async def test_entries_of_each_priority_land_on_their_own_stream(redis: Redis, keys: Keys) -> None:
    """A job's entries go to its priority's stream: the others stay empty."""
    store = JobStore(redis, keys, ttl_s=60)
    await queue(store, Priority.HIGH)
    lengths = [await redis.xlen(s) for s in keys.stage_streams(Stage.TRANSCRIBE)]
    assert lengths == [1, 0, 0]
