"""Operating it for months: which workers are alive and what each runs, the numbers per stage,
dead workers' consumers cleaned up, and operator routes closed to everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.conftest import cli, upload_job, watch
from tests.faults import FAKE_FFMPEG, Faults
from tests.media import Clip
from tests.test_processes import ROOT, Role
from vidstream import __version__
from vidstream.actors.render import RenderWorker
from vidstream.core.auth import KeysFile, new_key
from vidstream.core.settings import Settings
from vidstream.job.model import Stage
from vidstream.ops.maintenance import Maintenance
from vidstream.ops.stats import Runs, age_s, percentile, run_member, throughput
from vidstream.ops.workers import WorkerRegistry, list_workers
from vidstream.runtime import Stack
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys


def gateway(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


async def get_json(http: aiohttp.ClientSession, url: str, **headers: str) -> Any:
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until `check()` holds. For what no event announces (a key expiring, a number
    written just after the job's last event): looked at again every tenth of a second."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


# -- pure: the numbers -----------------------------------------------------------------------


def test_percentiles_by_nearest_rank() -> None:
    """p50 and p95 are values that occurred; none without runs."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert (percentile([7.0], 0.5), percentile([7.0], 0.95)) == (7.0, 7.0)
    assert percentile([], 0.5) is None


def test_throughput_counts_the_last_minute_and_averages_the_hour() -> None:
    """Runs per minute: those of the last minute, and the last hour's count over 60."""
    now = 10_000_000.0
    ended = [now - 1_000, now - 59_000, now - 61_000, now - 3_000_000, now - 3_700_000]
    assert throughput(ended, now) == (2.0, round(4 / 60, 3))
    assert throughput([], now) == (0.0, 0.0)


def test_oldest_waiting_age_comes_from_the_entry_id() -> None:
    """A stream id's first part is its time in ms: the age in seconds; 0 when nothing waits."""
    assert age_s("1000-0", 4500.0) == 3.5
    assert age_s(None, 4500.0) == 0.0
    assert age_s("9000-3", 4500.0) == 0.0  # never negative


def test_runs_split_successes_from_failures() -> None:
    """Durations and throughput come from runs that got the stage done; failed runs are
    counted apart; older than an hour or unreadable, a run is left out."""
    now = 10_000_000.0
    members = [
        (run_member(2.0, "handed_on", "a"), now - 1_000),
        (run_member(4.0, "completed", "b"), now - 120_000),
        (run_member(0.1, "retry", "c"), now - 5_000),
        (run_member(9.0, "completed", "d"), now - 3_700_000),
        ("garbage", now),
    ]
    runs = Runs.of(members, now)
    assert (runs.succeeded, runs.failed, runs.last_minute) == (2, 1, 1.0)
    assert (runs.p50_s, runs.p95_s) == (2.0, 4.0)


# -- workers ---------------------------------------------------------------------------------


@pytest.mark.slow  # real Whisper
async def test_workers_list_themselves_and_their_running_job(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    clip: Clip, faults: Faults, prefix: str,
) -> None:  # fmt: skip
    """Each running worker lists itself with its role, version and concurrency; a render in
    progress shows under the render worker with its stage and progress; once the stack stops,
    no worker is listed."""
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), concurrency=2, visibility_timeout_s=4.0)
    async with Stack(settings) as stack:
        listed = (await get_json(http, f"{gateway(stack)}/v1/workers"))["workers"]
        assert [(w["role"], w["version"], w["concurrency"]) for w in listed] == [
            ("render", __version__, 2), ("transcribe", __version__, 2),
        ]  # fmt: skip
        assert {w["name"] for w in listed} == {w.name for w in stack.workers}
        assert all(w["pid"] == os.getpid() and w["jobs"] == [] for w in listed)
        assert all(w["slot"] == 0 and w["name"].endswith("-0") for w in listed)

        faults.delay("render", 60)
        rendering = faults.announce("render")
        job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        await rendering.pid()
        by_role: dict[str, Any] = {}

        async def rendering_listed() -> bool:  # from the render worker's next heartbeat on
            listed = (await get_json(http, f"{gateway(stack)}/v1/workers"))["workers"]
            by_role.update({w["role"]: w for w in listed})
            return bool(by_role["render"]["jobs"]) and by_role["transcribe"]["done"] == 1

        await eventually(rendering_listed)
        [running] = by_role["render"]["jobs"]
        assert (running["job_id"], running["stage"], running["attempt"]) == (job["id"], "render", 1)
        assert 0 <= running["progress"] <= 1 and running["started_at"].endswith("Z")
        assert by_role["transcribe"]["jobs"] == [] and by_role["transcribe"]["failed"] == 0
        async with http.delete(job["links"]["self"]) as r:
            assert r.status == 200
    assert await list_workers(redis, Keys(prefix)) == []
    assert await redis.exists(Keys(prefix).workers) == 0


