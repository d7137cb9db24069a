"""Redis failover under Sentinel: the primary killed while jobs run, a replica promoted, every role
following it; and what `REDIS_WAIT_REPLICAS` promises about what a failover can lose."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.conftest import TERMINAL, free_port
from tests.faults import FAKE_FFMPEG, Faults
from tests.sentinels import MASTER_NAME, Replicated, Sentinels, Server
from tests.sentinels import replicated as replicated
from tests.sentinels import sentinels as sentinels
from vidstream.actors.run import Run, RunEnd, RunState
from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Options, Stage
from vidstream.job.protocol import Claim, EventName, FinishStage, Intake, Op
from vidstream.runtime import Stack
from vidstream.services import connect_redis
from vidstream.state.jobstore import Applied, JobStore
from vidstream.state.keys import Keys
from vidstream.state.replication import NotReplicated, Replication

TIMELINE = {
    "output": {"width": 160, "height": 120},
    "tracks": [{"clips": [{"type": "color", "color": "#ff0000", "start": 0, "duration": 1}]}],
}


async def submit(
    http: aiohttp.ClientSession, stack: Stack, **headers: str
) -> aiohttp.ClientResponse:
    assert stack.gateway is not None
    return await http.post(f"{stack.gateway.url}/v1/jobs", headers=headers,
                           json={"kind": "compose", "timeline": TIMELINE})  # fmt: skip


async def follow(job: dict[str, Any], started: asyncio.Event) -> list[dict[str, Any]]:
    """The job's events over one WebSocket until its end; `started` is set once it runs. A
    `reset` (the history went back) starts the list again."""
    events: list[dict[str, Any]] = []
    async with connect(job["links"]["ws"]) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job["id"],
                                  "token": job["ws_token"], "last_event_id": "0-0"}))  # fmt: skip
        async for raw in ws:
            msg = json.loads(raw)
            assert msg["type"] != "error", msg
            if msg["type"] == "reset":
                events.clear()
            elif msg["type"] == "event":
                events.append(msg)
                if msg["event"] == "started":
                    started.set()
                if msg["status"] in TERMINAL:
                    return events
    raise AssertionError(f"the connection closed first: {events}")


async def history(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> list[str]:
    assert stack.gateway is not None
    async with http.get(f"{stack.gateway.url}/v1/jobs/{job_id}/events") as r:
        assert r.status == 200, await r.text()
        return [e["event"] for e in (await r.json())["events"]]


@pytest.mark.slow  # FFmpeg end to end (no Whisper), about 10 s
async def test_jobs_complete_through_a_failover(
    make_settings: Callable[..., Settings], sentinels: Sentinels, faults: Faults,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    """The Redis primary is killed while three jobs render: Sentinel promotes the replica, the
    gateway, the notifier and the workers follow it, and every job completes once, its watchers
    seeing its end."""
    settings = make_settings(
        redis_url="redis://found-through-sentinel/0", redis_sentinels=sentinels.addresses,
        redis_master_name=MASTER_NAME, ffmpeg=str(FAKE_FFMPEG), concurrency=3,
        redis_timeout_s=1.0, visibility_timeout_s=10.0,
    )  # fmt: skip
    faults.delay("render", 2)  # each render sleeps first: the primary dies mid-flight
    async with Stack(settings, ("gateway", "render", "notifier")) as stack:
        jobs = []
        for _ in range(3):
            async with await submit(http, stack) as r:
                assert r.status == 202, await r.text()
                jobs.append(await r.json())
        started = [asyncio.Event() for _ in jobs]
        watching = [asyncio.create_task(follow(j, s)) for j, s in zip(jobs, started, strict=True)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(s.wait() for s in started))

        killed = time.monotonic()
        sentinels.servers.primary.kill()
        faults.clear("render")  # (the renders sleeping now still do)
        # The bound: the failover (about 2 s here), what the renders had left, and one
        # VISIBILITY_TIMEOUT_S should a hand-off made just before the kill be lost and run again.
        async with asyncio.timeout(20):
            seen = await asyncio.gather(*watching)
        took = time.monotonic() - killed
        await sentinels.failed_over()

        for job, events in zip(jobs, seen, strict=True):
            assert events[-1]["event"] == "completed", events
            assert [e["event"] for e in events].count("completed") == 1, events
            kept = await history(http, stack, job["id"])
            assert [name for name in kept if name in TERMINAL] == ["completed"], kept
        # The gateway makes new jobs on the new primary, which a worker takes up.
        async with await submit(http, stack) as r:
            assert r.status == 202, await r.text()
            late = await r.json()
        async with asyncio.timeout(30):
            after = await follow(late, asyncio.Event())
        assert after[-1]["event"] == "completed"
        assert all(w.alive for w in stack.workers)
    print(f"failover: every job completed {took:.1f} s after the primary was killed")  # (-s)


async def test_a_connection_of_its_own_follows_the_new_primary(
    make_settings: Callable[..., Settings], sentinels: Sentinels
) -> None:
    """A connection held for blocking reads (a worker's, the notifier's) reaches the promoted
    replica on its next command rather than dialling the dead primary until its retries end."""
    settings = make_settings(
        redis_url="redis://found-through-sentinel/0", redis_sentinels=sentinels.addresses,
        redis_master_name=MASTER_NAME, redis_timeout_s=1.0,
    )  # fmt: skip
    client = connect_redis(settings)
    own = Redis(connection_pool=client.connection_pool, single_connection_client=True)
    try:
        assert (await own.info("server"))["tcp_port"] == sentinels.servers.primary.port
        sentinels.servers.primary.kill()
        await sentinels.failed_over()
        assert (await own.info("server"))["tcp_port"] == sentinels.servers.replica.port
    finally:
        await own.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "sentinel-a"}, "REDIS_SENTINELS entries must be host:port"),
        ({"REDIS_SENTINELS": "a:26379,b:0"}, "got 'b:0'"),
        (
            {"REDIS_SENTINELS": "a:1", "REDIS_URL": "unix:///run/redis.sock"},
            "redis:// or rediss://",
        ),
        ({"REDIS_SENTINELS": "a:1", "REDIS_MASTER_NAME": " "}, None),  # blank: the default
        ({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_S": "2"}, "must be below"),
        ({"REDIS_WAIT_REPLICAS": "-1"}, "between 0 and 16"),
    ],
)
def test_sentinel_and_wait_settings_are_checked_at_start(
    env: dict[str, str], message: str | None
) -> None:
    """A Sentinel list or a WAIT bound that cannot work stops the process at start, naming it."""
    if message is None:
        assert Settings.from_env(env).redis_master_name == "mymaster"
        return
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
    parsed = Settings.from_env({"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380"})
    assert parsed.sentinel_addresses == [("10.0.0.1", 26379), ("::1", 26380)]


# -- what a failover can lose, and REDIS_WAIT_REPLICAS ------------------------------------------


async def test_without_wait_a_job_acknowledged_before_it_reached_the_replica_is_lost(
    make_settings: Callable[..., Settings], replicated: Replicated, http: aiohttp.ClientSession
) -> None:
    """The window docs/redis.md describes: by default a job is answered 202 once the primary has
    it, and a primary that dies before its replica has it takes the job with it."""
    settings = make_settings(redis_url=replicated.url(replicated.primary))
    async with Stack(settings, ("gateway",)) as stack:
        await replicated.cut()  # what the primary writes from now on is not replicated
        async with await submit(http, stack) as r:
            assert r.status == 202, await r.text()
            job = await r.json()
    replicated.primary.kill()
    replicated.replica.thaw()
    promoted = Redis.from_url(replicated.url(replicated.replica), decode_responses=True)
    try:
        assert not await promoted.exists(Keys(settings.redis_prefix).job(job["id"]))
    finally:
        await promoted.aclose()


async def test_with_wait_a_job_is_acknowledged_once_a_replica_has_it(
    make_settings: Callable[..., Settings], replicated: Replicated, http: aiohttp.ClientSession
) -> None:
    """With REDIS_WAIT_REPLICAS=1 a job answered 202 is on the replica; while the replica lags
    the answer is 503, and the request resent with its Idempotency-Key gives that one job once
    the replica has it."""
    # A second to confirm: a replica on a busy test machine answers late, not never.
    settings = make_settings(redis_url=replicated.url(replicated.primary), redis_wait_replicas=1,
                             redis_wait_timeout_s=1.0)  # fmt: skip
    keys = Keys(settings.redis_prefix)
    replica = Redis.from_url(replicated.url(replicated.replica), decode_responses=True)
    retry = {"Idempotency-Key": "failover-1"}
    async with Stack(settings, ("gateway",)) as stack:
        async with await submit(http, stack) as r:
            assert r.status == 202, await r.text()
            assert await replica.exists(keys.job((await r.json())["id"]))
        await replicated.cut()
        try:
            for _ in range(2):  # the first try, then the same request resent
                async with await submit(http, stack, **retry) as r:
                    body = await r.json()
                    assert r.status == 503, body
                    assert body["error"]["code"] == "unavailable"
                    assert "replica" in body["error"]["message"]
        finally:
            await replicated.rejoin()
        async with await submit(http, stack, **retry) as r:
            assert r.status == 200, await r.text()  # the job the first try made
            job = await r.json()
        assert await replica.exists(keys.job(job["id"]))
        assert await replica.zcard(keys.tenant_jobs("default")) == 2
    await replica.aclose()


def hand_off_store(
    redis: Redis, keys: Keys, refused: asyncio.Event | None = None, timeout_ms: int = 1000
) -> JobStore:
    """A job store waiting for one replica on each hand-off; `refused` is set when one falls
    short."""

    class Watched(JobStore):
        async def apply(self, job_id: str, op: Op) -> Applied:
            try:
                return await super().apply(job_id, op)
            except NotReplicated:
                if refused is not None:
                    refused.set()
                raise

    return Watched(redis, keys, ttl_s=3600,
                   replication=Replication(1, timeout_ms, keys.replicated))  # fmt: skip


async def started(jobs: JobStore, owner: str) -> Job:
    """A new subtitle job whose transcribe stage `owner` has claimed."""
    job = Job.new("uploads/a/clip.mp4", Options(burn_subtitles=True))
    assert await jobs.create(job) is Intake.OK
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=owner, lease_ms=30_000, max_attempts=3)
    assert (await jobs.apply(job.id, claim)).ok
    return job


async def test_a_worker_keeps_its_outcome_until_a_replica_has_it(
    replicated: Replicated, prefix: str
) -> None:
    """With REDIS_WAIT_REPLICAS a finished stage the replica does not have yet is sent again
    until it does; meanwhile the run holds no lease, so its keeper does not take the job's move
    on for another run's and stop it."""
    keys, refused = Keys(prefix), asyncio.Event()
    primary = Redis.from_url(replicated.url(replicated.primary), decode_responses=True)
    replica = Redis.from_url(replicated.url(replicated.replica), decode_responses=True)
    jobs = hand_off_store(primary, keys, refused)
    job = await started(jobs, "worker-1:a")
    run = Run(jobs, Stage.TRANSCRIBE, job.id, "0-1", owner="worker-1:a")
    run.claimed(job, 1)
    await replicated.cut()
    try:
        finishing = asyncio.create_task(run.finish({}))
        async with asyncio.timeout(10):
            await refused.wait()
        assert not finishing.done()
        assert run.state is RunState.RELEASED and not run.holds_lease
    finally:
        await replicated.rejoin()
    async with asyncio.timeout(10):
        await finishing
    assert run.outcome is RunEnd.HANDED_ON
    assert await replica.hget(keys.job(job.id), "done") == Stage.TRANSCRIBE.value
    assert await replica.xlen(keys.stage_stream(Stage.RENDER)) == 1  # handed to render
    await primary.aclose()
    await replica.aclose()


