"""A burst of events to thousands of subscribers, run as its own process by tests/test_live.py
(apart from the test's debug-mode event loop, which would slow the clients, not the notifier).

    python -m tests.burst NOTIFIER_URL REDIS_URL PREFIX SECRET COUNT

Creates COUNT jobs, subscribes one connection to each, cancels them all as fast as it can and
prints one JSON line: the publishing rate, and each event's delay from written to received.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import datetime

from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from vidstream.core.signing import Signer
from vidstream.job.model import Job, Options
from vidstream.job.protocol import Cancel
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys


async def burst(
    url: str, redis_url: str, prefix: str, secret: str, count: int
) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * count)), hard))
    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=1000)
    store = JobStore(redis, Keys(prefix), ttl_s=3600)
    signer = Signer(secret.encode())
    jobs = [Job.new("uploads/x/source", Options()) for _ in range(count)]
    for i in range(0, count, 100):
        await asyncio.gather(*(store.create(job) for job in jobs[i : i + 100]))
    sockets: list[ClientConnection] = []
    for _ in range(0, count, 100):
        sockets += await asyncio.gather(*(connect(url, compression=None) for _ in range(100)))

    async def subscribe(ws: ClientConnection, job: Job) -> None:
        tok = signer.ws_token(job.tenant, job.id, job.created_at, 3600)
        for _ in range(5):  # as a client should: `unavailable` (Redis busy) says try again
            await ws.send(json.dumps({"type": "subscribe", "job_id": job.id, "token": tok}))
            answer = json.loads(await ws.recv())
            if answer.get("code") != "unavailable":
                break
        assert answer["type"] == "snapshot", answer

    await asyncio.gather(*(subscribe(ws, job) for ws, job in zip(sockets, jobs, strict=True)))
    delays: list[float] = []

    async def receive(ws: ClientConnection) -> None:
        event = json.loads(await ws.recv())
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
        delays.append(time.time() - at)

    readers = [asyncio.create_task(receive(ws)) for ws in sockets]
    began = time.monotonic()
    for i in range(0, count, 100):
        await asyncio.gather(*(store.apply(job.id, Cancel()) for job in jobs[i : i + 100]))
    rate = count / (time.monotonic() - began)
    async with asyncio.timeout(60):
        await asyncio.gather(*readers)
    await asyncio.gather(*(ws.close() for ws in sockets))
    await redis.aclose()
    return {"rate": rate, "delays": sorted(delays)}


if __name__ == "__main__":
    url, redis_url, prefix, secret, count = sys.argv[1:6]
    print(json.dumps(asyncio.run(burst(url, redis_url, prefix, secret, int(count)))))
