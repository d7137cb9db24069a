#!/usr/bin/env python3
"""vidstream's job bus against the Python job queues one would pick instead, in one run.

    .venv/bin/python bench/bus.py [--quick] [--jobs N] [--reps R] [--only NAME,...] [--profile]

Every system runs the same no-op job on the same Redis (REDIS_URL, default
redis://127.0.0.1:6379/13), each run under a namespace of its own (a key prefix or queue name
holding `bbus-`), whose keys are deleted afterwards; nothing else is touched. Each worker is ONE
process, started by this script, and every process is a separate program
(bench/bus_peers.py): vidstream's from .venv, the others from .venv-bench (bench/requirements.txt,
made or refreshed here when missing or older than the requirements).

vidstream has two rows, its default CONCURRENCY=1 and --concurrency C. Both go through its real
worker path: `vidstream transcribe --concurrency C` (cli.main, runtime.Stack, the Worker and its
consumer, lease keeper, registry and control listener) with the transcribe actor swapped for a
no-op one (`NoopTranscribeWorker` in bus_peers.py) that calls `run.finish({})` at once. Jobs are
`transcribe` jobs (a one-stage pipeline) made by `Job.new` and `JobStore.create`, as the gateway
makes them once a request is valid. Per job, then: XREADGROUP, HGETALL, the Claim transition
(Lua), FinishStage (Lua: the job `completed`), XACK, the run log, two log lines (kept with the
job in Redis too).

The peers, with the configuration used (one worker process each; C = --concurrency, 16):
  arq       Worker(max_jobs=C, poll_delay=0.01 s); the default 0.5 s poll caps a drain at
            100 jobs (queue_read_limit) per poll = 200 jobs/s, and adds ~250 ms of latency
  saq       Worker(concurrency=C)
  rq        SimpleWorker: jobs run in the worker (the default Worker forks a child per job)
  celery    worker --pool=solo (jobs run in the worker process itself), without gossip, mingle
            and heartbeat, prefetch multiplier 4 (default); Redis broker, no result backend
  taskiq    taskiq-redis RedisStreamBroker (XREADGROUP/XACK like vidstream), max_async_tasks=C
  dramatiq  RedisBroker, Worker(worker_threads=C): one process of `dramatiq --processes 1`
The asyncio ones (vidstream, arq, saq, taskiq) run on uvloop. Logging is each command-line
worker's default (--quiet-logs: WARNING for all): vidstream, arq, rq and taskiq write a line or
two per job (vidstream also keeps them in Redis with the job); saq, celery and dramatiq do not.

How to read each figure (medians of --reps runs, min-max after them; repetitions interleave the
systems, so a disturbance hits all of them rather than one):
  drain jobs/s     N jobs enqueued first, then the worker started: N / (the last job's end -
                   the first job's start), both taken inside the worker by the job itself, so
                   start-up is left out. vidstream's "end" is when `run.finish` returned: the job
                   is `completed` in Redis (checked afterwards: the status counts must say N).
  worker CPU       the worker process's CPU time over that span / N (µs per job): its own cost,
                   whoever else was busy.
  Redis CPU        redis-server's CPU time over the span / N: what the bus's commands and Lua
                   cost the server (anything else using this Redis is counted too).
  others %         the other processes' CPU time over the span (this script polling, and
                   anything else running), as a share of the whole machine (both cores). Above
                   25%, or with more than 10% stolen by the hypervisor, the row is flagged as
                   disturbed: trust its CPU per job over its jobs/s. The kernel's interrupt
                   work (the loopback network, charged to no process) is in the JSON (irq_pct).
  enqueue seq      jobs/s for the first N/2 of those N jobs (all N for celery and dramatiq),
                   enqueued by one process, each call awaited before the next. (The two
                   vidstream rows measure the same enqueue path twice: it has no worker in it.)
  enqueue conc     jobs/s for the other N/2, 64 at once: concurrent calls for the asyncio
                   libraries and vidstream, `enqueue_many` (one pipeline per 64) for rq; "-" for
                   celery and dramatiq, whose producers are synchronous with no bulk call.
  trickle p50/p99  the worker idle and waiting, --rate (200) jobs a second for --trickle-s (5)
                   seconds: time.time() just before each enqueue call (vidstream: the job's
                   created_at) to time.time() when the job starts in the worker, in ms.
  ratio            vidstream / the best peer in that column: for jobs/s above 1 means vidstream
                   is faster; for latency below 1 means vidstream is quicker.

A default run (N=3000, 3 repetitions, a 5 s trickle) takes about 4 minutes on 2 cores; --quick
(N=2000, 1 repetition, 2 s) about 1. Never fails on speed: a peer that does not install or run
is reported and skipped. Every raw figure goes to bench/results/bus.json (--quick:
bus.quick.json; --only or a smaller --jobs: bus.partial.json). --profile adds, for vidstream: a
py-spy profile of the worker while it drains (the 10 functions with the most own time, and the
inclusive share of vidstream's own functions), and the Redis commands it sends per job (MONITOR,
over a separate short drain, since MONITOR slows Redis down).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS_PY = BENCH / "bus_peers.py"
REQUIREMENTS = BENCH / "requirements.txt"
BENCH_VENV = ROOT / ".venv-bench"
STAMP = BENCH_VENV / ".installed"
RESULTS = BENCH / "results"
NS_TAG = "bbus"  # every key this bench writes holds it: `bbus-<peer>-<random>`
PEER_NAMES = ("arq", "saq", "rq", "celery", "taskiq", "dramatiq")
SYSTEMS = ("vidstream", *PEER_NAMES)
DEFAULT_JOBS = 3000  # N; a default run takes about 4 minutes on 2 cores
OUR_LIBRARIES = ["vidstream", "redis", "hiredis", "uvloop"]
PEER_LIBRARIES = [*PEER_NAMES, "kombu", "taskiq-redis", "redis", "hiredis", "uvloop"]
# Per drain, summarised as median, min and max over the repetitions.
FIGURES = (
    "jobs_s",
    "worker_cpu_us",
    "redis_cpu_us",
    "others_pct",
    "irq_pct",
    "steal_pct",
    "enqueue_seq_s",
    "enqueue_conc_s",
)
IN_FLIGHT = 64
BUSY_PCT = 25  # other processes above this share of the machine: the run was disturbed
STEAL_PCT = 10  # the hypervisor running other machines on our cores, likewise
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Row:
    """One line of the table: a system with one worker configuration."""

    name: str
    peer: str
    concurrency: int
    config: str

    @property
    def python(self) -> Path:
        if self.peer == "vidstream":
            own = ROOT / ".venv" / "bin" / "python"
            return own if own.exists() else Path(sys.executable)
        return BENCH_VENV / "bin" / "python"


def rows(c: int) -> list[Row]:
    return [
        Row("vidstream", "vidstream", 1, "CONCURRENCY=1 (the default)"),
        Row(f"vidstream c={c}", "vidstream", c, f"--concurrency {c}"),
        Row("arq", "arq", c, f"max_jobs={c}, poll_delay=0.01 s"),
        Row("saq", "saq", c, f"concurrency={c}"),
        Row("rq", "rq", 1, "SimpleWorker (no fork per job)"),
        Row("celery", "celery", 1, "--pool=solo"),
        Row("taskiq", "taskiq", c, f"RedisStreamBroker, max_async_tasks={c}"),
        Row("dramatiq", "dramatiq", c, f"1 process, {c} threads"),
    ]


@dataclass
class Context:
    args: argparse.Namespace
    redis: Redis
    tmp: Path
    failed: dict[str, str] = field(default_factory=dict)  # peer -> why it is skipped


# --- the bench venv ------------------------------------------------------------------------------


def ensure_bench_venv() -> str | None:
    """Make or refresh .venv-bench; return None, or why the peers cannot run at all."""
    python = BENCH_VENV / "bin" / "python"
    if python.exists() and STAMP.exists() and STAMP.stat().st_mtime >= REQUIREMENTS.stat().st_mtime:
        return None
    print(f"setting up {BENCH_VENV.name} from {REQUIREMENTS.relative_to(ROOT)} ...", flush=True)
    base = os.environ.get("PYTHON", "python3")
    made = subprocess.run([base, "-m", "venv", str(BENCH_VENV)], capture_output=True, text=True)
    if made.returncode:
        return f"python3 -m venv failed: {made.stderr.strip()[-300:]}"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    whole = subprocess.run([*pip, "-r", str(REQUIREMENTS)], capture_output=True, text=True)
    if whole.returncode:
        # One library that will not install must not take the others down: each on its own,
        # still held to the pinned versions. Whatever is missing fails its own row later.
        print(f"  pip install -r failed ({_last_line(whole.stderr)}); one at a time", flush=True)
        for line in REQUIREMENTS.read_text().splitlines():
            spec = line.split("#", 1)[0].strip()
            if spec:
                one = subprocess.run(
                    [*pip, "-c", str(REQUIREMENTS), spec], capture_output=True, text=True
                )
                if one.returncode:
                    print(f"  {spec}: {_last_line(one.stderr)}", flush=True)
    STAMP.touch()
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if not line.startswith("WARNING")]
    return lines[-1][:200] if lines else "no output"


# --- processes -----------------------------------------------------------------------------------


def namespace(peer: str) -> str:
    # A vidstream REDIS_PREFIX as well: 1-32 of letters, digits, _ . -
    return f"{NS_TAG}-{peer}-{secrets.token_hex(3)}"


def peer_args(ctx: Context, row: Row, ns: str, out: Path) -> list[str]:
    args = [str(row.python), str(PEERS_PY), row.peer]
    common = ["--redis-url", ctx.args.redis_url, "--ns", ns, "--out", str(out)]
    return [*args, "ROLE", *common, *(["--quiet-logs"] if ctx.args.quiet_logs else [])]


def run_client(
    ctx: Context, row: Row, role: str, ns: str, out: Path, extra: str, timeout_s: float
) -> dict[str, Any]:
    """Run the enqueue or trickle role of a peer; return the JSON it prints."""
    cmd = [a if a != "ROLE" else role for a in peer_args(ctx, row, ns, out)]
    cmd += extra.split()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise RuntimeError(f"{role} failed: {_last_line(done.stderr)}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


class Worker:
    """One worker process of a row, its output in a log file."""

    def __init__(self, ctx: Context, row: Row, ns: str, out: Path, expect: int) -> None:
        cmd = [a if a != "ROLE" else "worker" for a in peer_args(ctx, row, ns, out)]
        cmd += ["--expect", str(expect), "--concurrency", str(row.concurrency)]
        self.out, self.log = out, out / "worker.log"
        with self.log.open("wb") as log:
            # Its own session: a Ctrl-C here reaches this script, which stops it in order.
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=BENCH
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, name: str, timeout_s: float) -> Path:
        """Wait for the worker to write `name`; raise if it dies or takes too long."""
        path = self.out / name
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} after {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.005)
        return path

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])[-400:] if lines else "no output"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Names rq shares between all its queues in a database: of its sets only our members go; its
# maintenance lock (which expires by itself) goes once rq's worker has stopped.
SHARED_SETS = ("rq:queues", "rq:workers")
RQ_LOCK = "rq:clean_groups"


def cleanup(redis: Redis, ns: str) -> int:
    """Delete every key of the namespace (every peer puts it in all its key names)."""
    for key in SHARED_SETS:
        ours = [m for m in redis.smembers(key) if ns in m]  # type: ignore[union-attr]
        if ours:
            redis.srem(key, *ours)
    if ns.startswith(f"{NS_TAG}-rq-"):
        redis.delete(RQ_LOCK)
    removed = 0
    batch: list[Any] = []
    for key in redis.scan_iter(match=f"*{ns}*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            removed += int(redis.unlink(*batch))
            batch.clear()
    if batch:
        removed += int(redis.unlink(*batch))
    return removed


# --- measures ------------------------------------------------------------------------------------


def machine_cpu_s() -> tuple[float, float, float]:
    """CPU seconds since boot, all cores: (processes, interrupts, steal). Processes: user, nice
    and system time; interrupts: irq and softirq, mostly the kernel's loopback network work,
    which no process is charged for; steal: time the hypervisor gave to other machines."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (ticks[0] + ticks[1] + ticks[2]) / hz, (ticks[5] + ticks[6]) / hz, ticks[7] / hz


