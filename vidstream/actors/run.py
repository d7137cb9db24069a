"""One run of a stage for one job, and its throttled progress reports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from vidstream import state
from vidstream.errors import JobCancelled, RunLost
from vidstream.jobs import Job, Stage
from vidstream.jobstore import JobStore
from vidstream.media.progress import Throttle


@dataclass
class Run:
    """One execution of a stage for one job, from one stream entry."""

    job_id: str
    entry_id: str
    owner: str  # the lease token: this worker's name and a nonce
    gen: int | None = None  # the job generation stamped on the entry (None on old entries)
    attempts: int = 0
    started: bool = False
    released: bool = False  # the run's own last transition let the stage go
    cancelled_by_user: bool = False
    lost: bool = False  # another run took the stage over
    task: asyncio.Task[None] | None = None


class ProgressReporter:
    """Turns a stage's fraction done into throttled `progress` events."""

    def __init__(
        self, jobs: JobStore, stage: Stage, job: Job, run: Run, log: structlog.stdlib.BoundLogger
    ) -> None:
        self.jobs, self.stage, self.job, self.run, self.log = jobs, stage, job, run, log
        self.throttle = Throttle()

    async def report(self, fraction: float) -> None:
        if not self.throttle.should_emit(round(fraction, 3)):
            return
        transition = state.progress(self.job.options, self.stage, fraction, owner=self.run.owner)
        try:
            applied = await self.jobs.apply(self.job.id, transition)
        except RedisError as exc:  # progress is best effort: a blip must not stop an hour's work
            self.log.warning("progress_not_recorded", job_id=self.job.id, error=str(exc))
            return
        if applied.outcome == "lost":
            raise RunLost(self.job.id)
        if applied.outcome in ("rejected", "missing"):
            raise JobCancelled(self.job.id)
