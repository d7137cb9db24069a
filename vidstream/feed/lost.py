"""Whether the events feed went back: Redis lost writes the hub had already read.

A Redis restart without persistence, a restore from an older snapshot or a replica promoted
before it caught up all leave the feed (and each job's history) without its newest entries; the
hub, reading after the last id it saw, would miss what comes next when the new ids are lower,
and would pass on events that contradict what its clients were sent when they are higher. Every
`Feed.tail` looks at the feed after its read and, when it went back, says so (`Batch.went_back`):
the hub then resyncs every subscription (`Hub`: a `reset` where the job's own history lost what
a client was sent).

The signs, each enough: the feed is gone, or its last id is below the hub's cursor, or fewer
entries were ever added to it than when last looked at (a stream made anew), or the entry at the
cursor is gone while an older one is still there (trimming only ever removes the oldest).

The feed trimmed past the cursor (its entry gone, newer ones there) is no loss of writes, but
entries after the cursor may have gone unread: the hub catches its subscribers up from the
histories then too, before passing on what the read brought.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidstream.core.streams import stream_id
from vidstream.feed.base import Batch, Cursor, Entry, Gap

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
    if not state.exists or stream_id(state.last_id) < cursor:
        return True
    return not state.has_cursor and state.first is not None and state.first < cursor


def trimmed_past(state: FeedState, cursor: Id, added_before: int) -> bool:
    """Whether entries after `cursor` may have been trimmed before they were read: its own
    entry is gone while newer ones are there (trimming takes the oldest first), or the feed is
    empty though entries came since the last look. Often none went unread, only the cursor's
    own entry (the feed idle for `FEED_MAX_AGE_S`): the hub then checks its subscriptions for
    nothing, one read per 250 jobs."""
    if cursor == (0, 0) or state.has_cursor:  # (0, 0): the feed was empty at the start
        return False
    if state.first is None:
        return state.added > added_before
    return state.first > cursor


def batch(entries: list[Entry], cursor: Cursor, state: FeedState) -> Batch:
    """What a read after `cursor` gives, `state` looked at after it: its entries, or the news
    that the feed went back (and where it is now: what came before is in the histories)."""
    at = stream_id(cursor.id)
    if went_back(state, at, cursor.added):
        return Batch([], Cursor(state.last_id, state.added), Gap.WENT_BACK)
    gap = Gap.TRIMMED if trimmed_past(state, at, cursor.added) else None
    return Batch(entries, Cursor(entries[-1][0] if entries else cursor.id, state.added), gap)
