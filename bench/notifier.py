#!/usr/bin/env python3
"""The notifier's fan-out measured against a bare `websockets` broadcast server, in one run.

    .venv/bin/python bench/notifier.py [--connections 5000] [--quick]

Set-up: the Redis at REDIS_URL (default redis://127.0.0.1:6379/15) under a key prefix of this
run's own, removed at the end; `vidstream notifier` in its own process (authentication off, a
SECRET_KEY of this run, LOG_LEVEL=warning); the floor (bench/notifier_client.py) in its own
process; client processes (--procs, default 4) holding N/procs connections each, `websockets`
with compression off, no Origin and no client pings. Every process lifts its open-file limit.
All of it shares this machine's cores: the CPU line of each scenario says who used them.

Scenario A: N connections, each subscribed to its own job (N `transcribe` jobs created and
claimed through the job store first). Scenario B: N connections subscribed to one job. The events
are `progress` events, written as a worker writes them (`JobStore.apply(Progress.of(...))`,
round-robin over the subscribed jobs) for vidstream, and sent to the floor in the same shape over
one WebSocket from this process, in batches of up to 100 (as one XREAD of the events feed
returns several entries). Each scenario starts both servers afresh.

Figures, per scenario, for vidstream and the floor, each repetition alternating the two:
  events delivered/s  at saturation: the publisher writes as fast as it can, holding at most a
                      window of deliveries in flight (A: 2,000 events; B: 10 events, each to all
                      N), so no queue grows without bound and the server is never idle; the
                      count of events received by all clients over the measured seconds, after a
                      warm-up. Afterwards every published event must arrive: `lost` says if not.
  server CPU µs       the server's CPU time over those seconds / the events it delivered: its
  per delivery        cost, whichever process was the bottleneck.
  latency p50/p99/max publish to receipt, from the event's `at` (the publisher's clock as it
                      writes: `time.time()` when the job store encodes the operation, and when
                      this process builds the floor's event) to `time.time()` in the client on
                      the same machine. `at` has 1 ms resolution (truncated): half a
                      millisecond is added back. Both servers get the same events per second: a
                      tenth of the lower of their two saturation rates.
  RSS / connection    (VmRSS with N idle subscribed connections - VmRSS with none) / N, after a
                      warm-up of 8 connections and a few events, closed before the baseline.
Throughput and latency are medians of --reps repetitions (3; --quick: 1); memory is measured
once per scenario. Ratios are vidstream / floor, next to the targets: throughput >= 0.8 of the
floor, p99 <= 100 ms at a tenth of saturation, memory per idle connection <= 1.2x the floor's.

Reading it: server, publisher, clients and Redis share the machine, and the CPU line of each
scenario says who used it ("rest": the kernel's loopback work and anything else running, about
15% when the machine is quiet; above 50% the run is flagged as disturbed). When the floor's
server CPU is well under 100%, its clients set its rate and the throughput ratio flatters
vidstream: the per-delivery CPU ratio is then the fairer one. vidstream's publisher also pays a
Lua write per event that the floor's does not. Problems seen (failed subscriptions, disconnects,
lost events, server log lines) are printed and kept in bench/results/notifier.json, with the
hash of the notifier's sources. Never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import notifier_client as nc  # noqa: E402
import uvloop  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from vidstream.core.signing import Signer  # noqa: E402
from vidstream.job.model import Job, Kind, Options, Stage, isoformat  # noqa: E402
from vidstream.job.protocol import Claim, Progress  # noqa: E402
from vidstream.state.jobstore import JobStore  # noqa: E402
from vidstream.state.keys import Keys  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OWNER = "bench-notifier"
STEPS = 10_000  # progress moves forward only, in steps of 0.0001: events one job can take
WINDOW_A = 2_000  # deliveries in flight at saturation, scenario A
WINDOW_B_EVENTS = 10  # events in flight at saturation, scenario B (each to every connection)
TOKEN_TTL_S = 3600
BUSY_REST_PCT = 50  # CPU % beyond the harness's processes (about 15 when the machine is quiet)
SLOW_S = 0.1  # the latency target: receipts slower than this are listed


# --- publishers ----------------------------------------------------------------------------------


class VidstreamFeed:
    """Progress events written through the job store, as a worker writes them."""

    batch = 1

    def __init__(self, store: JobStore, jobs: list[Job], steps: dict[str, int]) -> None:
        self.store, self.jobs, self.steps = store, jobs, steps
        # Concurrent writes must never hit one job at once: a later step could land first and
        # the earlier one would be refused as `unchanged`.
        self.concurrency = 32 if len(jobs) >= 64 else 1
        self.next = 0
        self.published = 0
        self.refused: Counter[str] = Counter()

    async def send(self, n: int) -> int:
        ok = 0
        for _ in range(n):
            job = self.jobs[self.next]
            self.next = (self.next + 1) % len(self.jobs)
            step = self.steps[job.id] = self.steps[job.id] + 1
            if step > STEPS:
                raise RuntimeError(
                    f"job {job.id} used its {STEPS} progress steps: more connections"
                )
            op = Progress.of(job, Stage.TRANSCRIBE, step / STEPS, owner=OWNER)
            applied = await self.store.apply(job.id, op)
            if applied.ok:
                ok += 1
            else:
                self.refused[applied.outcome.value] += 1
        self.published += ok
        return ok


class FloorFeed:
    """The same events, sent to the floor over one WebSocket."""

    batch = 100
    concurrency = 1

    def __init__(self, ws: ClientConnection, jobs: list[Job], steps: dict[str, int]) -> None:
        self.ws, self.jobs, self.steps = ws, jobs, steps
        self.next = 0
        self.published = 0
        self.refused: Counter[str] = Counter()

    async def send(self, n: int) -> int:
        events = []
        for _ in range(n):
            job = self.jobs[self.next]
            self.next = (self.next + 1) % len(self.jobs)
            step = self.steps[job.id] = self.steps[job.id] % STEPS + 1
            now = time.time()
            fraction = step / STEPS
            # Shaped as vidstream's `Event.to_public()` of a progress event.
            events.append(
                {
                    "stage_progress": fraction,
                    "type": "event",
                    "id": f"{int(now * 1000)}-{self.published}",
                    "job_id": job.id,
                    "kind": "transcribe",
                    "event": "progress",
                    "status": "running",
                    "stage": "transcribe",
                    "progress": fraction,
                    "attempts": 1,
                    "at": isoformat(now),
                }
            )
        await self.ws.send(json.dumps({"type": "publish", "events": events}))
        self.published += n
        return n


Feed = VidstreamFeed | FloorFeed


# --- measurements --------------------------------------------------------------------------------


@dataclass
class Flow:
    """One server in one scenario: its process, its publisher, its clients' group."""

    name: str
    server: nc.Server
    feed: Feed
    fanout: int  # connections that receive each event
    figures: dict[str, Any] = field(default_factory=dict)
    sat: list[dict[str, Any]] = field(default_factory=list)
    lat: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Context:
    args: argparse.Namespace
    redis: Redis
    store: JobStore
    signer: Signer
    secret: str
    prefix: str
    tmp: Path
    clients: nc.Clients
    issues: list[str] = field(default_factory=list)
    closed: dict[str, Counter[str]] = field(default_factory=dict)