@pytest.mark.slow  # real Whisper and FFmpeg, end to end
async def test_a_killed_worker_disappears_and_its_consumer_goes(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    clip: Clip, faults: Faults, prefix: str, role_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A render worker SIGKILLed mid-job: another worker finishes the job; the dead one leaves
    the list once its heartbeat lapses, and its consumer leaves the group once nothing is
    pending under it. The live workers' consumers stay."""
    monkeypatch.setattr("vidstream.ops.maintenance.REAP_INTERVAL_S", 0.5)
    keys = Keys(prefix)
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), visibility_timeout_s=4.0)

    async def consumers() -> set[str]:
        """The consumers of the render group, over the stage's streams."""
        names: set[str] = set()
        group = keys.stage_group(Stage.RENDER)
        for stream in keys.stage_streams(Stage.RENDER):
            with contextlib.suppress(ResponseError):  # a stream nobody read yet
                names |= {c["name"] for c in await redis.xinfo_consumers(stream, group)}
        return names

    env = {**role_env, **faults.env, "FFMPEG_BINARY": str(FAKE_FFMPEG),
           "VISIBILITY_TIMEOUT_S": "4"}  # fmt: skip
    async with Stack(settings, ("gateway", "notifier", "transcribe")) as stack:
        assert stack.services is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidstream", "render", env=env, cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        doomed = Role("render", proc)
        try:
            await doomed.wait_for("vidstream_ready")
            [dead] = [w for w in await list_workers(redis, keys) if w.pid == proc.pid]
            faults.delay("render", 60)
            rendering = faults.announce("render")
            job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
            ffmpeg = await rendering.pid()

            async def listed_running() -> bool:  # from the dead-to-be worker's next heartbeat
                found = [w for w in await list_workers(redis, keys) if w.pid == proc.pid]
                return [j.job_id for w in found for j in w.jobs] == [job["id"]]

            await eventually(listed_running)
            assert dead.name in await consumers()
            faults.clear("render")
            async with RenderWorker(stack.services) as survivor:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ffmpeg, signal.SIGKILL)  # its orphaned FFmpeg
                assert (await watch(job, timeout_s=60))[-1]["event"] == "completed"

                async def gone() -> bool:
                    workers = {w.name for w in await list_workers(redis, keys)}
                    return dead.name not in workers and dead.name not in await consumers()

                await eventually(gone)
                assert survivor.name in await consumers()
                assert survivor.name in {w.name for w in await list_workers(redis, keys)}
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_worker_given_a_name_has_no_slot(redis: Redis, prefix: str) -> None:
    """A worker started with an explicit name lists `slot` as null (a leased one as its N);
    the hash of a worker from before the field reads back with no slot."""
    keys = Keys(prefix)
    shape = {"role": "render", "concurrency": 1, "runs": list, "interval_s": 5.0}
    named = WorkerRegistry(redis, keys, name="edge-render", visibility_timeout_s=30.0, **shape)
    leased = WorkerRegistry(
        redis, keys, name="host-render-3", visibility_timeout_s=30.0, slot=3, **shape
    )
    await named.beat()
    await leased.beat()
    listed = {w.name: w.to_public()["slot"] for w in await list_workers(redis, keys)}
    assert listed == {"edge-render": None, "host-render-3": 3}
    await redis.hdel(keys.worker("host-render-3"), "slot")
    assert [w.slot for w in await list_workers(redis, keys)] == [None, None]


async def test_maintenance_removes_only_dead_idle_consumers_with_nothing_pending(
    redis: Redis, prefix: str
) -> None:
    """A consumer with no worker behind it, idle past the visibility timeout and with nothing
    pending, is removed; one with pending entries, a live worker's, or one idle for less than
    the timeout stays."""
    keys = Keys(prefix)
    stream, group = keys.stage_stream(Stage.RENDER), keys.stage_group(Stage.RENDER)
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    await redis.xgroup_createconsumer(stream, group, "ghost")  # its entries claimed by others
    await redis.xadd(stream, {"job_id": "x"})
    await redis.xreadgroup(group, "holding", {stream: ">"}, count=1)  # one pending entry
    await redis.xgroup_createconsumer(stream, group, "live")
    await redis.hset(keys.worker("live"), "name", "live")
    jobs = JobStore(redis, keys, ttl_s=60)

    patient = Maintenance(redis, keys, jobs, visibility_timeout_s=3600)
    assert await patient.reap() == []  # nobody idle for an hour
    await redis.delete(keys.lock("reap"))  # the next pass at once
    eager = Maintenance(redis, keys, jobs, visibility_timeout_s=0)
    assert await eager.reap() == ["ghost"]
    left = {c["name"]: c["pending"] for c in await redis.xinfo_consumers(stream, group)}
    assert left == {"holding": 1, "live": 0}


# -- stats -----------------------------------------------------------------------------------