async def test_a_hand_off_read_back_is_confirmed_whoever_wrote_it(
    replicated: Replicated, prefix: str
) -> None:
    """A resent request is answered with the job its first try made, on another connection:
    it is confirmed once the replica has everything the primary holds, not merely what the
    connection that reads it back last wrote (WAIT's own measure)."""
    keys = Keys(prefix)
    reader = Redis.from_url(replicated.url(replicated.primary), decode_responses=True)
    writer = Redis.from_url(replicated.url(replicated.primary), decode_responses=True)
    await reader.set(keys.lock("test"), "1")
    assert await reader.wait(1, 1000) == 1  # the reader's last write is on the replica
    replicated.replica.freeze()  # connected, and behind from now on
    try:
        job = Job.new("uploads/a/clip.mp4", Options(burn_subtitles=True))
        assert await JobStore(writer, keys, ttl_s=3600).create(job) is Intake.OK
        with pytest.raises(NotReplicated):
            await hand_off_store(reader, keys, timeout_ms=200).confirm()
    finally:
        replicated.replica.thaw()
    await hand_off_store(reader, keys).confirm()
    await writer.aclose()
    await reader.aclose()


async def test_an_outcome_resent_to_a_primary_that_lost_it_is_made_there_once(
    replicated: Replicated, prefix: str
) -> None:
    """A finished stage the old primary took but never replicated is made again by the worker's
    resend on the promoted replica, once: the job moves on without its stage running again."""
    keys = Keys(prefix)
    primary = Redis.from_url(replicated.url(replicated.primary), decode_responses=True)
    replica = Redis.from_url(replicated.url(replicated.replica), decode_responses=True)
    job = await started(hand_off_store(primary, keys), "worker-1:a")
    finish = FinishStage.of(job, Stage.TRANSCRIBE, {}, owner="worker-1:a")
    await replicated.cut()
    with pytest.raises(NotReplicated) as refused:
        await hand_off_store(primary, keys).apply(job.id, finish)
    assert isinstance(refused.value.answer, Applied) and refused.value.answer.ok
    replicated.primary.kill()
    replicated.replica.thaw()
    await replica.replicaof("NO", "ONE")  # what Sentinel does to the replica it promotes
    promoted = JobStore(replica, keys, ttl_s=3600)
    assert not await replica.hget(keys.job(job.id), "done")  # the finish is lost
    for _ in range(2):  # the resend, then a resend of the resend
        assert (await promoted.apply(job.id, finish)).ok
    assert await replica.hget(keys.job(job.id), "done") == Stage.TRANSCRIBE.value
    assert await replica.xlen(keys.stage_stream(Stage.RENDER)) == 1  # handed to render once
    events = [e.event for e in await promoted.events(job.id)]
    assert events.count(EventName.STAGE_COMPLETED) == 1, events
    await primary.aclose()
    await replica.aclose()


