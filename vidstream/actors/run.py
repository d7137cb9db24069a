"""One run of a stage for one job: what the worker knows of it, and the one call through which
it records progress, success and failure."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum

import structlog
from redis.exceptions import RedisError

from vidstream.actors.outputs import RunObjects
from vidstream.core.backoff import Backoff, retry
from vidstream.core.errors import JobCancelled, RunLost, VidstreamError
from vidstream.job.model import Job, Output, Stage, Status
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol import Claim, FinishStage, Op, Outcome, Progress
from vidstream.media.info import MediaInfo
from vidstream.media.progress import Eta, Throttle
from vidstream.state.jobstore import Applied, JobStore
from vidstream.state.replication import NotReplicated

# A run's outcome is kept trying through a Redis outage of any length: the work behind it may be
# hours of transcription. Each try has the client's timeout; the first after Redis returns is at
# most a second later, before other workers (whose reads back off further) can reclaim the entry.
OUTCOME_BACKOFF = (0.25, 1.0)


class RunEnd(StrEnum):
    """How a run of a stage ended: the `outcome` label of the stage-duration metric."""

    CANCELLED = "cancelled"  # by the user, by shutdown, or lost to another run
    HANDED_ON = "handed_on"  # to the pipeline's next stage
    COMPLETED = "completed"  # the job's last stage
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"  # failed, out of attempts
    RETRY = "retry"  # to run again after a delay


class Lost(StrEnum):
    """Why a run stopped without recording anything (the `reason` of its `run_lost` line)."""

    TAKEN_OVER = "taken_over"  # its lease lapsed and another run claimed the stage
    FINISHED_ELSEWHERE = "finished_elsewhere"  # another run finished the stage (or the job)


class RunState(StrEnum):
    """Where a run stands. It moves forward only: waiting -> running -> one of the last three,
    or waiting -> cancelled (a job cancelled before its run could claim it)."""

    WAITING = "waiting"  # its entry was read; the stage is not claimed yet
    RUNNING = "running"  # it claimed the stage and holds its lease
    RELEASED = "released"  # its own last operation let the stage go
    CANCELLED = "cancelled"  # the user cancelled the job
    LOST = "lost"  # another run took the stage over, or finished it (`lost_reason`)


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
    state: RunState = RunState.WAITING
    lost_reason: Lost = Lost.TAKEN_OVER
    objects: RunObjects | None = None  # what the run stores, fenced (`actors.outputs`)
    task: asyncio.Task[None] | None = None
    throttle: Throttle = field(default_factory=Throttle)
    eta: Eta = field(default_factory=Eta)
    fraction: float = 0.0  # of the stage, as last reported (what `vidstream workers` shows)
    pieces: tuple[int, int] | None = None  # of a fanned-out stage: (done, in all), as reported
    started_at: float = field(default_factory=time.time)  # Unix time the entry was taken
    # How the run ended, for metrics: handed_on | completed | retry | failed | dead_letter |
    # cancelled (what a run that stopped without recording anything counts as).
    outcome: RunEnd = RunEnd.CANCELLED

    @property
    def started(self) -> bool:
        """Whether the run claimed the stage (whatever became of it since)."""
        return self.job is not None

    @property
    def holds_lease(self) -> bool:
        return self.state is RunState.RUNNING

    def claimed(self, job: Job, attempts: int) -> None:
        """The run's claim was applied: it holds the stage's lease."""
        self.job, self.attempts, self.state = job, attempts, RunState.RUNNING

    def stop(
        self, state: RunState, reason: Lost = Lost.TAKEN_OVER, *, from_inside: bool = False
    ) -> None:
        """The one way a run learns it must stop, however the news came (a cancel notice, the
        lease keeper finding the lease gone, Redis refusing a report or an outcome): mark it
        `cancelled` or `lost`, once. From outside its task (`from_inside=False`) the task is
        cancelled and ends at its next await; from inside, the caller raises."""
        if self.state in (RunState.CANCELLED, RunState.LOST, RunState.RELEASED):
            return
        self.state, self.lost_reason = state, reason
        if not from_inside and self.task is not None and not self.task.done():
            self.task.cancel()

    def _refused(self, applied: Applied) -> VidstreamError:
        """What an operation refused by Redis means for the run (marked stopped): another run
        holds or finished the stage (`RunLost`), or the job was cancelled (`JobCancelled`)."""
        if applied.outcome is Outcome.LOST:
            self.stop(RunState.LOST, Lost.TAKEN_OVER, from_inside=True)
            return RunLost(self.job_id, Lost.TAKEN_OVER)
        if applied.status is Status.CANCELLED or applied.outcome is Outcome.MISSING:
            self.stop(RunState.CANCELLED, from_inside=True)
            return JobCancelled(self.job_id, cancelled=applied.status is Status.CANCELLED)
        # The stage is done, or the job moved on or ended, without this run: another run took
        # over while this one was presumed dead (paused, cut off), and finished first.
        self.stop(RunState.LOST, Lost.FINISHED_ELSEWHERE, from_inside=True)
        return RunLost(self.job_id, Lost.FINISHED_ELSEWHERE)

    @property
    def tag(self) -> str:
        """The run's own short name, in the names of the objects it stores."""
        return self.owner.rpartition(":")[2]

    async def record(self, op: Op) -> Applied:
        """Apply an operation of this run, retried through a Redis outage however long (a resend
        is harmless: each operation has an id), for as long as the run may still hold its lease;
        Redis answers whether it does. Raise `RunLost` if another run holds the stage now: its
        entry is not ours to ack."""
        waited = False

        async def apply() -> Applied:
            nonlocal waited
            try:
                return await self.jobs.apply(self.job_id, op)
            except NotReplicated as exc:
                # Made on the primary, not yet on enough replicas (REDIS_WAIT_REPLICAS): the
                # stage is let go (the lease keeper would take the job's move for another run's)
                # and the outcome is sent again until replicas have it. A resend changes nothing,
                # or makes it again on a new primary that lost it.
                if isinstance(exc.answer, Applied) and exc.answer.ok:
                    self.state = RunState.RELEASED
                if not waited:
                    waited = True
                    self.log.warning("outcome_waiting_for_replicas", op=op.name, error=str(exc))
                raise
            except RedisError as exc:
                if not waited:
                    waited = True
                    self.log.warning("outcome_waiting_for_redis", op=op.name, error=str(exc))
                raise

        applied = await retry(
            apply, retry_on=(RedisError,), give_up_after_s=math.inf,
            backoff=Backoff(*OUTCOME_BACKOFF),
        )  # fmt: skip
        if waited:
            self.log.info("outcome_recorded_after_outage", op=op.name, outcome=applied.outcome)
        if applied.outcome is Outcome.LOST:
            raise self._refused(applied)
        if applied.ok and not isinstance(op, Claim | Progress):
            self.state = RunState.RELEASED  # from here on the lease keeper has nothing to renew
        return applied

    async def report(
        self, fraction: float, *, force: bool = False, pieces: tuple[int, int] | None = None
    ) -> None:
        """Record how far the stage is (throttled, unless `force`d or a fanned-out stage's
        count of `pieces` done moved). Best effort: a Redis blip must not stop an hour's work.
        Raise `JobCancelled` once the job no longer runs this stage."""
        assert self.job is not None
        self.fraction = max(self.fraction, min(fraction, 1.0))
        moved = pieces is not None and pieces != self.pieces
        if not (force or moved or self.throttle.should_emit(round(fraction, 3))):
            return
        self.pieces = pieces or self.pieces
        overall = pipeline_of(self.job).progress(self.job.options, self.stage, fraction)
        eta = self.eta.estimate(overall)
        op = Progress.of(self.job, self.stage, fraction, owner=self.owner, eta_s=eta,
                         pieces=pieces)  # fmt: skip
        try:
            applied = await self.jobs.apply(self.job_id, op)
        except RedisError as exc:
            self.log.warning("progress_not_recorded", error=str(exc))
            return
        if applied.outcome in (Outcome.LOST, Outcome.REJECTED, Outcome.MISSING):
            raise self._refused(applied)

    async def publish(self, fraction: float, outputs: dict[str, Output]) -> None:
        """Store outputs the stage made before its end (a compose job's preview) with how far
        it is; raise `JobCancelled` once the job no longer runs this stage."""
        assert self.job is not None
        op = Progress.of(self.job, self.stage, fraction, owner=self.owner, outputs=outputs)
        applied = await self.record(op)
        if applied.outcome in (Outcome.REJECTED, Outcome.MISSING):
            raise self._refused(applied)
        if self.objects is not None:
            self.objects.recorded(outputs)

    async def finish(self, outputs: dict[str, Output], media: MediaInfo | None = None) -> None:
        """The stage stored `outputs`: hand the job on to its next stage, or complete it. Raise
        `JobCancelled` when the job ended meanwhile (`cancelled` says whether by a user)."""
        assert self.job is not None
        op = FinishStage.of(self.job, self.stage, outputs, owner=self.owner, media=media)
        applied = await self.record(op)
        if applied.ok or await self._recorded(outputs):
            self.outcome = RunEnd.HANDED_ON if op.next_stage else RunEnd.COMPLETED
            if self.objects is not None:
                self.objects.recorded(outputs)  # (the executor sweeps what earlier runs left)
            return
        raise self._refused(applied)

    async def _recorded(self, outputs: dict[str, Output]) -> bool:
        """Whether the job names these outputs already: this run's own finish was applied, its
        answer lost, and the resend found the job moved on (`rejected`) or the stage `done`."""
        if not outputs:
            return False
        try:
            job = await self.jobs.get(self.job_id)
        except RedisError:
            return False
        named = {out.key for out in job.outputs.values()} if job else set()
        return all(out.key in named for out in outputs.values())