def cpu_now(ctx: Context, flow: Flow) -> dict[str, float]:
    return {
        "server": nc.cpu_s(flow.server.pid),
        "publisher": nc.cpu_s(os.getpid()),
        "clients": ctx.clients.cpu_s(),
        "machine": machine_busy_s(),
    }


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait, since boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def until(done: Any, timeout_s: float) -> None:
    """Poll `done()` until true or `timeout_s`: the receipt counters live in shared memory,
    written by other processes, so there is nothing to await."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def drain(ctx: Context, flow: Flow, outstanding: Any) -> int:
    """Wait until every published event arrived; return how many did not (negative: extra)."""
    await until(lambda: outstanding() <= 0, ctx.args.drain_s)
    await asyncio.sleep(0.05)  # late duplicates, if any
    return int(outstanding())


async def saturate(ctx: Context, flow: Flow) -> dict[str, Any]:
    feed, fanout, group = flow.feed, flow.fanout, flow.name
    window = ctx.args.window_a if fanout == 1 else ctx.args.window_b * fanout
    rec0, pub0 = ctx.clients.received(group), feed.published
    inflight, stop = 0, False

    def outstanding() -> int:
        return (feed.published - pub0 + inflight) * fanout - (ctx.clients.received(group) - rec0)

    async def worker() -> None:
        nonlocal inflight
        while not stop:
            n = min(feed.batch, (window - outstanding()) // fanout)
            if n <= 0:
                await asyncio.sleep(0.0005)
                continue
            inflight += n
            try:
                await feed.send(n)
            finally:
                inflight -= n

    workers = [asyncio.create_task(worker()) for _ in range(feed.concurrency)]
    try:
        await asyncio.sleep(ctx.args.warm_s)
        t0, r0, c0 = time.monotonic(), ctx.clients.received(group), cpu_now(ctx, flow)
        redis0, p0 = await redis_cpu_s(ctx.redis), feed.published
        await asyncio.sleep(ctx.args.measure_s / 2)
        redis_clients = int((await ctx.redis.info("clients"))["connected_clients"])
        await asyncio.sleep(ctx.args.measure_s / 2)
        t1, r1, c1 = time.monotonic(), ctx.clients.received(group), cpu_now(ctx, flow)
        redis1, p1 = await redis_cpu_s(ctx.redis), feed.published
    finally:
        stop = True
        await asyncio.gather(*workers)
    elapsed = t1 - t0
    cpu = {k: round(100 * (c1[k] - c0[k]) / elapsed) for k in c0}
    cpu["redis"] = round(100 * (redis1 - redis0) / elapsed)
    # The rest: the kernel's share of the loopback traffic, and whatever else runs here.
    busy = cpu.pop("machine")
    cpu["rest"] = busy - sum(cpu.values())
    left = await drain(ctx, flow, outstanding)
    server_us = 1e6 * (c1["server"] - c0["server"]) / max(r1 - r0, 1)
    return {
        "deliveries_per_s": (r1 - r0) / elapsed,
        "events_per_s": (p1 - p0) / elapsed,
        "server_us_per_delivery": server_us,
        "cpu_pct": cpu,
        "lost": max(left, 0),
        "extra": max(-left, 0),
        "redis_clients": redis_clients,
    }


async def steady(ctx: Context, flow: Flow, rate: float) -> dict[str, Any]:
    """Publish `rate` events/s; return the latency of every receipt in the measured window."""
    feed, fanout, group = flow.feed, flow.fanout, flow.name
    await ctx.clients.tell("latency", group, on=True)
    rec0, pub0 = ctx.clients.received(group), feed.published
    gate = asyncio.Semaphore(feed.concurrency)
    tasks: set[asyncio.Task[int]] = set()

    async def gated(n: int) -> int:
        async with gate:
            return await feed.send(n)

    measure_s = max(ctx.args.measure_s, min(20.0, 8 / rate))  # a few events at least
    start = time.time()
    begin, end = start + ctx.args.warm_s, start + ctx.args.warm_s + measure_s
    sent = 0
    while (now := time.time()) < end:
        due = int((now - start) * rate) + 1 - sent
        while due > 0:
            n = min(due, feed.batch)
            due, sent = due - n, sent + n
            task = asyncio.create_task(gated(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)

    def outstanding() -> int:
        return (feed.published - pub0) * fanout - (ctx.clients.received(group) - rec0)

    left = await drain(ctx, flow, outstanding)
    pairs = await ctx.clients.samples(group)
    await ctx.clients.tell("latency", group, on=False)
    measured = [(at, recv - at - 0.0005) for at, recv in pairs if begin <= at < end]
    latencies = sorted(latency for _, latency in measured)
    # When the slow receipts were published (s into the window): a pause that recurs shows here.
    slow = sorted({round(at - begin, 1) for at, latency in measured if latency > SLOW_S})
    return {
        "slow": sum(latency > SLOW_S for latency in latencies),
        "slow_at_s": slow[:50],
        "samples": len(latencies),
        "events": sent,
        "measure_s": measure_s,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "lost": max(left, 0),
        "extra": max(-left, 0),
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest rank of sorted `values`."""
    if not values:
        return float("nan")
    return values[max(0, min(len(values) - 1, int(len(values) * p / 100 + 0.5) - 1))]


