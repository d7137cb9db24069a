"""Job logs: the lines every role writes about a job, kept with the job and read back through
`GET /v1/jobs/{id}/logs` and `vidstream logs`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import cli, upload_job, watch
from tests.media import Clip
from vidstream.actors.render import RenderWorker
from vidstream.core import logs
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.job.model import Job, Kind, Options, new_job_id
from vidstream.ops import joblogs
from vidstream.ops.joblogs import PER_JOB_MAX, JobLogShipper
from vidstream.runtime import Stack
from vidstream.state import bus
from vidstream.state.keys import Keys

KEY_A = "vs_aaaa0000_key-of-tenant-a-for-the-job-log-tests"
KEY_B = "vs_bbbb0000_key-of-tenant-b-for-the-job-log-tests"


def emit(job_id: str, count: int, start: int = 0) -> None:
    """Log `count` lines about `job_id`, as a render worker would."""
    log = logs.get(role="render").bind(job_id=job_id, stage="render")
    for n in range(start, start + count):
        log.info("tick", n=n, note="a value with spaces")


async def new_job(redis: Redis, keys: Keys) -> str:
    """A job record under `keys` (all a shipper checks for)."""
    job_id = new_job_id()
    await redis.hset(keys.job(job_id), mapping={"status": "running"})
    return job_id


@pytest.fixture
async def shipper(redis: Redis, prefix: str) -> AsyncIterator[JobLogShipper]:
    async with JobLogShipper(redis, Keys(prefix), ttl_s=600) as running:
        yield running


async def test_a_job_keeps_about_its_newest_500_lines(
    shipper: JobLogShipper, redis: Redis, prefix: str
) -> None:
    """1,200 lines about one job leave about the newest 500, ending with the last one, with
    their stage, role and fields; the stream expires within the job's retention."""
    keys = Keys(prefix)
    job_id = await new_job(redis, keys)
    emit(job_id, 1200)
    async with asyncio.timeout(10):
        await shipper.drain()
    stream = keys.job_logs(job_id)
    assert PER_JOB_MAX <= await redis.xlen(stream) <= PER_JOB_MAX + 100
    [(entry_id, fields)] = await redis.xrevrange(stream, count=1)
    line = joblogs.present(entry_id, fields)
    assert (line["event"], line["stage"], line["role"], line["level"]) == (
        "tick", "render", "render", "info",
    )  # fmt: skip
    assert line["fields"] == {"n": 1199, "note": "a value with spaces"}
    assert 0 < await redis.ttl(stream) <= 600
    await redis.expire(keys.job(job_id), 30)  # the job ended: its logs go with it
    emit(job_id, 1, start=1200)
    async with asyncio.timeout(10):
        await shipper.drain()
    assert 0 < await redis.ttl(stream) <= 30


async def test_lines_land_only_under_the_prefix_that_has_the_job(redis: Redis, prefix: str) -> None:
    """With two stacks' shippers in one process (other prefixes, and one standing by for the
    same one), a job's lines are written once, next to the job, and a job that exists nowhere
    gets no logs anywhere."""
    here, there = Keys(prefix), Keys(f"{prefix}:other")
    async with (
        JobLogShipper(redis, here, ttl_s=600) as first,
        JobLogShipper(redis, here, ttl_s=600) as standby,
        JobLogShipper(redis, there, ttl_s=600) as other,
    ):
        job_there, ghost = await new_job(redis, there), new_job_id()
        emit(job_there, 5)
        emit(ghost, 3)
        async with asyncio.timeout(10):
            await joblogs.drain()
        assert await redis.xlen(there.job_logs(job_there)) == 5
        assert not await redis.exists(here.job_logs(job_there), here.job_logs(ghost))
        assert not await redis.exists(there.job_logs(ghost))
        assert first.refused == 8 and other.refused == 3 and standby.offered == 0
        await first.close()  # the one standing by takes over: still written once
        job_here = await new_job(redis, here)
        emit(job_here, 4)
        async with asyncio.timeout(10):
            await joblogs.drain()
        assert await redis.xlen(here.job_logs(job_here)) == 4


async def test_logging_goes_on_while_redis_does_not_answer(redis: Redis, prefix: str) -> None:
    """While Redis hangs, logging about a job returns at once and the process keeps a bounded
    number of lines (the oldest dropped and counted); closing still ends in bounded time."""
    reached = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        reached.set()
        await reader.read()  # never answer; wait for the client to give up
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    shipper = JobLogShipper(silent, Keys(prefix), 600, batch_size=20, max_lines=100,
                            write_timeout_s=1.0)  # fmt: skip
    try:
        await shipper.start()
        emit(new_job_id(), 1)
        async with asyncio.timeout(5):
            await reached.wait()  # the shipper is now stuck in a write
        started = time.monotonic()
        emit(new_job_id(), 1000)
        assert time.monotonic() - started < 1.0
        assert shipper.buffered <= 100 + 1 and shipper.dropped >= 900
        async with asyncio.timeout(shipper.stop_grace_s + 3):
            await shipper.close()
        assert not shipper.alive
    finally:
        await shipper.close()
        await silent.aclose()
        server.close()
        await server.wait_closed()


