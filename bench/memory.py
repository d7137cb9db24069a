#!/usr/bin/env python3
"""Memory: each role's RSS at rest and under a batch of jobs, and a large file through storage.

    .venv/bin/python bench/memory.py              # about 4 min on the 2-core VM
    .venv/bin/python bench/memory.py --quick      # 3 jobs, 300 MiB: under a minute
    .venv/bin/python bench/memory.py --size-mb 1024 --skip-s3 --jobs 5
(--skip-batch, --skip-storage and --skip-local run parts only.)

Set-up: the Redis at REDIS_URL (default redis://127.0.0.1:6379/15) under a key prefix of this
run's own, removed at the end; each role started as the Procfile starts it (`.venv/bin/vidstream
ROLE`, its own process) with VIDSTREAM_AUTH=off, RATE_LIMIT_PER_MIN=0, a SECRET_KEY of this run,
a temporary VIDSTREAM_DATA_DIR and every other setting at its default (CONCURRENCY=1, WHISPER
tiny.en, one thread). Memory is read from /proc: VmRSS (resident now) and VmHWM (the kernel's
exact peak of VmRSS, reset with /proc/PID/clear_refs before each measurement). MiB = 2^20 bytes;
MB/s = 10^6 bytes per second.

Part 1, roles under a batch (local storage). Every --interval (0.1 s) a sampler thread reads
VmRSS of each role process and of all its descendants (found by parent pid: the transcribe
role's Whisper server and that server's FFmpeg decoder, render's FFmpeg encoders, the probes:
Python children). The roles start, idle 2 s, then are sampled for 1 s: that
is "rest". Then --jobs (10; --quick: 3) jobs of one ~10 s clip (tests/media.py make_clip:
espeak-ng speech over a 640x360 test pattern) are POSTed at once as multipart uploads to
/v1/jobs and each is watched over its own WebSocket (so the notifier has subscribers) until it
ends. Columns:
  rest          the role process's VmRSS at rest (median of the rest samples);
  +children     the same plus its descendants' VmRSS, at rest;
  peak          the role process's VmHWM over the batch: exact, not sampled;
  peak+children the largest sample of (role + descendants) over the batch. Being sampled, it
                can miss a brief spike: it may be below `peak` for a role without children, and
                short-lived children are seen only if alive at a sample (a probe lasts about
                0.3 s; "children seen" counts those caught). It sums RSS, so libraries shared
                between processes count twice (little here: every child is exec'd, not forked);
  after         the role process's VmRSS 2 s after the batch ended: what it keeps;
  largest child the child with the highest VmHWM seen during the batch, and that peak.
Under the table, at rest: each role's RssAnon (its own heap: the modules it imported, its
objects) + RssFile (mapped files: the interpreter, extension modules, shared libraries; the same
files in every role, so the kernel holds them once), and its PSS (each shared page divided among
the processes mapping it). The PSS of the four roles and their children, summed, is what the
machine really spends on an idle deployment.

Part 2, a large file through storage (--size-mb, 2048; --quick: 300), for local storage and
for S3 (moto's standalone server, `python -m moto.server`, path-style SigV4, on a free port;
--skip-s3 leaves it out). The source is a sparse file, so neither this script nor the disk holds
it; what is stored is deleted once measured. If the disk (or, for moto, the memory) cannot hold
what the run keeps at once, the size is lowered and a note says so. Each row is one process
moving the whole file, in the order run:
  gateway       `vidstream gateway` alone (no workers: the jobs stay queued) receiving a
                multipart POST /v1/jobs streamed from the file, for both stores (with S3 the
                gateway sends it on as a multipart upload: `put_stream`); with local storage also
                a GET of the stored source through a signed /v1/objects link (the download path
                clients use; FileResponse) and a PUT to the URL of POST /v1/uploads (then POST
                /v1/jobs naming the key). With S3 those two go straight between the client and
                the bucket: no vidstream process sees the bytes, so nothing of ours to measure.
  store         bench/memory_store.py: a process holding only the store, making the calls the
                workers make, on the source the gateway stored: get_file (a worker fetching its
                source: download out) and put_file (a worker storing an output: upload in; with
                local storage on one filesystem a hard link, so no MB/s). With local storage it
                first runs put_stream (1 MiB chunks made on the fly), the call behind the
                gateway's row, to separate the store's cost from the gateway's. With S3 that is
                left out: the gateway row is that call, in the real process, and at moto's 30-50
                MB/s it would add about a minute.
  base          VmRSS of that process just before the transfer (after resetting its peak);
  peak          its VmHWM once the transfer has ended; growth = peak - base, target <= 100 MiB;
  MB/s          size / wall time of the request or call (client to gateway to store, all on
                this machine: loopback, the disk's page cache and, for S3, moto's speed are part
                of it, so compare rows of one store, not stores).
The moto server's own peak RSS is printed for context: it is the stand-in bucket, not vidstream.

Never fails on speed or memory: it prints the figures, the machine and its load average (other
work on the cores slows the MB/s and the batch, hardly the memory), every warning or error a
role logged, and a failed step (with the gateway's and moto's last log lines) instead of its
row; everything goes to bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.media import FFMPEG, make_clip  # noqa: E402
from vidstream.core.signing import Signer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
MiB = 1024 * 1024
KIB_PER_MIB = 1024
TARGET_MIB = 100  # the target for RSS growth while a large file moves
TERMINAL = ("completed", "failed", "cancelled")
REST_IDLE_S, REST_SAMPLE_S = 2.0, 1.0
SPARE = 1024 * MiB  # disk and memory left free beyond what the run needs
# At most on disk at once, in file sizes: local 2 (the upload and a worker's copy); S3 4.5 (in
# moto's temporary files: the upload, a stored copy, its parts while they are joined; and the
# worker's copy). In memory, moto joins a multipart upload's parts in one buffer and reads an
# object whole for a GET: measured 8.6 GiB at its peak for a 2 GiB file.
DISK_FACTOR_LOCAL, DISK_FACTOR_S3, MOTO_RAM_FACTOR = 2.5, 4.5, 4.5


# --- /proc ---------------------------------------------------------------------------------------


def status_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None when the process is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = hwm = -1
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return (rss, hwm) if rss >= 0 else None


def breakdown_kb(pid: int) -> dict[str, int]:
    """What the resident pages are: RssAnon (the process's own heap and stacks), RssFile (mapped
    files: Python, its extension modules, shared libraries, the same files in every role) and
    Pss (each shared page divided by the processes that map it)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def children_map() -> dict[int, list[int]]:
    """Every process's children, by parent pid."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], list(kids.get(pid, ()))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, ())
    return out


def process_name(pid: int) -> str:
    """`ffmpeg`, `whisper_server`, `probe`: the program, or the module a Python child runs."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    if not args:
        return "?"
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1].rsplit(".", 1)[-1]
    name = Path(args[0]).name
    return "ffmpeg" if name.startswith("ffmpeg") else name  # imageio-ffmpeg's long file name


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    role: str
    rss: int  # KiB, the role process
    kids: tuple[tuple[int, str, int, int], ...]  # (pid, name, VmRSS, VmHWM) of descendants

    @property
    def total(self) -> int:
        return self.rss + sum(k[2] for k in self.kids)


