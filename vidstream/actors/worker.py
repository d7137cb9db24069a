"""The worker lifecycle shared by every stage actor: consume, claim, run, retry, ack, shut down.

A worker runs at most `concurrency` jobs at once. For each it claims the job's stage (a lease in
Redis, renewed by a heartbeat), runs it, and acks the stream entry only once the outcome is
recorded: the stage's outputs stored and the job moved on, a retry scheduled, or the job failed.
An entry whose worker died stays pending and is reclaimed after VISIBILITY_TIMEOUT_S; stages
check what is already done before doing it again.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog
from redis.exceptions import RedisError

from vidstream import bus, logs, state
from vidstream.actors.consumer import StageConsumer
from vidstream.actors.run import ProgressReporter, Run
from vidstream.actors.slots import SlotLease
from vidstream.errors import (
    JobCancelled,
    ObjectNotFound,
    PermanentError,
    RunLost,
    TransientError,
)
from vidstream.jobs import ErrorInfo, Job, Stage, is_job_id
from vidstream.jobstore import HELD, TAKEN, Applied
from vidstream.lifecycle import Component
from vidstream.services import BLOCK_MS, Services
from vidstream.storage.base import ObjectStore

T = TypeVar("T")
TRIM_INTERVAL_S = 60.0
SCHEDULE_INTERVAL_S = 1.0
WRITE_RETRY_S = 30.0  # how long a finished run keeps trying to record its outcome


class Worker(Component, abc.ABC):
    stage: ClassVar[Stage]

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        self.services = services
        self.settings = s = services.settings
        self.jobs = services.jobs
        self.store: ObjectStore = services.store
        self.concurrency = concurrency
        self.stream = services.keys.stage_stream(self.stage)
        self.group = services.keys.stage_group(self.stage)
        # A job whose worker died must be taken up within VISIBILITY_TIMEOUT_S. Its lease and
        # its stream entry lapse 3/4 of the way there; the other workers look for lapsed entries
        # every tenth of it, so the job moves at 0.85 of the timeout at worst. A live worker
        # renews every quarter, so it has half the timeout to spare before anything lapses.
        self.lease_ms = int(s.visibility_timeout_s * 750)
        self.heartbeat_s = s.visibility_timeout_s / 4
        # The consumer name is a leased slot (host-role-N) unless given: see actors/slots.py.
        ttl_s = int(max(s.visibility_timeout_s, 5))
        self.slot = (
            None if name else SlotLease(services.redis, services.keys, self.stage.value, ttl_s)
        )
        self.name = name or ""
        self.consumer: StageConsumer | None = None
        self.tmp_base = Path(s.data_dir).resolve() / "tmp"
        self.log = logs.get(role=self.stage.value)
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip the grace period
        self._runs: dict[str, Run] = {}  # by job id
        self._loops: list[asyncio.Task[None]] = []
        self._reading = False  # inside a blocking read: let it return rather than cancel it
        self._control_cursor: str | None = None
        self._state = "new"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Take a slot, join the consumer group and start consuming; safe to call twice."""
        if self._state != "new":
            return
        self._state = "starting"
        if self.slot is not None:
            self.name = await self.slot.acquire()
        self.log = self.log.bind(consumer=self.name)
        self.consumer = StageConsumer(
            self.services.redis, self.stream, self.group, self.name, self.lease_ms,
            rescan_s=min(self.settings.visibility_timeout_s / 10, 2.0),
        )  # fmt: skip
        await self._remove_leftovers()
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        await self.consumer.ensure_group()
        await self.setup()
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "consume": self._consume(),
            "control": self._every(self._watch_cancellations, 0),
            "heartbeat": self._every(self._heartbeat, self.heartbeat_s),
            "trim": self._every(self._trim, TRIM_INTERVAL_S),
            "retries": self._every(self.jobs.promote_due, SCHEDULE_INTERVAL_S),
        }
        self._loops = [asyncio.create_task(c, name=f"{self.name}-{n}") for n, c in loops.items()]
        self._state = "running"
        self.log.info("worker_started", concurrency=self.concurrency)

    async def close(self) -> None:
        """Stop in phases; safe to call twice. Unfinished jobs are handed back to the stream."""
        if self._state in ("closing", "closed", "new"):
            self._state = "closed"
            return
        self._state = "closing"
        started = time.monotonic()
        # Phase 1: stop taking work. A read in flight returns within one block; a loop waiting
        # for a free slot is cancelled at once.
        self._stopping.set()
        if self._reading:
            await asyncio.wait(self._loops[:1], timeout=BLOCK_MS / 1000 + 1)
        await _finish(self._loops[:1], 1.0)
        # Phase 2: let running jobs finish within the grace period (unless told to hurry).
        if self._runs:
            self.log.info("draining", jobs=len(self._runs), grace_s=self.settings.shutdown_grace_s)
            await self._drain(self.settings.shutdown_grace_s)
        # Phase 3: cancel what is left; each job stops its subprocesses, removes its temp files
        # and hands its stream entry back, so another worker takes it up at once.
        await _finish([r.task for r in self._runs.values() if r.task], 15.0)
        await _finish(self._loops, 2.0)
        # Phase 4: release the stage's resources (subprocess pools), then the slot.
        await self.teardown()
        if self.slot is not None:
            await self.slot.release()
        self._state = "closed"
        self.log.info("worker_stopped", took_s=round(time.monotonic() - started, 3))

    def hurry(self) -> None:
        """Cut the shutdown grace period short: running jobs are stopped at once."""
        self._hurry.set()

    async def _drain(self, grace_s: float) -> None:
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            async with asyncio.timeout(grace_s):
                while self._runs and not self._hurry.is_set():
                    tasks = [r.task for r in self._runs.values() if r.task]
                    await asyncio.wait([*tasks, hurry], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self.log.warning("grace_period_over", jobs=len(self._runs))
        finally:
            hurry.cancel()

    @property
    def tmp_root(self) -> Path:
        return self.tmp_base / self.name

    async def _remove_leftovers(self) -> None:
        """Remove the temp files of this slot's previous process, and of any other slot of this
        host and role that no live process holds (a crash leaves them behind)."""
        held = await self.slot.held_by_others() if self.slot else set()
        prefix = self.name.rsplit("-", 1)[0] + "-" if self.slot else self.name
        if not self.tmp_base.is_dir():
            return
        for path in self.tmp_base.iterdir():
            if path.name.startswith(prefix) and path.name not in held:
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def setup(self) -> None:
        """Start the stage's own resources (before any job is taken)."""

    async def teardown(self) -> None:
        """Stop the stage's own resources (after every job has stopped)."""

    @abc.abstractmethod
    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        """Run this stage for `job`, writing scratch files under `workdir` only."""

    # -- consuming ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        delay = 0.5
        while not self._stopping.is_set():
            await self._slots.acquire()
            self._reading = True
            try:
                found = await self.consumer.next()
                delay = 0.5
            except RedisError as exc:
                self._slots.release()
                self.log.warning("redis_unavailable", error=str(exc), retry_in_s=delay)
                await self._pause(delay)
                delay = min(delay * 2, 10.0)
                continue
            finally:
                self._reading = False
            if found is None:
                self._slots.release()
                continue
            (entry_id, fields), reclaimed = found
            if reclaimed:
                self.log.info("entry_reclaimed", entry_id=entry_id, job_id=fields.get("job_id"))
            self._spawn(entry_id, fields)

    def _spawn(self, entry_id: str, fields: dict[str, str]) -> None:
        job_id = fields.get("job_id", "")
        if job_id in self._runs:  # a duplicate entry for a job this worker is running
            self._slots.release()
            return
        gen = fields.get("gen", "")
        owner = f"{self.name}:{secrets.token_hex(4)}"
        run = Run(job_id, entry_id, owner, int(gen) if gen.isdigit() else None)
        run.task = asyncio.create_task(self._handle(run), name=f"{self.name}-{job_id}")
        self._runs[job_id] = run

        def done(task: asyncio.Task[None]) -> None:
            self._slots.release()
            self._runs.pop(job_id, None)
            if not task.cancelled() and task.exception() is not None:
                self.log.error("job_handler_crashed", job_id=job_id, exc_info=task.exception())

        run.task.add_done_callback(done)

    async def _handle(self, run: Run) -> None:
        log = self.log.bind(job_id=run.job_id, stage=self.stage.value)
        started = time.monotonic()
        try:
            ack = await self._execute(run, log)
        except asyncio.CancelledError:
            if run.cancelled_by_user or run.lost:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                log.info("job_cancelled" if run.cancelled_by_user else "run_lost")
                ack = run.cancelled_by_user
            else:
                log.info("job_interrupted", took_s=round(time.monotonic() - started, 3))
                await asyncio.shield(self._hand_back(run))
                raise
        except RedisError as exc:
            # The outcome could not be recorded: leave the entry pending; it is reclaimed.
            log.warning("job_interrupted", reason="redis", error=str(exc))
            return
        except RunLost:
            log.warning("run_lost")  # another run holds the stage and its entry: leave both
            return
        if ack:
            # Shielded: once the outcome is recorded, the ack must land even if we stop now.
            assert self.consumer is not None
            await asyncio.shield(self.consumer.ack(run.entry_id))
        log.info("run_finished", took_s=round(time.monotonic() - started, 3), acked=ack)

    async def _execute(self, run: Run, log: structlog.stdlib.BoundLogger) -> bool:
        """Run the stage; return whether the entry is done with (to be acked)."""
        job = await self.jobs.get(run.job_id) if is_job_id(run.job_id) else None
        if job is None or job.status.terminal:
            log.info("entry_skipped", reason="no such job" if job is None else job.status.value)
            return True
        claim = state.start(
            job.options, self.stage, owner=run.owner, lease_ms=self.lease_ms,
            max_attempts=self.settings.job_max_attempts, gen=run.gen,
        )  # fmt: skip
        applied = await self.jobs.apply(job.id, claim)
        if applied.outcome == "busy":
            log.info("job_busy")  # a live run holds the job; keep the entry until it is done
            return False
        if applied.outcome == "stale":
            log.info("entry_skipped", reason="superseded by a later hand-off")
            return True
        if applied.outcome == "exhausted":
            stage = self.stage.value
            error = ErrorInfo(
                "too_many_attempts", f"The {stage} stage was interrupted {applied.attempts} times."
            )
            log.warning("job_dead_lettered", code=error.code, attempts=applied.attempts)
            await self._record(run, state.fail(error, dead_letter=self.stage))
            return True
        if not applied.ok:
            log.info("entry_skipped", reason=applied.outcome)
            return True
        run.started, run.attempts = True, applied.attempts
        workdir = self.tmp_root / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            await self.process(job, workdir, run)
        except JobCancelled:
            log.info("job_cancelled")
        except RunLost:
            log.warning("run_lost")  # another run holds the stage and its entry: leave both
            return False
        except PermanentError as exc:
            log.warning("job_failed", code=exc.code, error=exc.message)
            error = ErrorInfo(exc.code, exc.message)
            await self._record(run, state.fail(error, owner=run.owner))
        except RedisError:
            raise  # the stage could not talk to Redis: its entry stays pending, for a reclaim
        except TransientError as exc:
            await self._retry_or_dead_letter(job, run, ErrorInfo(exc.code, exc.message), log)
        except Exception as exc:
            log.exception("stage_crashed")
            message = (
                f"An internal error stopped the {self.stage.value} stage ({type(exc).__name__})."
            )
            await self._retry_or_dead_letter(job, run, ErrorInfo("internal_error", message), log)
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
        return True

    async def _retry_or_dead_letter(
        self, job: Job, run: Run, error: ErrorInfo, log: structlog.stdlib.BoundLogger
    ) -> None:
        s = self.settings
        if run.attempts >= s.job_max_attempts:
            log.warning("job_dead_lettered", code=error.code, attempts=run.attempts)
            await self._record(run, state.fail(error, owner=run.owner, dead_letter=self.stage))
            return
        jitter = random.uniform(0.5, 1.5)
        delay = state.retry_delay(run.attempts, s.retry_base_delay_s, s.retry_max_delay_s, jitter)
        log.warning("job_retrying", code=error.code, attempt=run.attempts, delay_s=round(delay, 2))
        await self._record(
            run, state.retrying(error, self.stage, run.attempts, delay, owner=run.owner)
        )

    async def _record(self, run: Run, transition: state.Transition) -> Applied:
        """Apply a transition of `run`, retried through a short Redis outage; raise `RunLost`
        if another run holds the stage now (its entry is not ours to ack)."""
        applied = await self._persist(lambda: self.jobs.apply(run.job_id, transition))
        if applied.outcome == "lost":
            raise RunLost(run.job_id)
        if applied.ok and (transition.release or transition.terminal):
            run.released = True  # from here on the heartbeat has nothing to renew
        return applied

    async def _persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """A write that records a finished run's outcome, retried through a short Redis outage
        (each transition carries an id, so a resend after a lost reply changes nothing)."""
        delay, deadline = 0.25, time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                return await write()
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)  # backoff while Redis is away
                delay = min(delay * 2, 5.0)

    async def _hand_back(self, run: Run) -> None:
        """At shutdown: let go of the stage and put the job back on the stream for another
        worker, in one step; if Redis is away the entry stays pending and is reclaimed."""
        if not run.started or run.released or run.lost:
            return
        assert self.consumer is not None
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(3.0):
                if await self.jobs.hand_back(run.job_id, run.owner, self.stage):
                    await self.consumer.ack(run.entry_id)

    # -- background loops --------------------------------------------------------------------

    async def _every(self, step: Callable[[], Awaitable[object]], interval_s: float) -> None:
        while not self._stopping.is_set():
            try:
                await step()
            except RedisError as exc:
                self.log.debug("background_step_failed", step=step.__name__, error=str(exc))
                await self._pause(1.0)
            except Exception:
                self.log.exception("background_step_crashed", step=step.__name__)
                await self._pause(1.0)
            await self._pause(interval_s)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the worker starts stopping."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()

    async def _heartbeat(self) -> None:
        """Renew the lease of every running job and keep its stream entry from going idle."""
        runs = [r for r in self._runs.values() if r.started and not r.released]
        if not runs:
            return
        held = await self.jobs.renew([(r.job_id, r.owner) for r in runs], self.lease_ms)
        for run, lease in zip(runs, held, strict=True):
            if lease == HELD or run.released or not run.task or run.task.done():
                continue  # (released meanwhile by the run's own last transition: all is well)
            if lease == TAKEN:
                self.log.warning("run_lost", job_id=run.job_id)
                run.lost = True
            else:  # released by someone else: cancelled (a notice we may have missed)
                run.cancelled_by_user = True
            run.task.cancel()
        assert self.consumer is not None
        await self.consumer.refresh([r.entry_id for r in runs if not r.lost])

    async def _watch_cancellations(self) -> None:
        """Tail the control stream; cancel the task of any job of ours a user cancelled."""
        redis, stream = self.services.redis, self.services.keys.control
        # A concrete id, not "$": "$" on every call would skip notices sent between two reads.
        # Kept across Redis errors, so notices sent during an outage are read after it.
        if self._control_cursor is None:
            self._control_cursor = await bus.last_id(redis, stream) or "0-0"
        while not self._stopping.is_set():
            cursor = {stream: self._control_cursor}
            for _, messages in await bus.read(redis, cursor, count=100, block_ms=BLOCK_MS):
                for entry_id, fields in messages:
                    self._control_cursor = entry_id
                    run = self._runs.get(fields.get("job_id", ""))
                    if fields.get("action") == "cancel" and run is not None and run.task:
                        self.log.info("cancelling_job", job_id=run.job_id)
                        run.cancelled_by_user = True
                        run.task.cancel()

    async def _trim(self) -> None:
        """Drop entries every consumer is done with, so the stage stream does not grow."""
        safe = await bus.trim_point(self.services.redis, self.stream, self.group)
        if safe:
            await self.services.redis.xtrim(self.stream, minid=safe, approximate=True)

    # -- helpers for stages ------------------------------------------------------------------

    async def source_path(self, job: Job, workdir: Path) -> Path:
        """The source as a local file: in place for local storage, else downloaded to `workdir`."""
        local = self.store.local_path(job.source_key)
        if local is not None:
            if not await asyncio.to_thread(local.is_file):
                raise ObjectNotFound(
                    f"The source {job.source_key} no longer exists.", code="source_not_found"
                )
            return local
        dest = workdir / ("source" + Path(job.source_key).suffix[:10])
        await self.store.get_file(job.source_key, dest)
        return dest

    def reporter(self, job: Job, run: Run) -> ProgressReporter:
        return ProgressReporter(self.jobs, self.stage, job, run, self.log)


async def _finish(tasks: list[asyncio.Task[None]], timeout_s: float) -> None:
    """Cancel `tasks` and wait for them, at most `timeout_s`."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
