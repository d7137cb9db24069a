"""The objects one run stores, fenced: written under names of the run's own, recorded before
their bytes, and made the job's only by the step that checks the run still holds its lease.

A run whose worker was presumed dead (a long pause, a network split) may wake and go on writing
while another run has taken the stage over. It never overwrites that run's files: each run writes
under its own tag (`storage.names`). Which files are the job's is decided in one atomic step, the
stage's `finish`, which refuses a run that lost its lease; the loser then deletes what it wrote,
and the winner deletes what earlier runs of its stage left. Every object is first added to the
job's set of owned objects (`JobStore.own_object`), so even the files of a run killed between
writing and recording are deleted by retention, with the job.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import structlog
from redis.exceptions import RedisError

from vidstream.core.backoff import Backoff, retry
from vidstream.core.errors import StorageError
from vidstream.job.model import Output, Stage, Status
from vidstream.state.jobstore import JobStore
from vidstream.storage.base import ObjectStore

CLEANUP_TIMEOUT_S = 30.0


class RunObjects:
    def __init__(
        self, store: ObjectStore, jobs: JobStore, stage: Stage, job_id: str,
        log: structlog.stdlib.BoundLogger,
    ) -> None:  # fmt: skip
        self.store, self.jobs, self.stage, self.job_id, self.log = store, jobs, stage, job_id, log
        self.unrecorded: list[str] = []  # stored (or being stored), named by no record yet
        self.recorded_keys: set[str] = set()

    async def put(self, key: str, path: Path, content_type: str) -> Output:
        """Store the file at `path` under `key` (a name of this run's own), owned by the job
        before its first byte is written."""
        # Kept trying through a Redis outage: the work behind this file is done.
        await retry(
            lambda: self.jobs.own_object(self.job_id, self.stage, key),
            retry_on=(RedisError,), give_up_after_s=math.inf, backoff=Backoff(0.25, 1.0),
        )  # fmt: skip
        self.unrecorded.append(key)
        info = await self.store.put_file(key, path, content_type)
        return Output(info.key, info.size, info.content_type)

    def recorded(self, outputs: dict[str, Output]) -> None:
        """The job's record names `outputs` now: they are the job's to keep."""
        keys = {out.key for out in outputs.values()}
        self.recorded_keys |= keys
        self.unrecorded = [key for key in self.unrecorded if key not in keys]

    async def discard(self, *, ended_early: bool = True) -> None:
        """Delete what this run stored that no record names (it failed, was cancelled, or lost
        its lease to another run); best effort: retention deletes what is left. Once the job
        failed or was cancelled, what other runs of the stage stored goes too (a fanned-out
        stage's finished segments); a job that runs the stage again keeps them for its pieces.
        A run that finished its stage (`ended_early` False) has nothing to look for but its own."""
        if not self.unrecorded and not ended_early:
            return
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                job = await self.jobs.get(self.job_id)
                ended = job is not None and job.status in (Status.FAILED, Status.CANCELLED)
                others = await self.jobs.owned_objects(self.job_id, self.stage) if ended else []
        except (RedisError, TimeoutError):
            return  # retention deletes them with the job
        # Never what the job names: a record applied whose answer was lost names them.
        named = {out.key for out in job.outputs.values()} if job else set()
        doomed = [key for key in dict.fromkeys([*self.unrecorded, *others]) if key not in named]
        self.unrecorded = []
        if doomed:
            await self._delete(doomed, "run_objects_discarded")

    async def sweep_superseded(self) -> None:
        """After this run's outputs were recorded: delete the files earlier runs of the stage
        left (a run presumed dead, then killed, or fenced off before it could clean up)."""
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                owned = await self.jobs.owned_objects(self.job_id, self.stage)
                job = await self.jobs.get(self.job_id)
        except (RedisError, TimeoutError):
            return  # retention deletes them with the job
        named = self.recorded_keys | ({out.key for out in job.outputs.values()} if job else set())
        doomed = [key for key in owned if key not in named]
        if doomed:
            await self._delete(doomed, "superseded_objects_deleted")

    async def _delete(self, keys: list[str], event: str) -> None:
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                for key in keys:
                    await self.store.delete(key)
                await self.jobs.disown_objects(self.job_id, self.stage, keys)
            self.log.info(event, keys=keys)
        except (StorageError, RedisError, TimeoutError) as exc:
            self.log.warning("objects_not_deleted", keys=keys, error=str(exc)[:200])
