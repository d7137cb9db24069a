#!/usr/bin/env python3
"""`POST /v1/jobs` of `vidstream gateway` measured with wrk against a bare aiohttp floor, one run.

    .venv/bin/python bench/gateway.py                   # 3 repetitions of 10 s, about 2 min
    .venv/bin/python bench/gateway.py --quick           # 1 repetition of 5 s, about 30 s
    .venv/bin/python bench/gateway.py --quick --profile /tmp/gw   # and a py-spy profile

Set-up: the Redis at REDIS_URL (default redis://127.0.0.1:6379/15), every key under a prefix of
this run's own (`vsbench-gw-XXXXXXXX`), deleted at the end, also when stopped by SIGINT or
SIGTERM (never FLUSHALL). Two servers, one process each, both on uvloop with no access log, both
started afresh by this script:
  vidstream  `vidstream gateway` (or --gateway-cmd, to compare a patched build) with
             VIDSTREAM_AUTH=off, RATE_LIMIT_PER_MIN=0, MAX_QUEUE_DEPTH=0 (no `overloaded`
             check), LOG_LEVEL=warning (its `http_request` line per request is filtered out, as an
             access log is off) and local storage in a temporary directory, on tmpfs
             (/dev/shm) when there is one: thousands of upload files are made before each run,
             which takes longer than the run on some disks; the gateway only stats them.
  bare       bench/gateway_bare.py: reads the JSON body and writes one job hash of the same size
             (HSET of 21 fields) and one stream entry (XADD), in one MULTI/EXEC round trip, then
             answers 202 with a job of the same size, with the same redis-py client set-up.
             Nothing less can create a job.
On 2+ cores both servers are pinned to the same core (the last one; `taskset`) and wrk to the
others; Redis and this script are left where the kernel puts them. wrk (Debian's `wrk`, installed
with apt-get when missing and this runs as root; else the command is printed) runs
bench/post_job.lua: one thread, 50 connections, `--timeout 10s`. One thread is enough: it sends
tens of thousands of requests a second from one core, the servers a few thousand; a second one
would only share its core. 50 connections keep either server's queue full, so its core is the
bottleneck, and are what a busy frontend keeps open.

Each request to vidstream names an upload key of its own: a job may use an upload key once. The
keys are made before each run: at the warm-up, 50 through the API (POST /v1/uploads, then a PUT
of 16 bytes to the signed link) and the others the way those two requests leave them
(`Tickets.issue` and the file in local storage), as two requests and a file per key would take
minutes. A run gets 1.5x the keys its server's fastest run so far used, plus 1,000 (the
warm-up: 3,000 a second); a run that runs out anyway is run again with twice as many. The bare
server checks no ticket: it gets keys of the same shape, reused in turn.

Order: a warm-up run of each server (--warmup s, not counted, its errors reported), then --reps
repetitions alternating which server goes first (vidstream, bare; bare, vidstream; ...). Before
each run, the script waits (up to --settle s) for the machine to be about idle.

Figures, per server, medians of the repetitions with (min-max) for req/s:
  req/s         wrk's completed requests / its run time: throughput with 50 requests always
                outstanding.
  p50 / p99 ms  wrk's latency percentiles (request sent to answer read) in the same runs: at that
                saturation, mostly the time a request waits behind the other 49.
  non-2xx       answers other than 202 (counted by the Lua `response`) plus socket errors and
                timeouts, summed over the timed runs. A run with any, or that ran out of keys, is
                listed under "problems seen": its figures are printed, not to be trusted.
  CPU %         the server process's CPU time (all its threads) / the run's wall time: 100 is its
                whole core; well below 95, something else held it back. "Redis %" likewise for
                redis-server (its INFO), which is shared with anything else using it.
  CPU µs/req    the server's CPU time / requests: what one job costs it, whoever the bottleneck.
The ratio is vidstream's req/s / bare's (medians; next to it, the range of each repetition's
own ratio); the issue's target is >= 0.6. The cost ratio is bare's CPU µs/req / vidstream's:
what the req/s ratio is when each server has its core to itself, and what to trust when the run
is flagged as disturbed, that is when anything outside the two servers, Redis and wrk used more
than half a core in a run ("rest" in the per-run lines: the kernel's loopback work and any other
process; about 10 on a quiet machine). On a 2-vCPU VM whose host is busy both figures move by
20% or more; compare runs of one session. vidstream logs a traceback (`request_crashed`,
ConnectionResetError) for each request wrk leaves unanswered when it stops: those lines are
counted apart and not listed as problems. Results go to bench/results/gateway.json, every run
with its CPU shares. Never fails on speed.

--profile PATH: after the repetitions, one more vidstream run under `py-spy record --gil` (the
--py-spy binary, else `py-spy` on PATH, else /tmp/pyspy-venv/bin/py-spy; install it apart from
the project), which writes collapsed stacks to PATH.txt and prints the functions with the most
samples: own time (the function itself) and total time (with what it calls), as shares of the
samples in which the gateway held the GIL, so a thread waiting for work or the loop waiting in
epoll is not counted. py-spy pauses the gateway for each sample: that run's figures are
reported apart and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from vidstream.core import process
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.state.keys import Keys
from vidstream.state.tickets import Ticket, Tickets
from vidstream.storage import open_store
from vidstream.storage.base import ObjectStore
from vidstream.storage.names import new_upload_key

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LUA = BENCH / "post_job.lua"
BARE = BENCH / "gateway_bare.py"
SYSTEMS = ("vidstream", "bare")
TENANT = "default"  # the tenant of every caller with authentication off
PAYLOAD = b"0123456789abcdef"  # each upload's bytes: the gateway only checks that they exist
API_KEYS = 50  # upload keys made through the API, used first by the warm-up
WARM_KEYS_PER_S = 3_000  # keys a second for the warm-up: about twice what vidstream takes
KEY_MARGIN, KEY_SPARE = 1.5, 1_000  # keys per timed run: fastest run so far x margin + spare
BARE_KEYS = 20_000  # the bare server's keys, reused in turn
WRK_THREADS = 1
START_TIMEOUT_S = 30.0
PYSPY_RATE = 100  # samples per second
BUSY_REST_PCT = 50  # CPU % (of one core) used beyond the servers, Redis and wrk: disturbed
QUIET_PCT = 25  # CPU % (of one core) busy on the whole machine below which a run may start


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")  # nothing else: no stray settings
    return {k: os.environ[k] for k in keep if k in os.environ}


def cpu_s(pid: int) -> float:
    """CPU seconds `pid` used so far, all its threads (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (wrk, py-spy)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait, since boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pinning:
    server: list[str]  # prefixes of each server's argv and of wrk's
    client: list[str]
    text: str


def pinning(enabled: bool) -> Pinning:
    cores = sorted(os.sched_getaffinity(0))
    if not enabled or len(cores) < 2 or shutil.which("taskset") is None:
        return Pinning([], [], "none (all processes on any core)")
    server, rest = cores[-1], ",".join(str(c) for c in cores[:-1])
    return Pinning(
        ["taskset", "-c", str(server)],
        ["taskset", "-c", rest],
        f"each server on core {server}, wrk on {rest}; Redis and this script anywhere",
    )


@dataclass
class Server:
    name: str
    proc: asyncio.subprocess.Process
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str], port: int,
                    log: Path) -> Server:  # fmt: skip
        with log.open("wb") as out:
            proc = await process.spawn(argv, env=env, stdout=out.fileno(), stderr=out.fileno())
        server = cls(name, proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline and proc.returncode is None:
                try:
                    async with http.get(f"{server.url}/healthz") as response:
                        if response.status == 200:
                            return server
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        await server.stop()
        raise RuntimeError(f"{name} did not start; its log:\n{server.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self, phase: str) -> None:
        if self.proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited ({self.proc.returncode}) during {phase}; its log ends:\n"
                + self.log_text()[-3000:]
            )

    async def stop(self) -> None:
        await process.terminate(self.proc, grace_s=15)  # its whole group: what it started too


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when missing and root, else says how and exits."""
    found = shutil.which("wrk")
    if found:
        return found
    command = "apt-get install -y wrk"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"bench/gateway.py needs wrk: run `sudo apt-get update && sudo {command}`")
    print(f"wrk is missing: {command}", flush=True)
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(install, stdout=subprocess.DEVNULL, check=False)
    found = shutil.which("wrk")
    if not found:
        sys.exit(f"could not install wrk; run `apt-get update && {command}`")
    return found


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    redis: Redis
    keys: Keys
    tickets: Tickets
    store: ObjectStore
    prefix: str
    tmp: Path
    wrk: str
    pin: Pinning
    servers: dict[str, Server] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    files: int = 0


async def api_keys(ctx: Context, n: int) -> list[str]:
    """Upload keys made as a client makes them: POST /v1/uploads, then PUT the bytes."""
    url = ctx.servers["vidstream"].url
    ticket = {"filename": "source.mp4", "content_type": "video/mp4", "size": len(PAYLOAD)}
    made = []
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(f"{url}/v1/uploads", json=ticket) as response:
                if response.status != 201:
                    raise RuntimeError(
                        f"POST /v1/uploads: {response.status} {await response.text()}"
                    )
                upload = await response.json()
            async with http.put(
                upload["upload_url"], data=PAYLOAD, headers=upload["headers"]
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"PUT upload: {response.status} {await response.text()}")
            made.append(upload["key"])
    return made


async def provision(ctx: Context, n: int) -> list[str]:
    """`n` upload keys as the two upload requests leave them: a ticket, and the bytes stored."""
    made = [new_upload_key() for _ in range(n)]
    for key in made:
        path = ctx.store.local_path(key)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PAYLOAD)
    ttl = Settings.from_env({}).upload_url_ttl_s
    gate = asyncio.Semaphore(64)

    async def issue(key: str) -> None:
        async with gate:
            await ctx.tickets.issue(
                Ticket(key, TENANT, "source.mp4", len(PAYLOAD), "video/mp4"), ttl
            )

    await asyncio.gather(*(issue(key) for key in made))
    return made


def keys_file(ctx: Context, name: str, keys: list[str]) -> Path:
    ctx.files += 1
    path = ctx.tmp / f"keys-{ctx.files:02d}-{name}.txt"
    path.write_text("\n".join(keys) + "\n")
    return path


async def settle(ctx: Context) -> float:
    """Wait until the machine is about idle (under QUIET_PCT of a core busy for a second), at
    least half a second after the key traffic and at most --settle seconds; return the wait."""
    t0 = time.monotonic()
    await asyncio.sleep(0.5)
    while time.monotonic() - t0 < ctx.args.settle:
        busy0 = machine_busy_s()
        await asyncio.sleep(1.0)
        if 100 * (machine_busy_s() - busy0) < QUIET_PCT:
            break
    return round(time.monotonic() - t0, 1)


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def wrk_run(
    ctx: Context, server: Server, keys: Path, seconds: float, *, wrap: bool
) -> dict[str, Any]:
    args = ctx.args
    argv = [
        *ctx.pin.client, ctx.wrk, "-t", str(WRK_THREADS), "-c", str(args.connections),
        "-d", f"{seconds:g}s", "--timeout", "10s", "-s", str(LUA), server.url,
        "--", str(keys), str(WRK_THREADS), *(["wrap"] if wrap else []),
    ]  # fmt: skip
    server0, redis0, wrk0 = cpu_s(server.pid), await redis_cpu_s(ctx.redis), children_cpu_s()
    busy0, t0 = machine_busy_s(), time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    elapsed = time.monotonic() - t0
    server1, redis1, wrk1 = cpu_s(server.pid), await redis_cpu_s(ctx.redis), children_cpu_s()
    busy = machine_busy_s() - busy0
    line = next((x for x in out.decode().splitlines() if x.startswith("WRK_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-2000:]}{out.decode()}")
    r: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    requests, run_s = r["requests"], r["duration_us"] / 1e6
    cpu = {
        "server": 100 * (server1 - server0) / elapsed,
        "redis": 100 * (redis1 - redis0) / elapsed,
        "wrk": 100 * (wrk1 - wrk0) / elapsed,
    }
    cpu["rest"] = 100 * busy / elapsed - sum(cpu.values())
    socket_errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {
        "rps": requests / run_s,
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "requests": requests,
        "keys_sent": r["sent"],
        "non2xx": r["non202"],
        "codes": dict(r["codes"]),
        "socket_errors": socket_errors,
        "exhausted": r["exhausted"],
        "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
        "server_cpu_us_per_req": 1e6 * (server1 - server0) / max(requests, 1),
        "seconds": run_s,
    }


def problems(name: str, phase: str, run: dict[str, Any]) -> list[str]:
    found = []
    if run["non2xx"]:
        found.append(f"{run['non2xx']} answers other than 202 {run['codes']}")
    if run["socket_errors"]:
        found.append(f"{run['socket_errors']} socket errors or timeouts")
    if run["exhausted"]:
        found.append("ran out of upload keys before the end (a key serves one job)")
    return [f"{name} {phase}: " + "; ".join(found)] if found else []


async def measure(
    ctx: Context, name: str, phase: str, seconds: float, fastest: float
) -> dict[str, Any]:
    """One wrk run against `name`, its keys made first; a run that ran out of keys is run again
    with twice as many (twice at most)."""
    server = ctx.servers[name]
    n = math.ceil(fastest * seconds * KEY_MARGIN) + KEY_SPARE
    for attempt in range(3):
        t0 = time.monotonic()
        if name == "vidstream":
            keys = await api_keys(ctx, API_KEYS) if phase == "warm-up" and not attempt else []
            keys += await provision(ctx, n - len(keys))
            path = keys_file(ctx, name, keys)
        else:
            path = ctx.tmp / "keys-bare.txt"
            if not path.exists():
                path.write_text("\n".join(new_upload_key() for _ in range(BARE_KEYS)) + "\n")
        keys_s = time.monotonic() - t0
        waited = await settle(ctx)
        run = await wrk_run(ctx, server, path, seconds, wrap=name == "bare")
        server.alive(phase)
        run |= {"phase": phase, "keys": n, "keys_made_s": round(keys_s, 2), "attempt": attempt,
                "waited_s": waited}  # fmt: skip
        if not run["exhausted"] or attempt == 2:
            break
        print(f"  {name:9} {phase:8} ran out of its {n:,} keys: again with {2 * n:,}")
        n *= 2
    ctx.issues += problems(name, phase, run)
    cpu = run["cpu_pct"]
    print(
        f"  {name:9} {phase:8} {run['rps']:8,.0f} req/s  p50 {run['p50_ms']:6.1f} ms  p99 "
        f"{run['p99_ms']:6.1f} ms  non-2xx {run['non2xx']}  CPU % server {cpu['server']:.0f} "
        f"redis {cpu['redis']:.0f} wrk {cpu['wrk']:.0f} rest {cpu['rest']:.0f}  "
        f"{run['server_cpu_us_per_req']:.0f} µs/req",
        flush=True,
    )
    return run


def gateway_env(args: argparse.Namespace, prefix: str, tmp: Path) -> dict[str, str]:
    """`vidstream gateway`'s environment: no key, no rate limit, no `overloaded` check."""
    return {
        **base_env(),
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": prefix,
        "VIDSTREAM_AUTH": "off",
        "RATE_LIMIT_PER_MIN": "0",
        "MAX_QUEUE_DEPTH": "0",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(free_port()),
        "NOTIFIER_PORT": str(free_port()),  # not started: names the ws link in answers
        "VIDSTREAM_DATA_DIR": str(tmp / "data"),
        "SECRET_KEY": secrets.token_urlsafe(32),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
    }


async def start_servers(ctx: Context, env: dict[str, str]) -> None:
    args, tmp = ctx.args, ctx.tmp
    port = int(env["GATEWAY_PORT"])
    command = shlex.split(args.gateway_cmd) or [str(Path(sys.executable).parent / "vidstream")]
    ctx.servers["vidstream"] = await Server.start(
        "vidstream", [*ctx.pin.server, *command, "gateway"], env, port, tmp / "vidstream.log"
    )
    port = free_port()
    argv = [*ctx.pin.server, sys.executable, str(BARE), "--port", str(port),
            "--redis-url", args.redis_url, "--prefix", ctx.prefix]  # fmt: skip
    ctx.servers["bare"] = await Server.start("bare", argv, base_env(), port, tmp / "bare.log")


async def benchmark(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    warm: dict[str, dict[str, Any]] = {}
    print(f"warm-up, {args.warmup:g} s each (not counted)", flush=True)
    for name in SYSTEMS:
        warm[name] = await measure(ctx, name, "warm-up", args.warmup, WARM_KEYS_PER_S)
    print(f"{args.reps} repetition(s) of {args.duration:g} s each, alternating", flush=True)
    for rep in range(args.reps):
        for name in SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]:
            fastest = max(r["rps"] for r in [warm[name], *runs[name]])
            runs[name].append(await measure(ctx, name, f"rep {rep + 1}", args.duration, fastest))
    profile = None
    if args.profile:
        profile = await profiled(ctx, max(r["rps"] for r in runs["vidstream"]))
    out: dict[str, Any] = {"systems": {}, "warm_up": warm, "profile": profile}
    for name in SYSTEMS:
        rs = runs[name]

        def spread(key: str, rs: list[dict[str, Any]] = rs) -> dict[str, float]:
            values = [r[key] for r in rs]
            return {"median": statistics.median(values), "min": min(values), "max": max(values)}

        out["systems"][name] = {
            "rps": spread("rps"),
            "p50_ms": spread("p50_ms"),
            "p99_ms": spread("p99_ms"),
            "server_cpu_us_per_req": spread("server_cpu_us_per_req"),
            "cpu_pct_server": statistics.median(r["cpu_pct"]["server"] for r in rs),
            "cpu_pct_redis": statistics.median(r["cpu_pct"]["redis"] for r in rs),
            "non2xx": sum(r["non2xx"] for r in rs),
            "socket_errors": sum(r["socket_errors"] for r in rs),
            "flagged_runs": sum(bool(problems(name, "", r)) for r in rs),
            "runs": rs,
        }
    vid, bare = out["systems"]["vidstream"], out["systems"]["bare"]
    pairs = [v["rps"] / b["rps"] for v, b in zip(runs["vidstream"], runs["bare"], strict=True)]
    out["ratio"] = {
        "median": vid["rps"]["median"] / bare["rps"]["median"],
        "per_rep": pairs,
        "min": min(pairs),
        "max": max(pairs),
        "target": 0.6,
    }
    costs = [
        b["server_cpu_us_per_req"] / v["server_cpu_us_per_req"]
        for v, b in zip(runs["vidstream"], runs["bare"], strict=True)
    ]
    out["cost_ratio"] = {
        "median": bare["server_cpu_us_per_req"]["median"] / vid["server_cpu_us_per_req"]["median"],
        "per_rep": costs,
        "min": min(costs),
        "max": max(costs),
    }
    rest = [r["cpu_pct"]["rest"] for name in SYSTEMS for r in runs[name]]
    out["disturbed"] = max(rest) > BUSY_REST_PCT
    if out["disturbed"]:
        ctx.issues.append(
            f"other work on the machine used {min(rest):.0f}-{max(rest):.0f}% of a core during "
            "the timed runs: req/s, latency and their ratio are disturbed; the CPU µs per "
            "request (and the cost ratio) much less so"
        )
    for server in ctx.servers.values():
        lines = [line for line in server.log_text().splitlines() if line.strip()]
        # wrk stops with requests in flight: a server reading a body then loses its client.
        gone = [line for line in lines if "Connection lost" in line]
        lines = [line for line in lines if "Connection lost" not in line]
        if lines:
            ctx.issues.append(
                f"{server.name} log ({len(lines)} lines): " + "\n    ".join(["", *lines[:15]])
            )
        out["systems"][server.name] |= {"log": lines[:200], "client_gone_log_lines": len(gone)}
        if gone:
            out["systems"][server.name]["client_gone_example"] = gone[0]
    return out


# --- profile -------------------------------------------------------------------------------------


def find_py_spy(given: str | None) -> str | None:
    for candidate in (given, shutil.which("py-spy"), "/tmp/pyspy-venv/bin/py-spy"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


async def profiled(ctx: Context, rps: float) -> dict[str, Any] | None:
    """One more vidstream run under wrk with py-spy recording the gateway; its top functions."""
    args = ctx.args
    py_spy = find_py_spy(args.py_spy)
    if py_spy is None:
        ctx.issues.append(
            "--profile: py-spy not found; install it apart from the project, e.g. "
            "`python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy`"
        )
        return None
    server = ctx.servers["vidstream"]
    seconds = args.duration
    out = Path(f"{args.profile}.txt")
    print(f"profile: py-spy on vidstream for {seconds:g} s -> {out}", flush=True)
    keys = keys_file(ctx, "vidstream", await provision(ctx, math.ceil(rps * seconds) + KEY_SPARE))
    # --gil: only the thread holding the GIL, so threads waiting for work and the loop waiting
    # in epoll are left out. Each sample pauses the gateway (whole stacks; the run is slower).
    argv = [*ctx.pin.client, py_spy, "record", "--pid", str(server.pid), "--rate", str(PYSPY_RATE),
            "--duration", f"{seconds + 1:g}", "--gil", "--format", "raw",
            "-o", str(out)]  # fmt: skip
    spy = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await asyncio.sleep(0.5)
    run = await wrk_run(ctx, server, keys, seconds, wrap=False)
    spy_out, _ = await spy.communicate()
    server.alive("profile")
    ctx.issues += problems("vidstream", "profile", run)
    if spy.returncode != 0 or not out.exists():
        ctx.issues.append(f"py-spy failed ({spy.returncode}): {spy_out.decode()[-1000:]}")
        return None
    own, total, samples = collapse(out.read_text())
    print(
        f"  under py-spy: {run['rps']:,.0f} req/s, {samples} busy samples "
        f"({samples / (PYSPY_RATE * (seconds + 1)):.0%} of the run)"
    )
    return {
        "path": str(out),
        "run": run,
        "samples": samples,
        "own": [(name, n / samples) for name, n in own.most_common(30)],
        "total": [(name, n / samples) for name, n in total.most_common(60)],
    }


def collapse(text: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's collapsed stacks -> samples per function: own (the leaf) and total (anywhere)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    return own, total, samples


def frame_name(frame: str) -> str:
    """`create_job (vidstream/http/jobs.py:97)` -> `create_job (vidstream/http/jobs.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


# --- report --------------------------------------------------------------------------------------


def package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine(redis_version: str, wrk: str) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": package("aiohttp"),
        "redis_py": package("redis"),
        "hiredis": package("hiredis"),
        "uvloop": package("uvloop"),
        "redis_server": redis_version,
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("Copyright")[0].strip(),
    }


def code_version() -> dict[str, str]:
    """Which gateway ran: it changes under this script, so name it by its sources."""
    files = [
        *sorted((ROOT / "vidstream" / "http").glob("*.py")),
        *(ROOT / "vidstream" / "state" / name for name in ("tickets.py", "jobstore.py")),
        *sorted((ROOT / "vidstream" / "state" / "lua").glob("*.lua")),
        *(ROOT / "vidstream" / name for name in ("services.py", "job/present.py", "runtime.py")),
    ]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {"sources_sha256": digest.hexdigest()[:12]}


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nmachine: {m['cpus']} CPUs, {m['cpu_model']}; Python {m['python']}; aiohttp "
        f"{m['aiohttp']}; redis-py {m['redis_py']}; hiredis {m['hiredis']}; uvloop "
        f"{m['uvloop']}; Redis {m['redis_server']}; {m['wrk']}\n"
        f"gateway sources sha256 {results['code']['sources_sha256']}; pinning: "
        f"{results['pinning']}\nwrk: {WRK_THREADS} thread, {results['connections']} connections, "
        f"{results['duration_s']:g} s runs; median of {results['reps']} repetition(s) (min-max)"
    )
    print(
        f"\n  {'':10}{'req/s':>26}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
        f"{'CPU %':>7}{'Redis %':>9}{'CPU µs/req':>12}"
    )
    for name in SYSTEMS:
        s = results["systems"][name]
        rps = s["rps"]
        spread = f"{rps['median']:,.0f} ({rps['min']:,.0f}-{rps['max']:,.0f})"
        non2xx = s["non2xx"] + s["socket_errors"]
        print(
            f"  {name:10}{spread:>26}{s['p50_ms']['median']:>9.1f}{s['p99_ms']['median']:>9.1f}"
            f"{non2xx:>9}{s['cpu_pct_server']:>7.0f}{s['cpu_pct_redis']:>9.0f}"
            f"{s['server_cpu_us_per_req']['median']:>12.0f}"
        )
    r, c = results["ratio"], results["cost_ratio"]
    met = "ok" if r["median"] >= r["target"] else "MISS"
    print(
        f"\n  ratio vidstream / bare, req/s: {r['median']:.2f} (per repetition {r['min']:.2f}-"
        f"{r['max']:.2f}); target >= {r['target']}: {met}"
        f"{' (disturbed: see below)' if results['disturbed'] else ''}\n"
        f"  cost ratio, bare CPU µs/req / vidstream's: {c['median']:.2f} (per repetition "
        f"{c['min']:.2f}-{c['max']:.2f}): the req/s ratio if each server had its core to itself"
    )
    gone = {n: results["systems"][n]["client_gone_log_lines"] for n in SYSTEMS}
    if any(gone.values()):
        print(
            f"  log lines for clients gone mid-request (wrk stopping with requests in flight): "
            f"{gone}"
        )
    profile = results.get("profile")
    if profile:
        print(f"\nprofile ({profile['samples']} busy samples, {profile['path']}):")
        print("  own time (the function itself):")
        for name, share in profile["own"][:15]:
            print(f"    {share:6.1%}  {name}")
        print("  total time (with what it calls):")
        for name, share in profile["total"][:30]:
            print(f"    {share:6.1%}  {name}")
    if results["issues"]:
        print("\nproblems seen:")
        for issue in results["issues"]:
            print(f"  - {issue}")
    else:
        print("\nproblems seen: none (every answer was a 202, no socket error, no log line)")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    # SIGINT or SIGTERM stops the run with its clean-up: servers stopped, keys deleted (SIGINT
    # is ignored by default in a background job, hence it too).
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    prefix = f"vsbench-gw-{secrets.token_hex(4)}"
    keys = Keys(prefix)
    started = time.monotonic()
    # On tmpfs when there is one: thousands of upload files are made before each run, which
    # takes longer than the run itself on some disks (the gateway only stats them).
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="vidstream-bench-gw-", dir=where) as tmp:
        env = gateway_env(args, prefix, Path(tmp))
        settings = Settings.from_env(env)  # the gateway's, for the layout of its local storage
        store = open_store(settings, Signer(settings.secret_key.encode()))
        ctx = Context(args, redis, keys, Tickets(redis, keys), store, prefix, Path(tmp), wrk,
                      pinning(not args.no_pin))  # fmt: skip
        results: dict[str, Any] = {
            "machine": machine(str((await redis.info("server"))["redis_version"]), wrk),
            "code": code_version(),
            "pinning": ctx.pin.text,
            "connections": args.connections,
            "wrk_threads": WRK_THREADS,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "reps": args.reps,
            "quick": args.quick,
        }
        try:
            await start_servers(ctx, env)
            results |= await benchmark(ctx)
        finally:
            for server in ctx.servers.values():
                await server.stop()
            doomed = []
            async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
                doomed.append(key)
                if len(doomed) >= 1000:
                    await redis.unlink(*doomed)
                    doomed.clear()
            if doomed:
                await redis.unlink(*doomed)
            await redis.aclose()
    results["issues"] = ctx.issues
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repetition of 5 s")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3; --quick: 1)")
    parser.add_argument("--duration", type=float, default=None, help="s per run (10; --quick: 5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="s of warm-up per server (3)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--no-pin", action="store_true", help="pin no process to a core")
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="before each run, wait up to this many s for the machine to be idle (20)",
    )
    parser.add_argument(
        "--gateway-cmd",
        default="",
        help="run this instead of `vidstream` (with `gateway` appended): a patched build, to "
        "compare a change",
    )
    parser.add_argument("--profile", metavar="PATH", help="py-spy the gateway: PATH.txt")
    parser.add_argument("--py-spy", metavar="BIN", help="py-spy binary (default: found)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    if args.reps < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--reps, --duration and --connections must be at least 1")
    try:
        results = asyncio.run(main(args))
    except asyncio.CancelledError:
        sys.exit("stopped by a signal; servers stopped and keys deleted")
    report(results)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "gateway.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['seconds']} s; results in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    cli()
