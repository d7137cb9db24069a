"""`vidstream status`, `workers`, `stats` and `dlq`: what the streams hold and who consumes
them, the live workers, the numbers per stage, where one job stands, which jobs ran out of
attempts, and replaying them."""

from __future__ import annotations

import time
from typing import Any, TextIO

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vidstream.job.model import Stage, isoformat
from vidstream.ops import stats
from vidstream.ops.deadletters import ReplayRefused, list_dead, replay
from vidstream.ops.tables import dump, table
from vidstream.ops.workers import WorkerState, list_workers
from vidstream.state import bus
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys


async def stream_status(redis: Redis, keys: Keys) -> list[dict[str, Any]]:
    """Per stage, over its streams (one per priority): length, the group's pending count and
    lag, and its consumers (pending summed, idle the least)."""
    rows = []
    for stage in Stage:
        group = keys.stage_group(stage)
        row: dict[str, Any] = {"stage": stage.value, "streams": list(keys.stage_streams(stage)),
                               "length": 0, "pending": 0, "lag": 0, "consumers": []}  # fmt: skip
        consumers: dict[str, dict[str, Any]] = {}
        for stream in keys.stage_streams(stage):
            length, lag, pending = await bus.group_counts(redis, stream, group)
            row["length"] += length
            row["lag"] += lag
            row["pending"] += pending
            try:
                found = await redis.xinfo_consumers(stream, group)
            except ResponseError:  # no such stream or group yet: nothing ran
                continue
            for c in found:
                seen = consumers.setdefault(c["name"], {"name": c["name"], "pending": 0,
                                                        "idle_ms": c["idle"]})  # fmt: skip
                seen["pending"] += c["pending"]
                seen["idle_ms"] = min(seen["idle_ms"], c["idle"])
        row["consumers"] = sorted(consumers.values(), key=lambda c: str(c["name"]))
        rows.append(row)
    return rows


async def print_status(
    redis: Redis, keys: Keys, job_id: str | None, out: TextIO, as_json: bool = False
) -> int:
    if job_id:
        jobs = JobStore(redis, keys, ttl_s=0)
        job = await jobs.get(job_id)
        if job is None:
            out.write(f"no job {job_id}\n")
            return 1
        events = await jobs.events(job_id)
        return dump(out, {
            "id": job.id, "tenant": job.tenant, "kind": job.kind.value,
            "status": job.status.value, "stage": job.stage.value if job.stage else None,
            "progress": round(job.progress, 4), "created_at": isoformat(job.created_at),
            "updated_at": isoformat(job.updated_at), "attempts": job.attempts,
            "request_id": job.request_id or None,
            "error": job.error.to_dict() if job.error else None,
            "outputs": {k: v.to_dict() for k, v in job.outputs.items()},
            "events": [e.to_public() for e in events] if as_json else [
                f"{e.id} {e.event.value} {e.status.value} {e.progress:.2f}" for e in events
            ],
        })  # fmt: skip
    rows = await stream_status(redis, keys)
    workers = await list_workers(redis, keys)
    if as_json:
        return dump(out, {"streams": rows, "workers": [w.to_public() for w in workers]})
    lines = []
    for row in rows:
        consumers = ", ".join(
            f"{c['name']} ({c['pending']} pending, idle {c['idle_ms'] // 1000}s)"
            for c in row["consumers"]
        )
        lines.append([row["stage"], str(row["lag"]), str(row["pending"]), str(row["length"]),
                      consumers or "-"])  # fmt: skip
    table(out, "streams", ["stage", "queued", "pending", "length", "consumers"], lines)
    out.write("\n")
    _workers_table(out, workers)
    return 0


def _span(seconds: float) -> str:
    """A duration the way people read one: 42s, 7m05s, 3h12m, 2d04h."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _workers_table(out: TextIO, workers: list[WorkerState]) -> None:
    if not workers:
        out.write("no workers\n")
        return
    now = time.time()
    rows = [
        [w.role, w.name, "-" if w.slot is None else str(w.slot), w.host, str(w.pid), w.version,
         str(w.concurrency),
         ", ".join(f"{j.job_id} {j.stage} {round(100 * j.progress)}%" for j in w.jobs) or "-",
         _span(now - w.started_at), f"{w.done}/{w.failed}", f"{_span(now - w.seen_at)} ago"]
        for w in workers
    ]  # fmt: skip
    columns = ["role", "name", "slot", "host", "pid", "version", "concurrency", "running", "up",
               "done/failed", "seen"]  # fmt: skip
    table(out, "workers", columns, rows)


async def print_workers(redis: Redis, keys: Keys, out: TextIO, as_json: bool = False) -> int:
    """`vidstream workers`: the live workers and what each runs."""
    workers = await list_workers(redis, keys)
    if as_json:
        return dump(out, {"workers": [w.to_public() for w in workers]})
    _workers_table(out, workers)
    return 0


async def print_stats(redis: Redis, keys: Keys, out: TextIO, as_json: bool = False) -> int:
    """`vidstream stats`: per stage the queue, throughput and durations; jobs by status."""
    numbers = await stats.read(redis, keys)
    if as_json:
        return dump(out, numbers)

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    rows = [
        [s["stage"], "?" if s["queue"]["lag"] is None else str(s["queue"]["lag"]),
         str(s["queue"]["pending"]), str(s["queue"]["length"]),
         _span(s["queue"]["oldest_waiting_s"]), f"{s['throughput_per_min']['last_minute']:g}",
         f"{s['throughput_per_min']['last_hour']:g}", secs(s["duration_s"]["p50"]),
         secs(s["duration_s"]["p95"]),
         f"{s['runs_last_hour']['succeeded']}/{s['runs_last_hour']['failed']}"]
        for s in numbers["stages"]
    ]  # fmt: skip
    columns = ["stage", "queued", "pending", "length", "oldest", "/min (1m)", "/min (1h)", "p50",
               "p95", "ok/failed (1h)"]  # fmt: skip
    table(out, "stages", columns, rows)
    out.write("\n")
    jobs = numbers["jobs"]
    table(out, "jobs", [*jobs, "dead letters"],
           [[*(str(n) for n in jobs.values()), str(numbers["dead_letters"])]])  # fmt: skip
    return 0


async def print_dead_letters(jobs: JobStore, limit: int, out: TextIO, as_json: bool = False) -> int:
    letters = await list_dead(jobs, limit)
    if as_json:
        return dump(out, {"dead_letters": [
            {**d.to_public(job.status.value if job else None), "tenant": d.tenant}
            for d, job in letters
        ]})  # fmt: skip
    if not letters:
        out.write("no dead letters\n")
        return 0
    rows = [
        [letter.job_id, letter.stage, str(letter.attempts),
         job.status.value if job else "expired", f"{letter.code}: {letter.message}"]
        for letter, job in letters
    ]  # fmt: skip
    table(out, "dead letters", ["job", "stage", "tries", "now", "error"], rows)
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
