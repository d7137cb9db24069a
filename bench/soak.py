"""Soak: a steady stream of tiny jobs through Redis, with retention on. Prints Redis memory and
key count every few seconds; once the retention window has passed both stay flat.

    python bench/soak.py [--seconds 60] [--rate 200] [--retention 10]

The jobs are created and cancelled through the real job store (the same Lua steps as the
gateway), and removed by the real retention sweep; no FFmpeg or Whisper is involved, so the
figures are Redis's alone. The floor is the memory once the first window has passed: the ratio
of the last sample to it should stay near 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from vidstream import logs
from vidstream.jobs import Job, Options
from vidstream.jobstore import JobStore
from vidstream.keys import Keys
from vidstream.protocol import Cancel
from vidstream.retention import Retention

RESULTS = Path(__file__).resolve().parent / "results"


class NoStorage:
    name = "none"

    async def delete(self, key: str) -> None:
        """These jobs store nothing."""


async def soak(seconds: float, rate: float, retention_s: int) -> list[dict[str, Any]]:
    url = os.environ.get("VIDSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis = Redis.from_url(url, decode_responses=True)
    keys = Keys(f"vsbench-{secrets.token_hex(3)}")
    store = JobStore(redis, keys, ttl_s=retention_s)
    retention = Retention(redis, keys, NoStorage(), keep_outputs=False)  # type: ignore[arg-type]
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    made = 0
    try:
        next_sample = started
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while made < due:
                job = Job.new("uploads/x/source", Options())
                await store.create(job)
                await store.apply(job.id, Cancel())
                made += 1
            while (await retention.sweep()).jobs:
                pass
            if time.monotonic() >= next_sample:
                info = await redis.info("memory")
                count = len([k async for k in redis.scan_iter(match=f"{keys.prefix}:*")])
                samples.append({"t_s": round(elapsed, 1), "jobs_made": made, "keys": count,
                                "used_memory_mb": round(info["used_memory"] / 1e6, 2)})  # fmt: skip
                print(f"{elapsed:6.1f} s  jobs {made:7d}  keys {count:6d}  "
                      f"redis {info['used_memory'] / 1e6:7.2f} MB", flush=True)  # fmt: skip
                next_sample += max(seconds / 20, 1.0)
            await asyncio.sleep(0.01)  # pacing the load, not synchronisation
    finally:
        async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="jobs per second")
    parser.add_argument("--retention", type=int, default=10, help="JOB_RETENTION_S")
    args = parser.parse_args()
    logs.configure("warning")
    samples = asyncio.run(soak(args.seconds, args.rate, args.retention))
    steady = [s for s in samples if s["t_s"] > args.retention * 1.5]
    if steady:
        floor, last = steady[0], steady[-1]
        print(f"\nafter the first window: keys {floor['keys']} -> {last['keys']}, "
              f"memory {floor['used_memory_mb']} -> {last['used_memory_mb']} MB "
              f"(ratio {last['used_memory_mb'] / max(floor['used_memory_mb'], 1e-9):.2f}) "
              f"while {last['jobs_made'] - floor['jobs_made']} more jobs went through")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(samples, indent=2))


if __name__ == "__main__":
    main()
