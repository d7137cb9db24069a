"""Redis failover under Sentinel: the primary killed while jobs run, a replica promoted, every role
following it; and what `REDIS_WAIT_REPLICAS` promises about what a failover can lose."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.conftest import TERMINAL
from tests.faults import FAKE_FFMPEG, Faults
from tests.sentinels import MASTER_NAME, Sentinels
from tests.sentinels import replicated as replicated
from tests.sentinels import sentinels as sentinels
from vidstream.core.settings import Settings
from vidstream.runtime import Stack
from vidstream.services import connect_redis

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
                started.set() if msg["event"] == "started" else None
                if msg["status"] in TERMINAL:
                    return events
    raise AssertionError(f"the connection closed first: {events}")


async def history(http: aiohttp.ClientSession, stack: Stack, job_id: str) -> list[str]:
    assert stack.gateway is not None
    async with http.get(f"{stack.gateway.url}/v1/jobs/{job_id}/events") as r:
        assert r.status == 200, await r.text()
        return [e["event"] for e in (await r.json())["events"]]


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
    faults.delay("render", 3)  # each render sleeps first: the primary dies mid-flight
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
        async with asyncio.timeout(45):
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
    print(f"failover: every job completed {took:.1f} s after the primary was killed")


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