class Sampler(threading.Thread):
    """Reads VmRSS of each role process and its descendants every `interval_s`."""

    def __init__(self, pids: dict[str, int], interval_s: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval_s = pids, interval_s
        self.samples: list[Sample] = []
        self.names: dict[int, str] = {}
        self.halt = threading.Event()
        self.ticks, self.busy_s = 0, 0.0

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            kids = children_map()
            for role, pid in self.pids.items():
                own = status_kb(pid)
                if own is None:
                    continue
                found = []
                for kid in descendants(pid, kids):
                    st = status_kb(kid)
                    if st is None:
                        continue
                    if kid not in self.names:
                        self.names[kid] = process_name(kid)
                    found.append((kid, self.names[kid], st[0], st[1]))
                self.samples.append(Sample(started, role, own[0], tuple(found)))
            self.ticks += 1
            self.busy_s += time.monotonic() - started
            self.halt.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self.halt.set()
        self.join(5)

    def window(self, role: str, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.role == role and start <= s.t <= end]


def window_figures(samples: list[Sample]) -> dict[str, Any]:
    if not samples:
        return {"samples": 0}
    peaks: dict[int, tuple[str, int]] = {}
    for s in samples:
        for pid, name, _rss, hwm in s.kids:
            if hwm > peaks.get(pid, ("", -1))[1]:
                peaks[pid] = (name, hwm)
    largest = max(peaks.values(), key=lambda p: p[1], default=("", 0))
    return {
        "samples": len(samples),
        "rss_median_kb": int(statistics.median(s.rss for s in samples)),
        "rss_max_kb": max(s.rss for s in samples),
        "total_median_kb": int(statistics.median(s.total for s in samples)),
        "total_max_kb": max(s.total for s in samples),
        "largest_child": {"name": largest[0], "hwm_kb": largest[1]} if largest[0] else None,
        "children_seen": dict(Counter(name for name, _ in peaks.values())),
    }


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def procfile() -> dict[str, list[str]]:
    """The Procfile's roles, `vidstream` resolved to this venv's entry point."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            argv = shlex.split(command)
            if argv[0] == "vidstream":
                argv[0] = str(BIN / "vidstream")
            entries[name.strip()] = argv
    return entries


class Role:
    """One `vidstream ROLE` process; its JSON log lines are read as they come."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc
        self.lines: list[str] = []
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str]) -> Role:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            if "vidstream_ready" in text:
                self.ready.set()

    async def wait_ready(self, timeout_s: float = 180) -> None:
        waiter = asyncio.ensure_future(self.ready.wait())
        died = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait(
            {waiter, died}, timeout=timeout_s, return_when="FIRST_COMPLETED"
        )
        waiter.cancel()
        died.cancel()
        if not self.ready.is_set():
            tail = "\n".join(self.lines[-15:])
            raise RuntimeError(f"{self.name} did not start ({done and 'it exited'}):\n{tail}")

    async def stop(self, timeout_s: float = 30) -> int | None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
        return code

    def problems(self) -> list[str]:
        """Warnings and errors the role logged, one line each."""
        out = []
        for line in self.lines:
            try:
                entry = json.loads(line)
            except ValueError:
                if line.strip():
                    out.append(f"{self.name}: {line[:200]}")
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                detail = {k: v for k, v in entry.items() if k not in ("level", "timestamp")}
                out.append(f"{self.name}: {json.dumps(detail)[:300]}")
        return out


