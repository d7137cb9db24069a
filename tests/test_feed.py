"""The events feed's contract, run against both feeds: the Redis one (written by the protocol's
real Lua) and the in-memory one the hub's fast tests use. Histories, each job's newest event,
what is kept after an id, snapshots, tailing, trimming, lost writes, outages; and where a
subscription starts (`feed.resume`) on each."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.conftest import free_port
from vidstream.feed import resume
from vidstream.feed.base import Cursor, Feed, FeedUnavailable, Gap, Kept
from vidstream.feed.memory import MemoryFeed
from vidstream.feed.redis import RedisFeed
from vidstream.job.model import ErrorInfo, Job, Options, Stage, Status
from vidstream.job.protocol import Claim, Fail, Progress, Replay
from vidstream.job.protocol.events import Event, public_text
from vidstream.job.protocol.schema import EventName
from vidstream.state.bus import stream_id
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys

pytestmark = pytest.mark.timeout(20)
OWNER = "feed-test:1"
TAIL_MS = 20  # how long an empty `tail` waits here


class Writer(Protocol):
    """Writes a feed's jobs and events, as the job protocol does on that feed."""

    feed: Feed

    async def new(self) -> Job: ...  # queued, then started

    async def progress(self, job: Job, fraction: float) -> str: ...

    async def end(self, job: Job) -> Job: ...  # failed, then replayed (queued)

    async def trim(self, job_id: str, maxlen: int) -> None: ...

    async def trim_feed(self, maxlen: int) -> None: ...

    async def save(self) -> Callable[[], Awaitable[None]]: ...  # puts back what it saved


class MemoryWriter:
    def __init__(self) -> None:
        self.memory = MemoryFeed()
        self.feed: Feed = self.memory

    async def new(self) -> Job:
        job = Job.new("uploads/x/source", Options())
        self.memory.record(job, EventName.QUEUED)
        job = replace(job, status=Status.RUNNING, stage=Stage.TRANSCRIBE, attempts=1)
        self.memory.record(job, EventName.STARTED)
        return job

    async def progress(self, job: Job, fraction: float) -> str:
        return self.memory.record(replace(job, progress=fraction), EventName.PROGRESS)

    async def end(self, job: Job) -> Job:
        self.memory.record(replace(job, status=Status.FAILED), EventName.FAILED)
        job = replace(job, status=Status.QUEUED, stage=None, attempts=0)
        self.memory.record(job, EventName.QUEUED, replay=True)
        stored, _ = await self.memory.snapshot(job.id)
        assert stored is not None
        return stored

    async def trim(self, job_id: str, maxlen: int) -> None:
        self.memory.trim(job_id, maxlen)

    async def trim_feed(self, maxlen: int) -> None:
        self.memory.trim_feed(maxlen)

    async def save(self) -> Callable[[], Awaitable[None]]:
        saved = self.memory.copy()

        async def restore() -> None:
            self.memory.restore(saved)

        return restore


class RedisWriter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.keys = redis, Keys(prefix)
        self.store = JobStore(redis, self.keys, ttl_s=3600)
        self.feed: Feed = RedisFeed(redis, self.keys, self.store)
        self.jobs: list[str] = []

    async def new(self) -> Job:
        job = Job.new("uploads/x/source", Options())
        await self.store.create(job)
        claim = Claim.of(job, Stage.TRANSCRIBE, owner=OWNER, lease_ms=600_000, max_attempts=3)
        assert (await self.store.apply(job.id, claim)).ok
        self.jobs.append(job.id)
        stored = await self.store.get(job.id)
        assert stored is not None
        return stored

    async def progress(self, job: Job, fraction: float) -> str:
        op = Progress.of(job, Stage.TRANSCRIBE, fraction, owner=OWNER)
        assert (await self.store.apply(job.id, op)).ok
        return (await self.store.events(job.id))[-1].id

    async def end(self, job: Job) -> Job:
        assert (await self.store.apply(job.id, Fail(error=ErrorInfo("x", "y"), owner=OWNER))).ok
        stored = await self.store.get(job.id)
        assert stored is not None and (await self.store.apply(job.id, Replay.of(stored))).ok
        stored = await self.store.get(job.id)
        assert stored is not None
        return stored

    async def trim(self, job_id: str, maxlen: int) -> None:
        await self.redis.xtrim(self.keys.job_events(job_id), maxlen=maxlen, approximate=False)

    async def trim_feed(self, maxlen: int) -> None:
        await self.redis.xtrim(self.keys.events, maxlen=maxlen, approximate=False)

    async def save(self) -> Callable[[], Awaitable[None]]:
        """A copy of the jobs and the feed as Redis holds them now; the function returned puts
        it back in their place (the streams made anew), as Redis restarted from an older copy."""
        keys, redis = self.keys, self.redis
        jobs = {}
        for job_id in self.jobs:
            jobs[job_id] = (await redis.hgetall(keys.job(job_id)),
                            await redis.xrange(keys.job_events(job_id)))  # fmt: skip
        feed = await redis.xrange(keys.events)

        async def restore() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.events, *(keys.job(j) for j in self.jobs),
                            *(keys.job_events(j) for j in self.jobs))  # fmt: skip
                for job_id, (record, history) in jobs.items():
                    pipe.hset(keys.job(job_id), mapping=record)
                    for entry_id, fields in history:
                        pipe.xadd(keys.job_events(job_id), fields, id=entry_id)
                for entry_id, fields in feed:
                    pipe.xadd(keys.events, fields, id=entry_id)
                await pipe.execute()

        return restore


