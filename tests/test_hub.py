"""The hub on the in-memory feed, no Redis: catching up, resuming, ending, many subscribers, slow
readers dropped, and what subscribers see when the feed goes back, is trimmed or is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from vidstream.core.backoff import Backoff
from vidstream.feed import hub as hub_module
from vidstream.feed.base import Batch, Cursor, Entry, FeedUnavailable
from vidstream.feed.hub import Hub
from vidstream.feed.memory import MemoryFeed
from vidstream.http import sse
from vidstream.job.model import Job, Options, Stage, Status
from vidstream.job.protocol.schema import EventName

pytestmark = pytest.mark.timeout(20)


async def present(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status.value, "progress": job.progress}


class Client:
    """A sink that keeps what it is sent, and lets a test wait for it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.got: list[dict[str, Any]] = []
        self.names: list[str | None] = []
        self.changed = asyncio.Event()

    def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
        self.texts.append(text)
        self.got.append(json.loads(text))
        self.names.append(name)
        self.changed.set()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.got

    def events(self) -> list[str]:
        return [m["id"] for m in self.got if m["type"] == "event"]


class Jobs:
    """Jobs that record their events on the memory feed, as the protocol would."""

    def __init__(self, feed: MemoryFeed) -> None:
        self.feed = feed
        self.ids: dict[str, list[str]] = {}  # each job's event ids, oldest first

    def new(self) -> Job:
        job = Job.new("uploads/x/source", Options())
        self.ids[job.id] = [self.feed.record(job, EventName.QUEUED)]
        return self.record(replace(job, status=Status.RUNNING, stage=Stage.TRANSCRIBE,
                                   attempts=1), EventName.STARTED)  # fmt: skip

    def record(self, job: Job, event: EventName, data: dict[str, Any] | None = None) -> Job:
        self.ids[job.id].append(self.feed.record(job, event, data))
        return job

    def progress(self, job: Job, fraction: float) -> Job:
        return self.record(replace(job, progress=fraction), EventName.PROGRESS,
                           {"stage_progress": fraction})  # fmt: skip

    def cancel(self, job: Job) -> Job:
        return self.record(replace(job, status=Status.CANCELLED), EventName.CANCELLED)


@pytest.fixture
def feed() -> MemoryFeed:
    return MemoryFeed()


@pytest.fixture
def jobs(feed: MemoryFeed) -> Jobs:
    return Jobs(feed)


@pytest.fixture
async def make_hub(feed: MemoryFeed) -> AsyncIterator[Callable[[], Awaitable[Hub]]]:
    """Start hubs on the feed; each is closed at the end."""
    hubs: list[Hub] = []

    async def make() -> Hub:
        hubs.append(Hub(feed, present))
        await hubs[-1].start()
        return hubs[-1]

    yield make
    for hub in hubs:
        await hub.close()


@pytest.fixture
async def hub(make_hub: Callable[[], Awaitable[Hub]]) -> Hub:
    return await make_hub()


class Racing(MemoryFeed):
    """A memory feed that runs `during_page` (once) while the hub reads a history page, after
    the page was read, and tells when the reader asks for what follows an entry."""

    def __init__(self) -> None:
        super().__init__()
        self.during_page: Callable[[], Awaitable[None]] | None = None
        self.tailed = asyncio.Event()
        self.cursor = "0-0"

    async def history(self, job_id: str, after: str, count: int) -> list[Entry]:
        page = await super().history(job_id, after, count)
        hook, self.during_page = self.during_page, None
        if hook is not None:
            await hook()
        return page

    async def tail(self, cursor: Cursor, block_ms: int) -> Batch:
        self.cursor = cursor.id
        self.tailed.set()
        return await super().tail(cursor, block_ms)

    async def read_to_the_end(self) -> None:
        """Until the hub's reader has passed on every entry of the feed."""
        async with asyncio.timeout(5):
            while self.cursor != self.state.feed.entries[-1][0]:
                self.tailed.clear()
                await self.tailed.wait()


