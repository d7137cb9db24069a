"""Pause and drain, for deploys: a paused role takes no new work, a paused gateway refuses new
jobs with 503, resuming carries on, and drain waits until nothing runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import upload_job, watch
from tests.media import Clip
from vidstream.jobs import Stage
from vidstream.runtime import Stack
from vidstream.settings import Settings


async def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidstream", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def count_looks(stack: Stack) -> asyncio.Queue[None]:
    """A queue that gets an item each time the transcribe worker has looked for work."""
    [worker] = [w for w in stack.workers if w.stage is Stage.TRANSCRIBE]
    consumer = worker.consumer
    assert consumer is not None
    looks: asyncio.Queue[None] = asyncio.Queue()
    original = consumer.next

    async def counted() -> Any:
        found = await original()
        looks.put_nowait(None)
        return found

    consumer.next = counted  # type: ignore[method-assign]
    return looks


async def looked(looks: asyncio.Queue[None], times: int) -> None:
    async with asyncio.timeout(10):
        for _ in range(times):
            await looks.get()


@pytest.mark.slow
async def test_a_paused_role_takes_nothing_until_resumed(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, clip: Clip,
    role_env: dict[str, str], redis: Redis,
) -> None:  # fmt: skip
    """`vidstream pause transcribe`: a new job stays queued while workers keep looking; after
    `vidstream resume transcribe` it completes; `vidstream drain` then says nothing runs."""
    async with Stack(make_settings(), ("gateway", "notifier", "transcribe")) as stack:
        assert stack.gateway is not None
        looks = count_looks(stack)
        code, out = await cli(role_env, "pause", "transcribe")
        assert code == 0 and "paused" in out
        await looked(looks, 2)
        job = await upload_job(http, stack.gateway.url, clip.path, kind="transcribe")
        await looked(looks, 3)  # a few blocks later, still not taken
        async with http.get(job["links"]["self"]) as r:
            assert (await r.json())["status"] == "queued"
        code, out = await cli(role_env, "resume", "transcribe")
        assert code == 0 and "resumed" in out
        assert (await watch(job, timeout_s=60))[-1]["event"] == "completed"
        code, out = await cli(role_env, "drain", "--timeout", "30")
        assert code == 0 and "nothing is running" in out


async def test_a_paused_gateway_refuses_new_jobs(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, redis: Redis
) -> None:
    """POST /v1/admin/pause/gateway: new jobs get 503 `paused` with Retry-After; reading goes
    on; after resume, jobs are accepted again. Only admins may pause."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.gateway is not None
        base = stack.gateway.url
        async with http.post(f"{base}/v1/admin/pause/gateway") as r:
            assert r.status == 200 and (await r.json())["paused"]["gateway"] is True
        form = aiohttp.FormData()
        form.add_field("file", b"x" * 10, filename="a.mp4")
        async with http.post(f"{base}/v1/jobs", data=form) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (503, "paused")
            assert r.headers["Retry-After"] == "60"
        async with http.get(f"{base}/v1/jobs") as r:
            assert r.status == 200
        async with http.post(f"{base}/v1/admin/resume/gateway") as r:
            assert (await r.json())["paused"]["gateway"] is False
        form = aiohttp.FormData()
        form.add_field("file", b"x" * 10, filename="a.mp4")
        async with http.post(f"{base}/v1/jobs", data=form) as r:
            assert r.status == 202
        async with http.post(f"{base}/v1/admin/pause/everything") as r:
            assert r.status == 400
    admin_only = make_settings(auth="on", api_keys="acme:vs_plain_tenant_key_for_the_test")
    async with Stack(admin_only, ("gateway",)) as stack:
        assert stack.gateway is not None
        headers = {"Authorization": "Bearer vs_plain_tenant_key_for_the_test"}
        async with http.post(f"{stack.gateway.url}/v1/admin/pause/gateway", headers=headers) as r:
            assert r.status == 404
