"""The worker registry: each heartbeat, every worker says in Redis who it is and what it runs.

A hash per worker (`Keys.worker`, by its consumer name) is rewritten every heartbeat and expires
after about three, so a worker that dies drops out of `GET /v1/workers` and `vidstream workers`
soon after, and maintenance may then remove its consumer from the group; a clean stop removes
it at once. `Keys.workers` names the workers for listing. The registry also counts the runs the
worker ended, and hands their durations to `stats.RunLog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream import __version__
from vidstream.core.tasks import Service, every
from vidstream.job.model import Stage, isoformat
from vidstream.ops import stats
from vidstream.state.keys import Keys

INDEX_KEEP_S = 3600  # a name without a heartbeat for this long leaves the index
WRITE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class CurrentJob:
    job_id: str
    stage: str
    attempt: int
    progress: float  # of the stage, 0 to 1, as the run last reported it
    started_at: float  # Unix time


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker as its last heartbeat described it."""

    name: str  # its consumer name, `host-role-N` (or the name it was given)
    role: str
    host: str
    pid: int
    version: str
    concurrency: int
    started_at: float  # Unix times
    seen_at: float
    done: int  # runs that got their stage done since the worker started
    failed: int  # runs that ended in an error (retried, failed or dead-lettered)
    jobs: tuple[CurrentJob, ...]
    visibility_timeout_s: float  # its setting: how long maintenance leaves its consumer be
    slot: int | None = None  # N of its leased `host-role-N` slot; None for a name it was given

    def to_redis(self) -> dict[str, str | int | float]:
        fields = {k: v for k, v in asdict(self).items() if k not in ("jobs", "slot")}
        slot = "" if self.slot is None else self.slot  # Redis stores no None
        return {**fields, "slot": slot, "jobs": json.dumps([asdict(j) for j in self.jobs])}

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> WorkerState | None:
        """None for a hash that is not a whole worker (one that expired while being read)."""
        try:
            jobs = tuple(CurrentJob(**j) for j in json.loads(raw["jobs"]))
            slot = int(raw["slot"]) if raw.get("slot") else None  # none from an older version
            return cls(
                raw["name"], raw["role"], raw["host"], int(raw["pid"]), raw["version"],
                int(raw["concurrency"]), float(raw["started_at"]), float(raw["seen_at"]),
                int(raw["done"]), int(raw["failed"]), jobs, float(raw["visibility_timeout_s"]),
                slot,
            )  # fmt: skip
        except (KeyError, ValueError, TypeError):
            return None

    def to_public(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "slot": self.slot, "host": self.host,
            "pid": self.pid, "version": self.version, "concurrency": self.concurrency,
            "jobs": [
                {"job_id": j.job_id, "stage": j.stage, "attempt": j.attempt,
                 "progress": round(j.progress, 4), "started_at": isoformat(j.started_at)}
                for j in self.jobs
            ],
            "started_at": isoformat(self.started_at), "last_seen": isoformat(self.seen_at),
            "done": self.done, "failed": self.failed,
        }  # fmt: skip


class RunView(Protocol):
    """What the registry reads of a worker's run (`actors.run.Run`)."""

    @property
    def job_id(self) -> str: ...
    @property
    def stage(self) -> Stage: ...
    @property
    def attempts(self) -> int: ...
    @property
    def fraction(self) -> float: ...
    @property
    def started_at(self) -> float: ...
    @property
    def started(self) -> bool: ...
    @property
    def outcome(self) -> str: ...
    @property
    def owner(self) -> str: ...


class WorkerRegistry(Service):
    """Keeps this worker's hash fresh while it runs; removes it on a clean stop."""

    def __init__(
        self, redis: Redis, keys: Keys, *, name: str, role: str, concurrency: int,
        runs: Callable[[], Collection[RunView]], interval_s: float, visibility_timeout_s: float,
        slot: int | None = None,
    ) -> None:  # fmt: skip
        self.redis, self.keys, self.name, self.role, self.slot = redis, keys, name, role, slot
        self.concurrency, self.runs, self.interval_s = concurrency, runs, interval_s
        self.visibility_timeout_s = visibility_timeout_s
        self.ttl_ms = max(int(interval_s * 3000), 1000)  # about three heartbeats
        self.host, self.pid, self.started_at = socket.gethostname(), os.getpid(), time.time()
        self.done = self.failed = 0
        self.run_log = stats.RunLog(redis, keys)

    def state(self) -> WorkerState:
        jobs = tuple(
            CurrentJob(r.job_id, r.stage.value, r.attempts, r.fraction, r.started_at)
            for r in self.runs() if r.started
        )  # fmt: skip
        return WorkerState(
            self.name, self.role, self.host, self.pid, __version__, self.concurrency,
            self.started_at, time.time(), self.done, self.failed, jobs, self.visibility_timeout_s,
            self.slot,
        )  # fmt: skip

    async def start(self) -> None:
        if not self.alive:
            await self.beat()  # listed from the moment the worker runs
        await super().start()

    async def run(self) -> None:
        await every(self.interval_s, self.beat, "worker_heartbeat", self.stopping)

    async def beat(self) -> None:
        state, key = self.state(), self.keys.worker(self.name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=cast(Any, state.to_redis()))
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.keys.workers, {self.name: state.seen_at})
            pipe.zremrangebyscore(self.keys.workers, "-inf", state.seen_at - INDEX_KEEP_S)
            await pipe.execute()

    async def ended(self, run: RunView, took_s: float) -> None:
        """Count a run that recorded its outcome and log its duration (best effort: the
        numbers must never hold a job up)."""
        if run.outcome in stats.SUCCEEDED:
            self.done += 1
        elif run.outcome in stats.FAILED:
            self.failed += 1
        else:
            return
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await self.run_log.record(run.stage, took_s, run.outcome, run.owner)

    async def close(self) -> None:
        """Stop the heartbeat and remove the hash; safe to call twice."""
        started = self._task is not None
        await super().close()
        if started:
            with contextlib.suppress(RedisError, TimeoutError):
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await self.redis.delete(self.keys.worker(self.name))
                    await self.redis.zrem(self.keys.workers, self.name)


async def list_workers(redis: Redis, keys: Keys) -> list[WorkerState]:
    """The live workers (those whose heartbeat has not lapsed), by role and name."""
    names = [str(n) for n in await redis.zrange(keys.workers, 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.worker(name))
        raws = await pipe.execute()
    found = [WorkerState.from_redis(raw) for raw in raws if raw]
    return sorted((w for w in found if w is not None), key=lambda w: (w.role, w.name))


async def declared_visibility_timeout(redis: Redis, keys: Keys) -> float | None:
    """The longest VISIBILITY_TIMEOUT_S a live worker runs with, or None without workers."""
    timeouts = [w.visibility_timeout_s for w in await list_workers(redis, keys)]
    return max(timeouts, default=None)
