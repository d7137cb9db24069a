"""Fan-out of job events to subscribers: one reader per process, histories read per job.

The hub tails the shared events stream without a consumer group (every notifier needs every
entry). An entry only names a job; the hub then reads that job's own history after the last event
each subscriber has seen. So a subscriber gets every event once and in order, whether it joined
late, asked to resume from an id, or an entry of the shared stream was missed: a periodic sweep
reads the histories of all subscribed jobs as a safety net.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Protocol

from redis.exceptions import RedisError

from vidstream import bus, logs
from vidstream.backoff import Backoff, pause
from vidstream.jobs import TERMINAL
from vidstream.services import BLOCK_MS, Services
from vidstream.tasks import cancel_and_wait

SWEEP_INTERVAL_S = 5.0


class Sink(Protocol):
    def push(self, message: dict[str, Any]) -> None:
        """Queue a message for the client without waiting."""


class Subscription:
    def __init__(self, sink: Sink, job_id: str, after: str) -> None:
        self.sink = sink
        self.job_id = job_id
        self.after = after
        self.lock = asyncio.Lock()
        self.done = False


class Hub:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._subs: dict[str, dict[Sink, Subscription]] = defaultdict(dict)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.waker = bus.Waker(services.redis)
        self.log = logs.get(role="notifier")

    async def start(self) -> None:
        if self._tasks:
            return
        redis, feed = self.services.redis, self.services.keys.events
        cursor = await bus.last_id(redis, feed) or "0-0"
        self._tasks = [
            asyncio.create_task(self._read(cursor), name="notifier-feed"),
            asyncio.create_task(self._sweep(), name="notifier-sweep"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        # Let the reader return from its blocking read rather than cancel it inside redis-py
        # (see tasks.Service).
        self._stop.set()
        await self.waker.wake()
        if tasks:
            await asyncio.wait(tasks, timeout=BLOCK_MS / 1000 + 2)
        await cancel_and_wait(tasks)
        await self.waker.aclose()

    def subscribed(self, sink: Sink, job_id: str) -> bool:
        return sink in self._subs.get(job_id, {})

    def count(self, sink: Sink) -> int:
        """How many jobs `sink` watches; finished jobs drop out on their last event."""
        return sum(sink in subs for subs in self._subs.values())

    async def subscribe(self, sink: Sink, job_id: str, after: str) -> None:
        """Send `sink` every event of `job_id` after the id `after`, then each new one."""
        sub = Subscription(sink, job_id, after)
        self._subs[job_id][sink] = sub
        await self._deliver(sub)

    def unsubscribe(self, sink: Sink, job_id: str) -> None:
        subs = self._subs.get(job_id)
        if subs is not None:
            sub = subs.pop(sink, None)
            if sub:
                sub.done = True
            if not subs:
                del self._subs[job_id]

    def drop(self, sink: Sink) -> None:
        for job_id in [j for j, subs in self._subs.items() if sink in subs]:
            self.unsubscribe(sink, job_id)

    async def _deliver(self, sub: Subscription) -> None:
        async with sub.lock:
            while not sub.done:
                events = await self.services.jobs.events(sub.job_id, after=sub.after, count=200)
                for event in events:
                    sub.sink.push(event.to_public())
                    sub.after = event.id
                    if event.status in TERMINAL:  # nothing can follow a terminal event
                        self.unsubscribe(sub.sink, sub.job_id)
                        return
                if len(events) < 200:
                    return

    async def _deliver_job(self, job_id: str) -> None:
        subs = list(self._subs.get(job_id, {}).values())
        await asyncio.gather(*(self._deliver(s) for s in subs))

    async def _read(self, cursor: str) -> None:
        feed = self.services.keys.events
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                blocking = await self.waker.connection()
                entries = await bus.read(blocking, {feed: cursor}, count=500, block_ms=BLOCK_MS)
                backoff.reset()
            except RedisError as exc:
                self.waker.lost()
                self.log.warning("redis_unavailable", error=str(exc))
                await backoff.sleep(self._stop)
                continue
            jobs: set[str] = set()
            for _, messages in entries:
                for entry_id, fields in messages:
                    cursor = entry_id
                    if fields.get("job_id") in self._subs:
                        jobs.add(fields["job_id"])
            if jobs:
                await self._guarded(asyncio.gather(*(self._deliver_job(j) for j in jobs)))

    async def _sweep(self) -> None:
        while not await pause(SWEEP_INTERVAL_S, self._stop):  # a periodic safety net
            await self._guarded(asyncio.gather(*(self._deliver_job(j) for j in list(self._subs))))

    async def _guarded(self, work: asyncio.Future[Any]) -> None:
        # Whatever fails here must not end the reader or the sweep: that would silence every
        # subscriber of this process.
        try:
            await work
        except RedisError as exc:
            self.log.warning("redis_unavailable", error=str(exc))
        except Exception:
            self.log.exception("delivery_failed")
