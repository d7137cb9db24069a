#!/usr/bin/env python3
"""Fan-out: one long subtitle job on one "host" and on two, each host pinned to a core of its own.

    .venv/bin/python bench/fanout.py                  # 10 min of 720p, PIECE_S 300 and 60
    .venv/bin/python bench/fanout.py --quick          # 2 min, PIECE_S 30: about 2 min in all
    .venv/bin/python bench/fanout.py --piece-s 300    # the default pieces only
    .venv/bin/python bench/fanout.py --only one@300,two@300 --keep

A default run takes about 14 minutes on the 2-core VM (832 s), most of it the single worker's
and the two one-host cases (each does the whole job on one core, about 190 s).

The source: espeak-ng speech (tests/media.py `speech_wav`: the sentences below in turn, each
round in another order, GAP_S of silence before each, then silence to the end) over FFmpeg's
`testsrc2` at --size (1280x720) and 25 fps, encoded as tests/media.py `make_clip` encodes (x264
ultrafast: a keyframe every 10 s; AAC), --length seconds long (600; --quick: 120). It is made
once per run, in the run's temporary directory, and the same file is uploaded to every case.

The cases, one job each (kind subtitle, burn_subtitles true, every option at its default), one
after the other, each with a REDIS_PREFIX and a VIDSTREAM_DATA_DIR of its own (local storage:
every process on this machine reaches the same files, so a piece reads the source in place):
  single worker  FANOUT_MIN_S=0 (no fan-out): one `vidstream transcribe` and one `vidstream
                 render` pinned to core 0 (`taskset -c 0`): the job as it ran before fan-out;
  one host       fan-out on (FANOUT_MIN_S=60, so the source fans out whatever its probed length;
                 PIECE_S as the row says): the same two processes pinned to core 0; the
                 coordinating run works every piece itself, one after the other;
  two hosts      host A (a transcribe and a render process) pinned to core 0, host B (another
                 pair) pinned to core 1; whichever run takes a stage coordinates it and works
                 pieces, the other host's worker of that role takes pieces from the stage's
                 piece stream.
`vidstream gateway` runs in every case, not pinned (it only takes the upload and answers the
polls), as do Redis and this script: in the two-host case they take their share of whichever
core is free. No notifier: the job is polled. Each process is started as the Procfile starts it
(`.venv/bin/vidstream ROLE`, `taskset -c N` in front), in a process group of its own, with
VIDSTREAM_AUTH=off, RATE_LIMIT_PER_MIN=0, LOG_FORMAT=json, a SECRET_KEY of this run, and every
other setting at its default: CONCURRENCY 1, Whisper tiny.en int8 on WHISPER_THREADS=1 thread
(OMP as many), x264 veryfast crf 21. x264 sizes its threads from the CPUs it may run on: pinned
to one core it runs one frame thread (the output's x264 header is read back to show it: "x264
threads"). A case starts once every process has logged `vidstream_ready` (the Whisper model
loaded); the case is stopped (SIGTERM to each process group, SIGKILL after 20 s) and its Redis
keys deleted before the next starts.

What is timed: wall s, from the start of POST /v1/jobs (a multipart upload of the source,
streamed from disk) to the job's `completed` event (its time, from GET /v1/jobs/{id}/events,
the job polled every 0.2 s to know when); transcribe s and render s, each stage from its
`started` event to its `stage_completed` (render: `completed`); the rest ("outside") is the
upload, the pickups and the hand-off between the stages.

How to read the table:
  case          as above, with PIECE_S and the pieces each stage was cut into (transcribe pieces
                are cut in pauses, render segments at keyframes);
  wall s        POST to completed;
  transcribe s  the transcribe stage, render s the render stage;
  vs 1 host     wall / the one-host wall of the same PIECE_S: the fan-out speed-up, target <=
                0.60 for two hosts (the issue's: "a 10-minute job on two hosts in at most 0.6
                of its time on one");
  vs single     wall / the single worker's wall (what fan-out buys against the job run whole);
  busy A / B    CPU seconds of each host's process tree (worker, Whisper server, FFmpeg and
                probe children) / wall, in % of its one core;
  other %       the CPU everything outside this script's process tree used meanwhile, in % of
                one core (Redis counts there: a few % is an undisturbed run); from 50% the row
                is marked disturbed: a pinned core was shared, so its times carry that noise
                (compare the CPU seconds below, which do not).
Below the table: the CPU seconds of each stage's workers (sampled every 0.25 s from /proc); the
checks, that every case's output holds every frame of the source and that its transcript holds
the spoken words in order (difflib's matching blocks against the sentences spoken; the longest
differences are printed when fewer than 95% match); and the commit the roles ran (a case's
processes import the working tree as it is when they start, said when it changed mid-run).
Then, for each fanned-out case, every piece: which host worked it, its span of the source, its
`took_s` (from `piece_started` to `piece_done` in the workers' JSON logs) and its CPU seconds
(its worker's process tree over the same span: less than took_s when it waited for the core),
and what the coordinators did outside the pieces (probe and the pause or keyframe scan before
them, the join after them).

The projection to 4 and 8 hosts is on paper, from the one-host case of each PIECE_S (where one
core worked every piece in turn, so nothing overlapped):
  serial        per stage, its wall time less the sum of its pieces' took_s: the probe, the
                pause or keyframe scan, queueing, the join and the stage's own bookkeeping;
  outside       the job's wall less its two stages: upload, pickups, hand-off;
  k hosts       outside + for each stage (serial + the longest-processing-time list schedule of
                its measured piece times on k hosts, one core each), i.e. the critical path if
                every host works pieces at the one-core speed measured here and nothing else
                grows with k. What it leaves out: with S3 each worker downloads the whole source
                before its first piece of the job (`kinds.sources.Downloads`: a cost per host
                and stage this local-storage run does not see); Redis, the store and the
                network shared by more hosts; vidstream hands out pieces in queue order, not
                longest first (the "in order" figure is that schedule); a stage cannot use more
                hosts than it has pieces. "LPT on cpu s" is the same schedule of the pieces' CPU
                seconds instead of their wall seconds: what the pieces cost undisturbed.
The 2-host projection is printed beside the measured two-host case as a check of the model.

The script never fails on speed: it exits non-zero only when a job does not complete. Results
go to bench/results/fanout.json for a run with every default; --quick to fanout.quick.json, any
other option to fanout.custom.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
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
    proc_table,
    redis_version,
    speech_video,
    spoken_s,
    tree_cpu,
)
from tests.media import FFMPEG, words_of  # noqa: E402
from vidstream.core.settings import Settings  # noqa: E402

TARGET = 0.60  # two hosts / one host, the issue's
DISTURBED = 50  # % of a core used by other processes: a row's times carry their noise
PROJECT_HOSTS = (1, 2, 4, 8)
FANOUT_MIN_S = 60  # the fan-out cases: low enough that the source fans out whatever its probe
TERMINAL = ("completed", "failed", "cancelled")


# -- media -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    seconds: int
    size: str
    sentences: int
    made_s: float
    words: tuple[str, ...]
    frames: int


def make_source(directory: Path, seconds: int, size: str) -> Source:
    """`seconds` of test pattern with the sentences spoken over it (`common.speech_video`)."""
    started = time.perf_counter()
    work = directory / "speech"
    work.mkdir(parents=True, exist_ok=True)
    lengths = {s: spoken_s(work, s) for s in SENTENCES}
    out = directory / f"source{seconds}.mp4"
    chosen = speech_video(directory, out, seconds, size, lengths)
    shutil.rmtree(work, ignore_errors=True)
    words = tuple(w for sentence in chosen for w in words_of(sentence))
    return Source(out, seconds, size, len(chosen), time.perf_counter() - started, words,
                  video_frames(out))  # fmt: skip


def video_frames(path: Path) -> int:
    """The video's frames, counted from its packets (no decoding)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return sum(1 for packet in container.demux(video) if packet.size)