@pytest.mark.slow  # real Whisper and FFmpeg, end to end
async def test_stats_after_jobs(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    clip: Clip, faults: Faults,
) -> None:  # fmt: skip
    """After a completed job and a dead-lettered one: each stage ran at least once in the
    last minute, with durations above 0; the queues are empty; the dead letter is counted;
    jobs by status are numbers."""
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), job_max_attempts=1)
    async with Stack(settings) as stack:
        job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        assert (await watch(job))[-1]["event"] == "completed"
        faults.fail("render", "always")
        failing = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        assert (await watch(failing))[-1]["event"] == "failed"
        url = f"{gateway(stack)}/v1/stats"

        async def logged() -> bool:  # each run is logged just after its outcome's event
            stages = (await get_json(http, url))["stages"]
            return [s["runs_last_hour"] for s in stages] == [
                {"succeeded": 2, "failed": 0}, {"succeeded": 1, "failed": 1},
            ]  # fmt: skip

        await eventually(logged, timeout_s=10)
        numbers = await get_json(http, url)
    assert [s["stage"] for s in numbers["stages"]] == ["transcribe", "render"]
    for stage in numbers["stages"]:
        assert stage["throughput_per_min"]["last_minute"] >= 1
        assert stage["throughput_per_min"]["last_hour"] > 0
        assert stage["duration_s"]["p50"] > 0 and stage["duration_s"]["p95"] > 0
        assert stage["queue"] == {"length": stage["queue"]["length"], "pending": 0, "lag": 0,
                                  "oldest_waiting_s": 0.0}  # fmt: skip
    assert numbers["dead_letters"] == 1
    assert set(numbers["jobs"]) == {"queued", "running", "completed", "failed", "cancelled"}
    assert all(isinstance(n, int) and n >= 0 for n in numbers["jobs"].values())


async def test_jobs_by_status_read_the_counters(redis: Redis, prefix: str) -> None:
    """Jobs by status come from the status counters: all 0 before any job, never below 0."""
    from vidstream.ops.stats import job_counts, queue, redis_ms

    keys = Keys(prefix)
    assert set((await job_counts(redis, keys)).values()) == {0}
    await redis.hset(keys.status_counts, mapping={"queued": 3, "running": 1, "completed": -2})
    counts = await job_counts(redis, keys)
    assert (counts["queued"], counts["running"], counts["completed"]) == (3, 1, 0)
    # An entry no worker has read yet is waiting since it was added.
    stream = keys.stage_stream(Stage.TRANSCRIBE)
    await redis.xadd(stream, {"job_id": "x"}, id="1-0")
    waiting = await queue(redis, keys, Stage.TRANSCRIBE, await redis_ms(redis))
    assert (waiting.length, waiting.lag, waiting.pending) == (1, 1, 0)
    assert waiting.oldest_waiting_s > 1e9  # added at 1 ms past the epoch


# -- who may see them ------------------------------------------------------------------------


async def test_operator_routes_need_an_admin_key(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    """With authentication on, /v1/workers and /v1/stats answer an admin key, are 404 to any
    other key, and 401 without one."""
    settings = make_settings(auth="on")
    keys_file = KeysFile(settings.data_dir / "api-keys.jsonl")
    admin, admin_record = new_key("ops", admin=True)
    tenant, tenant_record = new_key("acme")
    keys_file.add(admin_record)
    keys_file.add(tenant_record)
    async with Stack(settings, ("gateway",)) as stack:
        for route in ("/v1/workers", "/v1/stats"):
            url = f"{gateway(stack)}{route}"
            async with http.get(url, headers={"Authorization": f"Bearer {tenant}"}) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
            async with http.get(url) as r:
                assert r.status == 401
            body = await get_json(http, url, Authorization=f"Bearer {admin}")
            assert set(body) & {"workers", "stages"}


@pytest.mark.slow  # a full stack: the Whisper model loads
async def test_cli_prints_workers_and_stats(
    make_settings: Callable[..., Settings], role_env: dict[str, str]
) -> None:
    """`vidstream workers --json` and `vidstream stats --json` parse and name the running
    workers and every stage; `vidstream status` shows the workers table under the streams."""
    async with Stack(make_settings()) as stack:
        code, out = await cli(role_env, "workers", "--json")
        assert code == 0, out
        workers = json.loads(out)["workers"]
        assert {w["name"] for w in workers} == {w.name for w in stack.workers}
        assert {w["role"] for w in workers} == {"transcribe", "render"}
        assert [w["slot"] for w in workers] == [0, 0]  # each role's first slot on this host
        code, out = await cli(role_env, "stats", "--json")
        assert code == 0, out
        numbers = json.loads(out)
        assert [s["stage"] for s in numbers["stages"]] == ["transcribe", "render"]
        assert numbers["dead_letters"] == 0
        code, out = await cli(role_env, "status")
        assert code == 0, out
        assert "done/failed" in out and all(w.name in out for w in stack.workers)
        assert "slot" in out.split("\n\n")[-1]  # a column of the workers table
        code, out = await cli(role_env, "stats")
        assert code == 0 and "p95" in out and "dead letters" in out, out
        code, out = await cli(role_env, "status", "--json")
        assert len(json.loads(out)["workers"]) == 2
