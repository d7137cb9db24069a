"""One run of a stage for one job: what the worker knows of it, and the one call through which
it records progress, success and failure."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from vidstream.backoff import retry
from vidstream.errors import JobCancelled, RunLost
from vidstream.jobs import Job, Output, Stage, Status
from vidstream.jobstore import Applied, JobStore
from vidstream.media.info import MediaInfo
from vidstream.media.progress import Eta, Throttle
from vidstream.pipelines import pipeline_of
from vidstream.protocol import Claim, FinishStage, Op, Outcome, Progress

WRITE_RETRY_S = 30.0  # how long a finished run keeps trying to record its outcome


class RunEnd(StrEnum):
    """How a run of a stage ended: the `outcome` label of the stage-duration metric."""

    CANCELLED = "cancelled"  # by the user, by shutdown, or lost to another run
    HANDED_ON = "handed_on"  # to the pipeline's next stage
    COMPLETED = "completed"  # the job's last stage
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"  # failed, out of attempts
    RETRY = "retry"  # to run again after a delay


@dataclass(eq=False)
class Run:
    """One execution of a stage for one job, from one stream entry."""

    jobs: JobStore
    stage: Stage
    job_id: str
    entry_id: str
    owner: str  # the lease token: this worker's name and a nonce
    gen: int | None = None  # the job generation stamped on the entry (None on old entries)
    log: structlog.stdlib.BoundLogger = field(default_factory=structlog.get_logger)
    job: Job | None = None  # as read when the run claimed the stage
    attempts: int = 0
    started: bool = False
    released: bool = False  # the run's own last operation let the stage go
    cancelled_by_user: bool = False
    lost: bool = False  # another run took the stage over
    task: asyncio.Task[None] | None = None
    throttle: Throttle = field(default_factory=Throttle)
    eta: Eta = field(default_factory=Eta)
    fraction: float = 0.0  # of the stage, as last reported (what `vidstream workers` shows)
    started_at: float = field(default_factory=time.time)  # Unix time the entry was taken
    # How the run ended, for metrics: handed_on | completed | retry | failed | dead_letter |
    # cancelled (what a run that stopped without recording anything counts as).
    outcome: RunEnd = RunEnd.CANCELLED

    @property
    def holds_lease(self) -> bool:
        return self.started and not self.released and not self.lost

    async def record(self, op: Op) -> Applied:
        """Apply an operation of this run, retried through a short Redis outage (a resend is
        harmless: each operation has an id). Raise `RunLost` if another run holds the stage
        now: its entry is not ours to ack."""
        applied = await retry(
            lambda: self.jobs.apply(self.job_id, op),
            retry_on=(RedisError,),
            give_up_after_s=WRITE_RETRY_S,
        )
        if applied.outcome is Outcome.LOST:
            raise RunLost(self.job_id)
        if applied.ok and not isinstance(op, Claim | Progress):
            self.released = True  # from here on the lease keeper has nothing to renew
        return applied

    async def report(self, fraction: float) -> None:
        """Record how far the stage is (throttled). Best effort: a Redis blip must not stop an
        hour's work. Raise `JobCancelled` once the job no longer runs this stage."""
        assert self.job is not None
        self.fraction = max(self.fraction, min(fraction, 1.0))
        if not self.throttle.should_emit(round(fraction, 3)):
            return
        overall = pipeline_of(self.job).progress(self.job.options, self.stage, fraction)
        eta = self.eta.estimate(overall)
        op = Progress.of(self.job, self.stage, fraction, owner=self.owner, eta_s=eta)
        try:
            applied = await self.jobs.apply(self.job_id, op)
        except RedisError as exc:
            self.log.warning("progress_not_recorded", error=str(exc))
            return
        if applied.outcome is Outcome.LOST:
            raise RunLost(self.job_id)
        if applied.outcome in (Outcome.REJECTED, Outcome.MISSING):
            raise JobCancelled(self.job_id)

    async def publish(self, fraction: float, outputs: dict[str, Output]) -> None:
        """Store outputs the stage made before its end (a compose job's preview) with how far
        it is; raise `JobCancelled` once the job no longer runs this stage."""
        assert self.job is not None
        op = Progress.of(self.job, self.stage, fraction, owner=self.owner, outputs=outputs)
        applied = await self.record(op)
        if applied.outcome in (Outcome.REJECTED, Outcome.MISSING):
            raise JobCancelled(self.job_id)

    async def finish(self, outputs: dict[str, Output], media: MediaInfo | None = None) -> None:
        """The stage stored `outputs`: hand the job on to its next stage, or complete it. Raise
        `JobCancelled` when the job ended meanwhile (`cancelled` says whether by a user)."""
        assert self.job is not None
        op = FinishStage.of(self.job, self.stage, outputs, owner=self.owner, media=media)
        applied = await self.record(op)
        if applied.ok or applied.outcome is Outcome.DONE:  # DONE: a resend found it finished
            self.outcome = RunEnd.HANDED_ON if op.next_stage else RunEnd.COMPLETED
            return
        raise JobCancelled(self.job_id, cancelled=applied.status is Status.CANCELLED)
