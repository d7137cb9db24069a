"""Where a client's subscription starts: a snapshot then live events, the history it missed
after the id it gave, or a reset when that history is no longer whole.

A resume is partial, and answered with `reset` (a fresh snapshot, then live events), when the
client's last id is older than what is kept (the history was trimmed to its newest entries, or
expired `EVENT_RETENTION_S` after the job ended), or belongs to an earlier run of a job that was
replayed since. Never a partial replay: a client either gets every event after its id, or is
told to start over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from vidstream import bus
from vidstream.jobs import Job
from vidstream.services import Services


def grants(services: Services, token: str, job: Job) -> bool:
    """Whether `token` may watch `job`: the job's own token, or an API key of its tenant."""
    if services.signer.check_ws_token(job.tenant, job.id, token):
        return True
    if services.api_keys is None:
        return False
    key = services.api_keys.find(token)
    return key is not None and key.tenant == job.tenant


@dataclass(frozen=True, slots=True)
class Start:
    job: Job
    last_id: str  # the job's newest event id as the snapshot was read
    reset: bool  # the client's id cannot be resumed from: send `reset`, then live events
    after: str  # send the history after this id, then live events


async def start(services: Services, job: Job, last_id: str, after: str | None) -> Start:
    """Decide how a subscription to `job` (read with `last_id`) that asks for `after` begins."""
    if after is None or after == last_id:
        return Start(job, last_id, False, last_id)
    if await _partial(services, job, after):
        return Start(job, last_id or job.last_event, True, last_id or job.last_event)
    return Start(job, last_id, False, after)


async def _partial(services: Services, job: Job, after: str) -> bool:
    wanted = bus.stream_id(after)
    if job.run_from and (0, 0) < wanted < bus.stream_id(job.run_from):
        return True  # an id of an earlier run ("0-0", the whole history, is of none)
    try:
        info: dict[str, Any] = await services.redis.xinfo_stream(services.keys.job_events(job.id))
    except ResponseError:  # no history at all: it expired with the job's end
        return bool(job.last_event) and wanted < bus.stream_id(job.last_event)
    # Something after the client's id was removed, and what is left would have a hole: an
    # entry deleted after it, or the history trimmed (always its oldest entries) to start after
    # it. The second is conservative: a reset is never wrong, a partial replay always is.
    deleted = bus.stream_id(str(info.get("max-deleted-entry-id") or "0-0"))
    first = info.get("first-entry")
    trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
    return wanted < deleted or (
        trimmed and first is not None and wanted < bus.stream_id(str(first[0]))
    )
