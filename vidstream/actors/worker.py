"""The worker lifecycle shared by every stage actor: consume, run, ack, cancel, shut down.

A worker reads its stage's stream through a consumer group, runs at most `concurrency` jobs at
once, and acks a message only after the stage's outputs are stored and the job moved on. A
message that was not acked (the worker died or shut down mid-job) stays pending for its consumer
and is taken up again; every stage checks what is already done before doing it again.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from redis.exceptions import RedisError, ResponseError

from vidstream import bus, logs, state
from vidstream.actors.slots import SlotLease
from vidstream.errors import JobCancelled, JobError, ObjectNotFound
from vidstream.jobs import ErrorInfo, Job, Stage, is_job_id
from vidstream.media.progress import Throttle
from vidstream.services import BLOCK_MS, Services
from vidstream.storage.base import ObjectStore

TRIM_INTERVAL_S = 60.0


class Worker(abc.ABC):
    stage: ClassVar[Stage]

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.jobs = services.jobs
        self.store: ObjectStore = services.store
        self.concurrency = concurrency
        self.stream = services.keys.stage_stream(self.stage)
        self.group = services.keys.stage_group(self.stage)
        # The consumer name is a leased slot (host-role-N) unless given: see actors/slots.py.
        self.lease = None if name else SlotLease(services.redis, services.keys, self.stage.value)
        self.name = name or ""
        self.tmp_base = Path(self.settings.data_dir).resolve() / "tmp"
        self.log = logs.get(role=self.stage.value)
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip the grace period
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._reading = False  # inside XREADGROUP: let it return rather than cancel it
        self._state = "new"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer group and start consuming; safe to call twice."""
        if self._state != "new":
            return
        self._state = "starting"
        if self.lease is not None:
            self.name = await self.lease.acquire()
        self.log = self.log.bind(consumer=self.name)
        await self._remove_leftovers()
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        await self._ensure_group()
        await self.setup()
        self._loops = [
            asyncio.create_task(self._consume(), name=f"{self.name}-consume"),
            asyncio.create_task(self._watch_cancellations(), name=f"{self.name}-control"),
            asyncio.create_task(self._trim_stream(), name=f"{self.name}-trim"),
        ]
        self._state = "running"
        self.log.info("worker_started", concurrency=self.concurrency)

    async def close(self) -> None:
        """Stop in phases; safe to call twice. Unfinished jobs stay pending for another worker."""
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
        if self._running:
            self.log.info(
                "draining", jobs=len(self._running), grace_s=self.settings.shutdown_grace_s
            )
            await self._drain(self.settings.shutdown_grace_s)
        # Phase 3: cancel what is left; each job stops its subprocesses and leaves its message
        # unacked, so another worker (or this one, restarted) runs it again.
        await _finish(list(self._running.values()), 10.0)
        await _finish(self._loops, 1.0)
        # Phase 4: release the stage's resources (subprocess pools), then the slot.
        await self.teardown()
        if self.lease is not None:
            await self.lease.release()
        self._state = "closed"
        self.log.info("worker_stopped", took_s=round(time.monotonic() - started, 3))

    def hurry(self) -> None:
        """Cut the shutdown grace period short: running jobs are stopped at once."""
        self._hurry.set()

    async def _drain(self, grace_s: float) -> None:
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            async with asyncio.timeout(grace_s):
                while self._running and not self._hurry.is_set():
                    await asyncio.wait(
                        [*self._running.values(), hurry], return_when=asyncio.FIRST_COMPLETED
                    )
        except TimeoutError:
            self.log.warning("grace_period_over", jobs=len(self._running))
        finally:
            hurry.cancel()

    @property
    def tmp_root(self) -> Path:
        return self.tmp_base / self.name

    async def _remove_leftovers(self) -> None:
        """Remove the temp files of this slot's previous process, and of any other slot of this
        host and role that no live process holds (a crash leaves them behind)."""
        held = await self.lease.held_by_others() if self.lease else set()
        prefix = self.name.rsplit("-", 1)[0] + "-" if self.lease else self.name
        if not self.tmp_base.is_dir():
            return
        for path in self.tmp_base.iterdir():
            if path.name.startswith(prefix) and path.name not in held:
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Start the stage's own resources (before any job is taken)."""

    async def teardown(self) -> None:  # noqa: B027 - optional hook
        """Stop the stage's own resources (after every job has stopped)."""

    @abc.abstractmethod
    async def process(self, job: Job, workdir: Path) -> None:
        """Run this stage for `job`, writing scratch files under `workdir` only."""

    # -- consuming ---------------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        try:
            await self.services.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self) -> None:
        # First the entries this consumer name already holds (a restart after a crash), then new.
        cursor: str | None = "0"
        delay = 0.5
        while not self._stopping.is_set():
            await self._slots.acquire()
            self._reading = True
            try:
                batch = await bus.read_group(
                    self.services.redis,
                    self.group,
                    self.name,
                    self.stream,
                    cursor or ">",
                    count=1,
                    block_ms=None if cursor else BLOCK_MS,
                )
                delay = 0.5
            except RedisError as exc:
                self._reading = False
                self._slots.release()
                self.log.warning("redis_unavailable", error=str(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, 10.0)
                continue
            self._reading = False
            if not batch:
                self._slots.release()
                cursor = None
                continue
            msg_id, fields = batch[0]
            if cursor:
                cursor = msg_id
            self._spawn(msg_id, fields.get("job_id", ""))

    def _spawn(self, msg_id: str, job_id: str) -> None:
        task = asyncio.create_task(self._handle(msg_id, job_id), name=f"{self.name}-{job_id}")
        self._running[job_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._slots.release()
            if self._running.get(job_id) is t:
                del self._running[job_id]
            self._cancel_requested.discard(job_id)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("job_handler_crashed", job_id=job_id, exc_info=t.exception())

        task.add_done_callback(done)

    async def _handle(self, msg_id: str, job_id: str) -> None:
        log = self.log.bind(job_id=job_id, stage=self.stage.value)
        started = time.monotonic()
        try:
            job = await self.jobs.get(job_id) if is_job_id(job_id) else None
            if job is None or job.status.terminal:
                log.info(
                    "message_skipped", reason="no such job" if job is None else job.status.value
                )
            else:
                workdir = self.tmp_root / job_id
                workdir.mkdir(parents=True, exist_ok=True)
                try:
                    await self.process(job, workdir)
                finally:
                    await asyncio.shield(asyncio.to_thread(shutil.rmtree, workdir, True))
                log.info("stage_finished", took_s=round(time.monotonic() - started, 3))
        except JobCancelled:
            log.info("job_cancelled", took_s=round(time.monotonic() - started, 3))
        except asyncio.CancelledError:
            if job_id not in self._cancel_requested:
                log.info("job_interrupted", took_s=round(time.monotonic() - started, 3))
                raise  # shutting down: leave the message pending for another worker
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            log.info("job_cancelled", took_s=round(time.monotonic() - started, 3))
        except JobError as exc:
            log.warning("job_failed", code=exc.code, error=exc.message)
            await self.jobs.apply(job_id, state.fail(ErrorInfo(exc.code, exc.message)))
        except Exception as exc:
            log.exception("job_crashed")
            message = (
                f"An internal error stopped the {self.stage.value} stage ({type(exc).__name__})."
            )
            await self.jobs.apply(job_id, state.fail(ErrorInfo("internal_error", message)))
        # Shielded: once the outcome is recorded, the ack must land even if we are cancelled now.
        await asyncio.shield(self.services.redis.xack(self.stream, self.group, msg_id))

    async def _watch_cancellations(self) -> None:
        """Tail the control stream; cancel the task of any job of ours a user cancelled."""
        redis, stream = self.services.redis, self.services.keys.control
        # A concrete id, not "$": "$" on every call would skip notices sent between two reads.
        last = await bus.last_id(redis, stream) or "0-0"
        while not self._stopping.is_set():
            try:
                entries = await bus.read(redis, {stream: last}, count=100, block_ms=BLOCK_MS)
            except RedisError:
                await asyncio.sleep(1.0)  # the consume loop logs Redis outages; retry calmly
                continue
            for _, messages in entries:
                for entry_id, fields in messages:
                    last = entry_id
                    job_id = fields.get("job_id", "")
                    task = self._running.get(job_id)
                    if fields.get("action") == "cancel" and task is not None:
                        self.log.info("cancelling_job", job_id=job_id)
                        self._cancel_requested.add(job_id)
                        task.cancel()

    async def _trim_stream(self) -> None:
        """Drop entries every consumer is done with, so the stage stream does not grow forever.

        Only entries older than both the group's last delivered id and its oldest pending entry
        go: those were delivered and acked, and job state lives in the job hash, not here.
        """
        while not self._stopping.is_set():
            try:
                safe = await bus.trim_point(self.services.redis, self.stream, self.group)
                if safe:
                    await self.services.redis.xtrim(self.stream, minid=safe, approximate=True)
            except RedisError as exc:
                self.log.debug("trim_skipped", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRIM_INTERVAL_S):
                    await self._stopping.wait()

    # -- helpers for stages ------------------------------------------------------------------

    async def begin(self, job: Job) -> None:
        """Record that this stage started; raise `JobCancelled` if the job moved on meanwhile."""
        applied = await self.jobs.apply(job.id, state.start(job.options, self.stage))
        if not applied.ok:
            raise JobCancelled(job.id)

    async def source_path(self, job: Job, workdir: Path) -> Path:
        """The source as a local file: in place for local storage, else downloaded to `workdir`."""
        local = self.store.local_path(job.source_key)
        if local is not None:
            if not local.is_file():
                raise ObjectNotFound(
                    f"The source {job.source_key} no longer exists.", code="source_not_found"
                )
            return local
        dest = workdir / ("source" + Path(job.source_key).suffix[:10])
        await self.store.get_file(job.source_key, dest)
        return dest

    def reporter(self, job: Job) -> ProgressReporter:
        return ProgressReporter(self, job)


class ProgressReporter:
    """Turns a stage's fraction done into throttled `progress` events."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker = worker
        self.job = job
        self.throttle = Throttle()

    async def report(self, fraction: float) -> None:
        if not self.throttle.should_emit(round(fraction, 3)):
            return
        applied = await self.worker.jobs.apply(
            self.job.id, state.progress(self.job.options, self.worker.stage, fraction)
        )
        if applied.outcome == "rejected":
            raise JobCancelled(self.job.id)


async def _finish(tasks: list[asyncio.Task[None]], timeout_s: float) -> None:
    """Cancel `tasks` and wait for them, at most `timeout_s`."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
