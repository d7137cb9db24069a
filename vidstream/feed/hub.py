"""Fan-out of job events to subscribers: one reader per process, one serialisation per event.

Every event a job records is also written, whole, on the shared events feed (`feed.base.Feed`,
written by `job_transition.lua`:
Redis Streams in the roles, memory in the hub's tests). The hub tails the feed (every hub needs
every entry), turns each event into its JSON text once, and hands that text to every subscriber
of the job in this process: a job with a thousand watchers costs one read and one `json.dumps`
per event.

A new subscriber first catches up from the job's own history (after the id it asked for); live
events that arrive meanwhile are held and sent after, so it sees every event once and in order.
A periodic sweep compares each watched job's last event with what its subscribers were sent (one
read for all jobs) and catches up any gap, for a feed entry missed in an outage.

When the feed loses writes (`feed.lost`), what a subscriber was sent may be missing from the
job's history, and what comes next may show the job going back: a subscriber whose last event is
no longer in the history gets `reset` (a fresh snapshot, as on a resume that cannot be whole)
and the events after it. The reader checks for that after every read of the feed, and the sweep
for each job whose last event differs from what its subscribers were sent.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vidstream.core import logs
from vidstream.core.backoff import Backoff, pause
from vidstream.core.streams import BLOCK_MS, stream_id
from vidstream.core.tasks import cancel_and_wait
from vidstream.feed import resume
from vidstream.feed.base import Cursor, Feed, FeedUnavailable, Gap, Kept
from vidstream.job.model import Job
from vidstream.job.protocol.events import public_text

SWEEP_INTERVAL_S = 10.0
# Jobs checked per read of the sweep: a notifier watching 5,000 jobs parsed all their replies in
# one go and stalled live events for 230-470 ms (bench/notifier.py); slices this size keep each
# step to a few ms, and live events are sent between them.
SWEEP_SLICE = 250
PAGE = 200  # events of a job's history read at a time while catching up
_TERMINAL = frozenset({"completed", "failed", "cancelled"})
Id = tuple[int, int]
Present = Callable[[Job], Awaitable[dict[str, Any]]]  # a job as clients see it


class Sink(Protocol):
    def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
        """Pass a message on to the client without waiting (a slow client is dropped): an
        event (with its id), or another message (`name`: its type, for SSE; a reset's id is
        the snapshot's last event id)."""


@dataclass(eq=False)
class Subscription:
    sink: Sink
    job_id: str
    after: Id  # the last event id it was sent
    catching_up: bool = True
    held: list[tuple[Id, str, str, bool]] = field(default_factory=list)  # live, while catching up


class Hub:
    """Job events from `feed` to subscribers; `present` shows a job in a `reset`."""

    def __init__(self, feed: Feed, present: Present) -> None:
        self.feed = feed
        self.present = present
        self._subs: dict[str, dict[Sink, Subscription]] = defaultdict(dict)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.log = logs.get(role="notifier")

    async def start(self) -> None:
        if self._tasks:
            return
        self._stop.clear()
        cursor = await self.feed.head()
        self._tasks = [
            asyncio.create_task(self._read(cursor), name="notifier-feed"),
            asyncio.create_task(self._sweep(), name="notifier-sweep"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        # Let the reader return from its blocking read rather than cancel it inside redis-py
        # (see tasks.Service).
        self._stop.set()
        await self.feed.wake()
        if tasks:
            await asyncio.wait(tasks, timeout=BLOCK_MS / 1000 + 2)
        await cancel_and_wait(tasks)
        await self.feed.aclose()

    def subscribed(self, sink: Sink, job_id: str) -> bool:
        return sink in self._subs.get(job_id, {})

    def count(self, sink: Sink) -> int:
        """How many jobs `sink` watches; finished jobs drop out on their last event."""
        return sum(sink in subs for subs in self._subs.values())

    async def subscribe(self, sink: Sink, job_id: str, after: str) -> None:
        """Send `sink` every event of `job_id` after the id `after`, then each new one."""
        sub = Subscription(sink, job_id, stream_id(after))
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
        """Whether the job's history still holds the last event `sub` was sent, and all after."""
        if sub.after == (0, 0):
            return True
        return await self.feed.kept(sub.job_id, "{}-{}".format(*sub.after)) is Kept.WHOLE

    async def _reset(self, sub: Subscription) -> None:
        """Send `sub` a fresh snapshot as `reset`, and go on from its last event id."""
        job, last_id = await self.feed.snapshot(sub.job_id)
        if self._subs.get(sub.job_id, {}).get(sub.sink) is not sub:
            return  # unsubscribed meanwhile
        if job is None:  # lost with the rest: nothing more will come
            sub.sink.send(json.dumps({"type": "error", "code": "not_found",
                                      "message": "The job no longer exists.",
                                      "job_id": sub.job_id}))  # fmt: skip
            self.unsubscribe(sub.sink, sub.job_id)
            return
        shown = resume.newest(job, last_id)  # the job's, once its history is gone
        sub.sink.send(resume.message("reset", await self.present(job), shown), shown, "reset")
        # Live events held until now may be ones the feed lost; the catch-up that follows sends
        # the history after the snapshot instead.
        sub.after, sub.held = stream_id(last_id), []
        if job.status.terminal:  # the snapshot shows its end: nothing follows
            self.unsubscribe(sub.sink, sub.job_id)

    async def _catch_up(self, sub: Subscription) -> None:
        """Send `sub` the job's history after its cursor, a page at a time."""
        while self._subs.get(sub.job_id, {}).get(sub.sink) is sub:
            page = await self.feed.history(sub.job_id, "{}-{}".format(*sub.after), PAGE)
            for i, (event_id, fields) in enumerate(page):
                # The end of a run that was retried since is followed by the next run: only
                # the newest event can end the subscription.
                newest = i == len(page) - 1 and len(page) < PAGE
                terminal = newest and fields.get("status") in _TERMINAL
                text = public_text(sub.job_id, event_id, fields)
                if not self._send(sub, stream_id(event_id), event_id, text, terminal):
                    return
            if len(page) < PAGE:
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
        event_id, terminal = stream_id(raw_id), fields.get("status") in _TERMINAL
        text = public_text(job_id, raw_id, fields)
        for sub in list(subs.values()):
            if sub.catching_up:
                sub.held.append((event_id, raw_id, text, terminal))
            else:
                self._send(sub, event_id, raw_id, text, terminal)

    async def _read(self, cursor: Cursor) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                batch = await self.feed.tail(cursor, BLOCK_MS)
                backoff.reset()
            except FeedUnavailable as exc:
                self.log.warning("redis_unavailable", error=str(exc))
                await backoff.sleep(self._stop)
                continue
            if batch.gap is Gap.WENT_BACK:
                self.log.warning("events_feed_went_back", cursor=cursor.id, now=batch.cursor.id,
                                 added=batch.cursor.added, was_added=cursor.added)  # fmt: skip
            elif batch.gap is Gap.TRIMMED:  # often nothing unread went (`lost.trimmed_past`)
                self.log.info("events_feed_trimmed_past", cursor=cursor.id)
            cursor = batch.cursor
            if batch.gap is not None:
                # What the feed lacks is in the histories: catch every subscriber up from there
                # first, then pass on what the read brought (what they had is skipped).
                await self._recover()
            for entry_id, fields in batch.entries:
                job_id, event_id = fields.get("job_id", ""), fields.get("id")
                if event_id and job_id in self._subs:
                    try:
                        self.fan_out(job_id, event_id, fields)
                    except (KeyError, ValueError):  # an entry of another shape: skip it
                        self.log.warning("feed_entry_skipped", entry_id=entry_id)

    async def _recover(self) -> None:
        """Resync every subscription after a gap in the feed (the sweep retries on failure)."""
        try:
            await self._close_gaps(list(self._subs))
        except FeedUnavailable as exc:
            self.log.warning("redis_unavailable", error=str(exc))

    async def _sweep(self) -> None:
        while not await pause(SWEEP_INTERVAL_S, self._stop):  # a periodic safety net
            try:
                await self._close_gaps(list(self._subs))
            except FeedUnavailable as exc:
                self.log.warning("redis_unavailable", error=str(exc))
            except Exception:
                self.log.exception("sweep_failed")

    async def _close_gaps(self, job_ids: Iterable[str]) -> None:
        """Catch up the subscribers of any job whose last event they were not sent."""
        job_ids = list(job_ids)
        for start in range(0, len(job_ids), SWEEP_SLICE):
            await self._close_slice(job_ids[start : start + SWEEP_SLICE])

    async def _close_slice(self, job_ids: list[str]) -> None:
        lasts = await self.feed.newest(job_ids)
        for job_id, last in zip(job_ids, lasts, strict=True):
            newest = stream_id(last)
            for sub in list(self._subs.get(job_id, {}).values()):
                # Behind: a gap to fill. Ahead, or past a history that is gone: the history
                # went back (`_resync` resets it).
                if not sub.catching_up and sub.after != newest:
                    await self._resync(sub, verify=True)
