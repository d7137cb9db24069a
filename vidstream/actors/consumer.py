"""One worker's side of a stage stream's consumer group.

Where the next entry comes from, in order:
1. entries still pending under this consumer's name: a restart after a crash takes them up;
2. an entry another consumer has left idle for longer than the visibility timeout (XAUTOCLAIM):
   its worker died, since a live worker refreshes its entries (XCLAIM ... JUSTID);
3. a new entry (XREADGROUP >), waiting up to one block.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from vidstream import bus
from vidstream.bus import Entry
from vidstream.services import BLOCK_MS

_CLAIM_CALLS = 50


class StageConsumer:
    def __init__(
        self, redis: Redis, stream: str, group: str, name: str, visibility_ms: int,
        rescan_s: float = 2.0,
    ) -> None:  # fmt: skip
        self.redis, self.stream, self.group, self.name = redis, stream, group, name
        self.visibility_ms = visibility_ms  # idle longer than this: its worker is gone
        self.rescan_s = rescan_s
        self.waker = bus.Waker(redis)  # the blocking read's own connection
        self._own: str | None = "0"  # cursor through our own pending entries; None when done
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; a Redis that lost them gets them back."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next(self) -> tuple[Entry, bool] | None:
        """The next entry to run and whether it was reclaimed from another consumer, or None
        after one blocking read found nothing."""
        try:
            return await self._next()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (a Redis restarted without its data): recreate it
            # and start over with our own pending entries.
            await self.ensure_group()
            self._own, self._claim_cursor = "0", "0-0"
            return None

    async def _next(self) -> tuple[Entry, bool] | None:
        if self._own is not None:
            batch = await bus.read_group(
                self.redis, self.group, self.name, self.stream, self._own, count=1, block_ms=None
            )
            if batch:
                self._own = batch[0][0]
                return batch[0], False
            self._own = None
        if time.monotonic() >= self._next_claim:
            # XAUTOCLAIM looks at a few pending entries per call: go on through the whole list
            # (bounded) before resting, so a dead worker's entry is found without delay.
            for _ in range(_CLAIM_CALLS):
                self._claim_cursor, claimed = await bus.autoclaim(
                    self.redis, self.stream, self.group, self.name, self.visibility_ms,
                    self._claim_cursor,
                )  # fmt: skip
                if claimed:
                    return claimed[0], True
                if self._claim_cursor == "0-0":
                    break
            # Nothing idle long enough: look again after a fraction of the timeout.
            self._next_claim = time.monotonic() + self.rescan_s
        try:
            blocking = await self.waker.connection()
            batch = await bus.read_group(
                blocking, self.group, self.name, self.stream, ">", count=1, block_ms=BLOCK_MS
            )
        except RedisError:
            self.waker.lost()
            raise
        return (batch[0], False) if batch else None

    async def wake(self) -> None:
        """End a blocking read in flight now (it returns nothing): the worker is stopping."""
        await self.waker.wake()

    async def close(self) -> None:
        await self.waker.aclose()

    async def ack(self, entry_id: str) -> None:
        await self.redis.xack(self.stream, self.group, entry_id)

    async def refresh(self, entry_ids: list[str]) -> None:
        """Reset the idle time of those of `entry_ids` still pending under our name, so no other
        worker reclaims a job we are running, however long it takes."""
        if not entry_ids:
            return
        mine = await bus.pending_ids(self.redis, self.stream, self.group, self.name)
        ours: list[Any] = [entry_id for entry_id in entry_ids if entry_id in mine]
        if ours:
            await self.redis.xclaim(self.stream, self.group, self.name, 0, ours, justid=True)
