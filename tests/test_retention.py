"""Retention: an ended job is removed after its time, with everything it left in Redis and in
storage; running and recent jobs stay; uploads no job took are deleted; Redis stays flat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from vidstream.core.errors import StorageError
from vidstream.core.settings import Settings
from vidstream.job.model import ErrorInfo, Job, Options, Output, Stage
from vidstream.job.protocol import Cancel, Claim, Fail, FinishStage
from vidstream.ops.maintenance import Maintenance
from vidstream.ops.retention import RETRY_AFTER_S, Retention
from vidstream.runtime import Stack
from vidstream.services import Services
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys
from vidstream.storage.base import ObjectStore
from vidstream.storage.names import rendered_key, transcript_key

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


async def test_a_completed_job_takes_its_outputs_with_it(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    """A job that completed (transcript in three formats, a rendered video) is removed with its
    source and every output file once its retention passed, leaving no empty folder behind."""
    services = services_of(stack)
    created = await upload_and_create(http, stack)
    job_id, owner = created["id"], "host-render-0:run1"
    outputs: dict[Stage, dict[str, Output]] = {Stage.TRANSCRIBE: {}, Stage.RENDER: {}}
    for name, key in [("json", transcript_key(job_id, "json", "r1")),
                      ("srt", transcript_key(job_id, "srt", "r1")),
                      ("vtt", transcript_key(job_id, "vtt", "r1")),
                      ("video", rendered_key(job_id, "r2"))]:  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
        info = await services.store.put_file(key, tmp_path / name, "application/octet-stream")
        stage = Stage.RENDER if name == "video" else Stage.TRANSCRIBE
        outputs[stage][name] = Output(key, info.size, "application/octet-stream")
    for stage in (Stage.TRANSCRIBE, Stage.RENDER):  # what each worker records, in turn
        job = await services.jobs.get(job_id)
        assert job is not None
        claim = Claim.of(job, stage, owner=owner, lease_ms=30_000, max_attempts=3)
        assert (await services.jobs.apply(job_id, claim)).ok
        assert (await services.jobs.apply(job_id, FinishStage.of(job, stage, outputs[stage],
                                                                 owner=owner))).ok  # fmt: skip
    done = await services.jobs.get(job_id)
    assert done is not None and done.status.value == "completed" and len(done.outputs) == 4
    files = [services.store.local_path(o.key) for o in done.outputs.values()]
    files.append(services.store.local_path(created["source"]["key"]))  # type: ignore[index]
    assert all(f is not None and f.exists() for f in files)
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)

    assert (await retention.sweep(now=time.time() + RETAIN_S + 1)).jobs == 1
    assert [f for f in files if f is not None and f.exists()] == []
    assert await keys_of(redis, prefix, job_id) == []
    root = Path(services.settings.data_dir).resolve() / "storage"
    # What is left: the folder of partial writes, and the id of the folder (`LocalStore.place`).
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [".identity", ".partial"]


async def test_a_failed_job_is_kept_for_failed_job_retention(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """With FAILED_JOB_RETENTION_S set, a failed job is due that long after it failed; a
    cancelled one still JOB_RETENTION_S after it ended."""
    settings = make_settings(job_retention_s=RETAIN_S, failed_job_retention_s=10 * RETAIN_S)
    async with Stack(settings, ("gateway",)) as stack:
        services = services_of(stack)
        failed, cancelled = Job.new("uploads/x/a", Options()), Job.new("uploads/x/b", Options())
        for job in (failed, cancelled):
            await services.jobs.create(job)
        ended = time.time()
        assert (await services.jobs.apply(failed.id, Fail(error=ErrorInfo("x", "y")))).ok
        assert (await services.jobs.apply(cancelled.id, Cancel())).ok
        failed_due = await redis.zscore(services.keys.retention, failed.id)
        cancelled_due = await redis.zscore(services.keys.retention, cancelled.id)
    assert failed_due is not None and cancelled_due is not None
    assert abs(failed_due - (ended + 10 * RETAIN_S)) <= 2  # whole seconds, in Redis's clock
    assert abs(cancelled_due - (ended + RETAIN_S)) <= 2


class RefusingDeletes:
    """A store whose deletes of some keys fail, as a bucket policy refusing them would."""

    def __init__(self, store: ObjectStore, refused: set[str]) -> None:
        self.store, self.refused = store, refused
        self.name = store.name

    async def delete(self, key: str) -> None:
        if key in self.refused:
            raise StorageError(f"AccessDenied: {key}")
        await self.store.delete(key)


async def test_a_job_whose_objects_cannot_be_deleted_holds_nobody_up(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due job whose source storage refuses to delete is tried again RETRY_AFTER_S later:
    the job behind it goes at the next sweep (one job per sweep here, so a job left at the
    head would block all the rest); the refused one goes once storage lets it."""
    monkeypatch.setattr("vidstream.ops.retention.BATCH", 1)
    services = services_of(stack)
    for job in [await upload_and_create(http, stack) for _ in range(2)]:
        async with http.delete(f"{stack.gateway.url}/v1/jobs/{job['id']}") as r:  # type: ignore[union-attr]
            assert r.status == 200
    [head, behind] = [str(m) for m in await redis.zrange(services.keys.retention, 0, -1)]
    stuck = await services.jobs.get(head)
    assert stuck is not None
    store = RefusingDeletes(services.store, {stuck.source_key})
    retention = Retention(redis, services.keys, store, keep_outputs=False)  # type: ignore[arg-type]
    now = time.time() + RETAIN_S + 1

    assert (await retention.sweep(now=now)).jobs == 0
    assert await redis.zscore(services.keys.retention, head) == now + RETRY_AFTER_S
    assert (await retention.sweep(now=now)).jobs == 1
    assert await services.jobs.get(behind) is None
    assert await services.jobs.get(head) is not None  # kept until its files can go

    store.refused.clear()
    assert (await retention.sweep(now=now + RETRY_AFTER_S)).jobs == 1
    assert await services.jobs.get(head) is None
    source = services.store.local_path(stuck.source_key)
    assert source is not None and not source.exists()