async def test_another_tenant_cannot_read_a_jobs_logs(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """The job's tenant reads its lines a page at a time, in order; another tenant gets 404,
    as for a job that does not exist; a malformed `after` is 400."""
    settings = make_settings(auth="on", api_keys=f"a:{KEY_A},b:{KEY_B}")
    async with Stack(settings, ("gateway",)) as stack:
        assert stack.gateway is not None
        url = stack.gateway.url
        async with aiohttp.ClientSession(headers=auth(KEY_A)) as as_a:
            job = await upload_job(as_a, url, clip.path)
            emit(job["id"], 5)
            async with asyncio.timeout(10):
                await joblogs.drain()
            pages, after = [], "0-0"
            while after is not None:
                page = await get(as_a, f"{url}/v1/jobs/{job['id']}/logs?limit=2&after={after}")
                pages.append([line["fields"]["n"] for line in page["logs"]])
                after = page["next"]
            assert pages == [[0, 1], [2, 3], [4]]
            async with as_a.get(f"{url}/v1/jobs/{job['id']}/logs?after=x") as r:
                assert r.status == 400
        async with http.get(f"{url}/v1/jobs/{job['id']}/logs", headers=auth(KEY_B)) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


def test_a_line_keeps_the_workers_label_and_drops_its_consumer_name() -> None:
    """The consumer name (`host-role-N`) names a machine: a job's lines keep the worker's label
    only. The label is stable, differs between workers, and needs the secret to make."""
    signer = Signer(b"secret")
    label = joblogs.worker_label(signer, "render", "vm-render-0")
    assert label.startswith("render-") and "vm" not in label
    assert label == joblogs.worker_label(Signer(b"secret"), "render", "vm-render-0")
    assert label != joblogs.worker_label(signer, "render", "vm-render-1")
    assert label != joblogs.worker_label(Signer(b"another"), "render", "vm-render-0")
    event = {"job_id": "j1", "event": "run_started", "consumer": "vm-render-0", "worker": label}
    line = joblogs.line_of(event, 0.0)
    assert line is not None and line.fields == {"worker": label}


async def test_a_tenant_reads_the_workers_label_never_its_host(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A worker's lines in a job's logs name it by its label (`render-` and a keyed hash), not
    by its consumer name `host-render-N`; the process's own log keeps both for operators."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.gateway is not None and stack.services is not None
        services = stack.services
        job = Job.new("", Options(), kind=Kind.COMPOSE)  # its first stage is render
        await services.jobs.create(job)
        async with RenderWorker(services) as worker:
            started, after = False, "0-0"
            async with asyncio.timeout(20):  # until the worker has taken the job up
                while not started:
                    found = await bus.read(redis, {services.keys.job_events(job.id): after},
                                           count=10, block_ms=1000)  # fmt: skip
                    for _, entries in found:
                        after = entries[-1][0]
                        started |= any(f.get("event") == "started" for _, f in entries)
        async with asyncio.timeout(10):
            await joblogs.drain()
        page = await get(http, f"{stack.gateway.url}/v1/jobs/{job.id}/logs?limit=1000")
    label = joblogs.worker_label(services.signer, "render", worker.name)
    run_started = [line for line in page["logs"] if line["event"] == "run_started"]
    assert run_started and run_started[0]["fields"]["worker"] == label
    assert worker.name not in json.dumps(page) and "consumer" not in json.dumps(page)
    own = [text for text in capsys.readouterr().err.splitlines() if "run_started" in text]
    assert own and f"consumer={worker.name}" in own[0] and f"worker={label}" in own[0]


@pytest.mark.slow
async def test_a_job_shows_each_workers_run_in_its_logs(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """After a job completes, its logs (read from another gateway process) hold the transcribe
    and render workers' run_started and run_finished lines in time order, with stage and role."""
    settings = make_settings()
    async with Stack(settings) as stack:
        assert stack.gateway is not None
        job = await upload_job(http, stack.gateway.url, clip.path)
        assert (await watch(job))[-1]["event"] == "completed"
    # Closed: every line was flushed. A gateway of its own reads them, as another process would.
    async with Stack(settings, ("gateway",)) as reader:
        assert reader.gateway is not None
        page = await get(http, f"{reader.gateway.url}/v1/jobs/{job['id']}/logs?limit=1000")
    lines = page["logs"]
    assert page["job_id"] == job["id"] and page["next"] is None
    at = {
        (line["event"], line["role"]): i
        for i, line in enumerate(lines)
        if line["event"] in ("run_started", "run_finished") and line["stage"] == line["role"]
    }
    for role in ("transcribe", "render"):
        assert at[("run_started", role)] < at[("run_finished", role)], lines
    assert at[("run_finished", "transcribe")] < at[("run_finished", "render")]
    assert at[("run_started", "transcribe")] < at[("run_started", "render")]
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)
    started = next(line for line in lines if line["event"] == "run_started")
    assert started["fields"]["attempt"] == 1 and started["level"] == "info"


@pytest.mark.slow
async def test_the_cli_follows_a_job_to_its_end_and_prints_json(
    make_settings: Callable[..., Settings], role_env: dict[str, str], http: aiohttp.ClientSession,
    clip: Clip,
) -> None:  # fmt: skip
    """`vidstream logs JOB --follow` prints the lines as they come and ends by itself once the
    job has ended; `vidstream logs JOB --json` prints one JSON object per line."""
    async with Stack(make_settings()) as stack:
        assert stack.gateway is not None
        env = {**role_env, "GATEWAY_PORT": str(stack.gateway.port)}
        job = await upload_job(http, stack.gateway.url, clip.path, kind="transcribe")
        code, out = await cli(env, "logs", job["id"], "--follow")
        assert code == 0, out
        status = (await get(http, f"{stack.gateway.url}/v1/jobs/{job['id']}"))["status"]
        assert status == "completed"
        assert "run_started" in out and "run_finished" in out and "transcribe" in out
        code, out = await cli(env, "logs", job["id"], "--json")
        assert code == 0, out
        lines = [json.loads(text) for text in out.splitlines()]
        assert {"run_started", "run_finished"} <= {line["event"] for line in lines}
        assert all(line["stage"] == "transcribe" for line in lines if line["role"] == "transcribe")
        code, out = await cli(env, "logs", new_job_id())
        assert code == 1 and "404" in out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 200, body
        return body
