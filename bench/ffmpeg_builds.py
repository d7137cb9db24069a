#!/usr/bin/env python3
"""Compare the two FFmpeg builds vidstream can run: Debian's and the pinned imageio-ffmpeg one.

What is measured, for each build in the same run:

  burn  - drawing ASS subtitles into the video and re-encoding it with libx264, with exactly the
          argv of `vidstream.media.ffmpeg.burn_subtitles` (the render stage's default path) and
          an ASS file made by `vidstream.media.subtitles.to_ass`;
  pcm   - decoding the audio to 16 kHz mono s16le on a pipe (`audio_pcm`, what the Whisper
          server feeds the model);
  soft  - muxing an SRT track as mov_text while copying the streams (`soft_subtitles`).

The input is generated once in a temporary directory: lavfi `testsrc2` + `sine`, encoded with
libx264/aac (default 60 s of 1280x720 at 30 fps). The builds alternate between repetitions in
ABBA order (debian, static, static, debian, ...) so a slow drift of the machine (thermal
throttling, another process) falls on both. Before timing, each build runs a short untimed
warm-up (binary and font cache into memory).

How to read the table: `wall` is the median elapsed time over the repetitions with the minimum
in brackets (the minimum is the least disturbed run; the median is what to expect). `cpu` is the
median user+sys time of the FFmpeg child, from getrusage(RUSAGE_CHILDREN) deltas; cpu above wall
means FFmpeg used more than one core. `static/debian` above 1.00 means the pinned build is slower.
`x rt` is how many seconds of the input each second of wall time processes. The script never
fails on speed: it only prints figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidstream.core.settings import Settings
from vidstream.media import ffmpeg
from vidstream.media.info import MediaInfo
from vidstream.media.probe import inspect
from vidstream.media.subtitles import Cue, to_ass, to_srt, wrap

OPS = ("burn", "pcm", "soft")
LABELS = {"burn": "burn (x264+ass)", "pcm": "audio -> pcm", "soft": "soft-sub mux"}
LINES = (
    "Today we talk about the weather in the city and what it means for the weekend.",
    "Please open the window and let the fresh air in.",
    "Thank you for watching and have a nice day.",
    "The quick brown fox jumps over the lazy dog, again and again.",
)


@dataclass
class Build:
    name: str
    exe: str
    version: str = ""
    walls: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    cpus: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    errors: dict[str, str] = field(default_factory=dict)


class OpFailed(Exception):
    pass


def _version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unknown ({exc})"
    first = out.splitlines()[0] if out else ""
    return first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip()


def find_builds(debian: str) -> list[Build]:
    builds = []
    if os.access(debian, os.X_OK):
        builds.append(Build("debian", debian))
    else:
        print(f"skipping debian: {debian} is missing or not executable")
    try:
        import imageio_ffmpeg

        builds.append(Build("static", str(imageio_ffmpeg.get_ffmpeg_exe())))
    except (ImportError, RuntimeError) as exc:
        print(f"skipping static: imageio-ffmpeg has no binary here ({exc})")
    for build in builds:
        build.version = _version(build.exe)
    return builds


def run(argv: list[str], cwd: Path, *, pcm: bool = False) -> tuple[float, float, int]:
    """Run one FFmpeg command; return (wall s, child user+sys s, bytes on stdout if `pcm`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        # The PCM goes to a pipe read to the end, as in the Whisper server; the render commands'
        # `-progress pipe:1` reports are thrown away (reading them costs next to nothing).
        stdout=subprocess.PIPE if pcm else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise OpFailed(f"exit {proc.returncode}: {' | '.join(tail) or 'no message'}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, len(proc.stdout) if pcm else 0


def make_source(exe: str, path: Path, duration: float, size: str, fps: int) -> None:
    # fmt: off
    argv = [
        exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{duration:.3f}", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-ac", "2",
        str(path),
    ]
    # fmt: on
    subprocess.run(argv, check=True)


def make_cues(duration: float) -> list[Cue]:
    """A two-line cue every 3 s (on screen 2.5 s), about what speech gives; at least one.

    At least one, because FFmpeg refuses an empty SRT file as an input.
    """
    cues, t, i = [], min(0.5, duration / 4), 0
    while t < duration:
        cues.append(Cue(t, min(t + 2.5, duration), wrap(LINES[i % len(LINES)])))
        t, i = t + 3.0, i + 1
    return cues


def commands(exe: str, source: Path, media: MediaInfo, enc: ffmpeg.Encoder) -> dict[str, list[str]]:
    src = str(source)
    return {
        "burn": ffmpeg.burn_subtitles(exe, src, "subs.ass", "burned.mp4", media, enc),
        "pcm": ffmpeg.audio_pcm(exe, src, media.demuxer, end=media.duration),
        "soft": ffmpeg.soft_subtitles(exe, src, "subs.srt", "soft.mp4", media, enc, "en"),
    }


def warm_up(build: Build, source: Path, workdir: Path) -> None:
    """Untimed: load the binary, libass and the font cache once, on one second of the input."""
    base = [build.exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    argv = [*base, "-t", "1", "-i", str(source), "-vf", "ass=subs.ass", "-f", "null", "-"]
    try:
        run(argv, workdir)
    except OpFailed as exc:
        print(f"  warm-up of {build.name} failed ({exc}); its timings may include a cold start")


def fmt_wall(values: list[float]) -> str:
    if not values:
        return "failed"
    return f"{statistics.median(values):6.2f} ({min(values):.2f})"


def ratio(builds: dict[str, Build], kind: str, op: str) -> str:
    """Median of the static build over median of the Debian one, for walls or cpus."""
    if "static" not in builds or "debian" not in builds:
        return "-"
    static = getattr(builds["static"], kind)[op]
    debian = getattr(builds["debian"], kind)[op]
    if not static or not debian:
        return "-"
    return f"{statistics.median(static) / statistics.median(debian):.2f}"


def report(builds: list[Build], duration: float) -> None:
    by = {b.name: b for b in builds}
    print()
    for b in builds:
        print(f"{b.name:7} {b.version}  ({b.exe})")
    print()
    head = f"{'op':16}" + "".join(f"{b.name + ' wall s':>17}" for b in builds)
    head += f"{'static/debian':>15}" + "".join(f"{b.name + ' cpu s':>14}" for b in builds)
    head += f"{'cpu ratio':>11}" + "".join(f"{b.name + ' x rt':>13}" for b in builds)
    print(head)
    print("-" * len(head))
    for op in OPS:
        row = f"{LABELS[op]:16}" + "".join(f"{fmt_wall(b.walls[op]):>17}" for b in builds)
        row += f"{ratio(by, 'walls', op):>15}"
        for b in builds:
            row += f"{statistics.median(b.cpus[op]):14.2f}" if b.cpus[op] else f"{'-':>14}"
        row += f"{ratio(by, 'cpus', op):>11}"
        for b in builds:
            walls = b.walls[op]
            row += f"{duration / statistics.median(walls):12.1f}x" if walls else f"{'-':>13}"
        print(row)
    print()
    print("wall s: median (min) over the repetitions; cpu s: median child user+sys;")
    print("x rt: seconds of input per second of wall time (median);")
    print("static/debian > 1.00: the pinned imageio-ffmpeg build is slower than Debian's.")
    for b in builds:
        for op, error in b.errors.items():
            print(f"{b.name} {op} failed: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per build (default 3)")
    parser.add_argument("--duration", type=float, default=60.0, help="input length, s (60)")
    parser.add_argument("--size", default="1280x720", help="input picture size (1280x720)")
    parser.add_argument("--fps", type=int, default=30, help="input frame rate (30)")
    parser.add_argument("--debian", default="/usr/bin/ffmpeg", help="the system FFmpeg")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.reps < 1 or args.duration <= 0:
        parser.error("--reps must be at least 1 and --duration positive")

    builds = find_builds(args.debian)
    if not builds:
        print("no FFmpeg build to measure")
        return 1
    defaults = Settings()
    enc = ffmpeg.Encoder(preset=defaults.x264_preset, crf=defaults.x264_crf)
    print(f"builds: {', '.join(b.name for b in builds)}; {args.reps} reps each, ABBA order")
    print(f"encoder: libx264 preset {enc.preset}, crf {enc.crf}; {os.cpu_count()} CPUs")

    workdir = Path(tempfile.mkdtemp(prefix="vidstream-bench-ffmpeg-"))
    try:
        source = workdir / "source.mp4"
        started = time.perf_counter()
        make_source(builds[-1].exe, source, args.duration, args.size, args.fps)
        media = MediaInfo.from_dict(inspect(str(source)))
        size_mb = source.stat().st_size / 1e6
        print(
            f"input: {media.duration:.1f} s {media.width}x{media.height} {args.fps} fps "
            f"{media.video_codec}/{media.audio_codec}, {size_mb:.1f} MB "
            f"(made by {builds[-1].name} in {time.perf_counter() - started:.1f} s)"
        )
        cues = make_cues(media.duration)
        width, height = media.display_size
        (workdir / "subs.ass").write_text(to_ass(cues, width, height))
        (workdir / "subs.srt").write_text(to_srt(cues))
        print(f"subtitles: {len(cues)} cues")

        for build in builds:
            warm_up(build, source, workdir)
        expected_pcm = int(media.duration * 16000) * 2
        for rep in range(args.reps):
            order = builds if rep % 2 == 0 else builds[::-1]
            for build in order:
                argvs = commands(build.exe, source, media, enc)
                timings = []
                for op in OPS:
                    if op in build.errors:
                        continue
                    try:
                        wall, cpu, nbytes = run(argvs[op], workdir, pcm=op == "pcm")
                    except OpFailed as exc:
                        build.errors[op] = str(exc)
                        timings.append(f"{op} failed")
                        continue
                    if op == "pcm" and abs(nbytes - expected_pcm) > 16000 * 2 * 0.5:
                        print(f"  note: {build.name} pcm gave {nbytes} bytes, ~{expected_pcm} due")
                    build.walls[op].append(wall)
                    build.cpus[op].append(cpu)
                    timings.append(f"{op} {wall:.2f}s/{cpu:.2f}cpu")
                for name in ("burned.mp4", "soft.mp4"):
                    (workdir / name).unlink(missing_ok=True)
                print(f"  rep {rep + 1} {build.name:7} " + "  ".join(timings), flush=True)
        report(builds, media.duration)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
