"""Job state in Redis: create, read, and apply `protocol.ops` operations atomically (the `job_*`
scripts in `lua/`).

After each operation that records an event, the event itself also goes on the shared events
feed, which the notifiers tail to push it to subscribers without reading the job's history.
Retries wait in a sorted set until they are due.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from vidstream.job.model import PRIORITIES, Job, Stage, Status
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol import Event, Intake, Op, Outcome, Push, PushKind
from vidstream.job.protocol.ops import encode
from vidstream.state import bus, scripts
from vidstream.state.keys import Keys
from vidstream.state.replication import Replication

T = TypeVar("T")

# Shared streams (dead letters, cancel notices) keep about this many entries.
SHARED_MAX = 10_000
EXPIRY_MARGIN_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of an operation: applied (with its event id), or why not."""

    outcome: Outcome
    status: Status | None
    event_id: str | None = None
    attempts: int = 0
    gen: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True)
class Binding:
    """An Idempotency-Key to bind to the job in the step that creates it (`http.idempotency`)."""

    key: str  # the Redis key of the entry
    fingerprint: str
    ttl_s: int
    nonce: str  # the request's own: its reservation is `pending <nonce> <fingerprint>`

    def keys_args(self) -> tuple[list[str], list[str | int]]:
        return [self.key], [self.fingerprint, self.ttl_s, self.nonce]


class Lease(IntEnum):
    """What renew() says of a run's lease (the values the RENEW script returns)."""

    HELD = 1
    TAKEN = 0  # by another run
    RELEASED = -1  # by a cancel, or the job is gone
    MOVED_ON = -2  # another run finished the stage: the job went on without this one


