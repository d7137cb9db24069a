"""Housekeeping every role process takes part in, done by one process at a time.

- promote: retries that are due move from the delayed set onto their stage's stream (every
  second, so a retry starts within about a second of its time);
- trim: stage streams drop the entries every consumer is done with (every minute).

Each process runs the loops, but a step only runs where it wins a short Redis lock (SET NX PX,
expiring before the next period), so the work is done once per period however many processes
there are, and goes on as long as any process runs.
"""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from vidstream import bus, logs
from vidstream.jobs import Stage
from vidstream.jobstore import JobStore
from vidstream.keys import Keys
from vidstream.tasks import Service, every

PROMOTE_INTERVAL_S = 1.0
TRIM_INTERVAL_S = 60.0


class Maintenance(Service):
    def __init__(
        self, redis: Redis, keys: Keys, jobs: JobStore, *,
        promote_interval_s: float = PROMOTE_INTERVAL_S, trim_interval_s: float = TRIM_INTERVAL_S,
    ) -> None:  # fmt: skip
        self.redis, self.keys, self.jobs = redis, keys, jobs
        self.promote_interval_s, self.trim_interval_s = promote_interval_s, trim_interval_s
        self._token = secrets.token_hex(8)
        self.log = logs.get(role="maintenance")

    async def run(self) -> None:
        await asyncio.gather(
            every(self.promote_interval_s, self.promote, "promote", self.stopping),
            every(self.trim_interval_s, self.trim, "trim", self.stopping),
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

    async def trim(self) -> None:
        """Drop stage-stream entries every consumer is done with, if this process's turn."""
        if not await self._won("trim", self.trim_interval_s):
            return
        for stage in Stage:
            stream = self.keys.stage_stream(stage)
            if not await self.redis.exists(stream):
                continue
            safe = await bus.trim_point(self.redis, stream, self.keys.stage_group(stage))
            if safe:
                await self.redis.xtrim(stream, minid=safe, approximate=True)