@pytest.fixture
async def redis_writer(redis: Redis, prefix: str) -> AsyncIterator[RedisWriter]:
    writer = RedisWriter(redis, prefix)
    yield writer
    await writer.feed.aclose()


@pytest.fixture(params=["memory", "redis"])
def writer(request: pytest.FixtureRequest) -> Writer:
    if request.param == "memory":
        return MemoryWriter()
    redis_writer: RedisWriter = request.getfixturevalue("redis_writer")
    return redis_writer


async def test_a_history_reads_in_order_after_an_id(writer: Writer) -> None:
    """A job's events come oldest first, after the id asked for, a page at a time; ids only
    grow; each job's newest id is read for many jobs at once ("0-0" for none)."""
    job, other = await writer.new(), await writer.new()
    for fraction in (0.1, 0.2, 0.3):
        await writer.progress(job, fraction)
    feed = writer.feed
    ids = [entry_id for entry_id, _ in await feed.history(job.id, "0-0", 100)]
    assert len(ids) == 5 and ids == sorted(ids, key=stream_id) and len(set(ids)) == 5
    assert [e for e, _ in await feed.history(job.id, ids[1], 2)] == ids[2:4]
    assert await feed.history(job.id, ids[-1], 100) == []
    assert await feed.history("01nosuchjob", "0-0", 100) == []
    other_last = (await feed.history(other.id, "0-0", 100))[-1][0]
    assert await feed.newest([job.id, "01nosuchjob", other.id]) == [ids[-1], "0-0", other_last]


async def test_history_entries_are_events_as_clients_see_them(writer: Writer) -> None:
    """An entry of a history reads back as an `Event`, and its public text is that event's."""
    job = await writer.new()
    await writer.progress(job, 0.5)
    for entry_id, fields in await writer.feed.history(job.id, "0-0", 100):
        event = Event.from_stream(job.id, entry_id, fields)
        assert json.loads(public_text(job.id, entry_id, fields)) == event.to_public()
    assert event.event is EventName.PROGRESS and event.status is Status.RUNNING


async def test_a_snapshot_is_the_job_with_its_newest_event(writer: Writer) -> None:
    """The job as it is and its newest event id; an unknown job is (None, "0-0")."""
    job = await writer.new()
    last = await writer.progress(job, 0.4)
    stored, last_id = await writer.feed.snapshot(job.id)
    assert stored is not None and (stored.id, stored.status) == (job.id, Status.RUNNING)
    assert last_id == last == stored.last_event
    assert await writer.feed.snapshot("01nosuchjob") == (None, "0-0")


async def test_what_is_kept_after_an_id(writer: Writer) -> None:
    """Whole until trimmed; then the trimmed ids and "0-0" are partial, and the kept ones
    whole; a job without history is gone, and an id newer than any kept is partial."""
    job = await writer.new()
    ids = [await writer.progress(job, f / 10) for f in range(1, 5)]
    feed = writer.feed
    assert await feed.kept(job.id, "0-0") is Kept.WHOLE
    assert await feed.kept(job.id, ids[0]) is Kept.WHOLE
    await writer.trim(job.id, 2)
    assert await feed.kept(job.id, "0-0") is Kept.PARTIAL
    assert await feed.kept(job.id, ids[0]) is Kept.PARTIAL
    assert await feed.kept(job.id, ids[-2]) is Kept.WHOLE
    assert await feed.kept(job.id, "99999999999999-0") is Kept.PARTIAL
    assert await feed.kept("01nosuchjob", "0-0") is Kept.GONE


