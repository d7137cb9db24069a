"""Soak: a steady stream of small jobs through the production path, with retention and the
maintenance trim on. Prints Redis memory and key count every few seconds, and whether they
stay flat once every bounded structure has reached its bound.

    .venv/bin/python bench/soak.py            # 10 jobs/s for 15 min, production bounds
    .venv/bin/python bench/soak.py --quick    # 10 jobs/s for 100 s, bounds scaled down: < 2 min

One process runs what a deployment runs, built as `runtime.Stack` builds it: the gateway, the
maintenance loops (promote, trim, reap, retention), the job-log shipper, and a transcribe worker
whose stage does nothing but finish (the bus benchmark's no-op actor: its real consumer group,
claim, FinishStage, ack, registry heartbeat and run log). Each job is a `POST /v1/jobs` with a
small file (stored in the local store, deleted by retention) and an Idempotency-Key of its own,
`kind=transcribe`, so it completes in one stage. Logs go at INFO (as deployed) to a file, so the
job logs are kept. 10 jobs/s leaves the one process room on a shared 2-core machine (at 25 it
fell behind: the worker's backlog grew and retention ran late, which is not what is measured).

What fills up before Redis can be flat, with production's values (`--quick`'s in brackets):
- jobs, their events, logs, idempotency entries and listing: JOB_RETENTION_S of them, 60 s (10),
  plus up to 5 s until the next retention sweep;
- the stage stream: entries every consumer acked stay until the next trim, every 60 s (10): a
  sawtooth of up to a period of entries;
- the events feed: its entries older than 600 s go at each trim, and it is capped at 50,000
  entries (1,200), 3 events a job here;
- the run log: the last 5,000 runs (300) of each stage.
"Settled" is the first sample after all of these; the ratio printed is the memory at the end
over the memory then. Memory is counted two ways: the bytes of this run's own keys (MEMORY
USAGE, summed: what vidstream keeps) and the server's `used_memory` (which also holds the
allocator's slack and anything else on that Redis, such as tests running meanwhile). Keys go
under a prefix of the run's own and are deleted at the end. Results: bench/results/soak.json
(`--quick`: soak.quick.json; other options: soak.custom.json).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from vidstream import __version__
from vidstream.actors.run import Run
from vidstream.actors.worker import Worker
from vidstream.core import logs
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.http.app import Gateway
from vidstream.job.model import Job, Stage
from vidstream.ops import stats
from vidstream.ops.joblogs import JobLogShipper, capture
from vidstream.ops.maintenance import FEED_MAX_AGE_S, RETENTION_INTERVAL_S, Maintenance
from vidstream.ops.retention import Retention
from vidstream.services import Services, connect_redis
from vidstream.state.jobstore import JobStore
from vidstream.storage import LocalStore, open_store

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS_PER_JOB = 3  # queued, started, completed
FEED_MAX = 50_000  # JobStore's default cap of the events feed
QUICK_FEED_MAX = 1_200
QUICK_RUNS_KEPT = 300


class NoopTranscribeWorker(Worker):
    """The transcribe stage with nothing to do: finish at once, with no outputs."""

    stage = Stage.TRANSCRIBE

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        await run.finish({})  # Kind.TRANSCRIBE has one stage: this completes the job


async def own_bytes(redis: Redis, prefix: str) -> tuple[int, int]:
    """(keys, bytes) of this run's own keys."""
    names = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        sizes = await pipe.execute()
    return len(names), sum(int(s or 0) for s in sizes)


