"""Carrying out one stream entry: claim the stage, run it, record what `policy` decides, ack.

The entry is acked only once the outcome is recorded (the stage's outputs stored and the job
moved on, a retry scheduled, or the job failed); an entry whose worker died stays pending and is
reclaimed after VISIBILITY_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from redis.exceptions import RedisError

from vidstream.actors.outputs import RunObjects
from vidstream.actors.run import Run, RunEnd, RunState
from vidstream.core.errors import CodedError, JobCancelled, RunLost
from vidstream.job import policy
from vidstream.job.model import Job, Stage, Status, is_job_id
from vidstream.job.protocol import Claim, Fail, HandBack, Retry
from vidstream.ops.metrics import Metrics
from vidstream.state.jobstore import JobStore
from vidstream.state.pieces import PieceStore
from vidstream.storage.base import ObjectStore

# The runs that end the job, and how (a handed-on, retried or cancelled run does not).
_JOB_ENDS = {RunEnd.COMPLETED: Status.COMPLETED, RunEnd.FAILED: Status.FAILED,
             RunEnd.DEAD_LETTER: Status.FAILED}  # fmt: skip

_STAGE_DONE = (RunEnd.HANDED_ON, RunEnd.COMPLETED)  # the run's outputs are the job's
Process = Callable[[Job, Path, Run], Awaitable[None]]
Ack = Callable[[str], Awaitable[object]]
Ended = Callable[[Run, float], Awaitable[None]]  # a started run ended (and its seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Executor:
    jobs: JobStore
    stage: Stage
    process: Process  # the stage itself: writes scratch files under the given directory only
    ack: Ack
    store: ObjectStore  # where the stage stores its outputs (`actors.outputs`)
    limits: policy.Limits
    lease_ms: int
    tmp_root: Path
    metrics: Metrics
    ended: Ended | None = None  # the worker registry: counts runs, keeps their durations
    pieces: PieceStore | None = None  # a fanned-out stage's pieces, forgotten once it is done

    async def handle(self, run: Run) -> None:
        """Run the entry to its end; ack it when its outcome is recorded. At shutdown (the
        task cancelled) the run is handed back, so another worker takes it up at once."""
        started = time.monotonic()
        try:
            ack = await self._execute(run)
            if run.started:
                self._observe(run, started)
            if run.outcome in _STAGE_DONE and run.objects is not None:
                # After the metrics: what earlier runs of the stage left is housekeeping (a
                # fanned-out stage's pieces, their results and their segments included).
                await run.objects.sweep_superseded()
                if self.pieces is not None and run.pieces is not None:  # it fanned out
                    with contextlib.suppress(RedisError):
                        await self.pieces.forget(run.job_id, self.stage)
        except asyncio.CancelledError:
            if run.state not in (RunState.CANCELLED, RunState.LOST):  # shutting down
                run.log.info("job_interrupted", took_s=round(time.monotonic() - started, 3))
                await asyncio.shield(self._hand_back(run))
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if run.state is RunState.CANCELLED:
                run.log.info("job_cancelled")
            else:
                run.log.warning("run_lost", reason=run.lost_reason)
            ack = run.state is RunState.CANCELLED
        except RedisError as exc:  # the outcome could not be recorded: the entry is reclaimed
            run.log.warning("job_interrupted", reason="redis", error=str(exc))
            return
        except RunLost as exc:  # another run holds (or finished) the stage: leave it all
            run.log.warning("run_lost", reason=exc.reason)
            return
        if ack:
            # Shielded: once the outcome is recorded, the ack must land even if we stop now.
            await asyncio.shield(self.ack(run.entry_id))
        took = time.monotonic() - started
        run.log.info("run_finished", took_s=round(took, 3), acked=ack)
        if run.started and self.ended is not None:
            await self.ended(run, took)

    async def _execute(self, run: Run) -> bool:
        """Claim and run the stage; return whether the entry is done with (to be acked)."""
        job = await self.jobs.get(run.job_id) if is_job_id(run.job_id) else None
        if job is not None and job.request_id:  # every line of this run, skipped or not
            run.log = run.log.bind(request_id=job.request_id)
        if job is None or job.status.terminal:
            run.log.info("entry_skipped", reason="no such job" if job is None else job.status)
            return True
        claim = Claim.of(job, self.stage, owner=run.owner, lease_ms=self.lease_ms,
                         max_attempts=self.limits.max_attempts, gen=run.gen)  # fmt: skip
        applied = await self.jobs.apply(job.id, claim)
        match policy.after_claim(applied.outcome, self.stage, applied.attempts):
            case policy.Leave(reason):
                run.log.info("entry_left", reason=reason)
                return False
            case policy.Skip(reason):
                run.log.info("entry_skipped", reason=reason)
                return True
            case policy.DeadLetter(error):
                run.log.warning("job_dead_lettered", code=error.code, attempts=applied.attempts)
                await run.record(Fail(error=error, dead_letter=self.stage))
                self._ended(job, Status.FAILED, dead=True)
                return True
        run.claimed(job, applied.attempts)
        run.objects = objects = RunObjects(self.store, self.jobs, self.stage, job.id, run.log)
        run.log.info("run_started", attempt=applied.attempts)
        workdir = self.tmp_root / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            await self.process(job, workdir, run)
        except Exception as exc:
            return await self._after_error(run, exc)
        finally:
            # What the run stored but no record names (it failed, was cancelled or lost).
            await asyncio.shield(objects.discard(ended_early=run.outcome not in _STAGE_DONE))
            await asyncio.shield(_remove(workdir))
        return True

    async def _after_error(self, run: Run, exc: Exception) -> bool:
        jitter = random.uniform(0.5, 1.5)
        decision = policy.after_error(exc, self.stage, run.attempts, self.limits, jitter)
        if not isinstance(exc, CodedError | RedisError | RunLost | JobCancelled):
            run.log.error("stage_crashed", exc_info=exc)  # a bug: the user sees internal_error
        elif (hidden := policy.hidden(exc, self.stage)) is not None:
            run.log.warning("stage_error", error=hidden)  # what the user's job error leaves out
        if isinstance(decision, policy.FailJob | policy.DeadLetter | policy.RetryLater):
            self.metrics.stage_failures.labels(self.stage.value, decision.error.code).inc()
        match decision:
            case policy.Stop():
                run.log.info("job_cancelled")
            case policy.Leave(reason) if isinstance(exc, RunLost):
                run.log.warning("run_lost", reason=exc.reason)
                return False
            case policy.Leave(reason):
                run.log.warning("entry_left", reason=reason, error=str(exc))
                return False
            case policy.FailJob(error):
                run.log.warning("job_failed", code=error.code, error=error.message)
                await run.record(Fail(error=error, owner=run.owner))
                run.outcome = RunEnd.FAILED
            case policy.DeadLetter(error):
                run.log.warning("job_dead_lettered", code=error.code, attempts=run.attempts)
                await run.record(Fail(error=error, owner=run.owner, dead_letter=self.stage))
                run.outcome = RunEnd.DEAD_LETTER
            case policy.RetryLater(error, delay_s):
                run.log.warning("job_retrying", code=error.code, attempt=run.attempts,
                                delay_s=round(delay_s, 2))  # fmt: skip
                await run.record(Retry(stage=self.stage, owner=run.owner, error=error,
                                       attempt=run.attempts, delay_s=delay_s))  # fmt: skip
                run.outcome = RunEnd.RETRY
                self.metrics.retries.labels(self.stage.value, error.code).inc()
        return True

    def _observe(self, run: Run, started: float) -> None:
        """Count how the run ended, and how long it took."""
        took = time.monotonic() - started
        self.metrics.stage_duration.labels(self.stage.value, run.outcome).observe(took)
        if run.job is not None and run.outcome in _JOB_ENDS:
            self._ended(run.job, _JOB_ENDS[run.outcome], dead=run.outcome is RunEnd.DEAD_LETTER)

    def _ended(self, job: Job, status: Status, *, dead: bool = False) -> None:
        self.metrics.jobs_finished.labels(job.kind.value, status.value).inc()
        if dead:
            self.metrics.dead_letters.labels(self.stage.value).inc()

    async def _hand_back(self, run: Run) -> None:
        """At shutdown: let go of the stage and put the job back on the stream for another
        worker, in one step; if Redis is away the entry stays pending and is reclaimed."""
        if not run.holds_lease:
            return
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(3.0):
                applied = await self.jobs.apply(
                    run.job_id, HandBack(stage=self.stage, owner=run.owner)
                )
                if applied.ok:
                    await self.ack(run.entry_id)


def new_run(jobs: JobStore, stage: Stage, worker: str, entry_id: str, fields: dict[str, str],
            nonce: str, log: structlog.stdlib.BoundLogger) -> Run:  # fmt: skip
    """The run of one stream entry by `worker`."""
    job_id, gen = fields.get("job_id", ""), fields.get("gen", "")
    return Run(
        jobs, stage, job_id, entry_id, owner=f"{worker}:{nonce}",
        gen=int(gen) if gen.isascii() and gen.isdigit() else None,
        log=log.bind(job_id=job_id, stage=stage.value),
    )  # fmt: skip


async def _remove(workdir: Path) -> None:
    """Remove a run's directory: at once when it is empty (a stage that wrote nothing), else in a
    thread (a video's files take a while)."""
    try:
        workdir.rmdir()  # noqa: ASYNC240 - one syscall on an empty directory: no thread hop
    except OSError:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
