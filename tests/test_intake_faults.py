"""Creating a job when things go wrong: a slow upload, a gateway dying between two steps, Redis
going away after the bytes arrived. One job per Idempotency-Key, and no upload left unowned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from vidstream.core.settings import Settings
from vidstream.http import idempotency
from vidstream.http.jobs import UPLOAD_TICKET_S
from vidstream.ops.retention import Retention
from vidstream.runtime import Stack
from vidstream.state.jobstore import JobStore


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings(), ("gateway",)) as stack:
        yield stack


def url(stack: Stack) -> str:
    assert stack.gateway is not None
    return f"{stack.gateway.url}/v1/jobs"


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
