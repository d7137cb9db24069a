#!/usr/bin/env python3
"""Compose speed: seconds of finished video per wall second, for the end-to-end test's timeline
and for a longer one, against the raw floor of the same work in the same run.

The floor is FFmpeg alone running the very filter graph the render stage runs (built by
`vidstream.compose.graph` from the same files on local disk): what a compose job costs at the
least. A vidstream job's time runs from the start of `POST /v1/jobs` to the arrival of
`completed` over the WebSocket, through an in-process `Stack` (all four roles, Redis database 14
under a prefix of this run's own, local storage in a temporary directory); it includes fetching
and probing the assets, the poster, storing the outputs, and every hand-off.

Cases:
  example       the e2e timeline of tests/test_compose.py (6 s, 640x360, 25 fps: gradient, Ken
                Burns photo, trimmed clip, title, music ducked under a narration), rendered only;
  example+tr    the same with `"transcribe": true` (Whisper first, then subtitles burned in);
  long          60 s at 1280x720, 30 fps: the example's clips repeated ten times, one pass;
  long/seg      the same in segments of 15 s at once (COMPOSE_SEGMENT_S=15, concurrency 2).
Each figure is the median of --reps runs, ABBA order against the floor; the spread is min-max.
The script never fails on speed: it only prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.media import FFMPEG, speech_wav  # noqa: E402
from tests.test_compose import SENTENCE, example  # noqa: E402
from vidstream.compose import graph, rules  # noqa: E402
from vidstream.compose.graph import Asset, Window  # noqa: E402
from vidstream.compose.rules import Limits  # noqa: E402
from vidstream.core import logs  # noqa: E402
from vidstream.core.settings import Settings  # noqa: E402
from vidstream.ops.joblogs import capture  # noqa: E402
from vidstream.runtime import Stack  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
TERMINAL = ("completed", "failed", "cancelled")


def make_media(d: Path) -> dict[str, Path]:
    def ff(*args: str) -> None:
        subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)

    files = {"photo": d / "photo.png", "video": d / "clip.mp4", "music": d / "music.wav"}
    ff("-f", "lavfi", "-i", "testsrc2=s=1600x1200", "-frames:v", "1", str(files["photo"]))
    ff(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=30:d=8",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(files["video"]),
    )
    ff("-f", "lavfi", "-i", "sine=frequency=440:duration=70:sample_rate=48000", str(files["music"]))
    files["voice"], _ = speech_wav(d, (SENTENCE,))
    return files


def voice_s(path: Path) -> float:
    import wave

    with wave.open(str(path)) as w:
        return round(w.getnframes() / w.getframerate(), 2)


def long_timeline(keys: dict[str, str], voice: float) -> dict[str, Any]:
    """The example's picture and sound clips, ten times over a minute of 720p."""
    one = example(keys, voice)
    tracks: list[dict[str, Any]] = [{"name": t["name"], "clips": []} for t in one["tracks"]]
    for i in range(10):
        for track, base in zip(tracks, one["tracks"], strict=True):
            if track["name"] == "music":
                continue
            for clip in base["clips"]:
                track["clips"].append(
                    {
                        **clip,
                        "start": clip["start"] + 6 * i,
                        **({"name": f"n{i}"} if "name" in clip else {}),
                    }
                )
    music = {**one["tracks"][3]["clips"][0], "duration": 60}
    tracks[3]["clips"] = [music]
    tracks[0]["clips"] = [{**one["tracks"][0]["clips"][0], "duration": 60}]
    return {"output": {"width": 1280, "height": 720, "fps": 30, "duration": 60}, "tracks": tracks}


async def floor(
    raw: dict[str, Any],
    files: dict[str, Path],
    keys: dict[str, str],
    work: Path,
    variables: dict[str, str],
) -> float:
    """FFmpeg alone on the render stage's graph: seconds of wall time."""
    from vidstream.compose import variables as placeholders

    timeline = rules.parse(placeholders.fill(raw, variables), Limits(32, 5000, 3600, 8_294_400))
    demuxers = {"photo": "png_pipe", "video": "mov", "music": "wav", "voice": "wav"}
    assets = {
        keys[n]: Asset(
            str(files[n]), demuxers[n], 70.0 if n != "photo" else 0.0, n != "photo" and n != "video"
        )
        for n in files
    }
    plan = graph.build(timeline, assets, "floor.mp4", Window())
    for name, text in plan.files.items():
        (work / name).write_text(text)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        FFMPEG,
        "-nostdin",
        "-v",
        "error",
        "-y",
        *[a for a in plan.args if a not in ("-progress", "pipe:1")],
        cwd=work,
    )
    assert await proc.wait() == 0, "the floor's FFmpeg failed"
    return time.perf_counter() - started


