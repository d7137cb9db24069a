"""Housekeeping every role process takes part in, done by one process at a time.

- promote: retries that are due move from the delayed set onto their stage's stream (every
  second, so a retry starts within about a second of its time);
- trim: stage streams drop the entries every consumer is done with (every minute);
- reap: a dead worker's consumer leaves its group once nothing is pending under it (its entries
  were claimed by others) and its heartbeat has lapsed (every 30 s).

Each process runs the loops, but a step only runs where it wins a short Redis lock (SET NX PX,
expiring before the next period), so the work is done once per period however many processes
there are, and goes on as long as any process runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vidstream.core import logs
from vidstream.core.tasks import Service, every
from vidstream.job.model import Stage
from vidstream.ops.retention import Retention
from vidstream.ops.workers import declared_visibility_timeout
from vidstream.state import bus, scripts
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys

PROMOTE_INTERVAL_S = 1.0
TRIM_INTERVAL_S = 60.0
RETENTION_INTERVAL_S = 5.0
FEED_MAX_AGE_S = 600
REAP_INTERVAL_S = 30.0
REAP_LOCK_S = 2.0
DEFAULT_VISIBILITY_TIMEOUT_S = 30.0  # VISIBILITY_TIMEOUT_S's default


class Maintenance(Service):
    def __init__(
        self, redis: Redis, keys: Keys, jobs: JobStore, *,
        promote_interval_s: float = PROMOTE_INTERVAL_S, trim_interval_s: float = TRIM_INTERVAL_S,
        reap_interval_s: float | None = None, visibility_timeout_s: float | None = None,
        retention: Retention | None = None,
    ) -> None:  # fmt: skip
        self.redis, self.keys, self.jobs = redis, keys, jobs
        self.retention = retention
        self.promote_interval_s, self.trim_interval_s = promote_interval_s, trim_interval_s
        self.reap_interval_s = reap_interval_s or REAP_INTERVAL_S
        self.visibility_timeout_s = visibility_timeout_s
        self._reap = scripts.register(redis, "consumer_reap")
        self._token = secrets.token_hex(8)
        self.log = logs.get(role="maintenance")

    async def run(self) -> None:
        await asyncio.gather(
            every(self.promote_interval_s, self.promote, "promote", self.stopping),
            every(self.trim_interval_s, self.trim, "trim", self.stopping),
            every(self.reap_interval_s, self.reap, "reap", self.stopping),
            every(RETENTION_INTERVAL_S, self.retain, "retention", self.stopping),
        )

    async def _won(self, step: str, period_s: float) -> bool:
        # The lock lapses a little before the next period, so the next winner may be anyone.
        ttl_ms = max(int(period_s * 900), 1)
        return bool(await self.redis.set(self.keys.lock(step), self._token, nx=True, px=ttl_ms))

    async def promote(self) -> int:
        """Move due retries onto their streams, if this process's turn; return how many."""
        if not await self._won("promote", self.promote_interval_s):
            return 0
        moved = await self.jobs.promote_due()
        if moved:
            self.log.info("retries_promoted", count=moved)
        return moved

    async def retain(self) -> None:
        """Remove ended jobs and abandoned uploads that are due, if this process's turn: batch
        after batch while full, for half a period at most (the lock holds for 0.9 of one). One
        batch a period would cap removal at 20 jobs/s, below what a busy gateway creates."""
        if self.retention is None or not await self._won("retention", RETENTION_INTERVAL_S):
            return
        until = time.monotonic() + RETENTION_INTERVAL_S / 2
        while (await self.retention.sweep()).more and time.monotonic() < until:
            pass

    async def trim(self) -> None:
        """Drop stage-stream entries every consumer is done with, if this process's turn."""
        if not await self._won("trim", self.trim_interval_s):
            return
        # The events feed only carries live events to notifiers (histories are per job): ten
        # minutes of it is plenty, however busy (its length is capped when written, too).
        oldest = int((time.time() - FEED_MAX_AGE_S) * 1000)
        await self.redis.xtrim(self.keys.events, minid=f"{oldest}-0", approximate=True)
        for stage in Stage:
            for stream in self.keys.worker_streams(stage):
                if not await self.redis.exists(stream):
                    continue
                safe = await bus.trim_point(self.redis, stream, self.keys.stage_group(stage))
                if safe:
                    await self.redis.xtrim(stream, minid=safe, approximate=True)

    async def reap(self) -> list[str]:
        """Remove from the stage groups the consumers of workers that are gone, if this
        process's turn; return their names. Gone: no heartbeat (`Keys.worker`), idle longer
        than the visibility timeout, and nothing pending (a live worker's consumer is never
        idle that long; one with pending entries waits until other workers claimed them)."""
        # A pass changes nothing twice (each deletion is checked in one step), so the lock only
        # keeps passes apart: held briefly, a winner that dies holds nobody up.
        if not await self._won("reap", min(self.reap_interval_s, REAP_LOCK_S)):
            return []
        # The workers' own setting when this process was not given it (they write it down).
        timeout_s = self.visibility_timeout_s
        if timeout_s is None:
            timeout_s = await declared_visibility_timeout(self.redis, self.keys)
        idle_ms = int(1000 * (DEFAULT_VISIBILITY_TIMEOUT_S if timeout_s is None else timeout_s))
        reaped = []
        for stage in Stage:
            group = self.keys.stage_group(stage)
            for stream in self.keys.worker_streams(stage):
                try:
                    consumers: list[dict[str, Any]] = await self.redis.xinfo_consumers(
                        stream, group
                    )
                except ResponseError:  # no such stream or group
                    continue
                for consumer in consumers:
                    name = str(consumer["name"])
                    if consumer["pending"] or int(consumer["idle"]) < idle_ms:
                        continue
                    if await self.redis.exists(self.keys.worker(name)):
                        continue
                    if await self._reap(keys=[stream], args=[name, group]):
                        self.log.info("consumer_removed", stream=stream, consumer=name)
                        reaped.append(name)
        return reaped