class Moto:
    """moto's standalone S3 server in its own process; its log is read to the end."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.ready, self.url = threading.Event(), ""
        self.tail: deque[str] = deque(maxlen=20)  # its last log lines, for when a request fails
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        if not self.ready.wait(60):
            self.proc.kill()
            raise RuntimeError("the moto server did not start")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.tail.append(line.rstrip()[:300])
            if not self.ready.is_set() and (m := re.search(r"Running on (http://[\d.:]+)", line)):
                self.url = m.group(1)
                self.ready.set()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.drainer.join(5)


@dataclass
class Context:
    args: argparse.Namespace
    prefix: str
    secret: str
    tmp: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "REDIS_URL": self.args.redis_url,
            "REDIS_PREFIX": self.prefix,
            "SECRET_KEY": self.secret,
            "VIDSTREAM_AUTH": "off",
            "RATE_LIMIT_PER_MIN": "0",
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_S": "10",
            **extra,
        }


# --- part 1: the roles under a batch -------------------------------------------------------------


async def upload_job(http: aiohttp.ClientSession, gateway: str, path: Path) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="video/mp4")
    async with http.post(f"{gateway}/v1/jobs", data=form) as r:
        body: dict[str, Any] = await r.json()
        if r.status != 202:
            raise RuntimeError(f"POST /v1/jobs answered {r.status}: {body}")
    return body


async def watch(job: dict[str, Any], timeout_s: float) -> tuple[str, float]:
    """Follow the job over the WebSocket to its end: (status, monotonic time it ended)."""
    async with asyncio.timeout(timeout_s), connect(job["links"]["ws"]) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job["id"],
                                  "token": job["ws_token"], "last_event_id": "0-0"}))  # fmt: skip
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "error":
                raise RuntimeError(f"WebSocket error for {job['id']}: {msg}")
            if msg.get("type") == "event" and msg.get("status") in TERMINAL:
                return str(msg["status"]), time.monotonic()
    raise RuntimeError(f"the WebSocket of {job['id']} closed before the job ended")


async def roles_under_batch(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    clip = make_clip(ctx.tmp)
    gateway_port, notifier_port = free_port(), free_port()
    env = ctx.env(
        VIDSTREAM_DATA_DIR=str(ctx.tmp / "batch-data"),
        GATEWAY_PORT=str(gateway_port),
        NOTIFIER_PORT=str(notifier_port),
    )
    gateway = f"http://127.0.0.1:{gateway_port}"
    roles: dict[str, Role] = {}
    sampler: Sampler | None = None
    try:
        t_launch = time.monotonic()
        for name, argv in procfile().items():
            roles[name] = await Role.start(name, argv, env)
        await asyncio.gather(*(r.wait_ready() for r in roles.values()))
        startup_s = time.monotonic() - t_launch
        sampler = Sampler({n: r.pid for n, r in roles.items()}, args.interval)
        sampler.start()
        await asyncio.sleep(REST_IDLE_S)
        rest_from = time.monotonic()
        await asyncio.sleep(REST_SAMPLE_S)
        rest_to = time.monotonic()
        kids = children_map()
        rest_parts = {
            n: {"role": breakdown_kb(r.pid),
                "children_pss_kb": sum(breakdown_kb(k).get("Pss", 0)
                                       for k in descendants(r.pid, kids))}
            for n, r in roles.items()
        }  # fmt: skip
        startup_hwm = {n: (status_kb(r.pid) or (0, 0))[1] for n, r in roles.items()}
        for r in roles.values():
            reset_peak(r.pid)
        batch_from = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            jobs = await asyncio.gather(
                *(upload_job(http, gateway, clip.path) for _ in range(args.jobs))
            )
        submitted = time.monotonic()
        ended = await asyncio.gather(
            *(watch(job, args.job_timeout) for job in jobs), return_exceptions=True
        )
        batch_to = time.monotonic()
        peak_hwm = {n: (status_kb(r.pid) or (0, 0))[1] for n, r in roles.items()}
        await asyncio.sleep(REST_IDLE_S)
        after_from = time.monotonic()
        await asyncio.sleep(REST_SAMPLE_S)
        after_to = time.monotonic()
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        codes = {n: await r.stop() for n, r in roles.items()}
        for r in roles.values():
            ctx.problems += r.problems()
    for n, code in codes.items():
        if code != 0:
            ctx.problems.append(f"{n} exited {code} on SIGTERM")
    outcomes = Counter(e[0] if isinstance(e, tuple) else f"error: {e}" for e in ended)
    figures: dict[str, Any] = {}
    for n in roles:
        rest = window_figures(sampler.window(n, rest_from, rest_to))
        batch = window_figures(sampler.window(n, batch_from, batch_to))
        after = window_figures(sampler.window(n, after_from, after_to))
        figures[n] = {
            "pid": roles[n].pid,
            "startup_hwm_kb": startup_hwm[n],
            "rest_kb": rest.get("rss_median_kb", 0),
            "rest_total_kb": rest.get("total_median_kb", 0),
            "rest_children": rest.get("children_seen", {}),
            "rest_anon_kb": rest_parts[n]["role"].get("RssAnon", 0),
            "rest_file_kb": rest_parts[n]["role"].get("RssFile", 0),
            "rest_pss_kb": rest_parts[n]["role"].get("Pss", 0),
            "rest_children_pss_kb": rest_parts[n]["children_pss_kb"],
            "peak_kb": peak_hwm[n],
            "peak_sampled_kb": batch.get("rss_max_kb", 0),
            "peak_total_kb": batch.get("total_max_kb", 0),
            "after_kb": after.get("rss_median_kb", 0),
            "after_total_kb": after.get("total_median_kb", 0),
            "largest_child": batch.get("largest_child"),
            "children_seen": batch.get("children_seen", {}),
            "samples": batch.get("samples", 0),
        }
    done_at = [e[1] for e in ended if isinstance(e, tuple)]
    return {
        "jobs": args.jobs,
        "clip": {"seconds": round(clip.duration, 2), "bytes": clip.path.stat().st_size},
        "outcomes": dict(outcomes),
        "startup_s": round(startup_s, 1),
        "submit_s": round(submitted - batch_from, 2),
        "batch_s": round(batch_to - batch_from, 1),
        "first_done_s": round(min(done_at) - batch_from, 1) if done_at else None,
        "interval_s": args.interval,
        "sampler_ticks": sampler.ticks,
        "sampler_ms_per_tick": round(1000 * sampler.busy_s / max(sampler.ticks, 1), 1),
        "roles": figures,
    }


# --- part 2: a large file through storage --------------------------------------------------------


def sparse_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def pick_size(ctx: Context) -> int:
    """--size-mb, lowered (with a note) if the disk, or with S3 moto's memory, cannot hold it."""
    wanted = ctx.args.size_mb
    free = shutil.disk_usage(ctx.tmp).free
    factor = DISK_FACTOR_LOCAL if ctx.args.skip_s3 else DISK_FACTOR_S3
    disk = f"{free / 2**30:.1f} GiB free on the disk at {ctx.tmp} (needs {factor}x the size)"
    limits = [(int((free - SPARE) / factor / MiB), disk)]
    if not ctx.args.skip_s3:
        avail = mem_available()
        ram = (
            f"{avail / 2**30:.1f} GiB of memory available (moto needs {MOTO_RAM_FACTOR}x the size)"
        )
        limits.append((int((avail - SPARE) / MOTO_RAM_FACTOR / MiB), ram))
    fits, why = min(limits)
    if fits >= wanted:
        return wanted
    size = max(50, fits // 50 * 50)
    ctx.notes.append(f"the file is {size} MiB instead of {wanted} MiB: {why}")
    return size


@contextlib.contextmanager
def peak_of(pid: int) -> Iterator[dict[str, Any]]:
    """Reset the process's VmHWM, yield a dict filled on exit with base/peak KiB and seconds."""
    reset_peak(pid)
    got: dict[str, Any] = {"base_kb": (status_kb(pid) or (0, 0))[0]}
    started = time.perf_counter()
    yield got
    got["seconds"] = time.perf_counter() - started
    got["peak_kb"] = (status_kb(pid) or (0, 0))[1]


def row(store: str, direction: str, process: str, path: str, m: dict[str, Any], size: int) -> dict:
    growth = m["peak_kb"] - m["base_kb"]
    return {
        "store": store, "direction": direction, "process": process, "path": path,
        "bytes": size, "base_kb": m["base_kb"], "peak_kb": m["peak_kb"], "growth_kb": growth,
        "seconds": round(m["seconds"], 3),
        "mb_per_s": round(size / m["seconds"] / 1e6, 1) if m["seconds"] >= 0.001 else None,
        "within_target": growth <= TARGET_MIB * KIB_PER_MIB,
    }  # fmt: skip


def storage_env(ctx: Context, store: str, data_dir: Path, moto: Moto | None, bucket: str) -> dict:
    extra = {
        "VIDSTREAM_DATA_DIR": str(data_dir),
        "VIDSTREAM_STORAGE": store,
        "MAX_UPLOAD_BYTES": str(max(4 * 2**30, ctx.args.size_mb * MiB + MiB)),
    }
    if store == "s3" and moto is not None:
        extra |= {
            "S3_ENDPOINT_URL": moto.url, "S3_BUCKET": bucket, "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "S3_ADDRESSING_STYLE": "path",
        }  # fmt: skip
    return ctx.env(**extra)


async def through_gateway(
    ctx: Context, store: str, env: dict[str, str], source: Path, remove: Any, rows: list[dict]
) -> str:
    """Add the gateway's rows; return the key of the source the multipart POST stored (left
    there for the store's rows)."""
    size = source.stat().st_size
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    role = await Role.start("gateway", procfile()["gateway"], env | {"GATEWAY_PORT": str(port)})
    timeout = aiohttp.ClientTimeout(total=1800, sock_read=300)
    try:
        await role.wait_ready()
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            with source.open("rb") as f, peak_of(role.pid) as m:
                form = aiohttp.FormData()
                form.add_field("file", f, filename="big.mp4", content_type="video/mp4")
                async with http.post(f"{gateway}/v1/jobs", data=form) as r:
                    job = await r.json()
                    if r.status != 202:
                        raise RuntimeError(f"multipart POST /v1/jobs answered {r.status}: {job}")
            rows.append(row(store, "upload in", "gateway", "multipart POST /v1/jobs", m, size))
            key = job["source"]["key"]
            if store == "local":
                expires = int(time.time()) + 3600
                url = Signer(ctx.secret.encode()).object_url(
                    gateway, "GET", key, expires, filename="big.mp4"
                )
                got = 0
                with peak_of(role.pid) as m:
                    async with http.get(url) as r:
                        if r.status != 200:
                            raise RuntimeError(f"GET /v1/objects answered {r.status}")
                        async for chunk in r.content.iter_chunked(MiB):
                            got += len(chunk)
                if got != size:
                    ctx.problems.append(f"GET /v1/objects returned {got} bytes, not {size}")
                rows.append(row(store, "download out", "gateway", "GET /v1/objects (signed link)",
                                m, size))  # fmt: skip
            if store == "local":
                body = {"filename": "big.mp4", "content_type": "video/mp4", "size": size}
                async with http.post(f"{gateway}/v1/uploads", json=body) as r:
                    ticket = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"POST /v1/uploads answered {r.status}: {ticket}")
                with source.open("rb") as f, peak_of(role.pid) as m:
                    async with http.put(
                        ticket["upload_url"], data=f, headers=ticket["headers"]
                    ) as r:
                        if r.status != 200:
                            raise RuntimeError(f"PUT answered {r.status}: {await r.text()}")
                    async with http.post(
                        f"{gateway}/v1/jobs", json={"source": {"key": ticket["key"]}}
                    ) as r:
                        if r.status != 202:
                            raise RuntimeError(f"POST /v1/jobs answered {r.status}")
                put = "PUT /v1/objects (presigned) + POST /v1/jobs"
                rows.append(row(store, "upload in", "gateway", put, m, size))
                await remove(ticket["key"])
    finally:
        code = await role.stop()
        if code != 0:
            ctx.problems.append(f"gateway ({store}) exited {code} on SIGTERM")
        ctx.problems += [f"{store} {p}" for p in role.problems()]
    return str(key)