async def settled_rss(pid: int, seconds: float) -> int:
    samples = []
    for _ in range(5):
        await asyncio.sleep(seconds / 5)
        samples.append(nc.rss_kib(pid))
    return int(statistics.median(samples))


async def check(ctx: Context, flows: list[Flow], phase: str) -> None:
    """Note connections the servers closed, and messages other than events, since last asked."""
    for flow in flows:
        code = flow.server.proc.returncode
        if code is not None:
            raise RuntimeError(
                f"{flow.name} exited ({code}) during {phase}; its log ends:\n"
                + flow.server.log_text()[-3000:]
            )
        replies = await ctx.clients.tell("status", flow.name)
        closed: Counter[str] = Counter()
        other: Counter[str] = Counter()
        for reply in replies:
            closed.update(reply["closed"])
            other.update(reply["other"])
        new = closed - ctx.closed.get(flow.name, Counter())
        ctx.closed[flow.name] = closed
        if new:
            ctx.issues.append(
                f"{flow.name} closed {sum(new.values())} connections during {phase}: {dict(new)}"
            )
        if other:
            ctx.issues.append(
                f"{flow.name}: messages other than events during {phase}: {dict(other)}"
            )


# --- set-up --------------------------------------------------------------------------------------


async def make_jobs(ctx: Context, n: int) -> list[Job]:
    """`n` transcribe jobs, created and claimed (running) through the job store."""
    gate = asyncio.Semaphore(64)

    async def one() -> Job:
        job = Job.new("bench/none", Options(), kind=Kind.TRANSCRIBE)
        async with gate:
            await ctx.store.create(job)
            claim = Claim.of(job, Stage.TRANSCRIBE, owner=OWNER, lease_ms=3_600_000, max_attempts=3)
            applied = await ctx.store.apply(job.id, claim)
        if not applied.ok:
            raise RuntimeError(f"claim of {job.id} refused: {applied.outcome}")
        return job

    return list(await asyncio.gather(*(one() for _ in range(n))))


