"""Pause and drain, for deploys: a paused role takes no new work, a paused gateway refuses new
jobs with 503, resuming carries on, and drain waits until nothing runs."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import upload_job, watch
from tests.media import Clip
from vidstream.actors.run import Run
from vidstream.actors.worker import Worker
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Kind, Options, Stage
from vidstream.ops.pausing import command, set_paused
from vidstream.runtime import Stack
from vidstream.state.keys import Keys


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
        [worker] = stack.workers
        code, out = await cli(role_env, "pause", "transcribe")
        assert code == 0 and "paused" in out
        # Until the worker has read the flag (it reads it every 0.5 s); looks from before that
        # count for nothing.
        async with asyncio.timeout(10):
            while not (worker.consumer and worker.consumer.paused):
                await looks.get()
        while not looks.empty():
            looks.get_nowait()
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


class HeldWorker(Worker):
    """A transcribe worker whose run starts, then holds until the test lets it finish."""

    stage: ClassVar[Stage] = Stage.TRANSCRIBE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        self.started.set()
        await self.release.wait()
        await run.finish({})


class Lines(io.StringIO):
    """Output that announces each line written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    def write(self, text: str, /) -> int:
        for line in text.splitlines():
            self.lines.put_nowait(line)
        return super().write(text)


async def test_drain_waits_for_a_running_job(
    make_settings: Callable[..., Settings], role_env: dict[str, str], redis: Redis
) -> None:
    """With a job running, `vidstream drain --timeout 0.5` says how many runs are left and
    exits 1 once the time is up; a drain with time to spare waits, and ends with exit 0 as
    soon as the job is done."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        services = stack.services
        assert services is not None
        async with HeldWorker(services) as worker:
            job = Job.new("uploads/x/source", Options(), kind=Kind.TRANSCRIBE)
            await services.jobs.create(job)
            async with asyncio.timeout(5):
                await worker.started.wait()
            out = Lines()
            patient = asyncio.create_task(command(redis, services.keys, "drain", None, 30, out))
            async with asyncio.timeout(10):
                assert await out.lines.get() == "waiting for 1 run(s) to finish"
                code, printed = await cli(role_env, "drain", "--timeout", "0.5")
                assert code == 1 and printed.splitlines() == [
                    "waiting for 1 run(s) to finish", "still running after 0.5 s",
                ]  # fmt: skip
                assert not patient.done()
                worker.release.set()
                assert await patient == 0
            assert out.getvalue().splitlines()[-1] == "drained: nothing is running"
            done = await services.jobs.get(job.id)
            assert done is not None and done.status.value == "completed"


async def test_drain_does_not_wait_for_what_a_dead_worker_left(redis: Redis, prefix: str) -> None:
    """An entry pending under a consumer whose worker has no heartbeat (it died) is nobody's
    while its role is paused: drain reports it and returns at once, exit 0; one under a live
    worker is waited for."""
    keys = Keys(prefix)
    stream, group = keys.stage_stream(Stage.TRANSCRIBE), keys.stage_group(Stage.TRANSCRIBE)
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await set_paused(redis, keys, "transcribe", True)
    await redis.xadd(stream, {"job_id": "x"})
    await redis.xreadgroup(group, "host-transcribe-3", {stream: ">"}, count=1)  # then it died
    out = io.StringIO()
    async with asyncio.timeout(3):
        assert await command(redis, keys, "drain", None, 30.0, out) == 0
    assert out.getvalue().splitlines() == [
        "1 run(s) left by workers that died (no heartbeat): not waited for; a live worker of "
        "their role takes them over when not paused",
        "drained: no live worker runs anything",
    ]  # fmt: skip
    await redis.hset(keys.worker("host-transcribe-3"), "name", "host-transcribe-3")  # alive
    out = io.StringIO()
    assert await command(redis, keys, "drain", None, 0.0, out) == 1
    assert out.getvalue().splitlines() == [
        "waiting for 1 run(s) to finish", "still running after 0 s",
    ]  # fmt: skip
