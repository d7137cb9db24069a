"""The events feed on Redis Streams: what the roles run.

The feed is the stream `Keys.events`, read without a consumer group (every hub needs every
entry); a job's history is its own stream (`Keys.job_events`). Both are written in one step with
the job by the protocol's Lua (`state.lua`). Redis errors come out as `FeedUnavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from vidstream.feed import lost
from vidstream.feed.base import FEED_BATCH, Batch, Cursor, Entry, FeedUnavailable, Kept
from vidstream.feed.hub import Hub
from vidstream.job.model import Job
from vidstream.job.present import present_job
from vidstream.services import Services
from vidstream.state import bus, scripts
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys


def redis_hub(services: Services) -> Hub:
    """The hub a role runs: on the Redis feed, showing jobs as the REST API does."""

    async def present(job: Job) -> dict[str, Any]:
        return await present_job(job, services.store, services.settings.download_url_ttl_s)

    return Hub(RedisFeed(services.redis, services.keys, services.jobs), present)


class RedisFeed:
    """`Feed` on Redis Streams. `tail` blocks on a connection of its own, which `wake` ends."""

    def __init__(self, redis: Redis, keys: Keys, jobs: JobStore) -> None:
        self.redis, self.keys, self.jobs = redis, keys, jobs
        self.waker = bus.Waker(redis)
        self._look = scripts.register(redis, "feed_look")  # (feed/lost.py reads its answer)

    async def head(self) -> Cursor:
        try:
            return Cursor(await bus.last_id(self.redis, self.keys.events) or "0-0")
        except RedisError as exc:
            raise FeedUnavailable(str(exc)) from exc

    async def tail(self, cursor: Cursor, block_ms: int) -> Batch:
        feed = self.keys.events
        try:
            blocking = await self.waker.connection()
            found = await bus.read(blocking, {feed: cursor.id}, count=FEED_BATCH,
                                   block_ms=block_ms)  # fmt: skip
            # After the read: what it returned may come from a feed that went back since the
            # last look.
            state = await self._state(cursor.id)
        except RedisError as exc:
            self.waker.lost()
            raise FeedUnavailable(str(exc)) from exc
        return lost.batch(found[0][1] if found else [], cursor, state)

    async def _state(self, cursor: str) -> lost.FeedState:
        raw: list[Any] = await self._look(keys=[self.keys.events], args=[cursor])
        if not int(raw[0]):
            return lost.FeedState(False, "0-0", 0, None, False)
        first = str(raw[3])
        return lost.FeedState(True, str(raw[1]), int(raw[2]),
                              bus.stream_id(first) if first else None,
                              bool(int(raw[4])))  # fmt: skip

    async def wake(self) -> None:
        await self.waker.wake()

    async def history(self, job_id: str, after: str, count: int) -> list[Entry]:
        try:
            return await bus.history(self.redis, self.keys.job_events(job_id), after, count=count)
        except RedisError as exc:
            raise FeedUnavailable(str(exc)) from exc

    async def newest(self, job_ids: Sequence[str]) -> list[str]:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.xrevrange(self.keys.job_events(job_id), count=1)
                lasts: list[Any] = await pipe.execute()
        except RedisError as exc:
            raise FeedUnavailable(str(exc)) from exc
        return [str(last[0][0]) if last else "0-0" for last in lasts]

    async def kept(self, job_id: str, after: str) -> Kept:
        key = self.keys.job_events(job_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xinfo_stream(key)
                pipe.xrange(key, after, after, count=1)
                info, found = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise FeedUnavailable(str(exc)) from exc
        if isinstance(info, ResponseError):  # no such stream
            return Kept.GONE
        if isinstance(info, Exception):
            raise FeedUnavailable(str(info)) from info
        wanted = bus.stream_id(after)
        # An entry deleted after `after` would leave a hole.
        if wanted < bus.stream_id(str(info.get("max-deleted-entry-id") or "0-0")):
            return Kept.PARTIAL
        if wanted == (0, 0):  # the whole history: whole unless trimmed (always its oldest)
            whole = int(info.get("entries-added") or 0) <= int(info.get("length") or 0)
            return Kept.WHOLE if whole else Kept.PARTIAL
        # Everything after an entry that is still there is there too; an id that is not
        # (trimmed away, lost, or newer than anything kept) cannot be resumed from.
        return Kept.WHOLE if found else Kept.PARTIAL

    async def snapshot(self, job_id: str) -> tuple[Job | None, str]:
        try:
            return await self.jobs.snapshot(job_id)
        except RedisError as exc:
            raise FeedUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self.waker.aclose()