async def through_store(
    ctx: Context, store: str, env: dict[str, str], size_mb: int, key: str | None
) -> list[dict[str, Any]]:
    """The store's rows; `key` is the gateway's upload to fetch (None: put_stream makes one)."""
    workdir = ctx.tmp / f"store-{store}"
    workdir.mkdir(exist_ok=True)
    # put_stream is what the gateway's multipart row ran: repeated here only where it is cheap.
    streamed = ["--stream"] if store == "local" else []
    if key is None:
        key = "-"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "memory_store.py"), str(size_mb), str(workdir), key,
        *streamed, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        ctx.problems.append(f"memory_store.py ({store}) exited {proc.returncode}: {err[-800:]!r}")
        return []
    report = json.loads(out.decode().strip().splitlines()[-1])
    what = {
        "put_stream": ("upload in", "put_stream (1 MiB chunks, as the gateway)"),
        "get_file": ("download out", "get_file (a worker fetching its source)"),
        "put_file": ("upload in", "put_file (a worker storing its output)"),
        "put_file_link": ("upload in", "put_file (a worker's output): a hard link"),
    }
    rows = []
    for op in report["ops"]:
        linked = store == "local" and op["op"] == "put_file"
        direction, path = what["put_file_link" if linked else op["op"]]
        if op["bytes"] != size_mb * MiB:
            ctx.problems.append(f"{store} {op['op']} moved {op['bytes']} bytes")
        rows.append(row(store, direction, "store", path, op, size_mb * MiB))
        if linked:  # no byte moved: a speed would mean nothing
            rows[-1]["mb_per_s"] = None
    return rows