def redis_cpu_s(redis: Redis) -> float:
    info: Any = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def percentile(values: list[float], p: float) -> float:
    """Nearest rank of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(len(ordered) * p / 100 + 0.5) - 1))]


def quantiles(values: list[float]) -> dict[str, float]:
    """The latency distribution, kept in the JSON instead of every job's figure."""
    points = (0, 10, 25, 50, 75, 90, 95, 99, 99.9, 100)
    return {f"p{p:g}": round(percentile(values, p) if p else min(values), 3) for p in points}


def completed(redis: Redis, ns: str) -> int:
    """vidstream's own count of completed jobs (kept by its Lua scripts)."""
    from vidstream.state.keys import Keys

    return int(redis.hget(Keys(ns).status_counts, "completed") or 0)  # type: ignore[arg-type]


def drain(ctx: Context, row: Row, rep: int, profile: bool = False) -> dict[str, Any]:
    """Enqueue N jobs, then start the worker and time it through all of them."""
    n, ns = ctx.args.jobs, namespace(row.peer)
    out = Path(tempfile.mkdtemp(prefix=f"{row.peer}-drain{rep}-", dir=ctx.tmp))
    worker: Worker | None = None
    try:
        extra = f"--n {n} --in-flight {IN_FLIGHT}"
        enq = run_client(ctx, row, "enqueue", ns, out, extra, timeout_s=120 + n / 20)
        worker = Worker(ctx, row, ns, out, expect=n)
        worker.wait_for("started", 60)
        cpu0, redis0 = machine_cpu_s(), redis_cpu_s(ctx.redis)
        spy = start_profiler(ctx, worker.pid, out) if profile else None
        done_path = worker.wait_for("done.json", 60 + n / 20)  # fails below 20 jobs/s
        cpu1, redis1 = machine_cpu_s(), redis_cpu_s(ctx.redis)
        done = json.loads(done_path.read_text())
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            spy.wait(30)
        worker.stop()
        span = done["last_end"] - done["first_start"]
        # Shares of the whole machine (all cores) over the span, in %.
        share = 100 / (os.cpu_count() or 1) / span
        procs, irq, steal = (b - a for a, b in zip(cpu0, cpu1, strict=True))
        figures: dict[str, Any] = {
            "jobs": n,
            "span_s": span,
            "jobs_s": n / span,
            "worker_cpu_us": done["cpu_s"] / n * 1e6,
            "redis_cpu_us": (redis1 - redis0) / n * 1e6,
            "others_pct": max(0.0, procs - done["cpu_s"] - (redis1 - redis0)) * share,
            "irq_pct": irq * share,
            "steal_pct": steal * share,
            "enqueue_seq_s": enq["seq_n"] / enq["seq_s"],
            "enqueue_conc_s": enq["conc_n"] / enq["conc_s"] if "conc_s" in enq else None,
        }
        if row.peer == "vidstream" and (got := completed(ctx.redis, ns)) != n:
            figures["problem"] = f"{got} of {n} jobs completed in Redis"
        if spy is not None:
            figures["profile"] = top_functions(out / "profile.txt")
        return figures
    finally:
        if worker is not None:
            worker.stop()
        cleanup(ctx.redis, ns)
        if not ctx.args.keep:
            shutil.rmtree(out, ignore_errors=True)


