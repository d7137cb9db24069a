"""The control listener: tails the control stream and passes each cancel notice on.

Every worker reads every notice (no consumer group): only the one running the job acts on it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream.core.backoff import Backoff
from vidstream.core.tasks import Service
from vidstream.job.protocol import Notice
from vidstream.state import bus
from vidstream.state.bus import BLOCK_MS


class ControlListener(Service):
    def __init__(
        self, redis: Redis, stream: str, on_cancel: Callable[[str], None],
        log: structlog.stdlib.BoundLogger,
    ) -> None:  # fmt: skip
        self.redis, self.stream, self.on_cancel, self.log = redis, stream, on_cancel, log
        # A concrete id, not "$": "$" on every call would skip notices sent between two reads.
        # Kept across Redis errors, so notices sent during an outage are read after it.
        self._cursor: str | None = None
        self.waker = bus.Waker(redis)

    async def run(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                await self._read()
                backoff.reset()
            except RedisError as exc:
                self.log.warning("redis_unavailable", error=str(exc), listener="control")
                await backoff.sleep(self.stopping)

    async def wake(self) -> None:
        await self.waker.wake()

    async def close(self) -> None:
        await super().close()
        await self.waker.aclose()

    async def _read(self) -> None:
        if self._cursor is None:
            self._cursor = await bus.last_id(self.redis, self.stream) or "0-0"
        streams = {self.stream: self._cursor}
        try:
            blocking = await self.waker.connection()
            found = await bus.read(blocking, streams, count=100, block_ms=BLOCK_MS)
        except RedisError:
            self.waker.lost()
            raise
        for _, messages in found:
            for entry_id, fields in messages:
                self._cursor = entry_id
                if fields.get("action") == Notice.CANCEL and fields.get("job_id"):
                    self.on_cancel(fields["job_id"])
