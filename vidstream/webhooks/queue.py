"""The webhook queue in Redis: attempts on the `webhooks` stream, retries in a sorted set.

A job's terminal transition writes the first attempt (`job_id`, `event`, `event_id`); a retry
goes back on the stream from the sorted set (`promote`), carrying the first attempt's id (the
delivery id receivers see) and its number. The deliverers share one consumer group, so each
attempt is made by one of them. An entry is acked only once its attempt was delivered, refused,
given up, or its retry is in the sorted set (one atomic step), so an entry of a deliverer that
died mid-attempt stays pending until another reclaims it (`StageConsumer`, XAUTOCLAIM).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from vidstream.state import scripts
from vidstream.state.bus import Entry, stream_id
from vidstream.state.consumer import StageConsumer
from vidstream.state.jobstore import SHARED_MAX
from vidstream.state.keys import Keys


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at delivering a job's end."""

    entry_id: str  # this attempt's stream entry
    delivery_id: str  # the first attempt's entry id, the same on every retry
    job_id: str
    event: str  # completed, failed or cancelled
    event_id: str  # the job's event that ended it
    attempt: int  # 1 for the first

    @classmethod
    def from_entry(cls, entry: Entry) -> Delivery | None:
        """The attempt an entry describes, or None for a malformed or deleted one."""
        entry_id, fields = entry
        try:
            return cls(
                entry_id, fields.get("delivery") or entry_id, fields["job_id"], fields["event"],
                fields.get("event_id", ""), int(fields.get("attempt") or 1),
            )  # fmt: skip
        except (KeyError, ValueError):
            return None

    @property
    def ended_ms(self) -> int:
        """When the job ended (ms, Redis time): the first attempt was written in that step."""
        return stream_id(self.delivery_id)[0]

    def next_attempt(self) -> str:
        """The retry as the sorted set keeps it."""
        return json.dumps({
            "delivery": self.delivery_id, "job_id": self.job_id, "event": self.event,
            "event_id": self.event_id, "attempt": self.attempt + 1,
        }, sort_keys=True)  # fmt: skip


class WebhookQueue:
    def __init__(self, redis: Redis, keys: Keys, consumer: str, claim_idle_ms: int) -> None:
        self.redis, self.keys = redis, keys
        # Idle longer than `claim_idle_ms` (longer than any attempt): its deliverer is gone.
        self.consumer = StageConsumer(
            redis, keys.webhooks, keys.webhook_group, consumer, claim_idle_ms
        )
        self._retry = scripts.register(redis, "webhook_retry")
        self._promote = scripts.register(redis, "webhook_promote")

    async def ensure_group(self) -> None:
        await self.consumer.ensure_group()

    async def next(self) -> Delivery | None:
        """The next attempt to make, or None after one blocking read found nothing."""
        got = await self.consumer.next()
        if got is None:
            return None
        delivery = Delivery.from_entry(got[0])
        if delivery is None:  # nothing to deliver: let it go
            await self.consumer.ack(got[0][0])
        return delivery

    async def ack(self, delivery: Delivery) -> None:
        await self.consumer.ack(delivery.entry_id)

    async def retry(self, delivery: Delivery, delay_s: float, deadline_ms: int) -> bool:
        """Schedule the next attempt in `delay_s` and ack this one; past `deadline_ms` only ack.
        Returns whether it was scheduled."""
        keys = [self.keys.webhook_retries, self.keys.webhooks]
        due_in_ms = int(delay_s * 1000)
        args: list[str | int] = [self.keys.webhook_group, delivery.entry_id,
                                 delivery.next_attempt(), due_in_ms, deadline_ms]  # fmt: skip
        return bool(await self._retry(keys=keys, args=args))

    async def promote(self, limit: int = 100) -> int:
        """Move up to `limit` retries that are due onto the stream; return how many."""
        keys = [self.keys.webhook_retries, self.keys.webhooks]
        return int(await self._promote(keys=keys, args=[limit, SHARED_MAX]))

    async def pending(self) -> int:
        """How many entries this consumer holds unacknowledged."""
        info = await self.redis.xpending_range(
            self.keys.webhooks, self.keys.webhook_group, "-", "+", 1,
            consumername=self.consumer.name,
        )  # fmt: skip
        return len(info)