def trickle(ctx: Context, row: Row) -> dict[str, Any]:
    """The worker idle, a steady `rate` of jobs: enqueue-to-start latency of each."""
    ns, count = namespace(row.peer), int(ctx.args.rate * ctx.args.trickle_s)
    out = Path(tempfile.mkdtemp(prefix=f"{row.peer}-trickle-", dir=ctx.tmp))
    worker = Worker(ctx, row, ns, out, expect=count + 1)  # +1: the warm-up job
    try:
        extra = f"--rate {ctx.args.rate} --seconds {ctx.args.trickle_s}"
        sent = run_client(ctx, row, "trickle", ns, out, extra, 120 + ctx.args.trickle_s * 2)
        done = json.loads(worker.wait_for("done.json", 30).read_text())
        lat = [v * 1000 for v in done["latencies"]]
        return {
            "jobs": len(lat),
            "p50_ms": percentile(lat, 50),
            "p90_ms": percentile(lat, 90),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
            "mean_ms": statistics.fmean(lat),
            # How far behind its schedule the sender ever was: large, and the rate was not met.
            "sender_max_late_ms": sent["max_late_s"] * 1000,
            "quantiles_ms": quantiles(lat),
        }
    finally:
        worker.stop()
        cleanup(ctx.redis, ns)
        if not ctx.args.keep:
            shutil.rmtree(out, ignore_errors=True)