def token(ctx: Context, job: Job) -> str:
    return ctx.signer.ws_token(job.tenant, job.id, job.created_at, TOKEN_TTL_S)


async def start_servers(ctx: Context, scenario: str) -> tuple[nc.Server, nc.Server]:
    port = nc.free_port()
    env = {
        **nc.base_env(),
        "REDIS_URL": ctx.args.redis_url,
        "REDIS_PREFIX": ctx.prefix,
        "NOTIFIER_HOST": "127.0.0.1",
        "NOTIFIER_PORT": str(port),
        "VIDSTREAM_AUTH": "off",
        "SECRET_KEY": ctx.secret,
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "WS_MAX_CONNECTIONS_PER_IP": "100000",
        "VIDSTREAM_DATA_DIR": str(ctx.tmp / "data"),
        "WS_TOKEN_TTL_S": str(TOKEN_TTL_S),
    }
    binary = str(Path(sys.executable).parent / "vidstream")
    vid = await nc.Server.start(
        "vidstream", [binary, "notifier"], env, port, ctx.tmp / f"vidstream-{scenario}.log"
    )
    port = nc.free_port()
    argv = [sys.executable, str(Path(nc.__file__)), "floor", "--port", str(port)]
    floor = await nc.Server.start(
        "floor", argv, nc.base_env(), port, ctx.tmp / f"floor-{scenario}.log"
    )
    return vid, floor