async def big_files(ctx: Context) -> dict[str, Any]:
    size_mb = pick_size(ctx)
    ctx.args.size_mb = size_mb
    source = sparse_file(ctx.tmp / "big.mp4", size_mb * MiB)
    rows: list[dict[str, Any]] = []
    moto_peak_kb = None

    data_dir = ctx.tmp / "local-data"

    async def remove_local(key: str) -> None:
        (data_dir / "storage" / key).unlink(missing_ok=True)

    async def one_store(store: str, env: dict[str, str], remove: Any) -> None:
        """The gateway's rows, then the store's; a failure is noted and the run goes on."""
        key = None
        try:
            key = await through_gateway(ctx, store, env, source, remove, rows)
        except Exception as exc:
            ctx.problems.append(f"{store}, through the gateway: {type(exc).__name__}: {exc}")
        try:
            rows.extend(await through_store(ctx, store, env, size_mb, key))
        except Exception as exc:
            ctx.problems.append(f"{store}, store calls: {type(exc).__name__}: {exc}")
        if key is not None:
            await remove(key)

    if not ctx.args.skip_local:
        env = storage_env(ctx, "local", data_dir, None, "")
        await one_store("local", env, remove_local)

    if not ctx.args.skip_s3:
        moto = Moto()
        try:
            client = moto.client()
            bucket = f"vsbench-{secrets.token_hex(6)}"
            await asyncio.to_thread(client.create_bucket, Bucket=bucket)

            async def remove_s3(key: str) -> None:
                await asyncio.to_thread(client.delete_object, Bucket=bucket, Key=key)

            env = storage_env(ctx, "s3", ctx.tmp / "s3-data", moto, bucket)
            failures = len(ctx.problems)
            await one_store("s3", env, remove_s3)
            if len(ctx.problems) > failures:
                alive = "running" if moto.proc.poll() is None else f"exited {moto.proc.returncode}"
                ctx.problems.append(f"moto ({alive}), its last lines: {' | '.join(moto.tail)}")
            moto_peak_kb = (status_kb(moto.proc.pid) or (0, 0))[1]
        finally:
            moto.stop()
    source.unlink()
    return {"size_mb": size_mb, "rows": rows, "moto_peak_kb": moto_peak_kb}


