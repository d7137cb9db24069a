"""The worker shared by every stage actor: a composition of a consumer, an executor, a lease
keeper, a control listener and a registry heartbeat, with a phased shutdown.

A worker runs at most `concurrency` entries at once. The consumer says which entry is next (its
own pending ones first, then one a dead worker left, then a new one); the executor claims the
stage, runs it and records what `policy` decides; the lease keeper renews the claims of running
jobs; the control listener stops a job a user cancelled; the registry says what it runs.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
import shutil
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import ClassVar

from redis.exceptions import RedisError

from vidstream.actors.control import ControlListener
from vidstream.actors.execute import Executor, new_run
from vidstream.actors.leases import LeaseKeeper
from vidstream.actors.pieces import PieceTaker
from vidstream.actors.run import Run, RunState
from vidstream.actors.slots import SlotLease
from vidstream.core import logs
from vidstream.core.backoff import Backoff
from vidstream.core.lifecycle import Component
from vidstream.core.tasks import cancel_and_wait
from vidstream.job import policy
from vidstream.job.model import Job, Stage
from vidstream.kinds import fanout
from vidstream.kinds.base import Tools
from vidstream.media import probers
from vidstream.ops import joblogs
from vidstream.ops.workers import WorkerRegistry
from vidstream.services import Services
from vidstream.state.bus import BLOCK_MS
from vidstream.state.consumer import StageConsumer
from vidstream.storage.base import ObjectStore


class Worker(Component, abc.ABC):
    stage: ClassVar[Stage]
    # What the stage's work is given (set by each role); a worker without tools takes no
    # pieces of other runs' fanned-out stages.
    tools: Tools | None = None

    def __init__(
        self, services: Services, *, concurrency: int = 1, name: str | None = None
    ) -> None:
        self.services = services
        self.settings = s = services.settings
        self.jobs = services.jobs
        self.store: ObjectStore = services.store
        self.concurrency = concurrency
        # A job whose worker died must be taken up within VISIBILITY_TIMEOUT_S. Its lease and
        # its stream entry lapse 3/4 of the way there; the other workers look for lapsed entries
        # every tenth of it, so the job moves at 0.85 of the timeout at worst. A live worker
        # renews every quarter, so it has half the timeout to spare before anything lapses.
        self.lease_ms = int(s.visibility_timeout_s * 750)
        self.heartbeat_s = s.visibility_timeout_s / 4
        # The consumer name is a leased slot (host-role-N) unless given: see actors/slots.py.
        ttl_s = int(max(s.visibility_timeout_s, 5))
        self.tmp_base = Path(s.data_dir).resolve() / "tmp"
        self.slot = None
        if not name:
            self.slot = SlotLease(services.redis, services.keys, self.stage.value, ttl_s,
                                  tmp_base=self.tmp_base)  # fmt: skip
        self.name = name or ""
        self.consumer: StageConsumer | None = None
        self.log = logs.get(role=self.stage.value)
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: skip the grace period
        self._runs: dict[str, Run] = {}  # by job id
        self._pieces: dict[str, asyncio.Task[None]] = {}  # other runs' pieces, by "job#piece"
        self._consuming: asyncio.Task[None] | None = None
        self._reading = False  # inside a blocking read: let it return rather than cancel it
        self._helpers = AsyncExitStack()
        self._state = "new"
        self._probing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Take a slot, join the consumer group and start consuming; safe to call twice."""
        if self._state != "new":
            return
        self._state = "starting"
        services, s = self.services, self.settings
        if self.slot is not None:
            self.name = await self.slot.acquire()
        # `consumer` names the host, for operators; job logs show tenants `worker` only.
        label = joblogs.worker_label(services.signer, self.stage.value, self.name)
        self.log = self.log.bind(consumer=self.name, worker=label)
        # Pieces of fanned-out jobs first: a started job's pieces before new jobs.
        keys = services.keys
        streams = (
            keys.stage_streams(self.stage)
            if self.tools is None
            else keys.worker_streams(self.stage)
        )
        self.consumer = consumer = StageConsumer(
            services.redis, streams,
            services.keys.stage_group(self.stage), self.name, self.lease_ms,
            rescan_s=min(s.visibility_timeout_s / 10, 2.0),
            paused_key=services.keys.paused(self.stage.value),
        )  # fmt: skip
        await self._remove_leftovers()
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        await consumer.ensure_group()
        await self.setup()
        probers.hold(self.concurrency)  # probe children kept for its runs (and its pieces)
        self._probing = True
        limits = policy.Limits(s.job_max_attempts, s.retry_base_delay_s, s.retry_max_delay_s)
        self.registry = WorkerRegistry(
            services.redis, services.keys, name=self.name, role=self.stage.value,
            concurrency=self.concurrency, runs=self._runs.values, interval_s=self.heartbeat_s,
            visibility_timeout_s=s.visibility_timeout_s,
            slot=self.slot.index if self.slot else None,
        )  # fmt: skip
        self.executor = Executor(
            jobs=self.jobs, stage=self.stage, process=self.process, ack=consumer.ack,
            store=self.store, limits=limits, lease_ms=self.lease_ms, tmp_root=self.tmp_root,
            metrics=services.metrics, ended=self.registry.ended,
            pieces=None if self.tools is None else fanout.piece_store(self.tools),
        )  # fmt: skip
        self.pieces = None if self.tools is None else PieceTaker(
            jobs=self.jobs, store=fanout.piece_store(self.tools), tools=self.tools,
            stage=self.stage, ack=consumer.ack, refresh=consumer.refresh, lease_ms=self.lease_ms,
            max_tries=s.job_max_attempts, tmp_root=self.tmp_root,
        )  # fmt: skip
        self._leases = await self._helpers.enter_async_context(LeaseKeeper(
            self.jobs, consumer, self._runs.values, lease_ms=self.lease_ms,
            interval_s=self.heartbeat_s, log=self.log,
        ))  # fmt: skip
        await self._helpers.enter_async_context(self.registry)  # what `vidstream workers` lists
        self._control = await self._helpers.enter_async_context(
            ControlListener(services.redis, services.keys.control, self._cancel, self.log)
        )
        self._consuming = asyncio.create_task(self._consume(), name=f"{self.name}-consume")
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
        consuming = [self._consuming] if self._consuming else []
        if self.consumer is not None:
            await self.consumer.wake()
        if self._reading:
            await asyncio.wait(consuming, timeout=BLOCK_MS / 1000 + 1)
        await cancel_and_wait(consuming, 1.0)
        # Phase 2: let running jobs finish within the grace period (unless told to hurry).
        if self._runs or self._pieces:
            self.log.info("draining", jobs=len(self._runs), pieces=len(self._pieces),
                          grace_s=self.settings.shutdown_grace_s)  # fmt: skip
            await self._drain(self.settings.shutdown_grace_s)
        # Phase 3: cancel what is left; each job stops its subprocesses, removes its temp files
        # and hands its stream entry back, so another worker takes it up at once.
        tasks = [r.task for r in self._runs.values() if r.task]
        await cancel_and_wait([*tasks, *self._pieces.values()], 15.0)
        # Phase 4: stop the heartbeats (leases; the registry's, which unlists the worker) and the
        # control listener, release the stage's resources (subprocess pools), then the slot.
        await self._helpers.aclose()
        if self.consumer is not None:
            await self.consumer.close()
        await self.teardown()
        if self._probing:
            self._probing = False
            await probers.release(self.concurrency)
        if self.tools is not None and self.tools.downloads is not None:
            await self.tools.downloads.clear()
        if self.slot is not None:
            await self.slot.release()
        self._state = "closed"
        self.log.info("worker_stopped", took_s=round(time.monotonic() - started, 3))

    @property
    def alive(self) -> bool:
        """Consuming, renewing leases and listening for cancellations (none of which a Redis
        outage may end)."""
        consuming = self._consuming is not None and not self._consuming.done()
        return consuming and self._leases.alive and self._control.alive

    def hurry(self) -> None:
        """Cut the shutdown grace period short: running jobs are stopped at once."""
        self._hurry.set()

    async def _drain(self, grace_s: float) -> None:
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            async with asyncio.timeout(grace_s):
                while (self._runs or self._pieces) and not self._hurry.is_set():
                    tasks = [r.task for r in self._runs.values() if r.task]
                    tasks += self._pieces.values()
                    await asyncio.wait([*tasks, hurry], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self.log.warning("grace_period_over", jobs=len(self._runs), pieces=len(self._pieces))
        finally:
            hurry.cancel()

    @property
    def tmp_root(self) -> Path:
        return self.tmp_base / self.name

    async def _remove_leftovers(self) -> None:
        """Remove the temp files of this slot's previous process, and of every other slot on
        this host whose process is gone (a crash leaves a rendered video, or a downloaded
        source, behind), whatever its role."""
        if not self.tmp_base.is_dir():
            return
        if self.slot is None:  # a worker given its name: only its own leftovers
            doomed = [self.tmp_base / self.name]
        else:  # its own slot's jobs (not its `.holder` file), and every dead slot's folder
            own = list(self.tmp_root.iterdir()) if self.tmp_root.is_dir() else []
            doomed = [p for p in own if p.name != ".holder"] + await self.slot.leftovers()
        for path in doomed:
            await asyncio.to_thread(shutil.rmtree, path, True)

    async def setup(self) -> None:
        """Start the stage's own resources (before any job is taken)."""

    async def teardown(self) -> None:
        """Stop the stage's own resources (after every job has stopped)."""

    @abc.abstractmethod
    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        """Run this stage for `job`, writing scratch files under `workdir` only, and end with
        `run.finish(outputs)`. Raise a `JobError` to fail or retry the job (see `policy`)."""

    # -- consuming ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        backoff = Backoff()
        while not self._stopping.is_set():
            await self._slots.acquire()
            self._reading = True
            try:
                found = await self.consumer.next()
                backoff.reset()
            except RedisError as exc:
                self._slots.release()
                self.log.warning("redis_unavailable", error=str(exc))
                await backoff.sleep(self._stopping)
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
        if "piece" in fields and self.pieces is not None:
            self._spawn_piece(self.pieces, entry_id, fields)
            return
        run = new_run(self.jobs, self.stage, self.name, entry_id, fields, secrets.token_hex(4),
                      self.log)  # fmt: skip
        if run.job_id in self._runs:  # a duplicate entry for a job this worker is running
            self._slots.release()
            return
        run.task = asyncio.create_task(self.executor.handle(run), name=f"{self.name}-{run.job_id}")
        self._runs[run.job_id] = run

        def done(task: asyncio.Task[None]) -> None:
            self._slots.release()
            self._runs.pop(run.job_id, None)
            if not task.cancelled() and task.exception() is not None:
                self.log.error("job_handler_crashed", job_id=run.job_id, exc_info=task.exception())

        run.task.add_done_callback(done)

    def _spawn_piece(self, pieces: PieceTaker, entry_id: str, fields: dict[str, str]) -> None:
        """Work a piece of another run's fanned-out stage (`actors.pieces`)."""
        key = f"{fields.get('job_id', '')}#{fields.get('piece', '')}"
        if key in self._pieces:  # a second entry for a piece this worker is working
            self._slots.release()
            return
        owner = f"{self.name}:{secrets.token_hex(4)}"
        task = asyncio.create_task(
            pieces.handle(entry_id, fields, owner, self._stopping, self.log),
            name=f"{self.name}-{key}",
        )
        self._pieces[key] = task

        def done(task: asyncio.Task[None]) -> None:
            self._slots.release()
            self._pieces.pop(key, None)
            if not task.cancelled() and task.exception() is not None:
                self.log.error("piece_handler_crashed", piece=key, exc_info=task.exception())

        task.add_done_callback(done)

    def _cancel(self, job_id: str) -> None:
        """A user cancelled `job_id`: stop its run and its pieces if this worker has them."""
        run = self._runs.get(job_id)
        if run is not None and run.task:
            self.log.info("cancelling_job", job_id=job_id)
            run.stop(RunState.CANCELLED)
        for key, task in list(self._pieces.items()):
            if key.partition("#")[0] == job_id:
                self.log.info("cancelling_piece", job_id=job_id, piece=key.partition("#")[2])
                task.cancel()
