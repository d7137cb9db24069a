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


def _table(out: TextIO, title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table: drawn by rich on a terminal, aligned plain text otherwise."""
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for line in [columns, *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _dump(out: TextIO, value: object) -> int:
    out.write(json.dumps(value, indent=2) + "\n")
    return 0


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
        return _dump(out, {
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
    if as_json:
        return _dump(out, {"streams": rows})
    table = []
    for row in rows:
        consumers = ", ".join(
            f"{c['name']} ({c['pending']} pending, idle {c['idle_ms'] // 1000}s)"
            for c in row["consumers"]
        )
        table.append([row["stage"], str(row["lag"]), str(row["pending"]), str(row["length"]),
                      consumers or "-"])  # fmt: skip
    _table(out, "streams", ["stage", "queued", "pending", "length", "consumers"], table)
    return 0


async def print_dead_letters(jobs: JobStore, limit: int, out: TextIO, as_json: bool = False) -> int:
    letters = await list_dead(jobs, limit)
    if as_json:
        return _dump(out, {"dead_letters": [
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
    _table(out, "dead letters", ["job", "stage", "tries", "now", "error"], rows)
    return 0


def print_jobs(jobs: list[dict[str, Any]], out: TextIO, as_json: bool = False) -> int:
    """`vidstream jobs`: the caller's recent jobs."""
    if as_json:
        return _dump(out, {"jobs": jobs})
    if not jobs:
        out.write("no jobs\n")
        return 0
    rows = [
        [j["id"], j["kind"], j["status"], f"{round(100 * j['progress'])}%", j["created_at"],
         (j.get("source") or {}).get("name") or "-"]
        for j in jobs
    ]  # fmt: skip
    _table(out, "jobs", ["job", "kind", "status", "progress", "created", "source"], rows)
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