def words_heard(data: Path, spoken: tuple[str, ...]) -> dict[str, Any]:
    """The job's transcript against the words spoken: how many it holds, and how many of the
    spoken ones it has in order (difflib's matching blocks)."""
    found = sorted(data.glob("storage/jobs/*/*/transcript.json"))
    if not found:
        return {}
    segments = json.loads(found[-1].read_text())["segments"]
    timed = [(w, seg["start"]) for seg in segments for w in words_of(seg["text"])]
    heard = [w for w, _ in timed]
    match = difflib.SequenceMatcher(None, spoken, heard, autojunk=False)
    same = sum(block.size for block in match.get_matching_blocks())
    # The longest stretches that differ, with where they are heard: a seam that lost or
    # doubled words shows up at a piece's start or end.
    stretches = sorted(
        (max(i2 - i1, j2 - j1), tag, " ".join(spoken[i1:i2])[:80], " ".join(heard[j1:j2])[:80],
         timed[min(j1, len(timed) - 1)][1] if timed else 0.0)
        for tag, i1, i2, j1, j2 in match.get_opcodes() if tag != "equal"
    )[-3:]  # fmt: skip
    return {"heard": len(heard), "spoken": len(spoken), "in_order": same,
            "worst": [{"words": n, "what": tag, "spoken": a, "heard": b, "at_s": round(at, 1)}
                      for n, tag, a, b, at in reversed(stretches)]}  # fmt: skip