class JobStore:
    """Reads and writes jobs, their event histories, retries and dead letters in Redis."""

    def __init__(
        self, redis: Redis, keys: Keys, *, ttl_s: int, failed_ttl_s: int | None = None,
        events_ttl_s: int | None = None, history_max: int = 2000, feed_max: int = 50_000,
        replication: Replication | None = None,
    ) -> None:  # fmt: skip
        self.redis = redis
        # REDIS_WAIT_REPLICAS: hand-offs wait for replicas, or raise `NotReplicated` (None: off).
        self.replication = replication
        self.keys = keys
        self.ttl_s = ttl_s  # how long an ended job is kept (JOB_RETENTION_S)
        self.failed_ttl_s = failed_ttl_s or ttl_s  # a failed one (FAILED_JOB_RETENTION_S)
        self.events_ttl_s = events_ttl_s or ttl_s  # its history (EVENT_RETENTION_S)
        self.history_max = history_max
        self.feed_max = feed_max
        self._create = scripts.register(redis, "job_create")
        self._create_from_upload = scripts.register(redis, "job_create_from_upload")
        self._transition = scripts.register(redis, "job_transition")
        self._renew = scripts.register(redis, "job_renew")
        self._promote = scripts.register(redis, "job_promote")
        self._keep = scripts.register(redis, "job_keep")

    async def create(self, job: Job, bind: Binding | None = None) -> Intake:
        """Store a new job, record its `queued` event and hand it to its pipeline's first stage,
        in one step (binding the request's Idempotency-Key to it, if given). Ids are random, so
        a job that exists already is this request resent (`EXISTS`); `KEY_TAKEN` when the key
        is no longer this request's reservation (nothing is written then)."""
        keys, args = self._create_args(job)
        if bind is not None:
            more_keys, more_args = bind.keys_args()
            keys, args = keys + more_keys, args + more_args
        answer = await self._write(self._create, keys, args, str)
        if answer == Intake.KEY_TAKEN:
            return Intake.KEY_TAKEN
        return Intake.OK if answer else Intake.EXISTS

    async def create_from_upload(
        self, job: Job, upload_key: str, found: Intake, paused_key: str,
        bind: Binding | None = None,
    ) -> tuple[Intake, str]:  # fmt: skip
        """`create` for a job whose source is an upload, in the same one step: unless
        `paused_key` exists, take the upload's ticket (the job's tenant's, unused) and, if the
        storage check `found` it OK, create the job. Returns the outcome and, when OK, the
        upload's file name."""
        keys, args = self._create_args(job)
        keys += [self.keys.upload(upload_key), self.keys.abandoned_uploads, paused_key]
        args += [job.tenant, upload_key, found]
        if bind is not None:
            more_keys, more_args = bind.keys_args()
            keys, args = keys + more_keys, args + more_args
        answer = await self._write(self._create_from_upload, keys, args,
                                   lambda raw: cast(list[str], raw))  # fmt: skip
        if answer[0] != Intake.OK:
            return Intake(answer[0]), ""
        return Intake.OK, str(json.loads(answer[2]).get("filename", ""))

    def _create_args(self, job: Job) -> tuple[list[str], list[str | int]]:
        keys = [self.keys.job(job.id), self.keys.job_events(job.id)]
        keys.append(self.keys.stage_stream(pipeline_of(job).first, job.priority))
        keys += [self.keys.tenant_jobs(job.tenant), self.keys.status_counts, self.keys.events]
        return keys, [json.dumps(job.to_redis()), self.history_max, self.feed_max]

    async def recent(self, tenant: str, limit: int, before: float | None = None) -> list[Job]:
        """The tenant's newest jobs first, created before `before` (a Unix time) if given."""
        upper = f"({before}" if before is not None else "+inf"
        ids = await self.redis.zrevrangebyscore(
            self.keys.tenant_jobs(tenant), upper, "-inf", start=0, num=limit
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(str(job_id)))
            raws = await pipe.execute()
        # An id whose job expired meanwhile reads back empty: skip it.
        return [Job.from_redis(raw) for raw in raws if raw]

    async def get(self, job_id: str) -> Job | None:
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return Job.from_redis(raw) if raw else None

    async def apply(self, job_id: str, op: Op) -> Applied:
        """Apply `op` if the job's state allows it; never raises for that."""
        args = encode(op, time.time())
        status = op.target()
        retain = self.failed_ttl_s if status is Status.FAILED else self.ttl_s
        # The keys expire a day after retention removes them, as a backstop should it not run.
        ttl = retain + EXPIRY_MARGIN_S if status.terminal else 0
        args.update(maxlen=self.history_max, feed_max=self.feed_max, ttl=ttl,
                    events_ttl=min(self.events_ttl_s, ttl), retain_s=retain,
                    shared_max=SHARED_MAX)  # fmt: skip
        keys = [
            self.keys.job(job_id), self.keys.job_events(job_id), self.keys.webhooks,
            self.keys.status_counts, self.keys.retention, self.keys.events,
        ]  # fmt: skip
        if (push := op.push()) is not None:
            keys += self._push_keys(push)
        # A claim or a progress report lost in a failover costs little (a lease taken again, a
        # report sent again); the rest hand the job on or end it.
        hand_off = push is not None or status.terminal
        return await self._write(self._transition, keys, [json.dumps(args)], _applied, hand_off)

    async def _write(
        self, script: AsyncScript, keys: list[str], args: list[Any], read: Callable[[Any], T],
        hand_off: bool = True,
    ) -> T:  # fmt: skip
        """Run `script` and `read` its answer; a hand-off under REDIS_WAIT_REPLICAS is confirmed
        on the replicas in the same round trip, or raises `NotReplicated` with that answer."""
        if self.replication is None or not hand_off:
            return read(await script(keys=keys, args=args))
        async with self.redis.pipeline(transaction=False) as pipe:  # WAIT: the same connection
            await script(keys=keys, args=args, client=pipe)
            self.replication.queue(pipe)
            results = await pipe.execute()
        answer = read(results[0])
        self.replication.check(results, answer)
        return answer

    async def confirm(self) -> None:
        """Under REDIS_WAIT_REPLICAS, return once what the primary holds is on the replicas
        (before answering with a hand-off read back), or raise `NotReplicated`."""
        if self.replication is not None:
            await self.replication.confirm(self.redis)

    def _push_keys(self, push: Push) -> list[str]:
        match push.kind:
            case PushKind.STAGE:  # all three: the script picks the job's priority
                assert push.stage is not None
                return list(self.keys.stage_streams(push.stage))
            case PushKind.RETRY:
                return [self.keys.delayed]
            case PushKind.DEAD:
                return [self.keys.dead_letters]
            case PushKind.NOTICE:
                return [self.keys.control]

    async def keep(self, job_id: str, until_s: float) -> bool:
        """Keep an ended job at least until `until_s` (Unix time): its record and what it owns
        in storage (its source, its outputs), for another job that reads them meanwhile. Never
        shortens what it is kept for; its history keeps its own expiry. False when the job is
        not waiting for its removal (gone already, or not ended), or is due already: retention
        may be deleting its files at this moment."""
        now = time.time()
        ttl = max(int(until_s - now), 1) + EXPIRY_MARGIN_S
        keys = [self.keys.retention, self.keys.job(job_id), self.keys.job_objects(job_id)]
        kept = await self._keep(keys=keys, args=[job_id, until_s, now, ttl, ttl + EXPIRY_MARGIN_S])
        return bool(kept)

    async def own_object(self, job_id: str, stage: Stage, key: str) -> None:
        """Record that a run of `stage` is about to store `key` for the job: retention deletes
        every object so recorded, whatever became of the run that wrote it."""
        owned = self.keys.job_objects(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(owned, f"{stage.value}|{key}")
            # A backstop only: retention deletes the set with the job.
            pipe.expire(owned, self.ttl_s + 2 * EXPIRY_MARGIN_S)
            await pipe.execute()

    async def disown_objects(self, job_id: str, stage: Stage, keys: list[str]) -> None:
        """The objects are deleted (or never were written)."""
        if keys:
            members = [f"{stage.value}|{key}" for key in keys]
            await self.redis.srem(self.keys.job_objects(job_id), *members)

    async def owned_objects(self, job_id: str, stage: Stage | None = None) -> list[str]:
        """Keys of the objects recorded for the job (of `stage` only, if given)."""
        members = await self.redis.smembers(self.keys.job_objects(job_id))
        found = (str(m).partition("|") for m in members)
        return sorted(key for name, _, key in found if stage is None or name == stage.value)

    async def renew(self, leases: list[tuple[str, str]], lease_ms: int) -> list[Lease]:
        """Extend the lease of each (job id, owner): HELD, TAKEN (by another run), RELEASED (a
        cancel) or MOVED_ON (another run finished the stage)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, owner in leases:
                await self._renew(keys=[self.keys.job(job_id)], args=[owner, lease_ms], client=pipe)
            return [Lease(int(state)) for state in await pipe.execute()]

    async def promote_due(self) -> int:
        """Move every retry that is due onto its stage's stream; return how many."""
        pairs = [(s, p) for s in Stage for p in PRIORITIES]
        keys = [self.keys.delayed, *(self.keys.stage_stream(s, p) for s, p in pairs)]
        names = [f"{s.value}:{p.value}" for s, p in pairs]
        return int(await self._promote(keys=keys, args=names))

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


def _applied(raw: Any) -> Applied:
    outcome, status, event_id, attempts, gen = raw
    return Applied(
        Outcome(outcome), Status(status) if status else None, event_id or None, int(attempts),
        int(gen),
    )  # fmt: skip