async def test_a_primary_without_a_replica_refuses_new_jobs(
    make_settings: Callable[..., Settings], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`min-replicas-to-write 1` (deploy/redis/sentinel.conf's advice): a primary that lost its
    replica takes no writes a failover would discard; the gateway answers 503 `unavailable`."""
    servers = Replicated(tmp_path / "redis", ("--min-replicas-to-write", "1",
                                             "--min-replicas-max-lag", "10"))  # fmt: skip
    await servers.start()
    try:
        settings = make_settings(redis_url=servers.url(servers.primary))
        async with Stack(settings, ("gateway",)) as stack:
            async with await submit(http, stack) as r:
                assert r.status == 202, await r.text()
            await servers.replica.stop()
            primary = Redis.from_url(servers.url(servers.primary))
            await primary.client_kill_filter(_type="replica")  # gone now, not at its next ping
            await primary.aclose()
            async with await submit(http, stack) as r:
                body = await r.json()
                assert r.status == 503, body
                assert body["error"]["code"] == "unavailable"
    finally:
        await servers.stop()


async def test_the_sentinel_example_watches_the_primary_it_names(tmp_path: Path) -> None:
    """deploy/redis/sentinel.conf starts a Sentinel (here on loopback) that watches `mymaster`,
    REDIS_MASTER_NAME's default, with the quorum and timings docs/redis.md describes."""
    conf = tmp_path / "sentinel.conf"  # a copy: Sentinel rewrites its file
    example = Path(__file__).resolve().parent.parent / "deploy" / "redis" / "sentinel.conf"
    conf.write_text(example.read_text())
    node = Server("sentinel", tmp_path, free_port(), [str(conf), "--sentinel"])
    await node.start(ready="+monitor master")
    client = Redis(port=node.port, decode_responses=True)
    try:
        watched = await client.sentinel_master(Settings().redis_master_name)
        assert (watched["ip"], watched["port"], watched["quorum"]) == ("10.0.0.10", 6379, 2)
        assert watched["down-after-milliseconds"] == 5000
    finally:
        await client.aclose()
        await node.stop()
