"""A worker's share of other jobs' fanned-out stages: the entries of the stage's piece stream,
each one piece of a job whose stage another run coordinates (`kinds.fanout`).

A piece entry is acked once the piece is done, recorded failed (and queued again for another
try, on any worker), found done or taken already, or its job no longer runs the stage. At
shutdown the piece is handed back and queued again, so another worker takes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from redis.exceptions import RedisError

from vidstream import kinds
from vidstream.job.model import Stage, is_job_id
from vidstream.kinds import fanout
from vidstream.kinds.base import Tools
from vidstream.state.jobstore import JobStore
from vidstream.state.pieces import PieceStore, Taken

Ack = Callable[[str], Awaitable[object]]
Refresh = Callable[[list[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PieceTaker:
    jobs: JobStore
    store: PieceStore
    tools: Tools
    stage: Stage
    ack: Ack
    refresh: Refresh  # keeps an entry ours while its piece runs (as the lease keeper does)
    lease_ms: int
    max_tries: int
    tmp_root: Path

    async def handle(
        self, entry_id: str, fields: dict[str, str], owner: str,
        stopping: asyncio.Event, log: structlog.stdlib.BoundLogger,
    ) -> None:  # fmt: skip
        """Work the piece the entry names, if it is still to be done; ack the entry."""
        job_id, index = fields.get("job_id", ""), fields.get("piece", "")
        log = log.bind(job_id=job_id, stage=self.stage.value, piece=index)
        try:
            await self._take(entry_id, job_id, fields.get("plan", ""), index, owner, log)
        except RedisError as exc:  # the entry stays pending: reclaimed, or read again
            log.warning("piece_interrupted", reason="redis", error=str(exc))
            return
        except asyncio.CancelledError:
            if stopping.is_set():  # shutting down: handed back, queued again for another
                log.info("piece_interrupted", reason="shutdown")
                with contextlib.suppress(RedisError, TimeoutError):
                    async with asyncio.timeout(3.0):
                        await asyncio.shield(self._again(job_id, index))
                        await asyncio.shield(self.ack(entry_id))
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            log.info("piece_cancelled")  # the job was cancelled
        await asyncio.shield(self.ack(entry_id))

    async def _take(
        self, entry_id: str, job_id: str, plan_id: str, index: str, owner: str,
        log: structlog.stdlib.BoundLogger,
    ) -> None:  # fmt: skip
        job = await self.jobs.get(job_id) if is_job_id(job_id) else None
        plan = await self.store.plan(job_id, self.stage) if job is not None else None
        work = kinds.piece_work(job.kind, self.stage) if job is not None else None
        if (
            job is None or plan is None or work is None or plan.id != plan_id
            or not (index.isascii() and index.isdigit()) or int(index) >= len(plan.pieces)
        ):  # fmt: skip
            log.info("piece_skipped", reason="no such piece")
            return
        taken, i, attempt = await self.store.claim(
            plan, int(index), owner, self.lease_ms, self.max_tries
        )
        if taken is not Taken.OK:
            log.info("piece_skipped", reason=taken.value)
            return
        ended = await fanout.work_piece(
            self.store, self.tools, job, plan, plan.pieces[i], owner, self.lease_ms, work,
            self.tmp_root / f"{job_id}-piece-{i}", log.bind(piece_try=attempt),
            refresh=lambda: self.refresh([entry_id]),
        )  # fmt: skip
        if ended is fanout.Ended.FAILED:  # another try, on whichever worker reads it first
            await self.store.queue(plan, [i])

    async def _again(self, job_id: str, index: str) -> None:
        plan = await self.store.plan(job_id, self.stage)
        if plan is not None and index.isascii() and index.isdigit():
            await self.store.queue(plan, [int(index)])
