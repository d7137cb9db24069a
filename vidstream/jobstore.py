"""Job state in Redis: create, read, and apply `state.Transition`s atomically.

Each transition is one Lua script over the job's two keys (same hash slot): it checks the current
status, writes the new fields and appends the event to the job's history. A short entry naming the
job then goes on the shared events stream, which the notifiers tail to learn which history to read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from vidstream import bus
from vidstream.jobs import Event, EventName, Job, Stage, Status
from vidstream.keys import Keys
from vidstream.state import Transition

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
local fields = cjson.decode(ARGV[1])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'queued',
  'status', fields.status, 'stage', '', 'progress', fields.progress, 'at', fields.created_at,
  'data', '')
"""

_TRANSITION = """
local a = cjson.decode(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'status', 'stage', 'progress', 'outputs')
if not cur[1] then return {'missing', ''} end
if not a['from'][cur[1]] then return {'rejected', cur[1]} end
if a.expect_stage and cur[2] ~= a.expect_stage then return {'rejected', cur[1]} end
local old = tonumber(cur[3]) or 0
local progress = old
if a.progress and a.progress > old then progress = a.progress end
if a.skip_if_no_progress and progress <= old then return {'unchanged', cur[1]} end
local stage = cur[2]
if a.stage then stage = a.stage end
redis.call('HSET', KEYS[1], 'status', a.status, 'stage', stage, 'progress', progress,
  'updated_at', a.now)
for k, v in pairs(a.fields) do redis.call('HSET', KEYS[1], k, v) end
if a.outputs then
  local outputs = cjson.decode(cur[4] or '{}')
  for k, v in pairs(a.outputs) do outputs[k] = v end
  redis.call('HSET', KEYS[1], 'outputs', cjson.encode(outputs))
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', a.maxlen, '*', 'event', a.event,
  'status', a.status, 'stage', stage, 'progress', progress, 'at', a.now, 'data', a.data)
if a.ttl > 0 then
  redis.call('EXPIRE', KEYS[1], a.ttl)
  redis.call('EXPIRE', KEYS[2], a.ttl)
end
return {'ok', id}
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of a transition: applied (with its event id), or why not."""

    outcome: str  # ok | rejected | unchanged | missing
    status: Status | None
    event_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class JobStore:
    """Reads and writes jobs and their event histories in Redis."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl_s: int,
        history_max: int = 2000,
        feed_max: int = 20000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.history_max = history_max
        self.feed_max = feed_max
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)

    async def create(self, job: Job, first_stage: Stage = Stage.TRANSCRIBE) -> Event:
        """Store a new job, record its `queued` event and hand it to the first stage's stream."""
        keys = [self.keys.job(job.id), self.keys.job_events(job.id)]
        event_id = await self._create(
            keys=keys, args=[json.dumps(job.to_redis()), self.history_max]
        )
        if not event_id:
            raise RuntimeError(f"job {job.id} already exists")
        # The stage stream lives in another hash slot than the job, so it is a second step. A
        # failure between the two leaves a queued job without a message; the client gets an
        # error, not a 202, and its job never starts (recovering those is for crash recovery).
        async with self.redis.pipeline(transaction=False) as pipe:
            self._feed(pipe, job.id, EventName.QUEUED)
            pipe.xadd(self.keys.stage_stream(first_stage), {"job_id": job.id})
            await pipe.execute()
        return Event(event_id, job.id, EventName.QUEUED, job.status, None, 0.0, job.created_at)

    async def get(self, job_id: str) -> Job | None:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return Job.from_redis(raw) if raw else None

    async def apply(self, job_id: str, transition: Transition) -> Applied:
        """Apply `transition` if the job's current status allows it; never raises for that."""
        arg = transition.to_script_args(time.time(), self.history_max, self.ttl_s)
        keys = [self.keys.job(job_id), self.keys.job_events(job_id)]
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._transition(keys=keys, args=[arg], client=pipe)
            self._feed(pipe, job_id, transition.event)
            (outcome, value), *_ = await pipe.execute()
        if outcome == "ok":
            return Applied("ok", transition.status, value)
        return Applied(outcome, Status(value) if value else None)

    async def enqueue(self, job_id: str, stage: Stage) -> None:
        await self.redis.xadd(self.keys.stage_stream(stage), {"job_id": job_id})

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
        pipe.xadd(
            self.keys.events,
            {"job_id": job_id, "event": event.value},
            maxlen=self.feed_max,
            approximate=True,
        )