async def upload(http: aiohttp.ClientSession, base: str, path: Path) -> str:
    body = {
        "filename": path.name,
        "content_type": "application/octet-stream",
        "size": path.stat().st_size,
    }
    async with http.post(f"{base}/v1/uploads", json=body) as r:
        ticket = await r.json()
    async with http.put(ticket["upload_url"], data=path.read_bytes(), headers=ticket["headers"]):
        pass
    return str(ticket["key"])


async def job(
    stack: Stack,
    http: aiohttp.ClientSession,
    files: dict[str, Path],
    timeline: Callable[[dict[str, str]], dict[str, Any]],
    **extra: Any,
) -> float:
    """One compose job, POST to `completed`: seconds. Its uploads are made before the clock."""
    from websockets.asyncio.client import connect

    assert stack.gateway is not None
    base = stack.gateway.url
    keys = {name: await upload(http, base, path) for name, path in files.items()}
    body = {"kind": "compose", "timeline": timeline(keys), "variables": {"name": "WORLD"}, **extra}
    started = time.perf_counter()
    async with http.post(f"{base}/v1/jobs", json=body) as r:
        created = await r.json()
        assert r.status == 202, created
    async with connect(created["links"]["ws"]) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "subscribe",
                    "job_id": created["id"],
                    "token": created["ws_token"],
                    "last_event_id": "0-0",
                }
            )
        )
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "event" and msg["status"] in TERMINAL:
                assert msg["event"] == "completed", msg
                return time.perf_counter() - started
    raise AssertionError("the connection closed first")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"


async def main(reps: int) -> dict[str, Any]:
    logs.configure("warning", "console", extra=(capture,))
    work = Path(tempfile.mkdtemp(prefix="vs-bench-compose-"))
    prefix = f"vsbench-{secrets.token_hex(4)}"
    results: dict[str, Any] = {}
    try:
        files = make_media(work)
        voice = voice_s(files["voice"])
        fixed = {n: f"uploads/bench/{p.name}" for n, p in files.items()}
        cases: list[
            tuple[
                str,
                float,
                Callable[[dict[str, str]], dict[str, Any]],
                dict[str, Any],
                dict[str, Any],
            ]
        ] = [
            ("example", 6.0, lambda k: example(k, voice), {}, {}),
            ("example+tr", 6.0, lambda k: example(k, voice), {"transcribe": True}, {}),
            ("long", 60.0, lambda k: long_timeline(k, voice), {}, {"compose_segment_s": 0}),
            (
                "long/seg",
                60.0,
                lambda k: long_timeline(k, voice),
                {},
                {"compose_segment_s": 15, "concurrency": 2},
            ),
        ]
        redis = Redis.from_url(REDIS_URL)
        for index, (name, seconds, make, extra, changes) in enumerate(cases):
            settings = Settings(
                redis_url=REDIS_URL,
                redis_prefix=f"{prefix}-{index}",
                data_dir=work / f"data-{index}",
                secret_key=secrets.token_hex(16),
                gateway_port=0,
                notifier_port=0,
                auth="off",
                rate_limit_per_min=0,
                log_format="console",
                **changes,
            )
            jobs: list[float] = []
            floors: list[float] = []
            async with Stack(settings) as stack, aiohttp.ClientSession() as http:
                await job(stack, http, files, make, **extra)  # warm: the Whisper model, caches
                for i in range(reps):
                    order = ("job", "floor") if i % 2 == 0 else ("floor", "job")
                    for side in order:
                        if side == "job":
                            jobs.append(await job(stack, http, files, make, **extra))
                        elif name != "long/seg":
                            floors.append(
                                await floor(make(fixed), files, fixed, work, {"name": "WORLD"})
                            )
            results[name] = {"output_s": seconds, "job_s": jobs, "floor_s": floors}
            keys = [k async for k in redis.scan_iter(match=f"{prefix}-{index}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
        await redis.aclose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, Any]) -> None:
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {FFMPEG}"
    )
    print(
        f"{'case':12} {'vidstream job':>24} {'out s/wall s':>13} {'floor (FFmpeg alone)':>26}"
        f" {'ratio':>6}"
    )
    single = statistics.median(results["long"]["job_s"])
    for name, r in results.items():
        med = statistics.median(r["job_s"])
        speed = r["output_s"] / med
        if r["floor_s"]:
            fl = statistics.median(r["floor_s"])
            floor_text, ratio = spread(r["floor_s"]), f"{med / fl:6.2f}"
        else:
            floor_text, ratio = f"(one pass: {single:.2f} s)", f"{med / single:6.2f}"
        print(f"{name:12} {spread(r['job_s']):>24} {speed:13.2f} {floor_text:>26} {ratio}")
    print(
        "ratio = vidstream job / floor (long/seg: / the one-pass job); example+tr's floor is "
        "the render alone, so its ratio includes Whisper."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    found = asyncio.run(main(1 if args.quick else args.reps))
    report(found)
    out = REPO / "bench" / "results" / "compose.json"
    out.write_text(
        json.dumps(
            {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": found}, indent=2
        )
        + "\n"
    )
    print(f"written: {out.relative_to(REPO)}")
