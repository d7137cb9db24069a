"""The events feed in one process's memory, for the hub's fast tests (no role runs on it).

It keeps the rules of the Redis feed (`feed.base`): ids `<ms>-<seq>` from the clock, strictly
increasing per stream; histories and the feed trimmed from their oldest end; `copy()` and
`restore()` to lose the writes since a point, as a Redis restarted from an older snapshot
does. Writers call `record` (what the protocol's Lua does in Redis: the job, its history and
the feed in one step). Not wired into any role.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vidstream.core.streams import stream_id
from vidstream.feed import lost
from vidstream.feed.base import FEED_BATCH, Batch, Cursor, Entry, FeedUnavailable, Kept
from vidstream.job.model import Job
from vidstream.job.protocol.schema import EventName


@dataclass
class Stream:
    """One stream: its entries oldest first, and what XINFO STREAM would say of it."""

    ids: list[tuple[int, int]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    last: tuple[int, int] = (0, 0)  # the newest id it ever generated
    added: int = 0  # entries ever added

    def add(self, fields: dict[str, str], maxlen: int | None) -> str:
        ms = int(time.time() * 1000)
        # The clock may stand still or step back: ids still increase (Redis does the same).
        new = (ms, 0) if ms > self.last[0] else (self.last[0], self.last[1] + 1)
        entry_id = f"{new[0]}-{new[1]}"
        self.ids.append(new)
        self.entries.append((entry_id, fields))
        self.last, self.added = new, self.added + 1
        if maxlen is not None:
            self.trim(maxlen)
        return entry_id

    def trim(self, maxlen: int) -> None:
        """Keep the newest `maxlen` entries."""
        cut = max(len(self.entries) - maxlen, 0)
        del self.ids[:cut], self.entries[:cut]

    def after(self, after: str, count: int) -> list[Entry]:
        start = bisect.bisect_right(self.ids, stream_id(after))
        return self.entries[start : start + count]

    def has(self, entry_id: str) -> bool:
        wanted = stream_id(entry_id)
        at = bisect.bisect_left(self.ids, wanted)
        return at < len(self.ids) and self.ids[at] == wanted


@dataclass
class State:
    """Everything the feed holds: what `copy` saves and `restore` puts back."""

    feed: Stream = field(default_factory=Stream)
    histories: dict[str, Stream] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)


class MemoryFeed:
    """`Feed` in memory. `history_max` and `feed_max` bound the histories and the feed (None:
    unbounded), as EVENT_HISTORY_MAX and the feed's cap do in Redis. `down` makes every call
    raise `FeedUnavailable`, as an outage does."""

    def __init__(self, *, history_max: int | None = None, feed_max: int | None = None) -> None:
        self.history_max, self.feed_max = history_max, feed_max
        self.state = State()
        self.down = False
        self._changed = asyncio.Event()  # set (and replaced) on every change a reader waits for

    # Writing, as the protocol's Lua does in Redis.

    def record(
        self, job: Job, event: EventName, data: dict[str, Any] | None = None, *,
        replay: bool = False,
    ) -> str:  # fmt: skip
        """Record `event` of `job` (as it is now): the job, its history and the feed in one
        step; with `replay`, the job's latest run begins at this event. Returns its id."""
        history = self.state.histories.setdefault(job.id, Stream())
        fields = {
            "event": event.value, "status": job.status.value,
            "stage": job.stage.value if job.stage else "", "progress": repr(job.progress),
            "at": repr(time.time()), "attempts": str(job.attempts),
            "data": json.dumps(data) if data else "", "kind": job.kind.value,
        }  # fmt: skip
        event_id = history.add(fields, self.history_max)
        run_from = event_id if replay else job.run_from
        self.state.jobs[job.id] = replace(job, last_event=event_id, run_from=run_from)
        self.state.feed.add({"job_id": job.id, "id": event_id, **fields}, self.feed_max)
        self._notify()
        return event_id

    def trim(self, job_id: str, maxlen: int) -> None:
        """Trim the job's history to its newest `maxlen` events."""
        self.state.histories[job_id].trim(maxlen)

    def trim_feed(self, maxlen: int) -> None:
        """Trim the feed to its newest `maxlen` entries."""
        self.state.feed.trim(maxlen)

    def delete(self, job_id: str) -> None:
        """The job and its history are gone (expired, or lost)."""
        self.state.jobs.pop(job_id, None)
        self.state.histories.pop(job_id, None)

    def copy(self) -> State:
        return copy.deepcopy(self.state)

    def restore(self, state: State) -> None:
        """Put back what `copy` saved: the writes since are lost. Readers waiting on the feed
        look again now (in Redis they notice at the end of their block)."""
        self.state = copy.deepcopy(state)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            raise FeedUnavailable("the memory feed is down")

    # Reading: the `Feed` protocol.

    async def head(self) -> Cursor:
        self._check()
        feed = self.state.feed
        return Cursor(feed.entries[-1][0] if feed.entries else "0-0")

    async def tail(self, cursor: Cursor, block_ms: int) -> Batch:
        self._check()
        if not self.state.feed.after(cursor.id, 1):
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(block_ms / 1000):
                    await changed.wait()
            self._check()
        feed = self.state.feed
        entries = feed.after(cursor.id, FEED_BATCH)
        state = lost.FeedState(
            exists=feed.added > 0, last_id="{}-{}".format(*feed.last), added=feed.added,
            first=feed.ids[0] if feed.ids else None, has_cursor=feed.has(cursor.id),
        )  # fmt: skip
        return lost.batch(entries, cursor, state)

    async def wake(self) -> None:
        self._notify()

    async def history(self, job_id: str, after: str, count: int) -> list[Entry]:
        self._check()
        history = self.state.histories.get(job_id)
        return history.after(after, count) if history else []

    async def newest(self, job_ids: Sequence[str]) -> list[str]:
        self._check()
        out = []
        for job_id in job_ids:
            history = self.state.histories.get(job_id)
            out.append(history.entries[-1][0] if history and history.entries else "0-0")
        return out

    async def kept(self, job_id: str, after: str) -> Kept:
        self._check()
        history = self.state.histories.get(job_id)
        if history is None:
            return Kept.GONE
        if stream_id(after) == (0, 0):
            return Kept.WHOLE if history.added <= len(history.entries) else Kept.PARTIAL
        return Kept.WHOLE if history.has(after) else Kept.PARTIAL

    async def snapshot(self, job_id: str) -> tuple[Job | None, str]:
        self._check()
        job, history = self.state.jobs.get(job_id), self.state.histories.get(job_id)
        if job is None:
            return None, "0-0"
        return job, (history.entries[-1][0] if history and history.entries else "0-0")

    async def aclose(self) -> None:
        return None