async def warm_and_connect(
    ctx: Context,
    flow: Flow,
    jobs: list[Job],
    subs: list[tuple[str, str]],
    warm: list[tuple[str, str]],
) -> None:
    """Warm the server up with a few connections and events, take its baseline RSS, then open
    the N connections and take its RSS again."""
    clients, feed = ctx.clients, flow.feed
    await clients.connect("warm", flow.server.url, warm)
    all_jobs = feed.jobs
    feed.jobs = [j for j in jobs if j.id in {job_id for job_id, _ in warm}]
    rec0, pub0 = clients.received("warm"), feed.published
    for _ in range(20):
        await feed.send(1)
    expected = (feed.published - pub0) * len(warm) // len(feed.jobs)
    await until(lambda: clients.received("warm") - rec0 >= expected, 10.0)
    await clients.tell("close", "warm")
    rss0 = await settled_rss(flow.server.pid, 1.0)
    got = await clients.connect(flow.name, flow.server.url, subs)
    rss1 = await settled_rss(flow.server.pid, 2.0 if not ctx.args.quick else 1.0)
    opened = got["opened"]
    by_id = {job.id: job for job in all_jobs}
    subscribed = list(dict.fromkeys(got["jobs"]))  # jobs with a subscriber, each once
    feed.jobs = [by_id[job_id] for job_id in subscribed]
    flow.fanout = 1 if len(all_jobs) > 1 else opened
    if got["failed"]:
        ctx.issues.append(
            f"{flow.name}: {len(subs) - opened} of {len(subs)} subscriptions "
            f"failed: {got['failed']}"
        )
    flow.figures.update(
        connect_s=got["s"],
        opened=opened,
        rss0_kib=rss0,
        rss_kib=rss1,
        kib_per_conn=(rss1 - rss0) / max(opened, 1),
    )
    print(
        f"  {flow.name:9} {opened}/{len(subs)} subscribed in {got['s']:.1f} s; RSS "
        f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB"
    )


async def scenario(ctx: Context, name: str, n: int) -> dict[str, Any]:
    print(
        f"\nscenario {name}: {n} connections, "
        + ("each subscribed to its own job" if name == "A" else "all subscribed to one job")
    )
    jobs = await make_jobs(ctx, n if name == "A" else 1)
    tokens = {job.id: token(ctx, job) for job in jobs}
    subs = (
        [(j.id, tokens[j.id]) for j in jobs]
        if name == "A"
        else [(jobs[0].id, tokens[jobs[0].id])] * n
    )
    warm = subs[:8] if name == "A" else subs[:1] * 8
    vid, floor = await start_servers(ctx, name)
    feeder: ClientConnection | None = None
    flows: list[Flow] = []
    try:
        feeder = await connect(floor.url, compression=None, proxy=None, max_size=None)
        steps = dict.fromkeys(tokens, 0)
        flows = [
            Flow("vidstream", vid, VidstreamFeed(ctx.store, jobs, steps), 1),
            Flow("floor", floor, FloorFeed(feeder, jobs, dict.fromkeys(tokens, 0)), 1),
        ]
        for flow in flows:
            await warm_and_connect(ctx, flow, jobs, subs, warm)
        await check(ctx, flows, f"scenario {name} connect")
        for rep in range(ctx.args.reps):
            for flow in flows if rep % 2 == 0 else flows[::-1]:
                flow.sat.append(result := await saturate(ctx, flow))
                print(
                    f"  {flow.name:9} saturation {rep + 1}: {result['deliveries_per_s']:,.0f} "
                    f"deliveries/s, CPU % {result['cpu_pct']}, "
                    f"lost {result['lost']}"
                )
                await check(ctx, flows, f"scenario {name} saturation {rep + 1}")
        rest = [r["cpu_pct"]["rest"] for f in flows for r in f.sat]
        if max(rest) > BUSY_REST_PCT:
            ctx.issues.append(
                f"scenario {name}: other work on the machine used {min(rest)}-{max(rest)}% of a "
                "core during the saturation runs: throughput figures are disturbed (the "
                "per-delivery CPU much less so)"
            )
        events_per_s = min(
            statistics.median(r["deliveries_per_s"] for r in f.sat) / f.fanout for f in flows
        )
        rate = max(events_per_s / 10, 0.05)
        for rep in range(ctx.args.reps):
            for flow in flows if rep % 2 == 0 else flows[::-1]:
                flow.lat.append(result := await steady(ctx, flow, rate))
                print(
                    f"  {flow.name:9} latency {rep + 1} at {rate:,.1f} events/s: p50 "
                    f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max "
                    f"{result['max_ms']:.0f} ms ({result['samples']} receipts)"
                )
                if result["slow"] and name == "A":  # in B, fan-out to N takes that long
                    ctx.issues.append(
                        f"{flow.name} scenario {name} latency {rep + 1}: {result['slow']} of "
                        f"{result['samples']} receipts over {SLOW_S * 1000:.0f} ms (max "
                        f"{result['max_ms']:.0f} ms), published at {result['slow_at_s']} s "
                        f"into the {result['measure_s']:.0f} s window"
                    )
                await check(ctx, flows, f"scenario {name} latency {rep + 1}")
        for flow in flows:
            await ctx.clients.tell("close", flow.name)
    finally:
        if feeder is not None:
            await feeder.close()
        for server in (vid, floor):
            await server.stop()
    out: dict[str, Any] = {"connections": n, "latency_rate_events_per_s": rate, "systems": {}}
    for flow in flows:
        sat = flow.sat
        flow.figures.update(
            deliveries_per_s=statistics.median(r["deliveries_per_s"] for r in sat),
            server_us_per_delivery=statistics.median(r["server_us_per_delivery"] for r in sat),
            p50_ms=statistics.median(r["p50_ms"] for r in flow.lat),
            p99_ms=statistics.median(r["p99_ms"] for r in flow.lat),
            max_ms=max(r["max_ms"] for r in flow.lat),
            cpu_pct={k: statistics.median(r["cpu_pct"][k] for r in sat) for k in sat[0]["cpu_pct"]},
            redis_clients=max(r["redis_clients"] for r in sat),
            lost=sum(r["lost"] for r in sat + flow.lat),
            extra=sum(r["extra"] for r in sat + flow.lat),
            refused=dict(flow.feed.refused),
            saturation=sat,
            latency=flow.lat,
        )
        lost = flow.figures["lost"]
        if lost or flow.figures["extra"]:
            ctx.issues.append(
                f"{flow.name} scenario {name}: {lost} deliveries missing, "
                f"{flow.figures['extra']} extra"
            )
        if flow.feed.refused:
            ctx.issues.append(f"{flow.name} scenario {name}: writes refused {flow.feed.refused}")
        out["systems"][flow.name] = flow.figures
    for server in (vid, floor):
        lines = [line for line in server.log_text().splitlines() if line.strip()]
        if lines:
            ctx.issues.append(
                f"{server.name} log, scenario {name} ({len(lines)} lines): "
                + "\n    ".join(["", *lines[:15]])
            )
        out["systems"].setdefault(server.name, {})["log"] = lines[:200]
    return out


