"""Where a client's subscription starts: a snapshot then live events, the history it missed
after the id it gave, or a reset when that history is no longer whole.

A resume is partial, and answered with `reset` (a fresh snapshot, then live events), when the
client's last id is no longer an event of the job's history: trimmed away (the history keeps its
newest entries), expired `EVENT_RETENTION_S` after the job ended, lost with writes a Redis
failure took (a restart without persistence, a replica promoted), or newer than anything kept;
or when it belongs to an earlier run of a job that was replayed since. Never a partial replay: a
client either gets every event after its id, or is told to start over. The hub applies the same
rule to a client it is already serving (`Hub`, when the events feed goes back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vidstream.core.streams import stream_id
from vidstream.feed.base import Feed, Kept
from vidstream.job.model import Job


@dataclass(frozen=True, slots=True)
class Start:
    job: Job
    last_id: str  # the job's newest event id as the snapshot was read
    reset: bool  # the client's id cannot be resumed from: send `reset`, then live events
    after: str  # send the history after this id, then live events


def newest(job: Job, last_id: str) -> str:
    """The job's newest event id: its history's (`last_id`, read with the job), or once that
    history is gone, the one the job recorded."""
    return last_id if last_id != "0-0" else (job.last_event or "0-0")


def message(kind: str, job: dict[str, Any], last_id: str) -> str:
    """A `snapshot` or `reset` message: the job as clients see it, and its newest event id."""
    return json.dumps({"type": kind, "job": job, "last_event_id": last_id})


async def start(feed: Feed, job: Job, last_id: str, after: str | None) -> Start:
    """Decide how a subscription to `job` (read with `last_id`) that asks for `after` begins."""
    last_id = newest(job, last_id)
    if after is None or after == last_id:
        return Start(job, last_id, False, last_id)
    if await partial(feed, job, after):
        return Start(job, last_id, True, last_id)
    return Start(job, last_id, False, after)


async def partial(feed: Feed, job: Job, after: str) -> bool:
    """Whether the job's history after `after` is not whole (see the module docstring)."""
    wanted = stream_id(after)
    if job.run_from and (0, 0) < wanted < stream_id(job.run_from):
        return True  # an id of an earlier run ("0-0", the whole history, is of none)
    kept = await feed.kept(job.id, after)
    if kept is Kept.GONE:  # no history at all: it expired, or was lost
        return bool(job.last_event) or wanted > (0, 0)
    return kept is Kept.PARTIAL