async def test_a_subscriber_gets_the_history_then_live_events_each_once_in_order(
    make_hub: Callable[[], Awaitable[Hub]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribing from "0-0" while events keep coming: the history, then what came during the
    catch-up, then live events; none twice, none missing."""
    feed = Racing()
    monkeypatch.setattr(hub_module, "SWEEP_INTERVAL_S", 3600.0)  # not the sweep's doing
    jobs = Jobs(feed)
    hub = Hub(feed, present)
    await hub.start()
    try:
        job = jobs.progress(jobs.new(), 0.1)
        await feed.read_to_the_end()  # these come from the history only

        async def live_event() -> None:
            # After the page was read: only the feed brings it, and the reader hands it to
            # the hub while the subscriber is still catching up.
            jobs.progress(job, 0.3)
            await feed.read_to_the_end()

        feed.during_page = live_event
        client = Client()
        await hub.subscribe(client, job.id, "0-0")
        jobs.progress(job, 0.4)
        await client.wait_for(5)  # queued, started, 0.1, 0.3 (held meanwhile), 0.4
        assert client.events() == jobs.ids[job.id]
    finally:
        await hub.close()


async def test_a_resume_gets_the_events_after_its_id_only(hub: Hub, jobs: Jobs) -> None:
    """From an event id, the events after it, then live ones."""
    job = jobs.progress(jobs.new(), 0.1)
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][1])
    jobs.progress(job, 0.2)
    await client.wait_for(2)
    assert client.events() == jobs.ids[job.id][2:]


async def test_the_end_of_a_job_ends_its_subscriptions(hub: Hub, jobs: Jobs) -> None:
    """The terminal event is the last one a subscriber gets; its slot is free after."""
    job, other = jobs.new(), jobs.new()
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    await hub.subscribe(client, other.id, jobs.ids[other.id][-1])
    assert hub.count(client) == 2
    jobs.cancel(job)
    await client.wait_for(1)
    assert not hub.subscribed(client, job.id) and hub.count(client) == 1
    jobs.progress(other, 0.5)
    got = await client.wait_for(2)
    assert [(m["job_id"], m["event"]) for m in got] == [
        (job.id, "cancelled"), (other.id, "progress")
    ]  # fmt: skip


async def test_a_thousand_subscribers_share_one_serialisation(hub: Hub, jobs: Jobs) -> None:
    """1,000 clients on one job and 100 on a job each: every client gets its job's events,
    and the hot job's events are serialised once for all of its clients."""
    hot = jobs.new()
    crowd = [Client() for _ in range(1000)]
    for client in crowd:
        await hub.subscribe(client, hot.id, jobs.ids[hot.id][-1])
    others = [jobs.new() for _ in range(100)]
    alone = [Client() for _ in others]
    for job, client in zip(others, alone, strict=True):
        await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    for i in range(5):
        hot = jobs.progress(hot, (i + 1) / 10)
    for job in others:
        jobs.progress(job, 0.5)
    await alone[-1].wait_for(1)
    await crowd[-1].wait_for(5)
    for client in crowd:
        assert client.events() == jobs.ids[hot.id][-5:]
        assert all(a is b for a, b in zip(client.texts, crowd[0].texts, strict=True))
    for job, client in zip(others, alone, strict=True):
        assert client.events() == jobs.ids[job.id][-1:]


async def test_a_slow_reader_is_dropped_and_the_others_go_on(
    hub: Hub, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that drops itself mid-event (the notifier closing a slow WebSocket) gets no
    more; an event stream that falls `BACKLOG` behind is ended; a reader on the same job gets
    every event meanwhile."""
    job = jobs.new()
    fast = Client()

    class Slow(Client):
        def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
            super().send(text, event_id, name)
            if len(self.got) == 2:  # too far behind: the server lets it go
                hub.drop(self)

    slow = Slow()
    monkeypatch.setattr(sse, "BACKLOG", 3)
    stream = sse.SseSink()  # nobody reads its frames
    for sink in (slow, stream, fast):
        await hub.subscribe(sink, job.id, jobs.ids[job.id][-1])
    for i in range(10):
        job = jobs.progress(job, (i + 1) / 20)
    await fast.wait_for(10)
    assert fast.events() == jobs.ids[job.id][-10:]
    assert len(slow.got) == 2 and not hub.subscribed(slow, job.id)
    assert stream.overflowed and stream.frames.qsize() == 3


async def test_when_the_feed_goes_back_a_subscriber_is_reset(
    hub: Hub, feed: MemoryFeed, jobs: Jobs
) -> None:
    """The feed loses its latest writes, and nothing is written after: a watching client gets
    `reset` with the job as the feed has it now, then the events that follow; the progress it
    is shown never goes back without a reset."""
    job = jobs.progress(jobs.new(), 0.2)
    saved, kept = feed.copy(), jobs.ids[job.id][-1]
    client = Client()
    await hub.subscribe(client, job.id, kept)
    for fraction in (0.6, 0.8):
        jobs.progress(job, fraction)
    await client.wait_for(2)
    feed.restore(saved)
    got = await client.wait_for(3)
    assert (got[-1]["type"], client.names[-1]) == ("reset", "reset")
    assert got[-1]["last_event_id"] == kept and got[-1]["job"]["progress"] == 0.2
    jobs.progress(job, 0.3)
    got = await client.wait_for(4)
    assert got[-1]["type"] == "event" and got[-1]["stage_progress"] == 0.3
    shown = [m["job"]["progress"] if m["type"] == "reset" else m["progress"] for m in got]
    assert shown == [0.6, 0.8, 0.2, 0.3]


async def test_a_job_lost_with_the_feed_is_told_not_found(
    hub: Hub, feed: MemoryFeed, jobs: Jobs
) -> None:
    """The feed goes back to before the job existed: its subscriber is told it no longer
    exists, and the subscription ends."""
    saved = feed.copy()
    job = jobs.new()
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    jobs.progress(job, 0.5)
    await client.wait_for(1)
    feed.restore(saved)
    got = await client.wait_for(2)
    assert (got[-1]["type"], got[-1]["code"], got[-1]["job_id"]) == ("error", "not_found", job.id)
    assert not hub.subscribed(client, job.id)


async def test_events_trimmed_from_the_feed_before_it_was_read_still_arrive(
    make_hub: Callable[[], Awaitable[Hub]], feed: MemoryFeed, jobs: Jobs
) -> None:
    """The feed is trimmed past events the hub had not read yet (a notifier cut off from Redis
    for longer than the feed keeps): its subscribers still get every event, in order, at once
    (not at the next sweep, in up to 10 s)."""
    feed.feed_max = 2
    job = jobs.new()
    hub = await make_hub()  # it has read the feed up to here
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    for i in range(5):  # all at once: the hub reads the feed after the last
        job = jobs.progress(job, (i + 1) / 10)
    await client.wait_for(5)
    assert client.events() == jobs.ids[job.id][-5:]


async def test_the_sweep_sends_what_the_feed_never_carried(
    make_hub: Callable[[], Awaitable[Hub]], feed: MemoryFeed, jobs: Jobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """An event in the job's history that never reached the feed comes with the next sweep."""
    monkeypatch.setattr(hub_module, "SWEEP_INTERVAL_S", 0.05)
    hub = await make_hub()
    job = jobs.new()
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    jobs.progress(job, 0.5)
    # The feed's copy is lost and nothing says so (no known way on Redis: the sweep is the
    # safety net for what no rule foresaw); the history keeps it.
    feed.state.feed.entries.pop()
    feed.state.feed.ids.pop()
    await client.wait_for(1)
    assert client.events() == jobs.ids[job.id][-1:]


async def test_the_hub_goes_on_after_the_feed_was_down(
    make_hub: Callable[[], Awaitable[Hub]], feed: MemoryFeed, jobs: Jobs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """While the feed cannot be read the hub waits and tries again; events written meanwhile
    arrive once it is back."""
    monkeypatch.setattr(hub_module, "Backoff", lambda: Backoff(0.01, 0.01))
    failed = asyncio.Event()
    tail = feed.tail

    async def watched(cursor: Cursor, block_ms: int) -> Batch:
        try:
            return await tail(cursor, block_ms)
        except FeedUnavailable:
            failed.set()
            raise

    monkeypatch.setattr(feed, "tail", watched)
    hub = await make_hub()
    job = jobs.new()
    client = Client()
    await hub.subscribe(client, job.id, jobs.ids[job.id][-1])
    feed.down = True
    await feed.wake()
    async with asyncio.timeout(5):
        await failed.wait()
    jobs.progress(job, 0.5)
    feed.down = False
    await client.wait_for(1)
    assert client.events() == jobs.ids[job.id][-1:]


async def test_close_is_prompt_and_safe_twice(feed: MemoryFeed) -> None:
    """Closing a hub whose reader waits on an idle feed returns at once, and again."""
    hub = Hub(feed, present)
    await hub.start()
    async with asyncio.timeout(0.5):  # the reader's wait is a whole second
        await hub.close()
        await hub.close()