async def test_an_upload_that_cannot_be_deleted_holds_nobody_up(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An abandoned upload storage refuses to delete is tried again later; the next one goes."""
    monkeypatch.setattr("vidstream.ops.retention.BATCH", 1)
    services = services_of(stack)
    assert stack.gateway is not None
    for name in ("a.mp4", "b.mp4"):
        body = {"filename": name, "content_type": "video/mp4", "size": 4}
        async with http.post(f"{stack.gateway.url}/v1/uploads", json=body) as r:
            assert r.status in (200, 201)
    index = services.keys.abandoned_uploads
    [head, behind] = [str(m) for m in await redis.zrange(index, 0, -1)]
    retention = Retention(redis, services.keys, RefusingDeletes(services.store, {head}),  # type: ignore[arg-type]
                          keep_outputs=False)  # fmt: skip
    now = time.time() + 3 * 86400
    assert (await retention.sweep(now=now)).uploads == 0
    assert await redis.zscore(index, head) == now + RETRY_AFTER_S
    assert (await retention.sweep(now=now)).uploads == 1
    assert await redis.zscore(index, behind) is None


async def test_a_reused_idempotency_key_stays_with_its_new_job(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis, prefix: str
) -> None:
    """Once an Idempotency-Key's 24 h passed, the tenant may send it again for a new job;
    removing the old job leaves the key naming the new one."""
    services = services_of(stack)
    old = await upload_and_create(http, stack, idem="order-7")
    async with http.delete(f"{stack.gateway.url}/v1/jobs/{old['id']}") as r:  # type: ignore[union-attr]
        assert r.status == 200
    [entry] = [k async for k in redis.scan_iter(match=f"{prefix}:idem:*")]
    await redis.delete(entry)  # its 24 h passed
    new = await upload_and_create(http, stack, idem="order-7")
    assert new["id"] != old["id"]
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)
    assert (await retention.sweep(now=time.time() + RETAIN_S + 1)).jobs == 1
    assert await services.jobs.get(old["id"]) is None
    bound = await redis.get(entry)
    assert bound is not None and str(bound).startswith(f"{new['id']} ")


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


async def test_a_job_another_needs_is_kept_longer_never_shorter(
    stack: Stack, http: aiohttp.ClientSession, redis: Redis
) -> None:
    """An ended job kept for another job (`JobStore.keep`) stays, with its source, until then
    and goes after; keeping it less long changes nothing, and a running job is not kept."""
    services = services_of(stack)
    queued = await upload_and_create(http, stack)
    ended = await upload_and_create(http, stack)
    async with http.delete(f"{stack.gateway.url}/v1/jobs/{ended['id']}") as r:  # type: ignore[union-attr]
        assert r.status == 200
    later = time.time() + 10 * RETAIN_S
    assert await services.jobs.keep(ended["id"], later)
    assert await services.jobs.keep(ended["id"], time.time())  # never shortened
    assert not await services.jobs.keep(queued["id"], later)  # not ended: nothing to keep
    record_ttl = await redis.ttl(services.keys.job(ended["id"]))
    assert record_ttl > 10 * RETAIN_S  # the backstop expiry follows
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)
    assert (await retention.sweep(now=time.time() + RETAIN_S + 1)).jobs == 0
    source = services.store.local_path(ended["source"]["key"])  # type: ignore[index]
    assert source is not None and source.exists()
    assert (await retention.sweep(now=later + 1)).jobs == 1
    assert not source.exists()
    assert await services.jobs.get(queued["id"]) is not None


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


async def test_maintenance_sweeps_batch_after_batch_under_its_lock(
    redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One retention turn of maintenance removes every due job, a batch at a time, while it
    holds the lock; a second process in the same period does nothing."""
    monkeypatch.setattr("vidstream.ops.retention.BATCH", 2)
    keys = Keys(prefix)
    store = JobStore(redis, keys, ttl_s=1)
    for _ in range(5):
        job = Job.new("uploads/x/source", Options())
        await store.create(job)
        assert (await store.apply(job.id, Cancel())).ok
    due = [str(m) for m in await redis.zrange(keys.retention, 0, -1)]
    await redis.zadd(keys.retention, dict.fromkeys(due, 0))

    class NoStorage:
        name = "none"

        async def delete(self, key: str) -> None:
            pass

    def maintenance() -> Maintenance:
        retention = Retention(redis, keys, NoStorage(), keep_outputs=False)  # type: ignore[arg-type]
        return Maintenance(redis, keys, store, retention=retention)

    await maintenance().retain()
    assert await redis.zcard(keys.retention) == 0
    job = Job.new("uploads/x/source", Options())
    await store.create(job)
    assert (await store.apply(job.id, Cancel())).ok
    await redis.zadd(keys.retention, {job.id: 0})
    await maintenance().retain()  # not its turn: the first one holds the lock
    assert await redis.zcard(keys.retention) == 1


@pytest.mark.slow  # a soak: seconds of load, for make test, not the quick loop
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

    async def one() -> None:
        job = Job.new("uploads/x/source", Options())
        await store.create(job)
        assert (await store.apply(job.id, Cancel())).ok

    async def batch(n: int) -> None:  # 50 at a time, as many clients would
        for _ in range(0, n, 50):
            await asyncio.gather(*(one() for _ in range(50)))

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