# --- report --------------------------------------------------------------------------------------


def machine(redis_version: str) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "websockets": version("websockets"),
        "redis_py": version("redis"),
        "redis_server": redis_version,
        "uvloop": version("uvloop"),
        "fd_limit": nc.raise_fd_limit(),
    }


def code_version() -> dict[str, str]:
    """Which notifier ran: it changes under this script, so name it by its sources."""
    files = [
        *sorted((ROOT / "vidstream" / "notifier").glob("*.py")),
        *sorted((ROOT / "vidstream" / "feed").glob("*.py")),
        ROOT / "vidstream" / "state" / "jobstore.py",
        *sorted((ROOT / "vidstream" / "state" / "lua").glob("*.lua")),
    ]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    hub = (ROOT / "vidstream" / "feed" / "hub.py").read_text().split("\n", 1)[0]
    return {
        "sources_sha256": digest.hexdigest()[:12],
        "git_head": head or "?",
        "hub_docstring": hub.strip('"').strip(),
    }


def report(results: dict[str, Any]) -> None:
    m, code = results["machine"], results["code"]
    print(
        f"\nmachine: {m['cpus']} CPUs, {m['cpu_model']}; Python {m['python']}; websockets "
        f"{m['websockets']}; redis-py {m['redis_py']}; Redis {m['redis_server']}; uvloop "
        f"{m['uvloop']}\nnotifier: sources sha256 {code['sources_sha256']} (git HEAD "
        f"{code['git_head']} + working tree); hub: {code['hub_docstring']!r}\n"
        f"median of {results['reps']} repetition(s); ratio = vidstream / floor"
    )
    for name, sc in results["scenarios"].items():
        vid, floor = sc["systems"]["vidstream"], sc["systems"]["floor"]
        what = "each on its own job" if name == "A" else "all on one job"
        rate = f"{sc['latency_rate_events_per_s']:,.1f} events/s"
        print(f"\nscenario {name}: {sc['connections']} connections {what}")
        print(f"  {'':38}{'vidstream':>10}{'floor':>10}{'ratio':>8}   target")
        # label, key, format, target (text, met?) or None
        rows: list[tuple[str, str, str, Any]] = [
            ("events delivered/s at saturation", "deliveries_per_s", "{:,.0f}",
             lambda r, v: (">= 0.80 of floor", r >= 0.8)),
            ("  server CPU µs per delivery", "server_us_per_delivery", "{:.1f}", None),
            (f"latency p50 ms at {rate}", "p50_ms", "{:.1f}", None),
            (f"latency p99 ms at {rate}", "p99_ms", "{:.1f}",
             lambda r, v: ("<= 100 ms", v <= 100)),
            ("  latency max ms, all repetitions", "max_ms", "{:.1f}", None),
            ("RSS per idle connection, KiB", "kib_per_conn", "{:.1f}",
             lambda r, v: ("<= 1.20x floor", r <= 1.2)),
        ]  # fmt: skip
        for label, key, fmt, target in rows:
            v, f = vid[key], floor[key]
            ratio = v / f if f else float("nan")
            mark = ""
            if target is not None:
                rule, met = target(ratio, v)
                mark = f"{rule:17} {'ok' if met else 'MISS'}"
            print(f"  {label:38}{fmt.format(v):>10}{fmt.format(f):>10}{ratio:>8.2f}   {mark}")
        print("  CPU % of one core at saturation, server / publisher / clients / Redis / rest:")
        for system, figures in (("vidstream", vid), ("floor", floor)):
            c = figures["cpu_pct"]
            print(
                f"    {system:9} {c['server']:>4.0f} / {c['publisher']:>3.0f} / "
                f"{c['clients']:>3.0f} / {c['redis']:>3.0f} / {c['rest']:>3.0f}"
            )
    if results["issues"]:
        print("\nproblems seen:")
        for issue in results["issues"]:
            print(f"  - {issue}")
    else:
        print("\nproblems seen: none (no failed subscription, disconnect, lost event or log line)")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    nc.raise_fd_limit()
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    prefix = f"vsbench-ws-{secrets.token_hex(4)}"
    keys = Keys(prefix)
    secret = secrets.token_urlsafe(32)
    clients = nc.Clients(args.procs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vidstream-bench-") as tmp:
        ctx = Context(
            args,
            redis,
            JobStore(redis, keys, ttl_s=3600),
            Signer(secret.encode()),
            secret,
            prefix,
            Path(tmp),
            clients,
        )
        results: dict[str, Any] = {
            "machine": machine(str((await redis.info("server"))["redis_version"])),
            "code": code_version(),
            "connections": args.connections,
            "reps": args.reps,
            "quick": args.quick,
            "scenarios": {},
        }
        try:
            for name in ("A", "B"):
                results["scenarios"][name] = await scenario(ctx, name, args.connections)
        finally:
            await clients.stop()
            async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
                await redis.unlink(key)
            await redis.aclose()
    results["issues"] = ctx.issues
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=None, help="N (5000; --quick: 1000)")
    parser.add_argument("--quick", action="store_true", help="N=1000, one repetition, shorter")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3; --quick: 1)")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument(
        "--window-a",
        type=int,
        default=WINDOW_A,
        help=f"events in flight at saturation, scenario A ({WINDOW_A})",
    )
    parser.add_argument(
        "--window-b",
        type=int,
        default=WINDOW_B_EVENTS,
        help=f"events in flight at saturation, scenario B ({WINDOW_B_EVENTS})",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()
    args.connections = args.connections or (1000 if args.quick else 5000)
    args.reps = args.reps or (1 if args.quick else 3)
    if args.connections < 100:
        parser.error("--connections must be at least 100 (one job takes 10,000 progress events)")
    args.warm_s, args.measure_s = (0.5, 2.0) if args.quick else (1.0, 3.0)
    args.drain_s = 5.0 if args.quick else 10.0
    results = uvloop.run(main(args))
    report(results)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "notifier.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['seconds']} s; results in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    cli()
