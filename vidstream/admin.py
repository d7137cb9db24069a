"""`vidstream status` and `vidstream dlq`: what the streams hold and who consumes them, where
one job stands, which jobs ran out of attempts, and replaying them."""

from __future__ import annotations

import json
from typing import Any, TextIO

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vidstream.deadletters import ReplayRefused, list_dead, replay
from vidstream.jobs import Stage, isoformat
from vidstream.jobstore import JobStore
from vidstream.keys import Keys


async def stream_status(redis: Redis, keys: Keys) -> list[dict[str, Any]]:
    """Per stage stream: length, and per group its pending count, lag and consumers."""
    rows = []
    for stage in Stage:
        stream, group = keys.stage_stream(stage), keys.stage_group(stage)
        row: dict[str, Any] = {
            "stage": stage.value,
            "stream": stream,
            "length": 0,
            "pending": 0,
            "lag": 0,
            "consumers": [],
        }
        try:
            row["length"] = await redis.xlen(stream)
            for g in await redis.xinfo_groups(stream):
                if g["name"] == group:
                    row["pending"], row["lag"] = g["pending"], g.get("lag") or 0
            row["consumers"] = [
                {"name": c["name"], "pending": c["pending"], "idle_ms": c["idle"]}
                for c in await redis.xinfo_consumers(stream, group)
            ]
        except ResponseError:  # no such stream or group yet: nothing ran
            pass
        rows.append(row)
    return rows


async def print_status(redis: Redis, keys: Keys, job_id: str | None, out: TextIO) -> int:
    if job_id:
        jobs = JobStore(redis, keys, ttl_s=0)
        job = await jobs.get(job_id)
        if job is None:
            out.write(f"no job {job_id}\n")
            return 1
        events = await jobs.events(job_id)
        out.write(
            json.dumps(
                {
                    "id": job.id,
                    "status": job.status.value,
                    "stage": job.stage.value if job.stage else None,
                    "progress": round(job.progress, 4),
                    "created_at": isoformat(job.created_at),
                    "updated_at": isoformat(job.updated_at),
                    "attempts": job.attempts,
                    "error": job.error.to_dict() if job.error else None,
                    "outputs": {k: v.to_dict() for k, v in job.outputs.items()},
                    "events": [
                        f"{e.id} {e.event.value} {e.status.value} {e.progress:.2f}" for e in events
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        return 0
    out.write(f"{'stage':<11} {'queued':>7} {'pending':>8} {'length':>7}  consumers\n")
    for row in await stream_status(redis, keys):
        consumers = (
            ", ".join(
                f"{c['name']} ({c['pending']} pending, idle {c['idle_ms'] // 1000}s)"
                for c in row["consumers"]
            )
            or "-"
        )
        counts = f"{row['lag']:>7} {row['pending']:>8} {row['length']:>7}"
        out.write(f"{row['stage']:<11} {counts}  {consumers}\n")
    return 0


async def print_dead_letters(jobs: JobStore, limit: int, out: TextIO) -> int:
    letters = await list_dead(jobs, limit)
    if not letters:
        out.write("no dead letters\n")
        return 0
    out.write(f"{'job':<27} {'stage':<11} {'tries':>5}  {'now':<10} error\n")
    for letter, job in letters:
        status = job.status.value if job else "expired"
        out.write(f"{letter.job_id:<27} {letter.stage:<11} {letter.attempts:>5}  {status:<10} "
                  f"{letter.code}: {letter.message}\n")  # fmt: skip
    return 0


async def replay_job(jobs: JobStore, job_id: str, out: TextIO) -> int:
    try:
        _, first = await replay(jobs, job_id)
    except ReplayRefused as exc:
        reason = "no such job" if exc.status is None else f"the job is {exc.status}, not failed"
        out.write(f"cannot replay {job_id}: {reason}\n")
        return 1
    out.write(f"job {job_id} queued again from its {first} stage\n")
    return 0