async def soak(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    url = os.environ.get("VIDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"vsbench-soak-{secrets.token_hex(3)}"
    settings = Settings(
        redis_url=url, redis_prefix=prefix, data_dir=data_dir, secret_key=secrets.token_hex(16),
        gateway_port=0, auth="off", rate_limit_per_min=0, job_retention_s=args.retention,
        log_format="json",
    )  # fmt: skip
    redis = connect_redis(settings)
    samples: list[dict[str, Any]] = []
    made = failed = 0
    async with AsyncExitStack() as stack:
        enter = stack.enter_async_context
        stack.push_async_callback(redis.aclose)

        async def cleanup() -> None:  # once every component stopped (the stack unwinds LIFO)
            async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
                await redis.delete(key)

        stack.push_async_callback(cleanup)
        signer = Signer(settings.secret_key.encode())
        store = await enter(open_store(settings, signer))
        services = Services.build(settings, redis, store, signer)
        if args.feed_max != FEED_MAX:  # --quick: a smaller cap on the events feed
            jobs = JobStore(redis, services.keys, ttl_s=settings.job_retention_s,
                            feed_max=args.feed_max)  # fmt: skip
            services = replace(services, jobs=jobs)
        retention = Retention(redis, services.keys, store, keep_outputs=False)
        await enter(Maintenance(redis, services.keys, services.jobs, retention=retention,
                                trim_interval_s=args.trim_every,
                                visibility_timeout_s=settings.visibility_timeout_s))  # fmt: skip
        await enter(JobLogShipper(services.redis, services.keys, services.jobs.ttl_s))
        gateway = await enter(Gateway(services))
        if isinstance(store, LocalStore):
            store.base_url = gateway.url
        await enter(NoopTranscribeWorker(services, concurrency=4))

        http = await enter(aiohttp.ClientSession())
        started = time.monotonic()
        next_sample = started
        in_flight: set[asyncio.Task[None]] = set()

        async def post() -> None:
            nonlocal failed
            form = aiohttp.FormData({"kind": "transcribe"})
            form.add_field("file", io.BytesIO(b"x" * 512), filename="clip.mp4",
                           content_type="video/mp4")  # fmt: skip
            headers = {"Idempotency-Key": secrets.token_hex(8)}
            async with http.post(f"{gateway.url}/v1/jobs", data=form, headers=headers) as r:
                if r.status != 202:
                    failed += 1

        while (elapsed := time.monotonic() - started) < args.seconds:
            while made < int(elapsed * args.rate) and len(in_flight) < 64:
                task = asyncio.create_task(post())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                made += 1
            if time.monotonic() >= next_sample:
                info = await redis.info("memory")
                count, owned = await own_bytes(redis, prefix)
                counts = await stats.job_counts(redis, services.keys)
                sample = {
                    "t_s": round(elapsed, 1), "jobs_posted": made, "jobs_completed":
                    counts["completed"], "keys": count, "own_mb": round(owned / 1e6, 3),
                    "used_memory_mb": round(info["used_memory"] / 1e6, 2),
                    "stage_stream_len": await redis.xlen(
                        services.keys.stage_stream(Stage.TRANSCRIBE)),
                    "feed_len": await redis.xlen(services.keys.events),
                }  # fmt: skip
                samples.append(sample)
                print(f"{elapsed:6.1f} s  posted {made:7d}  keys {count:6d}  own "
                      f"{owned / 1e6:7.2f} MB  redis {info['used_memory'] / 1e6:7.2f} MB  "
                      f"stream {sample['stage_stream_len']:6d}  feed {sample['feed_len']:6d}",
                      flush=True)  # fmt: skip
                next_sample += args.sample_every
            await asyncio.sleep(0.005)  # pacing the load, not synchronisation
        if in_flight:
            await asyncio.wait(in_flight, timeout=30)
    return {"samples": samples, "posted": made, "failed_posts": failed}


def settle_time(args: argparse.Namespace) -> float:
    """When every bounded structure has reached its bound (see the docstring)."""
    feed_full = min(args.feed_max / (EVENTS_PER_JOB * args.rate), FEED_MAX_AGE_S + args.trim_every)
    settle: float = max(
        args.retention + RETENTION_INTERVAL_S + args.trim_every,
        feed_full,
        args.runs_kept / args.rate,
    )
    return settle + float(args.sample_every)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 s, the bounds scaled down")
    parser.add_argument("--seconds", type=float, help="how long (900; quick: 100)")
    parser.add_argument("--rate", type=float, default=10, help="jobs per second (10)")
    parser.add_argument("--retention", type=int, help="JOB_RETENTION_S (60; quick: 10)")
    parser.add_argument("--trim-every", type=float, help="trim period, s (60; quick: 10)")
    args = parser.parse_args()
    custom = any(v is not None for v in (args.seconds, args.retention, args.trim_every))
    custom = custom or args.rate != 10
    args.seconds = args.seconds or (100.0 if args.quick else 900.0)
    args.retention = args.retention or (10 if args.quick else 60)
    args.trim_every = args.trim_every or (10.0 if args.quick else 60.0)
    args.feed_max = QUICK_FEED_MAX if args.quick else FEED_MAX
    args.runs_kept = QUICK_RUNS_KEPT if args.quick else stats.RUNS_KEPT
    stats.RUNS_KEPT = args.runs_kept  # read by the run log on every record
    args.sample_every = 5.0 if args.quick else 10.0
    settle = settle_time(args)
    if settle >= args.seconds - args.sample_every:
        parser.error(f"--seconds must be well past the settling time ({settle:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="vidstream-soak-") as tmp:
        log_path = Path(tmp) / "soak.log"
        real_stderr = sys.stderr
        with log_path.open("w") as log_file:
            sys.stderr = log_file  # INFO logs, as deployed, kept out of the table
            logs.configure("info", "json", extra=(capture,))
            try:
                run = asyncio.run(soak(args, Path(tmp) / "data"))
            finally:
                sys.stderr = real_stderr
        problems = [line for line in log_path.read_text().splitlines()
                    if '"level": "error"' in line or '"level": "warning"' in line]  # fmt: skip
    samples = run["samples"]
    settled = next(s for s in samples if s["t_s"] >= settle)
    last = samples[-1]
    steady = [s for s in samples if s["t_s"] >= settle]
    ratio = {field: round(last[field] / settled[field], 3)
             for field in ("keys", "own_mb", "used_memory_mb")}  # fmt: skip
    peak = {field: round(max(s[field] for s in steady) / settled[field], 3)
            for field in ("keys", "own_mb", "used_memory_mb")}  # fmt: skip
    print(f"\nsettled at {settled['t_s']} s (retention {args.retention} s, trim every "
          f"{args.trim_every:g} s, feed cap {args.feed_max}, run log {stats.RUNS_KEPT}); "
          f"{last['jobs_posted'] - settled['jobs_posted']} more jobs went through after that "
          f"({run['failed_posts']} posts refused)")  # fmt: skip
    print(f"{'':18}{'settled':>10}{'end':>10}{'end/settled':>13}{'peak/settled':>14}")
    for field, label in (("keys", "keys"), ("own_mb", "own keys, MB"),
                         ("used_memory_mb", "redis used, MB")):  # fmt: skip
        print(f"{label:18}{settled[field]:>10}{last[field]:>10}{ratio[field]:>13}"
              f"{peak[field]:>14}")  # fmt: skip
    if problems:
        print(f"\n{len(problems)} warning/error log lines, e.g. {problems[0][:300]}")
    machine = {"python": platform.python_version(), "vidstream": __version__,
               "cpus": os.cpu_count()}  # fmt: skip
    result = {
        "args": vars(args), "machine": machine, "settled_at_s": settled["t_s"],
        "ratio_end_over_settled": ratio, "peak_over_settled": peak, "posted": run["posted"],
        "failed_posts": run["failed_posts"], "log_problems": len(problems), "samples": samples,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    name = "soak.quick.json" if args.quick else "soak.custom.json" if custom else "soak.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