# --- report --------------------------------------------------------------------------------------


def machine(redis_version: str) -> dict[str, Any]:
    model = platform.processor()
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    ffmpeg = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "glibc": "-".join(platform.libc_ver()),
        "ffmpeg": (ffmpeg.stdout.split("\n", 1)[0].split(" ")[2:3] or ["?"])[0],
        "redis_server": redis_version,
        "aiohttp": version("aiohttp"),
        "aioboto3": version("aioboto3"),
        "moto": version("moto"),
        "faster_whisper": version("faster-whisper"),
    }


def mib(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / KIB_PER_MIB:.0f}"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nmachine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB; Linux "
        f"{m['kernel']}; Python {m['python']} ({m['glibc']}); FFmpeg {m['ffmpeg']}; Redis "
        f"{m['redis_server']}; aiohttp {m['aiohttp']}; aioboto3 {m['aioboto3']}; moto "
        f"{m['moto']}; faster-whisper {m['faster_whisper']}"
    )
    print(
        f"load average (1, 5, 15 min) at start {results['load_at_start']}, at end "
        f"{results['load_at_end']}: above {m['cpus']} something else shared the cores, which "
        "slows the MB/s and the batch but hardly moves the memory figures"
    )
    if b := results.get("batch"):
        print(
            f"\n1. roles at rest and under a batch of {b['jobs']} jobs ({b['clip']['seconds']} s "
            f"clip, {b['clip']['bytes'] / 1e6:.1f} MB; CONCURRENCY=1): {b['outcomes']} in "
            f"{b['batch_s']} s, first done after {b['first_done_s']} s; roles ready "
            f"{b['startup_s']} s after launch; sampled every {b['interval_s']} s "
            f"({b['sampler_ms_per_tick']} ms per sample)"
        )
        head = ("role", "rest", "+children", "peak", "peak+children", "after", "largest child")
        print(f"  {head[0]:11}{head[1]:>6}{head[2]:>11}{head[3]:>6}{head[4]:>15}{head[5]:>7}"
              f"   {head[6]} (MiB)")  # fmt: skip
        for name, f in b["roles"].items():
            child = f["largest_child"]
            kid = f"{child['name']} {mib(child['hwm_kb'])}" if child else "-"
            print(
                f"  {name:11}{mib(f['rest_kb']):>6}{mib(f['rest_total_kb']):>11}"
                f"{mib(f['peak_kb']):>6}{mib(f['peak_total_kb']):>15}{mib(f['after_kb']):>7}"
                f"   {kid}"
            )
        parts = [
            f"{n} {mib(f['rest_anon_kb'])} + {mib(f['rest_file_kb'])} (PSS {mib(f['rest_pss_kb'])}"
            + (
                f", children {mib(f['rest_children_pss_kb'])})"
                if f["rest_children_pss_kb"]
                else ")"
            )
            for n, f in b["roles"].items()
        ]
        pss = sum(f["rest_pss_kb"] + f["rest_children_pss_kb"] for f in b["roles"].values())
        print(f"  at rest, anon + file-backed MiB (PSS): {'; '.join(parts)}")
        print(f"  the four roles and their children at rest, PSS summed: {mib(pss)} MiB")
        print("  children seen during the batch (distinct processes):")
        for name, f in b["roles"].items():
            seen = ", ".join(f"{k} x{v}" for k, v in sorted(f["children_seen"].items())) or "none"
            print(f"    {name:11}{seen}")
    if s := results.get("storage"):
        print(
            f"\n2. a {s['size_mb']} MiB file through storage; growth = peak - base, target "
            f"<= {TARGET_MIB} MiB (MiB; MB/s in 10^6 bytes)"
        )
        print(f"  {'store':6}{'direction':13}{'process':8}{'path':46}{'base':>6}{'peak':>6}"
              f"{'growth':>8}{'MB/s':>8}")  # fmt: skip
        for r in s["rows"]:
            mark = "" if r["within_target"] else "  over target"
            speed = "-" if r["mb_per_s"] is None else f"{r['mb_per_s']:.0f}"
            print(
                f"  {r['store']:6}{r['direction']:13}{r['process']:8}{r['path'][:45]:46}"
                f"{mib(r['base_kb']):>6}{mib(r['peak_kb']):>6}{mib(r['growth_kb']):>8}"
                f"{speed:>8}{mark}"
            )
        if s.get("moto_peak_kb"):
            print(f"  (the moto server, not vidstream, peaked at {mib(s['moto_peak_kb'])} MiB)")
    for note in results["notes"]:
        print(f"\nnote: {note}")
    if results["problems"]:
        print("\nproblems seen (warnings and errors the processes logged, failures):")
        for p in results["problems"][:40]:
            print(f"  - {p}")
        if len(results["problems"]) > 40:
            print(f"  ... and {len(results['problems']) - 40} more in the JSON")
    else:
        print("\nproblems seen: none")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis = Redis.from_url(args.redis_url, decode_responses=True)
    prefix = f"vsbench-mem-{secrets.token_hex(4)}"
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vidstream-bench-memory-") as tmp:
        ctx = Context(args, prefix, secrets.token_urlsafe(32), Path(tmp))
        try:
            info = await redis.info("server")
            results = {
                "machine": machine(str(info["redis_version"])),
                "load_at_start": [round(x, 2) for x in os.getloadavg()],
                "quick": args.quick,
                "prefix": prefix,
            }
            if not args.skip_batch:
                results["batch"] = await roles_under_batch(ctx)
            if not args.skip_storage:
                results["storage"] = await big_files(ctx)
        finally:
            async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
                await redis.unlink(key)
            await redis.aclose()
        results["notes"], results["problems"] = ctx.notes, ctx.problems
    results["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 jobs and a 300 MiB file")
    parser.add_argument("--jobs", type=int, default=None, help="jobs in the batch (10; quick: 3)")
    parser.add_argument(
        "--size-mb", type=int, default=None, help="the file, MiB (2048; quick: 300)"
    )
    parser.add_argument("--skip-s3", action="store_true", help="local storage only")
    parser.add_argument("--skip-local", action="store_true", help="part 2: S3 only")
    parser.add_argument("--skip-batch", action="store_true", help="part 2 only")
    parser.add_argument("--skip-storage", action="store_true", help="part 1 only")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling period, s (0.1)")
    parser.add_argument("--job-timeout", type=float, default=300, help="per job, s (300)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()
    args.jobs = args.jobs or (3 if args.quick else 10)
    args.size_mb = args.size_mb or (300 if args.quick else 2048)
    results = asyncio.run(main(args))
    report(results)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "memory.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['seconds']} s; results in {path.relative_to(ROOT)}")


if __name__ == "__main__":
    cli()
