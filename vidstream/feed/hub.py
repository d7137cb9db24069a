"""Fan-out of job events to subscribers: one reader per process, one serialisation per event.

Every event a job records is also written, whole, on the shared events feed (`job_transition.lua`).
The hub tails the feed without a consumer group (every notifier needs every entry), turns each
event into its JSON text once, and hands that text to every subscriber of the job in this
process: a job with a thousand watchers costs one read and one `json.dumps` per event.

A new subscriber first catches up from the job's own history (after the id it asked for); live
events that arrive meanwhile are held and sent after, so it sees every event once and in order.
A periodic sweep compares each watched job's last event with what its subscribers were sent (one
pipelined read for all jobs) and catches up any gap, for a feed entry missed in a Redis outage.

When Redis loses writes (`notifier.feed`), what a subscriber was sent may be missing from the
job's history, and what comes next may show the job going back: a subscriber whose last event is
no longer in the history gets `reset` (a fresh snapshot, as on a resume that cannot be whole)
and the events after it. The reader checks for that after every read of the feed, and the sweep
for each job whose last event differs from what its subscribers were sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from vidstream.core import logs
from vidstream.core.backoff import Backoff, pause
from vidstream.core.tasks import cancel_and_wait
from vidstream.feed import lost as feed
from vidstream.feed import resume
from vidstream.job.model import Kind, isoformat
from vidstream.services import Services
from vidstream.state import bus
from vidstream.state.bus import BLOCK_MS

SWEEP_INTERVAL_S = 10.0
# Jobs checked per pipelined read of the sweep: a notifier watching 5,000 jobs parsed all their
# replies in one go and stalled live events for 230-470 ms (bench/notifier.py); slices this
# size keep each step to a few ms, and live events are sent between them.
SWEEP_SLICE = 250
FEED_BATCH = 1000
_TERMINAL = frozenset({"completed", "failed", "cancelled"})
Id = tuple[int, int]


class Sink(Protocol):
    def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
        """Pass a message on to the client without waiting (a slow client is dropped): an
        event (with its id), or another message (`name`: its type, for SSE; a reset's id is
        the snapshot's last event id)."""


def event_text(job_id: str, event_id: str, fields: dict[str, str]) -> str:
    """The event as clients see it (see `protocol.events.Event.to_public`), as JSON text."""
    data = json.loads(fields["data"]) if fields.get("data") else {}
    return json.dumps({
        **data, "type": "event", "id": event_id, "job_id": job_id,
        "kind": fields.get("kind") or Kind.SUBTITLE.value, "event": fields["event"],
        "status": fields["status"], "stage": fields.get("stage") or None,
        "progress": round(float(fields["progress"]), 4),
        "attempts": int(fields.get("attempts") or 0), "at": isoformat(float(fields["at"])),
    })  # fmt: skip


@dataclass(eq=False)
class Subscription:
    sink: Sink
    job_id: str
    after: Id  # the last event id it was sent
    catching_up: bool = True
    held: list[tuple[Id, str, str, bool]] = field(default_factory=list)  # live, while catching up


class Hub:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._subs: dict[str, dict[Sink, Subscription]] = defaultdict(dict)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.waker = bus.Waker(services.redis)
        self.look = feed.Looker(services.redis, services.keys.events)
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
        sub = Subscription(sink, job_id, bus.stream_id(after))
        self._subs[job_id][sink] = sub
        await self._resync(sub)

    def unsubscribe(self, sink: Sink, job_id: str) -> None:
        subs = self._subs.get(job_id)
        if subs is not None:
            subs.pop(sink, None)
            if not subs:
                del self._subs[job_id]

    def drop(self, sink: Sink) -> None:
        for job_id in [j for j, subs in self._subs.items() if sink in subs]:
            self.unsubscribe(sink, job_id)

    async def _resync(self, sub: Subscription, *, verify: bool = False) -> None:
        """Catch `sub` up from the history, holding live events meanwhile, then send those;
        with `verify`, first reset it if the last event it was sent is no longer there."""
        sub.catching_up = True
        try:
            if verify and not await self._kept(sub):
                await self._reset(sub)
            await self._catch_up(sub)
        finally:
            held, sub.held, sub.catching_up = sub.held, [], False
            for event_id, raw_id, text, terminal in held:
                self._send(sub, event_id, raw_id, text, terminal)

    async def _kept(self, sub: Subscription) -> bool:
        """Whether the last event `sub` was sent is still in the job's history."""
        if sub.after == (0, 0):
            return True
        key, after = self.services.keys.job_events(sub.job_id), "{}-{}".format(*sub.after)
        return bool(await self.services.redis.xrange(key, after, after, count=1))

    async def _reset(self, sub: Subscription) -> None:
        """Send `sub` a fresh snapshot as `reset`, and go on from its last event id."""
        job, last_id = await self.services.jobs.snapshot(sub.job_id)
        if self._subs.get(sub.job_id, {}).get(sub.sink) is not sub:
            return  # unsubscribed meanwhile
        if job is None:  # lost with the rest: nothing more will come
            sub.sink.send(json.dumps({"type": "error", "code": "not_found",
                                      "message": "The job no longer exists.",
                                      "job_id": sub.job_id}))  # fmt: skip
            self.unsubscribe(sub.sink, sub.job_id)
            return
        shown = resume.newest(job, last_id)  # the job's, once its history is gone
        sub.sink.send(await resume.message(self.services, "reset", job, shown), shown, "reset")
        # Live events held until now may be ones Redis lost; the catch-up that follows sends
        # the history after the snapshot instead.
        sub.after, sub.held = bus.stream_id(last_id), []
        if job.status.terminal:  # the snapshot shows its end: nothing follows
            self.unsubscribe(sub.sink, sub.job_id)

    async def _catch_up(self, sub: Subscription) -> None:
        """Send `sub` the job's history after its cursor, a page at a time."""
        key = self.services.keys.job_events(sub.job_id)
        while self._subs.get(sub.job_id, {}).get(sub.sink) is sub:
            after = "{}-{}".format(*sub.after)
            page = await bus.history(self.services.redis, key, after, count=200)
            for i, (event_id, fields) in enumerate(page):
                # The end of a run that was retried since is followed by the next run: only
                # the newest event can end the subscription.
                newest = i == len(page) - 1 and len(page) < 200
                terminal = newest and fields.get("status") in _TERMINAL
                text = event_text(sub.job_id, event_id, fields)
                if not self._send(sub, bus.stream_id(event_id), event_id, text, terminal):
                    return
            if len(page) < 200:
                return

    def _send(
        self, sub: Subscription, event_id: Id, raw_id: str, text: str, terminal: bool
    ) -> bool:
        """Send one event to `sub` unless it had it; False once the subscription has ended."""
        if event_id <= sub.after:
            return True
        sub.sink.send(text, raw_id)
        sub.after = event_id
        if terminal:  # nothing can follow a terminal event
            self.unsubscribe(sub.sink, sub.job_id)
            return False
        return True

    def fan_out(self, job_id: str, raw_id: str, fields: dict[str, str]) -> None:
        """One live event: serialised once, sent to every subscriber of its job."""
        subs = self._subs.get(job_id)
        if not subs:
            return
        event_id, terminal = bus.stream_id(raw_id), fields.get("status") in _TERMINAL
        text = event_text(job_id, raw_id, fields)
        for sub in list(subs.values()):
            if sub.catching_up:
                sub.held.append((event_id, raw_id, text, terminal))
            else:
                self._send(sub, event_id, raw_id, text, terminal)

    async def _read(self, cursor: str) -> None:
        events = self.services.keys.events
        backoff = Backoff()
        added = 0  # entries ever added to the feed, as last seen
        while not self._stop.is_set():
            try:
                blocking = await self.waker.connection()
                found = await bus.read(
                    blocking, {events: cursor}, count=FEED_BATCH, block_ms=BLOCK_MS
                )
                # After the read: what it returned may come from a feed that went back since
                # the last look.
                state = await self.look(cursor)
                backoff.reset()
            except RedisError as exc:
                self.waker.lost()
                self.log.warning("redis_unavailable", error=str(exc))
                await backoff.sleep(self._stop)
                continue
            if feed.went_back(state, bus.stream_id(cursor), added):
                # Go on from where the feed is now; what came before is in the histories.
                self.log.warning("events_feed_went_back", cursor=cursor, now=state.last_id,
                                 added=state.added, was_added=added)  # fmt: skip
                cursor, added = state.last_id, state.added
                await self._recover()
                continue
            added = state.added
            for _, entries in found:
                for entry_id, fields in entries:
                    cursor = entry_id
                    job_id, event_id = fields.get("job_id", ""), fields.get("id")
                    if event_id and job_id in self._subs:
                        try:
                            self.fan_out(job_id, event_id, fields)
                        except (KeyError, ValueError):  # an entry of another shape: skip it
                            self.log.warning("feed_entry_skipped", entry_id=entry_id)

    async def _recover(self) -> None:
        """Resync every subscription after the feed went back (the sweep retries on failure)."""
        try:
            await self._close_gaps(list(self._subs))
        except RedisError as exc:
            self.log.warning("redis_unavailable", error=str(exc))

    async def _sweep(self) -> None:
        while not await pause(SWEEP_INTERVAL_S, self._stop):  # a periodic safety net
            try:
                await self._close_gaps(list(self._subs))
            except RedisError as exc:
                self.log.warning("redis_unavailable", error=str(exc))
            except Exception:
                self.log.exception("sweep_failed")

    async def _close_gaps(self, job_ids: Iterable[str]) -> None:
        """Catch up the subscribers of any job whose last event they were not sent."""
        job_ids = list(job_ids)
        for start in range(0, len(job_ids), SWEEP_SLICE):
            await self._close_slice(job_ids[start : start + SWEEP_SLICE])

    async def _close_slice(self, job_ids: list[str]) -> None:
        keys = self.services.keys
        async with self.services.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.xrevrange(keys.job_events(job_id), count=1)
            lasts: list[Any] = await pipe.execute()
        for job_id, last in zip(job_ids, lasts, strict=True):
            newest = bus.stream_id(str(last[0][0])) if last else (0, 0)
            for sub in list(self._subs.get(job_id, {}).values()):
                # Behind: a gap to fill. Ahead, or past a history that is gone: the history
                # went back (`_resync` resets it).
                if not sub.catching_up and sub.after != newest:
                    await self._resync(sub, verify=True)
