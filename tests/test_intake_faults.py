"""Creating a job when things go wrong: a slow upload, a gateway dying between two steps, Redis
going away after the bytes arrived. One job per Idempotency-Key, and no upload left unowned."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vidstream.core.settings import Settings
from vidstream.http import idempotency
from vidstream.http.jobs import UPLOAD_TICKET_S
from vidstream.ops.retention import Retention
from vidstream.runtime import Stack
from vidstream.state.budget import _BUDGET
from vidstream.state.jobstore import JobStore


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings(), ("gateway",)) as stack:
        yield stack


def url(stack: Stack) -> str:
    assert stack.gateway is not None
    return f"{stack.gateway.url}/v1/jobs"


async def reserved(stack: Stack, header: str) -> str:
    """Once a request has reserved the Idempotency-Key `header`: its entry's Redis key."""
    assert stack.services is not None
    redis, keys = stack.services.redis, stack.services.keys
    key = keys.idempotency("default", hashlib.sha256(header.encode()).hexdigest())
    for _ in range(500):  # 10 s at most
        if str(await redis.get(key) or "").startswith("pending "):
            return key
        await asyncio.sleep(0.02)  # polled: nothing announces a reservation
    raise AssertionError(f"no request reserved {header!r}")


def multipart(body: Any) -> aiohttp.MultipartWriter:
    """A job's form whose file is `body` (bytes, or an async iterator of chunks)."""
    form = aiohttp.MultipartWriter("form-data")
    form.append("false").set_content_disposition("form-data", name="burn_subtitles")
    part = form.append(body)
    part.set_content_disposition("form-data", name="file", filename="talk.mp4")
    return form


async def test_a_slow_upload_keeps_its_idempotency_key(
    gateway: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload streaming for longer than a reservation lasts (60 s; 1 s here) keeps its key:
    a resend meanwhile gets 409 in progress, not a second job; once the first request ends,
    a resend gets the job it made."""
    monkeypatch.setattr(idempotency, "PENDING_S", 1)
    more = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await more.wait()  # the rest of the file is on its way
        yield b"y" * 1000

    headers = {"Idempotency-Key": "upload-7"}
    first = asyncio.create_task(http.post(url(gateway), data=multipart(slow()), headers=headers))
    await reserved(gateway, "upload-7")
    await asyncio.sleep(2.5)  # the upload's length: past the reservation's own 1 s
    async with http.post(url(gateway), data=multipart(b"z" * 10), headers=headers) as r:
        assert r.status == 409, await r.text()
        assert (await r.json())["error"]["code"] == "conflict"
    more.set()
    async with await first as r:
        assert r.status == 202
        made = (await r.json())["id"]
    async with http.post(url(gateway), data=multipart(b"z" * 10), headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["id"] == made


async def test_a_crash_after_the_job_is_made_keeps_the_key_bound(
    gateway: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway loses its request right after the step that creates the job (a crash, a
    lost answer): the resent request gets that job, not a second one."""
    made = JobStore.create_from_upload

    async def made_then_lost(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        await made(self, *args, **kwargs)
        raise RedisConnectionError("the answer was lost")

    monkeypatch.setattr(JobStore, "create_from_upload", made_then_lost)
    monkeypatch.setattr(JobStore, "create", made_then_lost)  # where multipart went before
    headers = {"Idempotency-Key": "crash-1"}
    async with http.post(url(gateway), data=multipart(b"x" * 100), headers=headers) as r:
        assert r.status == 503
    monkeypatch.undo()
    async with http.post(url(gateway), data=multipart(b"x" * 100), headers=headers) as r:
        assert r.status == 200, await r.text()
        again = (await r.json())["id"]
    async with http.get(url(gateway)) as r:
        assert [job["id"] for job in (await r.json())["jobs"]] == [again]


async def test_an_upload_whose_job_was_never_made_is_deleted(
    gateway: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away after the upload streamed in but before the job is made (the client
    gets 503): the stored upload is owned by its ticket, and retention deletes it once the
    ticket lapses, minutes later rather than never."""
    services = gateway.services
    assert services is not None

    async def redis_gone(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(JobStore, "create_from_upload", redis_gone)
    monkeypatch.setattr(JobStore, "create", redis_gone)  # where multipart went before
    async with http.post(url(gateway), data=multipart(b"x" * 100_000)) as r:
        assert r.status == 503
    monkeypatch.undo()
    root = services.settings.data_dir / "storage" / "uploads"
    stored = list(root.rglob("source"))
    assert len(stored) == 1  # kept for now: the job may have been made after all
    retention = Retention(services.redis, services.keys, services.store, keep_outputs=False)
    await retention.sweep(now=time.time() + UPLOAD_TICKET_S + 60)
    assert not stored[0].exists()


async def test_two_requests_with_one_key_never_make_two_jobs(
    gateway: Stack, http: aiohttp.ClientSession
) -> None:
    """The first request's reservation lapses while its upload streams (Redis stalled for
    longer than it lasts) and a resend makes its job: the first request, done at last, makes
    none (409), so the key still stands for one job."""
    assert gateway.services is not None
    more = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await more.wait()
        yield b"y" * 1000

    headers = {"Idempotency-Key": "upload-8"}
    first = asyncio.create_task(http.post(url(gateway), data=multipart(slow()), headers=headers))
    key = await reserved(gateway, "upload-8")
    await gateway.services.redis.delete(key)  # lapsed
    async with http.post(url(gateway), data=multipart(b"z" * 10), headers=headers) as r:
        assert r.status == 202, await r.text()
        made = (await r.json())["id"]
    more.set()
    async with await first as r:
        assert r.status == 409, await r.text()
    async with http.get(url(gateway)) as r:
        assert [job["id"] for job in (await r.json())["jobs"]] == [made]


async def test_a_request_out_of_redis_time_still_frees_its_key(
    gateway: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that spent its Redis time (REDIS_REQUEST_TIMEOUT_S) fails with 503, and still
    frees its Idempotency-Key: the resend is served at once, not refused 409 for a minute."""

    async def spent(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        assert budget is not None
        budget.left = 0.0
        raise RedisTimeoutError("Redis did not answer within the request's time")

    monkeypatch.setattr(JobStore, "create_from_upload", spent)
    headers = {"Idempotency-Key": "spent-1"}
    async with http.post(url(gateway), data=multipart(b"x" * 100), headers=headers) as r:
        assert r.status == 503
    monkeypatch.undo()
    async with http.post(url(gateway), data=multipart(b"x" * 100), headers=headers) as r:
        assert r.status == 202, await r.text()


async def test_a_compose_job_never_made_gives_its_uploads_back(
    gateway: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away between taking a timeline's uploads and making the job (503): the
    uploads are free again, so the resent timeline is a job, not `422 missing_asset`."""
    async with http.post(f"{url(gateway)[:-5]}/uploads",
                         json={"filename": "a.png", "size": 4}) as r:  # fmt: skip
        upload = await r.json()
    async with http.put(upload["upload_url"], data=b"\x89PNG", headers=upload["headers"]) as r:
        assert r.status == 200, await r.text()
    clip = {"type": "image", "key": upload["key"], "start": 0, "duration": 1}
    body = {"kind": "compose", "timeline": {"tracks": [{"clips": [clip]}]}}

    async def redis_gone(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(JobStore, "create", redis_gone)
    async with http.post(url(gateway), json=body) as r:
        assert r.status == 503
    monkeypatch.undo()
    async with http.post(url(gateway), json=body) as r:
        assert r.status == 202, await r.text()
