"""Priorities: each stage takes high before normal before low, and low still moves under a
steady load of high."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from vidstream.core.settings import Settings
from vidstream.job.model import Job, Options, Priority, Stage
from vidstream.runtime import Stack
from vidstream.state.consumer import FAIR_EVERY, StageConsumer
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys


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


async def test_a_priority_sent_to_the_gateway_shows_in_the_job(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, redis: Redis, keys: Keys
) -> None:
    """`"priority": "high"` on POST /v1/jobs (JSON) and `low` (multipart) show in GET
    /v1/jobs/{id} and put the job on that priority's stream; any other value is a 400 naming
    the choices, and no job is made."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.gateway is not None
        base = stack.gateway.url

        async def upload() -> str:
            body = {"filename": "talk.mp4", "content_type": "video/mp4", "size": 4}
            async with http.post(f"{base}/v1/uploads", json=body) as r:
                ticket = await r.json()
            async with http.put(ticket["upload_url"], data=b"abcd",
                                headers=ticket["headers"]) as r:  # fmt: skip
                assert r.status == 200
            return str(ticket["key"])

        async def read(job_id: str) -> dict[str, Any]:
            async with http.get(f"{base}/v1/jobs/{job_id}") as r:
                assert r.status == 200
                job: dict[str, Any] = await r.json()
                return job

        create = {"source": {"key": await upload()}, "priority": "high"}
        async with http.post(f"{base}/v1/jobs", json=create) as r:
            assert r.status == 202, await r.text()
            high = await r.json()
        assert high["priority"] == "high" and (await read(high["id"]))["priority"] == "high"

        form = aiohttp.FormData({"priority": "low"})
        form.add_field("file", b"x" * 10, filename="a.mp4", content_type="video/mp4")
        async with http.post(f"{base}/v1/jobs", data=form) as r:
            assert r.status == 202, await r.text()
            low = await r.json()
        assert (await read(low["id"]))["priority"] == "low"
        lengths = [await redis.xlen(s) for s in keys.stage_streams(Stage.TRANSCRIBE)]
        assert lengths == [1, 0, 1]  # high, normal, low

        create = {"source": {"key": await upload()}, "priority": "urgent"}
        async with http.post(f"{base}/v1/jobs", json=create) as r:
            body = await r.json()
            assert r.status == 400, body
        assert body["error"]["code"] == "invalid_request"
        assert "high, normal, low" in body["error"]["message"]
        async with http.get(f"{base}/v1/jobs") as r:
            assert len((await r.json())["jobs"]) == 2