def x264_threads(path: Path) -> str:
    """The `threads=` x264 wrote into the video's header (its options SEI), or "?"."""
    try:
        with path.open("rb") as f:
            head = f.read(4 << 20)
    except OSError:
        return "?"
    found = re.search(rb"x264 - core.*? threads=(\d+) lookahead_threads=(\d+)", head, re.S)
    return f"{found[1].decode()} (lookahead {found[2].decode()})" if found else "?"


# -- process trees ---------------------------------------------------------------------------------


class CpuSampler(threading.Thread):
    """Each worker's process tree's CPU seconds every `interval_s`, by the wall clock: what a
    piece cost in CPU, whatever else shared its core."""

    def __init__(self, roles: list[Role], interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roles, self.interval_s = roles, interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stopping = threading.Event()

    def sample(self) -> None:
        table = proc_table()
        self.samples.append(
            (time.time(), {r.name: tree_cpu([r.proc.pid], table) for r in self.roles})
        )

    def run(self) -> None:
        self.sample()
        while not self.stopping.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.sample()

    def at(self, name: str, when: float) -> float:
        """The role's CPU seconds at `when`, interpolated between the samples around it."""
        before = [(t, c[name]) for t, c in self.samples if t <= when]
        after = [(t, c[name]) for t, c in self.samples if t > when]
        if not before or not after:
            return (before or after)[-1 if before else 0][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)


# -- roles -----------------------------------------------------------------------------------------


class Role:
    """One `vidstream ROLE` process (behind `taskset -c CORE` when pinned) in a process group of
    its own, its stdout and stderr (JSON log lines) going to a file."""

    def __init__(self, role: str, host: str, core: int | None, env: dict[str, str], log: Path):
        self.role, self.host, self.core, self.log_path = role, host, core, log
        argv = [str(BIN / "vidstream"), role]
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]  # taskset execs: the pid is the role's
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    @property
    def name(self) -> str:
        return f"{self.host}/{self.role}"

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}:\n"
                               + "\n".join(tail))  # fmt: skip
        return "vidstream_ready" in self.log_path.read_text(errors="replace")

    def affinity(self) -> str:
        try:
            cores = sorted(os.sched_getaffinity(self.proc.pid))
        except OSError:
            return "?"
        return ",".join(map(str, cores))

    def stop(self) -> None:
        """SIGTERM to its process group (Whisper server, FFmpeg, probes), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.log.close()

    def problems(self) -> list[str]:
        """Warning and error lines, and lines that are not JSON; not the gateway's warning that
        authentication is off, which this run asks for."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                level = entry.get("level") if entry.get("event") != "authentication_off" else None
            except (ValueError, AttributeError):
                level = "raw" if line.strip() else None
            if level in ("warning", "error", "critical", "raw"):
                out.append(f"{self.name}: {line[:300]}")
        return out


# -- one case --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str  # "single worker", "one host", "two hosts"
    hosts: tuple[int, ...]  # the core of each host
    piece_s: float | None  # None: no fan-out

    @property
    def key(self) -> str:
        label = {"single worker": "single", "one host": "one", "two hosts": "two"}[self.name]
        return label if self.piece_s is None else f"{label}@{self.piece_s:g}"


