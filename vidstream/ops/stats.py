"""Operating numbers: per stage the queue, its oldest waiting entry, throughput and run durations;
jobs by status; dead letters. For `GET /v1/stats` and `vidstream stats`.

Each stage run that records an outcome is kept for an hour in a sorted set (`Keys.stage_runs`,
written by `RunLog` as the run ends): that is all the history the numbers need, so reading them
never scans jobs. Jobs by status come from counters the job scripts keep (`Keys.status_counts`).
The arithmetic (percentiles, throughput, ages) is pure and works on plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vidstream.job.model import Stage, Status, isoformat
from vidstream.state import bus, scripts
from vidstream.state.keys import Keys

WINDOW_MS = 3_600_000  # runs are kept, and durations measured, over the last hour
MINUTE_MS = 60_000
RUNS_KEPT = 5000  # per stage: the percentiles of a busier hour come from its latest runs
SUCCEEDED = frozenset({"handed_on", "completed"})  # `Run.outcome`s of a stage that got done
FAILED = frozenset({"retry", "failed", "dead_letter"})


# -- pure --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0 < q <= 1) by nearest rank: the smallest value with at least a
    fraction `q` of the values at or below it; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def throughput(ended_ms: Iterable[float], now_ms: float) -> tuple[float, float]:
    """Runs per minute: how many ended in the last minute, and the last hour's count / 60."""
    ages = [now_ms - t for t in ended_ms]
    last_minute = sum(1 for age in ages if age <= MINUTE_MS)
    last_hour = sum(1 for age in ages if age <= WINDOW_MS)
    return float(last_minute), round(last_hour / 60, 3)


def age_s(entry_id: str | None, now_ms: float) -> float:
    """How long ago stream entry `entry_id` was added (its id starts with the Redis time in
    ms); 0 for no entry."""
    if entry_id is None:
        return 0.0
    return round(max(0.0, now_ms - bus.stream_id(entry_id)[0]) / 1000, 3)


def run_member(seconds: float, outcome: str, nonce: str) -> str:
    return f"{seconds:.3f}|{outcome}|{nonce}"


@dataclass(frozen=True, slots=True)
class Runs:
    """What a stage's runs of the last hour add up to."""

    last_minute: float  # runs that got the stage done, per minute
    last_hour: float
    p50_s: float | None  # of runs that got the stage done
    p95_s: float | None
    succeeded: int
    failed: int

    @classmethod
    def of(cls, members: Iterable[tuple[str, float]], now_ms: float) -> Runs:
        """From `(member, end time in ms)` pairs of `Keys.stage_runs`; unreadable ones skipped."""
        done: list[tuple[float, float]] = []
        failed = 0
        for member, ended in members:
            if now_ms - ended > WINDOW_MS:
                continue
            seconds, _, rest = member.partition("|")
            outcome = rest.partition("|")[0]
            if outcome in FAILED:
                failed += 1
            elif outcome in SUCCEEDED:
                try:
                    done.append((float(seconds), ended))
                except ValueError:
                    continue
        last_minute, last_hour = throughput((t for _, t in done), now_ms)
        durations = [s for s, _ in done]
        p50, p95 = percentile(durations, 0.5), percentile(durations, 0.95)
        return cls(last_minute, last_hour, p50, p95, len(done), failed)


@dataclass(frozen=True, slots=True)
class Queue:
    length: int  # entries in the stage's streams
    pending: int  # read by a worker, not yet acked: running (or left by a dead worker)
    lag: int | None  # not yet read by any worker (None: Redis cannot tell after a deletion)
    oldest_waiting_s: float  # the age of the oldest entry no worker has read yet


@dataclass(frozen=True, slots=True)
class StageStats:
    stage: Stage
    queue: Queue
    runs: Runs

    def to_public(self) -> dict[str, Any]:
        q, r = self.queue, self.runs
        return {
            "stage": self.stage.value,
            "queue": {"length": q.length, "pending": q.pending, "lag": q.lag,
                      "oldest_waiting_s": q.oldest_waiting_s},
            "throughput_per_min": {"last_minute": r.last_minute, "last_hour": r.last_hour},
            "duration_s": {"p50": r.p50_s, "p95": r.p95_s},
            "runs_last_hour": {"succeeded": r.succeeded, "failed": r.failed},
        }  # fmt: skip


# -- Redis -------------------------------------------------------------------------------------


class RunLog:
    """Writes each stage run that recorded an outcome to `Keys.stage_runs`: one cheap call."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._record = scripts.register(redis, "stage_run_record")

    async def record(self, stage: Stage, seconds: float, outcome: str, nonce: str) -> None:
        member = run_member(seconds, outcome, nonce)
        await self._record(keys=[self.keys.stage_runs(stage)], args=[member, WINDOW_MS, RUNS_KEPT])


async def redis_ms(redis: Redis) -> float:
    now: Any = await redis.time()  # (seconds, microseconds)
    return int(now[0]) * 1000 + int(now[1]) / 1000


async def queue(redis: Redis, keys: Keys, stage: Stage, now_ms: float) -> Queue:
    """The stage's queue over all its streams (one per priority)."""
    group = keys.stage_group(stage)
    length, pending, oldest = 0, 0, 0.0
    lag: int | None = 0
    for stream in keys.stage_streams(stage):
        try:
            entries = int(await redis.xlen(stream))
            groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
        except ResponseError:  # not a stream (yet)
            continue
        length += entries
        info = next((g for g in groups if g["name"] == group), None)
        waiting: int | None
        if info is None:  # no worker ever joined: everything waits
            last, waiting = "0-0", entries
        else:
            last, waiting = str(info["last-delivered-id"]), info.get("lag")
            pending += int(info["pending"])
        lag = None if lag is None or waiting is None else lag + int(waiting)
        first = await bus.history(redis, stream, last, count=1)
        oldest = max(oldest, age_s(first[0][0] if first else None, now_ms))
    return Queue(length, pending, lag, oldest)


async def runs(redis: Redis, keys: Keys, stage: Stage, now_ms: float) -> Runs:
    raw: Any = await redis.zrangebyscore(keys.stage_runs(stage), now_ms - WINDOW_MS, "+inf",
                                    withscores=True)  # fmt: skip
    return Runs.of(((str(m), float(s)) for m, s in raw), now_ms)


async def job_counts(redis: Redis, keys: Keys) -> dict[str, int]:
    """Jobs in each status, from the counters the job scripts keep (all 0 before any job)."""
    raw = cast(dict[str, str], await redis.hgetall(keys.status_counts))
    counts = {}
    for status in Status:
        try:
            # Never below 0: jobs made before the counters existed end without having counted.
            counts[status.value] = max(0, int(raw.get(status.value) or 0))
        except ValueError:
            counts[status.value] = 0
    return counts


async def read(redis: Redis, keys: Keys) -> dict[str, Any]:
    """Everything `GET /v1/stats` answers."""
    now_ms = await redis_ms(redis)
    stages = [
        StageStats(stage, await queue(redis, keys, stage, now_ms),
                   await runs(redis, keys, stage, now_ms))
        for stage in Stage
    ]  # fmt: skip
    return {
        "at": isoformat(now_ms / 1000),
        "stages": [s.to_public() for s in stages],
        "jobs": await job_counts(redis, keys),
        "dead_letters": int(await redis.xlen(keys.dead_letters)),
    }
