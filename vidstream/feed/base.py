"""The events feed as the hub sees it: a small protocol, so the hub runs on any feed.

Every event a job records goes two places: the job's own history (its events in order, each
with an id that orders them) and the shared feed that every hub tails. `Feed` is what the hub,
the notifier and the gateway's Server-Sent Events read them through. Two implementations keep
the same rules: `feed.redis.RedisFeed` (Redis Streams, what the roles run) and
`feed.memory.MemoryFeed` (one process's memory, for the hub's fast tests).

The rules both keep, and the contract suite (tests/test_feed.py) checks on both:
- ids are `<ms>-<seq>`, strictly increasing within a history and within the feed;
- a history may lose its oldest events (trimmed) or all of them (expired, deleted), never one
  in the middle;
- the feed may lose its oldest entries before a reader read them (trimmed), or go back (the
  writes after some point lost: Redis restarted without persistence, a replica promoted):
  `tail` says so (`Gap`), once, and goes on from where the feed is.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vidstream.job.model import Job

FEED_BATCH = 1000  # entries one `tail` returns at most

# An entry: its id, and its fields. On the feed: `job_id`, `id` (the event's id in the job's
# history), then the event's own fields as in the history (`event`, `status`, `stage`,
# `progress`, `at`, `attempts`, `data`, `kind`; see `protocol.events.Event.from_stream`).
Entry = tuple[str, dict[str, str]]


class FeedUnavailable(Exception):
    """The feed could not be read now (Redis down or timing out); worth trying again."""


class Kept(enum.Enum):
    """How much of a job's history after an event id is still there."""

    WHOLE = "whole"  # every event after it: a resume from it misses nothing
    PARTIAL = "partial"  # the id is gone (trimmed, lost, newer than any kept) or a gap follows
    GONE = "gone"  # no history at all: it expired, or was lost with the rest


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader of the feed is: after the entry `id`, with `added` entries ever added to
    the feed when it last looked (0 before its first look): together they tell a feed that
    went back from one that was trimmed."""

    id: str = "0-0"
    added: int = 0


class Gap(enum.Enum):
    """Why a `tail` cannot be trusted to carry every event since the last one: what it lacks
    is in the jobs' histories."""

    TRIMMED = "trimmed"  # the entries after the cursor may have been trimmed before this read
    WENT_BACK = "went_back"  # the feed lost entries the reader had read (see `feed.lost`)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one `tail` read: the entries after the cursor, oldest first, where to go on, and a
    `gap` if some events may be missing from them (none are given when the feed went back)."""

    entries: list[Entry]
    cursor: Cursor
    gap: Gap | None = None


class Feed(Protocol):
    """The events feed and the jobs' histories, read by one hub (one `tail` at a time).

    Any method may raise `FeedUnavailable`."""

    async def head(self) -> Cursor:
        """Where a new reader starts: after the feed's newest entry (live events only)."""

    async def tail(self, cursor: Cursor, block_ms: int) -> Batch:
        """The feed's entries after `cursor`, waiting up to `block_ms` for the first (less
        after `wake`)."""

    async def wake(self) -> None:
        """Make a `tail` that is waiting return now (its reader is stopping)."""

    async def history(self, job_id: str, after: str, count: int) -> list[Entry]:
        """Up to `count` events of the job after the id `after` (exclusive), oldest first."""

    async def newest(self, job_ids: Sequence[str]) -> list[str]:
        """Each job's newest event id ("0-0" for none), in one round trip."""

    async def kept(self, job_id: str, after: str) -> Kept:
        """Whether the job's history still holds every event after `after` ("0-0": all)."""

    async def snapshot(self, job_id: str) -> tuple[Job | None, str]:
        """The job and its newest event id ("0-0" for none), read together: no event falls
        between the two."""

    async def aclose(self) -> None:
        """Let go of what the feed holds (a blocking connection); safe to call twice."""
