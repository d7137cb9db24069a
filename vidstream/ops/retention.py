"""Retention: an ended job is removed `JOB_RETENTION_S` after it ended (`FAILED_JOB_RETENTION_S`
for failures) with everything it left: its record, events, logs, idempotency entry, its place in
its tenant's listing and in the status counts, and (unless `KEEP_OUTPUTS`) its source and
outputs in storage. Uploads no job took are deleted once their ticket expired.

When a job ends, the Lua script puts it in a sorted set by the time it is due (`Keys.retention`);
`sweep` takes due entries in bounded batches, never scanning keys. Storage goes first: if it
fails, the job (or upload) is due again `RETRY_AFTER_S` later, so one whose objects cannot be
deleted (a bucket policy refusing deletes, say) does not hold up the ones behind it. The Redis
part is one script that does nothing to a job that was replayed meanwhile (it left the set).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from vidstream.core import logs
from vidstream.core.errors import StorageError
from vidstream.job.kinds import KINDS
from vidstream.job.model import Job
from vidstream.state import scripts
from vidstream.state.keys import Keys
from vidstream.storage.base import ObjectStore

BATCH = 100  # jobs (and uploads) removed per sweep at most; a sweep runs every few seconds
STORAGE_TIMEOUT_S = 30.0
RETRY_AFTER_S = 300  # a job or upload whose objects could not be deleted is due again then


@dataclass(frozen=True, slots=True)
class Swept:
    jobs: int = 0
    uploads: int = 0
    more: bool = False  # a batch was full: more may be due


class Retention:
    def __init__(self, redis: Redis, keys: Keys, store: ObjectStore, *, keep_outputs: bool) -> None:
        self.redis, self.keys, self.store, self.keep_outputs = redis, keys, store, keep_outputs
        self._remove = scripts.register(redis, "job_remove")
        self.log = logs.get(role="maintenance")

    async def sweep(self, now: float | None = None) -> Swept:
        """Remove what is due; return how much."""
        now = time.time() if now is None else now
        removed = 0
        due = await self.redis.zrangebyscore(self.keys.retention, "-inf", now, start=0, num=BATCH)
        for job_id in due:
            removed += await self._remove_job(str(job_id), now)
        uploads, more = await self._sweep_uploads(now)
        if removed or uploads:
            self.log.info("retention_swept", jobs=removed, uploads=uploads)
        return Swept(removed, uploads, more or len(due) == BATCH)

    async def _remove_job(self, job_id: str, now: float) -> int:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        job = Job.from_redis(raw) if raw else None
        if job is not None and not job.status.terminal:  # replayed meanwhile: kept
            return 0
        if job is not None and not self.keep_outputs:
            # Its source only if its kind owns it (one may read another job's source instead).
            source = job.source_key if KINDS[job.kind].owns_source else ""
            owned = [source, *job.assets, *(out.key for out in job.outputs.values())]
            # And what runs stored that no record names (a run killed before it recorded).
            members = await self.redis.smembers(self.keys.job_objects(job_id))
            owned += sorted(str(m).partition("|")[2] for m in members)  # `stage|key`
            objects = list(dict.fromkeys(key for key in owned if key))  # a compose job: no source
            if not await self._delete(objects, job_id):
                await self._later(self.keys.retention, job_id, now)
                return 0
        idem = raw.get("idempotency") or self.keys.job(job_id)
        keys = [
            self.keys.retention, self.keys.job(job_id), self.keys.job_events(job_id),
            self.keys.job_logs(job_id), self.keys.tenant_jobs(job.tenant if job else "default"),
            self.keys.status_counts, idem, self.keys.job_objects(job_id),
            self.keys.job_pieces(job_id),
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

    async def _later(self, index: str, member: str, now: float) -> None:
        """Make `member` due again RETRY_AFTER_S from `now`, not at the head of every sweep.
        XX: not back in the set if it left meanwhile; GT: a later due time it got meanwhile (a
        replayed job that ended again) stays."""
        await self.redis.zadd(index, {member: now + RETRY_AFTER_S}, xx=True, gt=True)

    async def _sweep_uploads(self, now: float) -> tuple[int, bool]:
        """Delete uploads whose ticket expired with no job taking them; return how many, and
        whether the batch was full."""
        index = self.keys.abandoned_uploads
        due = await self.redis.zrangebyscore(index, "-inf", now, start=0, num=BATCH)
        deleted = 0
        for key in map(str, due):
            if await self._delete([key], "-"):
                await self.redis.zrem(index, key)
                deleted += 1
            else:
                await self._later(index, key, now)
        return deleted, len(due) == BATCH