async def test_a_resume_is_whole_or_a_reset(writer: Writer) -> None:
    """`resume.start`: from a kept id, the events after it; from a trimmed one, or from a run
    replayed since, a reset; "0-0" of a whole history is no reset, even after a replay."""
    job = await writer.new()
    ids = [await writer.progress(job, f / 10) for f in range(1, 5)]
    feed = writer.feed
    stored, last = await feed.snapshot(job.id)
    assert stored is not None
    begin = await resume.start(feed, stored, last, ids[1])
    assert (begin.reset, begin.after, begin.last_id) == (False, ids[1], ids[-1])
    assert (await resume.start(feed, stored, last, None)).after == ids[-1]
    replayed = await writer.end(stored)
    stored, last = await feed.snapshot(job.id)
    assert stored is not None and stored.run_from == replayed.run_from
    assert (await resume.start(feed, stored, last, ids[-1])).reset  # an earlier run's
    assert not (await resume.start(feed, stored, last, "0-0")).reset
    await writer.trim(job.id, 2)
    assert (await resume.start(feed, stored, last, ids[2])).reset
    assert (await resume.start(feed, stored, last, "0-0")).reset


async def test_tail_gives_each_entry_after_the_cursor_once(writer: Writer) -> None:
    """From the head, the entries written since, in order, each naming its job and event;
    then nothing, after a wait, with no gap."""
    feed = writer.feed
    cursor = await feed.head()
    job, other = await writer.new(), await writer.new()
    written = [await writer.progress(job, 0.5), await writer.progress(other, 0.5)]
    batch = await feed.tail(cursor, TAIL_MS)
    assert batch.gap is None
    got = [(fields["job_id"], fields["id"]) for _, fields in batch.entries]
    assert got[-2:] == [(job.id, written[0]), (other.id, written[1])] and len(got) == 6
    assert batch.cursor.id == batch.entries[-1][0]
    again = await feed.tail(batch.cursor, TAIL_MS)
    assert (again.entries, again.gap, again.cursor.id) == ([], None, batch.cursor.id)


async def test_trimming_the_feed_is_a_gap_only_past_the_cursor(writer: Writer) -> None:
    """Trimmed up to the reader's cursor: no gap. Trimmed past it, or emptied, before it read
    what came after: the rest, and a `trimmed` gap (the missing events are in the histories)."""
    feed = writer.feed
    job = await writer.new()
    cursor = (await feed.tail(await feed.head(), TAIL_MS)).cursor
    first = await writer.progress(job, 0.1)
    await writer.trim_feed(2)  # the cursor's entry and the new one
    batch = await feed.tail(cursor, TAIL_MS)
    assert batch.gap is None and [f["id"] for _, f in batch.entries] == [first]
    for fraction in (0.2, 0.3, 0.4):
        await writer.progress(job, fraction)
    await writer.trim_feed(1)
    batch = await feed.tail(batch.cursor, TAIL_MS)
    assert batch.gap is Gap.TRIMMED and len(batch.entries) == 1
    assert (await feed.tail(batch.cursor, TAIL_MS)).gap is None
    # Emptied: a gap when entries came since the last look, none when idle.
    for fraction in (0.5, 0.6):
        await writer.progress(job, fraction)
    await writer.trim_feed(0)
    batch = await feed.tail(batch.cursor, TAIL_MS)
    assert (batch.gap, batch.entries) == (Gap.TRIMMED, [])
    assert (await feed.tail(batch.cursor, TAIL_MS)).gap is None


async def test_lost_writes_are_told_once(writer: Writer) -> None:
    """The feed goes back to an older copy: the next `tail` says so, with no entries, and goes
    on from where the feed is; what is written next comes as usual."""
    feed = writer.feed
    job = await writer.new()
    restore = await writer.save()
    cursor = (await feed.tail(await feed.head(), TAIL_MS)).cursor
    await writer.progress(job, 0.5)
    cursor = (await feed.tail(cursor, TAIL_MS)).cursor
    await restore()
    batch = await feed.tail(cursor, TAIL_MS)
    assert (batch.gap, batch.entries) == (Gap.WENT_BACK, [])
    assert stream_id(batch.cursor.id) < stream_id(cursor.id)
    later = await writer.progress(job, 0.6)
    batch = await feed.tail(batch.cursor, TAIL_MS)
    assert batch.gap is None and [f["id"] for _, f in batch.entries] == [later]


async def test_an_outage_is_feed_unavailable(writer: Writer) -> None:
    """A feed that cannot be reached raises `FeedUnavailable`, whatever it runs on."""
    if isinstance(writer, MemoryWriter):
        writer.memory.down = True
        feed: Feed = writer.memory
    else:
        gone = Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
        feed = RedisFeed(gone, writer.keys, JobStore(gone, writer.keys, ttl_s=60))
    calls: list[Callable[[], Awaitable[Any]]] = [
        feed.head, lambda: feed.tail(Cursor(), TAIL_MS), lambda: feed.history("j", "0-0", 1),
        lambda: feed.newest(["j"]), lambda: feed.kept("j", "0-0"), lambda: feed.snapshot("j"),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(FeedUnavailable):
            await call()
    await feed.aclose()
    if isinstance(feed, RedisFeed):
        await feed.redis.aclose()
