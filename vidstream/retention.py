"""Retention: an ended job is removed `JOB_RETENTION_S` after it ended (`FAILED_JOB_RETENTION_S`
for failures) with everything it left: its record, events, logs, idempotency entry, its place in
its tenant's listing and in the status counts, and (unless `KEEP_OUTPUTS`) its source and
outputs in storage. Uploads no job took are deleted once their ticket expired.

When a job ends, the Lua script puts it in a sorted set by the time it is due (`Keys.retention`);
`sweep` takes due entries in bounded batches, never scanning keys. Storage goes first: if it
fails, the job stays due and the next sweep tries again. The Redis part is one script that does
nothing to a job that was replayed meanwhile (it left the set).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from vidstream import logs
from vidstream.errors import StorageError
from vidstream.jobs import Job
from vidstream.keys import Keys
from vidstream.storage.base import ObjectStore

BATCH = 100  # jobs (and uploads) removed per sweep at most; a sweep runs every few seconds
STORAGE_TIMEOUT_S = 30.0

# KEYS: retention set, job hash, events, logs, tenant listing, status counts, idempotency entry
# (or the job hash again when it has none). ARGV: job id, now (s). Removes the job if still due.
_REMOVE = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
local status = redis.call('HGET', KEYS[2], 'status')
if status then redis.call('HINCRBY', KEYS[6], status, -1) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[7])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Swept:
    jobs: int = 0
    uploads: int = 0


class Retention:
    def __init__(self, redis: Redis, keys: Keys, store: ObjectStore, *, keep_outputs: bool) -> None:
        self.redis, self.keys, self.store, self.keep_outputs = redis, keys, store, keep_outputs
        self._remove = redis.register_script(_REMOVE)
        self.log = logs.get(role="maintenance")

    async def sweep(self, now: float | None = None) -> Swept:
        """Remove what is due; return how much."""
        now = time.time() if now is None else now
        removed = 0
        due = await self.redis.zrangebyscore(self.keys.retention, "-inf", now, start=0, num=BATCH)
        for job_id in due:
            removed += await self._remove_job(str(job_id), now)
        uploads = await self._sweep_uploads(now)
        if removed or uploads:
            self.log.info("retention_swept", jobs=removed, uploads=uploads)
        return Swept(removed, uploads)

    async def _remove_job(self, job_id: str, now: float) -> int:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        job = Job.from_redis(raw) if raw else None
        if job is not None and not job.status.terminal:  # replayed meanwhile: kept
            return 0
        if job is not None and not self.keep_outputs:
            owned = [job.source_key, *job.assets, *(out.key for out in job.outputs.values())]
            objects = list(dict.fromkeys(key for key in owned if key))  # a compose job: no source
            if not await self._delete(objects, job_id):
                return 0  # storage is away: due again next sweep
        idem = raw.get("idempotency") or self.keys.job(job_id)
        keys = [
            self.keys.retention, self.keys.job(job_id), self.keys.job_events(job_id),
            self.keys.job_logs(job_id), self.keys.tenant_jobs(job.tenant if job else "default"),
            self.keys.status_counts, idem,
        ]  # fmt: skip
        return int(await self._remove(keys=keys, args=[job_id, repr(now)]))

    async def _delete(self, objects: list[str], job_id: str) -> bool:
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S):
                for key in objects:
                    await self.store.delete(key)
        except (StorageError, TimeoutError) as exc:
            self.log.warning("retention_storage_failed", job_id=job_id, error=str(exc)[:200])
            return False
        return True

    async def _sweep_uploads(self, now: float) -> int:
        """Delete uploads whose ticket expired with no job taking them."""
        index = self.keys.abandoned_uploads
        due = await self.redis.zrangebyscore(index, "-inf", now, start=0, num=BATCH)
        for key in map(str, due):
            if await self._delete([key], "-"):
                await self.redis.zrem(index, key)
        return len(due)
