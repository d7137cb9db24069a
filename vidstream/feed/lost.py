"""Whether the events feed went back: Redis lost writes the hub had already read.

A Redis restart without persistence, a restore from an older snapshot or a replica promoted
before it caught up all leave the feed (and each job's history) without its newest entries; the
hub, reading after the last id it saw, would miss what comes next when the new ids are lower,
and would pass on events that contradict what its clients were sent when they are higher. After
every read the hub looks at the feed (one script call) and, when it went back, resyncs
every subscription (`Hub`: a `reset` where the job's own history lost what a client was sent).

The signs, each enough: the feed is gone, or its last id is below the hub's cursor, or fewer
entries were ever added to it than when last looked at (a stream made anew), or the entry at the
cursor is gone while an older one is still there (trimming only ever removes the oldest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from vidstream.state import bus, scripts

Id = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FeedState:
    exists: bool
    last_id: str  # the newest id the feed ever had ("0-0" when gone): where to read on from
    added: int  # how many entries were ever added to it (0 before Redis 7, which never says)
    first: Id | None  # its oldest entry's id, None when empty
    has_cursor: bool  # the entry at the hub's cursor is still there


def went_back(state: FeedState, cursor: Id, added_before: int) -> bool:
    """Whether the feed lost entries the hub read up to `cursor`, when it had seen
    `added_before` entries added (0 before the first look)."""
    if state.added < added_before:
        return True
    if cursor == (0, 0):  # nothing read yet: nothing to lose
        return False
    if not state.exists or bus.stream_id(state.last_id) < cursor:
        return True
    return not state.has_cursor and state.first is not None and state.first < cursor


class Looker:
    """Reads the feed's state as `went_back` needs it, in one round trip."""

    def __init__(self, redis: Redis, feed: str) -> None:
        self.feed = feed
        self._script = scripts.register(redis, "feed_look")

    async def __call__(self, cursor: str) -> FeedState:
        raw: list[Any] = await self._script(keys=[self.feed], args=[cursor])
        if not int(raw[0]):
            return FeedState(False, "0-0", 0, None, False)
        first = str(raw[3])
        return FeedState(True, str(raw[1]), int(raw[2]), bus.stream_id(first) if first else None,
                         bool(int(raw[4])))  # fmt: skip
