"""Retention: an ended job is removed after its time, with everything it left in Redis and in
storage; running and recent jobs stay; uploads no job took are deleted; Redis stays flat."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from redis.asyncio import Redis

from vidstream.jobs import Job, Options
from vidstream.jobstore import JobStore
from vidstream.keys import Keys
from vidstream.protocol import Cancel
from vidstream.retention import Retention
from vidstream.runtime import Stack
from vidstream.services import Services
from vidstream.settings import Settings

RETAIN_S = 60


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    settings = make_settings(job_retention_s=RETAIN_S)
    async with Stack(settings, ("gateway",)) as running:
        yield running


def services_of(stack: Stack) -> Services:
    assert stack.services is not None
    return stack.services


async def keys_of(redis: Redis, prefix: str, job_id: str) -> list[str]:
    """Every key under the prefix that names the job, or lists it."""
    found = [k async for k in redis.scan_iter(match=f"{prefix}:*{job_id}*", count=1000)]
    for listing in (f"{prefix}:retention", f"{prefix}:tenant:default:jobs"):
        if await redis.zscore(listing, job_id) is not None:
            found.append(listing)
    return found


async def upload_and_create(
    http: aiohttp.ClientSession, stack: Stack, idem: str | None = None
) -> dict[str, str]:
    assert stack.gateway is not None
    body = {"filename": "talk.mp4", "content_type": "video/mp4", "size": 4}
    async with http.post(f"{stack.gateway.url}/v1/uploads", json=body) as r:
        ticket = await r.json()
    async with http.put(ticket["upload_url"], data=b"abcd", headers=ticket["headers"]) as r:
        assert r.status == 200
    headers = {"Idempotency-Key": idem} if idem else {}
    create = {"source": {"key": ticket["key"]}}
    async with http.post(f"{stack.gateway.url}/v1/jobs", json=create, headers=headers) as r:
        assert r.status == 202
        job: dict[str, str] = await r.json()
    return job


async def test_an_ended_job_is_removed_with_all_it_left(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis, prefix: str
) -> None:
    """JOB_RETENTION_S after it ended, a job's record, events, logs, listing, idempotency entry
    and status count are gone, and so are its source and outputs; before that, nothing is."""
    services = services_of(stack)
    job = await upload_and_create(http, stack, idem="order-1")
    async with http.delete(f"{stack.gateway.url}/v1/jobs/{job['id']}") as r:  # type: ignore[union-attr]
        assert r.status == 200
    source = services.store.local_path(job["source"]["key"])  # type: ignore[index]
    assert source is not None and source.exists()
    assert await keys_of(redis, prefix, job["id"])
    assert await redis.hget(services.keys.status_counts, "cancelled") == "1"
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)

    assert (await retention.sweep(now=time.time() + RETAIN_S - 5)).jobs == 0  # not yet
    assert await services.jobs.get(job["id"]) is not None

    assert (await retention.sweep(now=time.time() + RETAIN_S + 1)).jobs == 1
    assert await keys_of(redis, prefix, job["id"]) == []
    assert not source.exists()
    assert [k async for k in redis.scan_iter(match=f"{prefix}:idem:*")] == []
    assert await redis.hget(services.keys.status_counts, "cancelled") == "0"
    async with http.get(f"{stack.gateway.url}/v1/jobs/{job['id']}") as r:  # type: ignore[union-attr]
        assert r.status == 404


async def test_running_and_recent_jobs_stay(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis
) -> None:
    """A sweep leaves a queued job and one that ended recently alone; with KEEP_OUTPUTS a
    removed job's files stay in storage."""
    services = services_of(stack)
    queued = await upload_and_create(http, stack)
    ended = await upload_and_create(http, stack)
    async with http.delete(f"{stack.gateway.url}/v1/jobs/{ended['id']}") as r:  # type: ignore[union-attr]
        assert r.status == 200
    keep = Retention(redis, services.keys, services.store, keep_outputs=True)
    assert (await keep.sweep(now=time.time() + RETAIN_S / 2)).jobs == 0
    assert await services.jobs.get(queued["id"]) is not None
    assert await services.jobs.get(ended["id"]) is not None
    assert (await keep.sweep(now=time.time() + RETAIN_S + 1)).jobs == 1
    assert await services.jobs.get(ended["id"]) is None
    assert await services.jobs.get(queued["id"]) is not None  # still running: never due
    source = services.store.local_path(ended["source"]["key"])  # type: ignore[index]
    assert source is not None and source.exists()


async def test_uploads_no_job_took_are_deleted(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis
) -> None:
    """An upload whose ticket expired without a job is deleted; one a job took is the job's."""
    services = services_of(stack)
    assert stack.gateway is not None
    body = {"filename": "a.mp4", "content_type": "video/mp4", "size": 4}
    async with http.post(f"{stack.gateway.url}/v1/uploads", json=body) as r:
        ticket = await r.json()
    async with http.put(ticket["upload_url"], data=b"abcd", headers=ticket["headers"]) as r:
        assert r.status == 200
    used = await upload_and_create(http, stack)
    abandoned = services.store.local_path(ticket["key"])
    kept = services.store.local_path(used["source"]["key"])  # type: ignore[index]
    assert abandoned is not None and kept is not None and abandoned.exists()
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)
    assert (await retention.sweep(now=time.time() + 60)).uploads == 0  # its link is valid
    assert (await retention.sweep(now=time.time() + 3 * 86400)).uploads == 1
    assert not abandoned.exists() and kept.exists()


async def test_redis_stays_flat_under_a_steady_load(redis: Redis, prefix: str) -> None:
    """A soak of 2,000 tiny jobs: once their retention passed, Redis holds no more keys than
    before them (only the shared streams and counters)."""
    keys = Keys(prefix)
    store = JobStore(redis, keys, ttl_s=1)

    class NoStorage:  # retention deletes objects; these jobs have none worth deleting
        name = "none"

        async def delete(self, key: str) -> None:
            pass

    retention = Retention(redis, keys, NoStorage(), keep_outputs=False)  # type: ignore[arg-type]

    async def count() -> int:
        return len([k async for k in redis.scan_iter(match=f"{prefix}:*", count=5000)])

    async def batch(n: int) -> None:
        for _ in range(n):
            job = Job.new("uploads/x/source", Options())
            await store.create(job)
            assert (await store.apply(job.id, Cancel())).ok

    await batch(200)  # the shared keys exist from here on
    while (await retention.sweep(now=time.time() + 2)).jobs:
        pass
    baseline = await count()
    for _ in range(9):
        await batch(200)
        while (await retention.sweep(now=time.time() + 2)).jobs:
            pass
        assert await count() == baseline
    counts = await redis.hgetall(keys.status_counts)
    assert {k: v for k, v in counts.items() if v != "0"} == {}