# --- profile (--profile) -------------------------------------------------------------------------


def start_profiler(ctx: Context, pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = BENCH_VENV / "bin" / "py-spy"
    if not spy.exists():
        print("  (no py-spy in .venv-bench: no profile)")
        return None
    # py-spy's default, blocking mode: the worker is paused for each sample (100 a second), so
    # every stack is whole. Samples of waiting threads are sorted out in top_functions().
    cmd = [str(spy), *f"record -p {pid} -r 100 --format raw -o".split(), str(out / "profile.txt")]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


IDLE_FRAMES = (
    "_worker (concurrent/futures/thread.py:81)",  # a thread-pool thread waiting for work
    "Condition.wait (threading.py",
    "Thread._wait_for_tstate_lock (threading.py",
)
LOOP_FRAMES = ("Runner.run (asyncio/runners.py", "run (uvloop/__init__.py")


def top_functions(path: Path, n: int = 10) -> dict[str, Any]:
    """Where the worker's samples fell: own time per function (the innermost frame), and the
    inclusive share of vidstream's own functions.

    Samples of a thread-pool thread waiting for work are left out. A sample whose innermost
    Python frame is the event loop's entry is uvloop's C code: waiting in epoll or doing I/O and
    callbacks, which py-spy cannot tell apart without native stacks; it is one line of its own.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    if not path.exists():
        return {"samples": 0, "own": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, samples = stack.split(";"), int(count)
        if frames[-1].startswith(IDLE_FRAMES):
            idle += samples
            continue
        total += samples
        leaf = frames[-1]
        if leaf.startswith(LOOP_FRAMES):
            leaf = "(uvloop's C loop: waiting in epoll, or I/O and callbacks)"
        own[leaf] += samples
        # Inclusive per function (any line of it), without the entry point every sample is in.
        for name in {frame.rsplit(":", 1)[0] + ")" for frame in frames}:
            if "(vidstream/" in name and "(vidstream/cli/main.py" not in name:
                inclusive[name] += samples
    return {
        "samples": total,
        "idle_thread_samples": idle,
        "own": [{"function": f, "pct": c / total * 100} for f, c in own.most_common(n)],
        "inclusive": [
            {"function": f, "pct": c / total * 100} for f, c in inclusive.most_common(n + 5)
        ],
    }


def commands_per_job(ctx: Context, row: Row, n: int = 300) -> dict[str, Any]:
    """Redis commands per job, from MONITOR over a short drain of n jobs (not timed: MONITOR
    slows Redis down)."""
    ns = namespace(row.peer)
    out = Path(tempfile.mkdtemp(prefix="monitor-", dir=ctx.tmp))
    db = int(ctx.redis.connection_pool.connection_kwargs.get("db", 0))
    run_client(ctx, row, "enqueue", ns, out, f"--n {n} --in-flight 1", timeout_s=120)
    client: Counter[str] = Counter()
    lua: Counter[str] = Counter()
    stop = threading.Event()

    def listen() -> None:
        with ctx.redis.monitor() as monitor:
            for seen in monitor.listen():
                if stop.is_set():
                    return
                if seen.get("db") != db or ns not in seen.get("command", ""):
                    continue  # another client's (a test run on another database, say)
                command = str(seen["command"]).split(" ", 1)[0].upper()
                (lua if seen.get("client_type") == "lua" else client)[command] += 1

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.2)  # MONITOR on before the worker sends anything
    worker = Worker(ctx, row, ns, out, expect=n)
    try:
        worker.wait_for("done.json", 120)
    finally:
        worker.stop()
        stop.set()
        ctx.redis.ping()  # one more command, so the listener sees the stop
        listener.join(5)
        cleanup(ctx.redis, ns)
    return {
        "jobs": n,
        "client": {k: v / n for k, v in client.most_common()},
        "lua": {k: v / n for k, v in lua.most_common()},
    }


# --- report --------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def spread(s: dict[str, float] | None, digits: int = 0) -> str:
    if s is None:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}-{fmt(s['max'], digits)})"


def summarise(result: dict[str, Any]) -> None:
    runs = result["drains"]
    result["summary"] = {key: summary(runs, key) for key in FIGURES}


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpus']} cores, {m['cpu_model']}, Linux {m['kernel']}")
    print(f"python {m['python']} (vidstream: .venv, peers: .venv-bench {m['bench_python']})")
    print(f"redis-server {m['redis_server']}, at {results['config']['redis_url']}")
    print("vidstream side: " + _versions(m["versions"]["vidstream"]))
    print("peers: " + _versions(m["versions"]["peers"]))
    c = results["config"]
    logs = "WARNING" if c["quiet_logs"] else "each CLI's default"
    print(
        f"N={c['jobs']} jobs per drain, {c['reps']} rep(s); trickle {c['rate']:.0f} jobs/s for "
        f"{c['trickle_s']:.0f} s; C={c['concurrency']}; logs: {logs}"
    )
    header = (
        "system",
        "config",
        "drain jobs/s",
        "worker µs/job",
        "Redis µs/job",
        "others %",
        "enqueue seq/s",
        "enqueue conc/s",
        "trickle p50 ms",
        "p99 ms",
    )
    lines = [header]
    for name, r in results["rows"].items():
        if "error" in r and not r.get("drains"):
            lines.append((name, r["config"], f"failed: {r['error'][:60]}", *[""] * 7))
            continue
        s, t = r["summary"], r.get("trickle") or {}
        lines.append(
            (
                name,
                r["config"],
                spread(s["jobs_s"]),
                fmt(_med(s, "worker_cpu_us")),
                fmt(_med(s, "redis_cpu_us")),
                fmt(_med(s, "others_pct")),
                fmt(_med(s, "enqueue_seq_s")),
                fmt(_med(s, "enqueue_conc_s")),
                fmt(t.get("p50_ms"), 1),
                fmt(t.get("p99_ms"), 1),
            )
        )
    print()
    print(markdown(lines))
    for line in ratios(results):
        print(line)
    problems = [(n, p) for n, r in results["rows"].items() for p in r.get("problems", [])]
    if problems:
        print("\nproblems seen:")
        for name, problem in problems:
            print(f"  {name}: {problem}")
    disturbed = [n for n, r in results["rows"].items() if was_disturbed(r.get("summary") or {})]
    if disturbed:
        print(
            f"\ndisturbed (other processes > {BUSY_PCT}% or steal > {STEAL_PCT}% of the machine): "
            f"{', '.join(disturbed)}; trust their CPU per job over their jobs/s"
        )
    if prof := results.get("profile"):
        print_profile(prof)


def was_disturbed(summary: dict[str, Any]) -> bool:
    others, steal = _med(summary, "others_pct") or 0, _med(summary, "steal_pct") or 0
    return others > BUSY_PCT or steal > STEAL_PCT


def _med(summary: dict[str, Any], key: str) -> float | None:
    s = summary.get(key)
    return s["median"] if s else None


def _versions(found: dict[str, str | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in found.items() if v) or "?"


def markdown(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for j, line in enumerate(lines):
        out.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        )
        if j == 0:
            out.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(out)


def ratios(results: dict[str, Any]) -> list[str]:
    """vidstream / the best peer, per column."""
    peers = {n: r for n, r in results["rows"].items() if r["peer"] != "vidstream"}
    ours = {n: r for n, r in results["rows"].items() if r["peer"] == "vidstream"}
    lines = []
    columns = (
        ("drain", "jobs_s", max),
        ("enqueue seq", "enqueue_seq_s", max),
        ("enqueue conc", "enqueue_conc_s", max),
    )
    for label, key, best in columns:
        found = {n: _med(r.get("summary") or {}, key) for n, r in peers.items()}
        found = {n: v for n, v in found.items() if v}
        if not found:
            continue
        top = best(found, key=lambda n: found[n])
        for name, r in ours.items():
            if value := _med(r.get("summary") or {}, key):
                lines.append(f"{label}: {name} / {top} = {value / found[top]:.2f}")
    for key in ("p50_ms", "p99_ms"):
        found = {n: (r.get("trickle") or {}).get(key) for n, r in peers.items()}
        found = {n: v for n, v in found.items() if v}
        if not found:
            continue
        top = min(found, key=lambda n: found[n])
        for name, r in ours.items():
            if value := (r.get("trickle") or {}).get(key):
                lines.append(f"trickle {key[:3]}: {name} / {top} = {value / found[top]:.2f}")
    return ["\nratio vidstream / fastest peer:", *[f"  {line}" for line in lines]] if lines else []


def print_profile(prof: dict[str, Any]) -> None:
    for name, p in prof.items():
        if "own" in p:
            print(f"\n{name}: {p['samples']} samples while busy; top {len(p['own'])} by own time")
            for item in p["own"]:
                print(f"  {item['pct']:5.1f}%  {item['function']}")
            print("  vidstream's functions, inclusive:")
            for item in p["inclusive"]:
                print(f"  {item['pct']:5.1f}%  {item['function']}")
        if "client" in p:
            print(f"\n{name}: Redis commands per job (MONITOR, {p['jobs']} jobs)")
            print("  sent:   " + ", ".join(f"{k} {v:.2f}" for k, v in p["client"].items()))
            print("  in Lua: " + ", ".join(f"{k} {v:.2f}" for k, v in p["lua"].items()))


# --- main ----------------------------------------------------------------------------------------


def machine(ctx: Context) -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info: Any = ctx.redis.info("server")

    def versions(python: Path, keep: list[str]) -> dict[str, Any]:
        cmd = [str(python), str(PEERS_PY), "all", "versions"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        try:
            found = json.loads(done.stdout)
        except json.JSONDecodeError:
            return {}
        return {k: found.get(k) for k in ["python", *keep]}

    ours = versions(Row("", "vidstream", 1, "").python, OUR_LIBRARIES)
    theirs = versions(BENCH_VENV / "bin" / "python", PEER_LIBRARIES)

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": ours.pop("python", None) or platform.python_version(),
        "bench_python": theirs.pop("python", None) or "-",
        "redis_server": info["redis_version"],
        "versions": {"vidstream": ours, "peers": theirs},
        "loadavg_at_start": os.getloadavg(),
    }


def code_version() -> str:
    """Which worker path ran: a hash of the sources it goes through."""
    files = [
        *sorted((ROOT / "vidstream" / "actors").glob("*.py")),
        *sorted((ROOT / "vidstream" / "job" / "protocol").glob("*.py")),
        *sorted((ROOT / "vidstream" / "state" / "lua").glob("*.lua")),
    ]
    files += [ROOT / "vidstream" / f for f in ("state/jobstore.py", "state/bus.py", "runtime.py")]
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run(ctx: Context, chosen: list[Row]) -> dict[str, Any]:
    args = ctx.args
    results: dict[str, Any] = {"rows": {}}
    for row in chosen:
        results["rows"][row.name] = {
            "peer": row.peer,
            "config": row.config,
            "concurrency": row.concurrency,
            "drains": [],
            "problems": [],
        }
    usable = [r for r in chosen if r.peer not in ctx.failed]
    for row in chosen:
        if row.peer in ctx.failed:
            results["rows"][row.name]["error"] = ctx.failed[row.peer]
            print(f"{row.name}: skipped ({ctx.failed[row.peer]})")
    # Repetitions go round all the systems, so a disturbance spreads over them.
    for rep in range(args.reps):
        for row in usable:
            record = results["rows"][row.name]
            if rep and record.get("error") and not record["drains"]:
                continue  # failed every time so far: it will not start now
            print(f"drain {rep + 1}/{args.reps}: {row.name} ...", end=" ", flush=True)
            try:
                figures = drain(ctx, row, rep)
            except Exception as exc:  # a peer that cannot run is reported, not fatal
                record["error"] = f"{type(exc).__name__}: {exc}"
                record["problems"].append(f"drain {rep + 1}: {record['error'][:300]}")
                print(f"failed: {record['error'][:200]}")
                continue
            record["drains"].append(figures)
            if "problem" in figures:
                record["problems"].append(figures["problem"])
            print(
                f"{figures['jobs_s']:,.0f} jobs/s, {figures['worker_cpu_us']:,.0f} µs/job "
                f"in the worker, others {figures['others_pct']:.0f}%"
            )
    for row in usable:
        record = results["rows"][row.name]
        if not record["drains"]:
            continue
        print(f"trickle: {row.name} ...", end=" ", flush=True)
        try:
            record["trickle"] = trickle(ctx, row)
            t = record["trickle"]
            print(f"p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms")
        except Exception as exc:
            record["problems"].append(f"trickle: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"failed: {exc}")
    for record in results["rows"].values():
        summarise(record)
    if args.profile:
        results["profile"] = profile(ctx)
    return results


def profile(ctx: Context) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for row in rows(ctx.args.concurrency)[:2]:
        print(f"profile: {row.name} ...", flush=True)
        try:
            found[f"{row.name} (py-spy)"] = drain(ctx, row, 0, profile=True)["profile"]
            found[f"{row.name} (commands)"] = commands_per_job(ctx, row)
        except Exception as exc:
            found[row.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return found


def parse_args() -> argparse.Namespace:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--quick", action="store_true", help="N=2000, one rep, a 2 s trickle")
    cli.add_argument("--jobs", type=int, help="N: jobs per drain (3000; --quick: 2000)")
    cli.add_argument("--reps", type=int, help="drains per system (3; --quick: 1)")
    cli.add_argument("--only", help="comma-separated: vidstream,arq,saq,rq,celery,taskiq,dramatiq")
    cli.add_argument("--concurrency", type=int, default=16, help="C, for those that have it")
    cli.add_argument("--rate", type=float, default=200.0, help="trickle: jobs a second")
    cli.add_argument("--trickle-s", type=float, help="trickle: seconds (5; --quick: 2)")
    cli.add_argument("--quiet-logs", action="store_true", help="every worker logs at WARNING")
    cli.add_argument("--profile", action="store_true", help="profile the vidstream worker too")
    cli.add_argument("--keep", action="store_true", help="keep the workers' logs and files")
    cli.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    args = cli.parse_args()
    args.jobs = args.jobs or (2000 if args.quick else DEFAULT_JOBS)
    args.reps = args.reps or (1 if args.quick else 3)
    args.trickle_s = args.trickle_s or (2.0 if args.quick else 5.0)
    args.only = [n.strip() for n in args.only.split(",")] if args.only else list(SYSTEMS)
    if unknown := [n for n in args.only if n not in SYSTEMS]:
        cli.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    try:
        redis.ping()
    except Exception as exc:
        print(f"no Redis at {args.redis_url}: {exc}", file=sys.stderr)
        return 1
    chosen = [r for r in rows(args.concurrency) if r.peer in args.only]
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        ctx = Context(args, redis, Path(tmp))
        if any(r.peer != "vidstream" for r in chosen) and (why := ensure_bench_venv()):
            print(f"the peers cannot run: {why}")
            ctx.failed.update(dict.fromkeys(PEER_NAMES, why))
        results = {
            "machine": machine(ctx),
            "code": code_version(),
            "config": {
                "redis_url": args.redis_url,
                "jobs": args.jobs,
                "reps": args.reps,
                "concurrency": args.concurrency,
                "rate": args.rate,
                "trickle_s": args.trickle_s,
                "in_flight": IN_FLIGHT,
                "quiet_logs": args.quiet_logs,
                "quick": args.quick,
            },
        }
        try:
            results.update(run(ctx, chosen))
        except KeyboardInterrupt:  # each measure has removed its keys and stopped its worker
            print("\ninterrupted")
            return 130
    results["seconds"] = round(time.monotonic() - started, 1)
    report(results)
    RESULTS.mkdir(exist_ok=True)
    # Only a whole run (every system, N >= the default) writes bus.json: a quick run or a partial
    # one must not overwrite its figures.
    whole = len(args.only) == len(SYSTEMS) and not args.quick and args.jobs >= DEFAULT_JOBS
    path = RESULTS / (
        "bus.json" if whole else "bus.quick.json" if args.quick else "bus.partial.json"
    )
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['seconds']} s; results in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
