"""Hand-offs confirmed on replicas before they count as done (`REDIS_WAIT_REPLICAS`).

Redis replicates asynchronously: a write the primary acknowledged may not have reached a replica
when the primary dies, and the replica Sentinel promotes then never had it (docs/redis.md). For
the writes whose loss a user would notice (a job made or cancelled, a stage finished, a retry,
a job's end) the writer sends `WAIT` after them, on the same connection, and a hand-off fewer
replicas than asked confirmed in time is `NotReplicated`: the gateway answers 503, a worker
keeps its outcome and sends it again (a resend changes nothing, or makes the hand-off again on
a new primary that lost it).

`WAIT` waits for this connection's last write to reach the replicas. A hand-off that wrote
nothing on it (a resend whose first try had been applied, a job another connection made, read
back for a resent request) would leave that offset behind the write it stands for, and WAIT
would count a lagging replica as having it; so a PUBLISH (replicated, on a channel nobody
reads, storing nothing) goes first: whatever the primary holds up to now is then what WAIT
waits for (tests/test_failover.py shows the difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError


class NotReplicated(RedisError):
    """A write was made on the primary but fewer replicas than asked confirmed it in time: it
    is lost if the primary fails now. `answer` is what the write itself answered."""

    def __init__(self, wanted: int, confirmed: int, answer: Any = None) -> None:
        super().__init__(
            f"{confirmed} of {wanted} Redis replicas confirmed the write in time "
            "(REDIS_WAIT_REPLICAS)"
        )
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must confirm a hand-off, within how long (ms), and the channel the
    probe publishes on (`Keys.replicated`)."""

    replicas: int
    timeout_ms: int
    channel: str

    def queue(self, pipe: Pipeline) -> None:
        """Queue, after the hand-off's write, what confirms it: the probe, then WAIT."""
        pipe.publish(self.channel, "")
        pipe.wait(self.replicas, self.timeout_ms)

    def check(self, results: list[Any], answer: Any = None) -> None:
        """Raise `NotReplicated` (carrying the write's `answer`) unless the WAIT queued last
        counted enough replicas."""
        confirmed = int(results[-1])
        if confirmed < self.replicas:
            raise NotReplicated(self.replicas, confirmed, answer)

    async def confirm(self, redis: Redis) -> None:
        """Return once everything the primary holds now is on enough replicas (for an answer
        that reads a hand-off back, such as a resent request's job), or raise `NotReplicated`."""
        async with redis.pipeline(transaction=False) as pipe:
            self.queue(pipe)
            self.check(await pipe.execute())