async def submit(gateway: str, source: Path, timeout_s: float) -> dict[str, Any]:
    """POST the source as multipart (streamed from disk), poll the job to its end; its events."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        posted_at = time.time()
        with source.open("rb") as f:
            form = aiohttp.FormData()
            form.add_field("file", f, filename=source.name, content_type="video/mp4")
            async with http.post(f"{gateway}/v1/jobs", data=form) as r:
                body: dict[str, Any] = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"POST /v1/jobs answered {r.status}: {body}")
        job_id = body["id"]
        deadline = time.monotonic() + timeout_s
        status = body.get("status", "queued")
        job: dict[str, Any] = body
        while status not in TERMINAL and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling the job, as a client without a WebSocket does
            async with http.get(f"{gateway}/v1/jobs/{job_id}") as r:
                job = await r.json()
            status = job.get("status", "?")
        async with http.get(f"{gateway}/v1/jobs/{job_id}/events") as r:
            events = (await r.json()).get("events", [])
    return {"id": job_id, "status": status if status in TERMINAL else "timeout",
            "posted_at": posted_at, "job": job, "events": events}  # fmt: skip


def stage_marks(events: list[dict[str, Any]]) -> dict[str, float]:
    first: dict[tuple[str, str | None], float] = {}
    for e in events:
        first.setdefault((e["event"], e.get("stage")), epoch(e["at"]))
    marks = {
        "queued": first.get(("queued", None)),
        "transcribe_start": first.get(("started", "transcribe")),
        "transcribe_end": first.get(("stage_completed", "transcribe")),
        "render_start": first.get(("started", "render")),
        "render_end": first.get(("completed", "render")) or first.get(("completed", None)),
    }
    return {k: v for k, v in marks.items() if v is not None}


def pieces_of(roles: list[Role], job_id: str) -> dict[str, Any]:
    """Per stage: each piece (host, span of the source, took_s, when), and the coordinator's
    marks (run_started, the scan, pieces_queued, segments_joined, run_finished)."""
    out: dict[str, Any] = {}
    for role in roles:
        stage = out.setdefault(role.role, {"pieces": {}, "marks": {}, "consumers": {}})
        for e in role.entries():
            if e.get("job_id") != job_id:
                continue
            event, at = e.get("event"), epoch(e["timestamp"]) if "timestamp" in e else None
            if event in ("piece_started", "piece_done"):
                index = int(e["piece"])
                piece = stage["pieces"].setdefault(index, {"piece": index})
                piece["host"], piece["consumer"] = role.host, e.get("consumer")
                if event == "piece_started":
                    piece["start"], piece["end"], piece["started_at"] = e["start"], e["end"], at
                else:
                    piece["took_s"], piece["done_at"] = float(e["took_s"]), at
            elif event in ("run_started", "pauses_found", "keyframes_found", "pieces_queued",
                           "segments_joined", "run_finished"):  # fmt: skip
                stage["marks"][event] = {"at": at, "host": role.host,
                                         **{k: e[k] for k in ("took_s", "pauses", "keyframes",
                                                              "pieces", "cuts_without_pause",
                                                              "segments") if k in e}}  # fmt: skip
                stage["consumers"][role.host] = e.get("consumer")
    for stage in out.values():
        stage["pieces"] = [stage["pieces"][i] for i in sorted(stage["pieces"])]
    return out


def run_case(case: Case, source: Source, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prefix = f"vsb-fan-{secrets.token_hex(4)}"
    home = workdir / case.key.replace("@", "-")
    home.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDIS_URL": args.redis_url,
        "REDIS_PREFIX": prefix,
        "VIDSTREAM_DATA_DIR": str(home / "data"),
        "SECRET_KEY": args.secret,
        "GATEWAY_PORT": str(free_port()),
        "NOTIFIER_PORT": str(free_port()),
        "VIDSTREAM_AUTH": "off",
        "RATE_LIMIT_PER_MIN": "0",
        "LOG_FORMAT": "json",
        "HF_HUB_OFFLINE": "1",
        "SHUTDOWN_GRACE_S": "5",
        "FANOUT_MIN_S": "0" if case.piece_s is None else str(FANOUT_MIN_S),
    }
    if case.piece_s is not None:
        env["PIECE_S"] = f"{case.piece_s:g}"
    for name in ("PUBLIC_URL", "PUBLIC_WS_URL", "VIDSTREAM_API_KEYS", "VIDSTREAM_STORAGE",
                 "CONCURRENCY", "WHISPER_THREADS", "X264_PRESET", "X264_CRF"):  # fmt: skip
        env.pop(name, None)
    gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    roles: list[Role] = []
    result: dict[str, Any] = {"case": case.name, "key": case.key, "piece_s": case.piece_s,
                              "hosts": len(case.hosts), "redis_prefix": prefix}  # fmt: skip
    try:
        roles.append(Role("gateway", "-", None, env, home / "gateway.log"))
        for h, core in enumerate(case.hosts):
            host = "AB"[h]
            for role in ("transcribe", "render"):
                roles.append(Role(role, host, core, env, home / f"{host}-{role}.log"))
        started = time.perf_counter()
        while not all(r.ready() for r in roles):
            if time.perf_counter() - started > 300:
                raise RuntimeError("the roles were not ready within 300 s")
            time.sleep(0.1)  # polling the processes' start-up, not synchronising with them
        result["ready_s"] = time.perf_counter() - started
        result["code"] = code_state()
        result["affinity"] = {r.name: r.affinity() for r in roles}
        workers = [r for r in roles if r.role != "gateway"]
        hosts = {h: [r.proc.pid for r in workers if r.host == h] for h in "AB"[: len(case.hosts)]}
        cpu_before = {h: tree_cpu(pids) for h, pids in hosts.items()}
        sampler = CpuSampler(workers)
        sampler.start()
        others, t0 = Others(), time.perf_counter()
        try:
            done = asyncio.run(submit(gateway, source.path, args.job_timeout))
        finally:
            sampler.stop()
        span = time.perf_counter() - t0
        result["busy_pct"] = {h: 100 * (tree_cpu(pids) - cpu_before[h]) / span
                              for h, pids in hosts.items()}  # fmt: skip
        result["others_cpu_pct"] = others.pct()
        result["status"] = done["status"]
        result["job_id"] = done["id"]
        if done["status"] != "completed":
            result["error"] = done["job"].get("error")
            return result
        marks = stage_marks(done["events"])
        result["wall_s"] = marks["render_end"] - done["posted_at"]
        result["transcribe_s"] = marks["transcribe_end"] - marks["transcribe_start"]
        result["render_s"] = marks["render_end"] - marks["render_start"]
        result["outside_s"] = result["wall_s"] - result["transcribe_s"] - result["render_s"]
        result["upload_s"] = marks["queued"] - done["posted_at"] if "queued" in marks else None
        result["stages"] = stages = pieces_of(workers, done["id"])
        for stage, (start, end) in (
            ("transcribe", (marks["transcribe_start"], marks["transcribe_end"])),
            ("render", (marks["render_start"], marks["render_end"])),
        ):
            mine = [r.name for r in workers if r.role == stage]
            result[f"{stage}_cpu_s"] = sum(sampler.at(n, end) - sampler.at(n, start) for n in mine)
            for piece in stages.get(stage, {}).get("pieces", []):
                if piece.get("started_at") and piece.get("done_at"):
                    name = f"{piece['host']}/{stage}"
                    piece["cpu_s"] = sampler.at(name, piece["done_at"]) - sampler.at(
                        name, piece["started_at"]
                    )
        rendered = sorted((home / "data" / "storage" / "rendered").glob("*.mp4"))
        result["x264_threads"] = x264_threads(rendered[-1]) if rendered else "?"
        result["frames"] = video_frames(rendered[-1]) if rendered else None
        result["words"] = words_heard(home / "data", source.words)
        result["problems"] = [p for r in roles for p in r.problems()]
        return result
    finally:
        for r in roles:
            r.stop()
        result["redis_keys_deleted"] = delete_keys(args.redis_url, prefix)
        if not args.keep:
            shutil.rmtree(home / "data", ignore_errors=True)


# -- the projection --------------------------------------------------------------------------------


def lpt(times: list[float], k: int) -> float:
    """The makespan of the longest-processing-time-first list schedule of `times` on k hosts."""
    loads = [0.0] * k
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def in_order(times: list[float], k: int) -> float:
    """The makespan when each piece, in queue order, goes to the first host free."""
    loads = [0.0] * k
    for t in times:
        loads[loads.index(min(loads))] += t
    return max(loads)


def project(one: dict[str, Any]) -> dict[str, Any]:
    """k-host wall times from the one-host case: outside + per stage (serial + schedule)."""
    stages = {}
    for stage in ("transcribe", "render"):
        pieces = one["stages"][stage]["pieces"]
        took = [p["took_s"] for p in pieces if "took_s" in p]
        cpu = [p.get("cpu_s", p["took_s"]) for p in pieces if "took_s" in p]
        stages[stage] = {"pieces_s": took, "pieces_cpu_s": cpu,
                         "serial_s": one[f"{stage}_s"] - sum(took)}  # fmt: skip
    hosts = {}
    for k in PROJECT_HOSTS:
        row = {"lpt_s": one["outside_s"], "in_order_s": one["outside_s"], "lpt_cpu_s": 0.0}
        for st in stages.values():
            row["lpt_s"] += st["serial_s"] + lpt(st["pieces_s"], k)
            row["in_order_s"] += st["serial_s"] + in_order(st["pieces_s"], k)
            row["lpt_cpu_s"] += st["serial_s"] + lpt(st["pieces_cpu_s"], k)
        row["lpt_cpu_s"] += one["outside_s"]
        row["vs_one_host"] = row["lpt_s"] / one["wall_s"]
        hosts[k] = row
    return {"from": one["key"], "outside_s": one["outside_s"], "stages": stages, "hosts": hosts}


# -- report ----------------------------------------------------------------------------------------


def code_state() -> str:
    """The commit the roles run, and the files under vidstream/ changed from it (a case's
    processes import the working tree as it is when they start)."""

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", "vidstream").splitlines()
    return f"{commit} + {len(changed)} changed file(s)" if changed else commit


def _pieces_text(case: dict[str, Any]) -> str:
    stages = case.get("stages", {})
    counts = [len(stages.get(s, {}).get("pieces", [])) for s in ("transcribe", "render")]
    return f"{counts[0]}+{counts[1]}" if any(counts) else "whole"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "end"
    return f"{int(seconds) // 60}:{seconds % 60:04.1f}"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    s = results["settings"]
    src = results["source"]
    print()
    print(f"machine    {m['cpu']}, {m['cpus']} CPUs, {m['platform']}")
    print(f"           load average {m['load_before']} before, {m['load_after']} after")
    print(f"versions   {', '.join(f'{k} {v}' for k, v in results['versions'].items())}")
    print(
        f"settings   Whisper {s['model']} int8, {s['whisper_threads']} thread(s), beam "
        f"{s['beam_size']}; x264 {s['x264_preset']} crf {s['x264_crf']}; concurrency "
        f"{s['concurrency']} per process; FANOUT_MIN_S {FANOUT_MIN_S} in the fan-out cases"
    )
    print(
        f"source     {src['seconds']} s at {src['size']}, 25 fps, {src['sentences']} sentences "
        f"of espeak-ng speech, {src['mib']:.0f} MiB (made in {src['made_s']:.0f} s)"
    )
    print("pinning    each host's transcribe and render processes with `taskset -c CORE` "
          "(A: core 0, B: core 1); gateway, Redis and this script not pinned")  # fmt: skip
    print()
    head = (
        f"{'case':<24}{'pieces':>7}{'wall s':>9}{'transcribe s':>14}{'render s':>10}"
        f"{'vs 1 host':>11}{'vs single':>11}{'busy A/B %':>12}{'other %':>9}"
    )
    print(head)
    print("-" * len(head))
    cases = results["cases"]
    single = next((c for c in cases if c["key"] == "single" and "wall_s" in c), None)
    for c in cases:
        label = c["case"] + (f", PIECE_S {c['piece_s']:g}" if c["piece_s"] is not None else "")
        if "wall_s" not in c:
            print(f"{label:<24}  {c['status']}: {c.get('error')}")
            continue
        one = next((o for o in cases if o["key"] == f"one@{c['piece_s']:g}" and "wall_s" in o),
                   None) if c["piece_s"] is not None else None  # fmt: skip
        vs_one = f"{c['wall_s'] / one['wall_s']:.2f}" if one else "-"
        vs_single = f"{c['wall_s'] / single['wall_s']:.2f}" if single else "-"
        busy = "/".join(f"{v:.0f}" for v in c["busy_pct"].values())
        print(
            f"{label:<24}{_pieces_text(c):>7}{c['wall_s']:9.1f}{c['transcribe_s']:14.1f}"
            f"{c['render_s']:10.1f}{vs_one:>11}{vs_single:>11}{busy:>12}"
            f"{c['others_cpu_pct']:8.0f}{'*' if c['others_cpu_pct'] >= DISTURBED else ' '}"
        )
    if any(c.get("others_cpu_pct", 0) >= DISTURBED for c in cases):
        print(f"* disturbed: other processes used {DISTURBED}% of a core or more meanwhile, "
              "so that row's times carry their noise (a pinned core was shared)")  # fmt: skip
    for c in cases:
        if c["key"].startswith("two@") and "wall_s" in c:
            one = next((o for o in cases if o["key"] == f"one@{c['piece_s']:g}"), None)
            if one and "wall_s" in one:
                ratio = c["wall_s"] / one["wall_s"]
                verdict = "met" if ratio <= TARGET else "MISSED"
                print(f"two hosts / one host, PIECE_S {c['piece_s']:g}: {ratio:.2f}; target <= "
                      f"{TARGET:.2f}: {verdict}")  # fmt: skip
    codes = {c.get("code") for c in cases if c.get("code")}
    if len(codes) > 1:
        ran = ", ".join(f"{c['key']} ran {c['code']}" for c in cases if c.get("code"))
        print(f"the code changed during the run: {ran}")
    threads = sorted({c.get("x264_threads", "?") for c in cases})
    print(
        f"x264 threads in the outputs' headers: {', '.join(threads)}; outside the stages "
        "(upload, pickups, hand-off): "
        + ", ".join(f"{c['key']} {c['outside_s']:.1f} s" for c in cases if "outside_s" in c)
    )
    cpu = ", ".join(
        f"{c['key']} {c['transcribe_cpu_s']:.1f}/{c['render_cpu_s']:.1f}"
        for c in cases
        if "render_cpu_s" in c
    )
    print(f"CPU s of each stage's workers, transcribe/render (about its wall s when undisturbed): "
          f"{cpu}")  # fmt: skip
    frames = ", ".join(f"{c['key']} {c['frames']}" for c in cases if c.get("frames") is not None)
    words = ", ".join(f"{c['key']} {c['words']['in_order']}/{c['words']['heard']}"
                      for c in cases if c.get("words"))  # fmt: skip
    print(f"checks: output frames (source {src['frames']}): {frames}; transcript words heard in "
          f"the spoken order / words in it (spoken {src['words']}): {words}")  # fmt: skip
    for c in cases:
        w = c.get("words") or {}
        if w and w["in_order"] < 0.95 * w["spoken"]:
            worst = "; ".join(
                f"{x['words']} words {x['what']} at {x['at_s']:.0f} s: "
                f"{x['spoken'][:40]!r} -> {x['heard'][:40]!r}"
                for x in w["worst"]
            )
            print(f"  {c['key']}: {w['spoken'] - w['in_order']} spoken words not heard in order; "
                  f"longest differences: {worst}")  # fmt: skip

    for c in cases:
        if c["piece_s"] is None or "stages" not in c:
            continue
        print()
        print(f"{c['case']}, PIECE_S {c['piece_s']:g}: pieces")
        head = f"{'stage':<12}{'piece':>6}{'host':>6}{'from':>9}{'to':>9}{'took s':>9}{'cpu s':>8}"
        print(head)
        print("-" * len(head))
        for stage in ("transcribe", "render"):
            st = c["stages"].get(stage, {})
            for p in st.get("pieces", []):
                took = f"{p['took_s']:9.1f}" if "took_s" in p else f"{'-':>9}"
                took += f"{p['cpu_s']:8.1f}" if "cpu_s" in p else f"{'-':>8}"
                print(f"{stage:<12}{p['piece']:>6}{p['host']:>6}{_clock(p.get('start')):>9}"
                      f"{_clock(p.get('end')):>9}{took}")  # fmt: skip
            marks = st.get("marks", {})
            pieces = st.get("pieces", [])
            if "run_started" in marks and pieces:
                first = min(p["started_at"] for p in pieces if p.get("started_at"))
                last = max(p["done_at"] for p in pieces if p.get("done_at"))
                before = first - marks["run_started"]["at"]
                after = marks.get("run_finished", {}).get("at", last) - last
                host = marks["run_started"]["host"]
                print(f"{'':<12}coordinated on host {host}: {before:.1f} s before the first "
                      f"piece (probe, scan, queue), {after:.1f} s after the last (join, store, "
                      "finish)")  # fmt: skip

    for proj in results.get("projections", []):
        print()
        print(
            f"projection on paper from the one-host case, PIECE_S {proj['piece_s']:g}: outside "
            f"{proj['outside_s']:.1f} s; serial per stage: "
            + ", ".join(
                f"{n} {st['serial_s']:.1f} s ({len(st['pieces_s'])} pieces, "
                f"{sum(st['pieces_s']):.1f} s)"
                for n, st in proj["stages"].items()
            )
        )
        head = (
            f"{'hosts':>6}{'LPT s':>9}{'in order s':>12}{'vs 1 host':>11}{'LPT on cpu s':>14}"
            f"{'measured s':>12}"
        )
        print(head)
        print("-" * len(head))
        for k, row in proj["hosts"].items():
            measured = proj.get("measured", {}).get(k)
            text = f"{measured:12.1f}" if measured else f"{'-':>12}"
            print(f"{k:>6}{row['lpt_s']:9.1f}{row['in_order_s']:12.1f}{row['vs_one_host']:11.2f}"
                  f"{row['lpt_cpu_s']:14.1f}{text}")  # fmt: skip
        print("  assumes every host works pieces at this one-core speed, local storage (with S3 "
              "each worker downloads the whole source before its first piece), no contention "
              "from more hosts; a stage never uses more hosts than it has pieces")  # fmt: skip

    problems = results.get("problems", [])
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
    workdir = Path(tempfile.mkdtemp(prefix="vidstream-bench-fanout-"))
    settings = Settings.from_env({})
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
            "vidstream": f"{version('vidstream')} at {code_state()}",
            "faster-whisper": version("faster-whisper"),
            "ffmpeg": ffmpeg_version(FFMPEG),
            "redis": redis_version(args.redis_url) or "?",
        },
        "settings": {
            "model": settings.whisper_model or "tiny.en (bundled)",
            "whisper_threads": settings.whisper_threads,
            "beam_size": settings.whisper_beam_size,
            "x264_preset": settings.x264_preset,
            "x264_crf": settings.x264_crf,
            "concurrency": settings.concurrency,
            "fanout_min_s": FANOUT_MIN_S,
            "piece_s": args.piece_s,
        },
        "cases": [],
    }
    try:
        source = make_source(workdir, args.length, args.size)
        results["source"] = {"seconds": source.seconds, "size": source.size,
                             "sentences": source.sentences, "made_s": source.made_s,
                             "mib": source.path.stat().st_size / 2**20,
                             "words": len(source.words), "frames": source.frames}  # fmt: skip
        print(
            f"source: {source.seconds} s at {source.size}, {source.sentences} sentences, "
            f"{results['source']['mib']:.0f} MiB, made in {source.made_s:.0f} s",
            flush=True,
        )
        cases = [Case("single worker", (0,), None)]
        for piece_s in args.piece_s:
            cases += [Case("one host", (0,), piece_s), Case("two hosts", (0, 1), piece_s)]
        if args.only:
            cases = [c for c in cases if c.key in args.only]
        for case in cases:
            result = run_case(case, source, args, workdir)
            results["cases"].append(result)
            if "wall_s" in result:
                print(f"  {case.key:<10} {result['wall_s']:7.1f} s (transcribe "
                      f"{result['transcribe_s']:.1f}, render {result['render_s']:.1f}; "
                      f"pieces {_pieces_text(result)})", flush=True)  # fmt: skip
            else:
                print(f"  {case.key:<10} {result.get('status')}: {result.get('error')}",
                      flush=True)  # fmt: skip
        results["projections"] = []
        for piece_s in args.piece_s:
            one = next((c for c in results["cases"] if c["key"] == f"one@{piece_s:g}"), None)
            if one is None or "wall_s" not in one:
                continue
            proj = {"piece_s": piece_s, **project(one)}
            two = next((c for c in results["cases"] if c["key"] == f"two@{piece_s:g}"), None)
            proj["measured"] = {1: one["wall_s"]}
            if two is not None and "wall_s" in two:
                proj["measured"][2] = two["wall_s"]
            results["projections"].append(proj)
        results["problems"] = [p for c in results["cases"] for p in c.pop("problems", [])]
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_after"] = load()
    results["seconds"] = time.monotonic() - started
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 2 min source, PIECE_S 30")
    parser.add_argument("--length", type=int, help="the source, seconds (600; --quick: 120)")
    parser.add_argument(
        "--piece-s", help="PIECE_S of the fan-out cases, comma-separated (300,60; --quick: 30)"
    )
    parser.add_argument("--size", default="1280x720", help="the source's picture (1280x720)")
    parser.add_argument("--job-timeout", type=float, help="per job, s (300 + 2 x length)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="Redis for vidstream; only keys under each case's own prefix are touched",
    )
    parser.add_argument(
        "--only", help="the cases to run, comma-separated keys (single, one@300, two@60, ...)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    custom = args.length is not None or args.piece_s is not None or args.size != "1280x720"
    custom = custom or args.only is not None
    args.only = set(args.only.split(",")) if args.only else None
    args.length = args.length or (120 if args.quick else 600)
    try:
        args.piece_s = [float(x) for x in (args.piece_s or ("30" if args.quick else "300,60"))
                        .split(",")]  # fmt: skip
    except ValueError:
        parser.error("--piece-s takes seconds, e.g. 300,60")
    if args.length < 2 * FANOUT_MIN_S or any(p < 5 for p in args.piece_s):
        parser.error(f"--length must be at least {2 * FANOUT_MIN_S} s and PIECE_S at least 5")
    args.job_timeout = args.job_timeout or 300 + 2 * args.length
    args.secret = secrets.token_urlsafe(32)
    if redis_version(args.redis_url) is None:
        print(f"Redis at {args.redis_url} does not answer; nothing measured")
        return 1

    results = run(args)
    report(results)
    RESULTS.mkdir(exist_ok=True)
    name = "fanout.quick.json" if args.quick and not custom else None
    name = name or ("fanout.custom.json" if custom else "fanout.json")
    path = RESULTS / name
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results in {path.relative_to(ROOT)}")
    failed = [c["key"] for c in results["cases"] if c.get("status") != "completed"]
    if failed:
        print(f"jobs that did not complete: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
