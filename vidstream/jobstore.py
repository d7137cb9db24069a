"""Job state in Redis: create, read, and apply `state.Transition`s atomically (see `lua.py`).

After each transition a short entry naming the job goes on the shared events stream, which the
notifiers tail to learn whose history to read. Retries wait in a sorted set until they are due.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from vidstream import bus, lua
from vidstream.jobs import STAGES, Event, EventName, Job, Stage, Status
from vidstream.keys import Keys
from vidstream.state import Push, Transition


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of a transition: applied (with its event id), or why not."""

    outcome: str  # see lua.TRANSITION
    status: Status | None
    event_id: str | None = None
    attempts: int = 0
    gen: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


# What renew() says of each lease.
HELD, TAKEN, RELEASED = 1, 0, -1


class JobStore:
    """Reads and writes jobs, their event histories, retries and dead letters in Redis."""

    def __init__(
        self, redis: Redis, keys: Keys, *, ttl_s: int, history_max: int = 2000,
        feed_max: int = 20000,
    ) -> None:  # fmt: skip
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.history_max = history_max
        self.feed_max = feed_max
        self._create = redis.register_script(lua.CREATE)
        self._transition = redis.register_script(lua.TRANSITION)
        self._renew = redis.register_script(lua.RENEW)
        self._promote = redis.register_script(lua.PROMOTE)
        self._handback = redis.register_script(lua.HANDBACK)

    async def create(self, job: Job, first_stage: Stage = Stage.TRANSCRIBE) -> None:
        """Store a new job, record its `queued` event and hand it to the first stage, in one
        step. Ids are random, so a job that exists already is this request resent."""
        keys = [self.keys.job(job.id), self.keys.job_events(job.id)]
        keys.append(self.keys.stage_stream(first_stage))
        await self._create(keys=keys, args=[json.dumps(job.to_redis()), self.history_max])
        await self.redis.xadd(self.keys.events, {"job_id": job.id, "event": "queued"},
                              maxlen=self.feed_max, approximate=True)  # fmt: skip

    async def get(self, job_id: str) -> Job | None:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return Job.from_redis(raw) if raw else None

    async def apply(self, job_id: str, transition: Transition) -> Applied:
        """Apply `transition` if the job's state allows it; never raises for that."""
        arg = transition.to_script_args(time.time(), self.history_max, self.ttl_s)
        keys = [self.keys.job(job_id), self.keys.job_events(job_id)]
        if transition.push is not None:
            keys.append(self._push_key(transition.push))
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._transition(keys=keys, args=[arg], client=pipe)
            self._feed(pipe, job_id, transition.event)
            (outcome, value, attempts, gen), *_ = await pipe.execute()
        if outcome == "ok":
            return Applied("ok", transition.status, value, int(attempts), int(gen))
        return Applied(outcome, Status(value) if value else None, None, int(attempts), int(gen))

    def _push_key(self, push: Push) -> str:
        if push.kind == "stage":
            return self.keys.stage_stream(push.stage)
        if push.kind == "retry":
            return self.keys.delayed
        return self.keys.dead_letters

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> list[int]:
        """Extend the lease of each (job id, owner): HELD, TAKEN (by another run) or RELEASED."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, owner in leases:
                await self._renew(keys=[self.keys.job(job_id)], args=[owner, lease_ms], client=pipe)
            return [int(state) for state in await pipe.execute()]

    async def hand_back(self, job_id: str, owner: str, stage: Stage) -> bool:
        """Give a run's stage up and put the job back on the stage's stream, in one step."""
        keys = [self.keys.job(job_id), self.keys.stage_stream(stage)]
        return bool(await self._handback(keys=keys, args=[owner]))

    async def promote_due(self) -> int:
        """Move every retry that is due onto its stage's stream; return how many."""
        keys = [self.keys.delayed, *(self.keys.stage_stream(s) for s in STAGES)]
        return int(await self._promote(keys=keys, args=[s.value for s in STAGES]))

    async def events(
        self, job_id: str, after: str = "0-0", count: int | None = None
    ) -> list[Event]:
        """The job's events after the stream id `after`, oldest first."""
        entries = await bus.history(self.redis, self.keys.job_events(job_id), after, count=count)
        return [Event.from_stream(job_id, entry_id, fields) for entry_id, fields in entries]

    async def snapshot(self, job_id: str) -> tuple[Job | None, str]:
        """The job and the id of its latest event, read together so no event falls between."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.xrevrange(self.keys.job_events(job_id), count=1)
            raw, last = await pipe.execute()
        if not raw:
            return None, "0-0"
        return Job.from_redis(raw), (last[0][0] if last else "0-0")

    def _feed(self, pipe: Any, job_id: str, event: EventName) -> None:
        # Written even when the transition was refused: a spurious entry only makes a notifier
        # read a history that has nothing new, which is harmless.
        pipe.xadd(self.keys.events, {"job_id": job_id, "event": event.value},
                  maxlen=self.feed_max, approximate=True)  # fmt: skip
