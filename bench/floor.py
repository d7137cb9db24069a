#!/usr/bin/env python3
"""The independent floor of a subtitling job: what a user would write by hand, without vidstream.

faster-whisper's `WhisperModel` is loaded once; then, for each video: transcribe it (with word
timestamps), write an SRT file with a few lines of Python (one cue per Whisper segment), and
burn it in with FFmpeg's `subtitles` filter, re-encoding the picture with libx264 and copying
the sound. Nothing of vidstream is imported: the model, the thread count, the decoding options,
the FFmpeg binary and the x264 settings are arguments, so that bench/pipeline.py can give it the
very ones vidstream uses, and it does the same work the way a person would.

    .venv/bin/python bench/floor.py --model DIR --ffmpeg EXE a.mp4 b.mp4   # one after another
    .venv/bin/python bench/floor.py --model DIR --ffmpeg EXE --serve       # paths on stdin

Each video gives one JSON line on stdout (with `--serve`: one per path read on stdin, after a
`ready` line once the model is loaded):

  transcribe_s  `model.transcribe(path)` and iterating every segment (faster-whisper decodes
                the sound itself, with PyAV): the model is already loaded;
  srt_s         writing the SRT file;
  burn_s        the FFmpeg run, start to exit;
  total_s       the three together: the floor's time for the job.

The outputs go to --out (a temporary directory by default), never next to the input, as
NAME.srt and NAME.subtitled.mp4; the next video of the same name overwrites them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02},{ms % 1000:03}"


def subtitle(model, video: Path, out: Path, args: argparse.Namespace) -> dict:
    """Transcribe `video`, write its SRT, burn it in; return the timings."""
    started = time.perf_counter()
    segments, _info = model.transcribe(
        str(video),
        language="en",
        beam_size=args.beam_size,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    segments = list(segments)  # a generator: the decoding happens here
    transcribed = time.perf_counter()

    srt = out / f"{video.stem}.srt"
    with srt.open("w", encoding="utf-8") as f:
        for i, seg in enumerate(segments, 1):
            f.write(f"{i}\n{timestamp(seg.start)} --> {timestamp(seg.end)}\n{seg.text.strip()}\n\n")
    written = time.perf_counter()

    # The SRT's bare name, from its own directory: no escaping in the filter argument.
    # fmt: off
    subprocess.run(
        [args.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-i", str(video.resolve()), "-vf", f"subtitles={srt.name}",
         "-c:v", "libx264", "-preset", args.preset, "-crf", str(args.crf), "-c:a", "copy",
         "-movflags", "+faststart", f"{video.stem}.subtitled.mp4"],
        cwd=out, check=True,
    )
    # fmt: on
    burned = time.perf_counter()
    return {
        "file": str(video),
        "transcribe_s": transcribed - started,
        "srt_s": written - transcribed,
        "burn_s": burned - written,
        "total_s": burned - started,
        "segments": len(segments),
        "words": sum(len(s.words or ()) for s in segments),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", type=Path, nargs="*")
    parser.add_argument("--model", required=True, help="CTranslate2 Whisper model directory")
    parser.add_argument("--threads", type=int, default=1, help="cpu_threads (1)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--ffmpeg", default="ffmpeg", help="FFmpeg executable")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (veryfast)")
    parser.add_argument("--crf", type=int, default=21, help="x264 crf (21)")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    parser.add_argument("--serve", action="store_true", help="read video paths on stdin")
    args = parser.parse_args()
    if os.sep in args.ffmpeg:  # FFmpeg runs in the output directory
        args.ffmpeg = str(Path(args.ffmpeg).resolve())

    from faster_whisper import WhisperModel

    started = time.perf_counter()
    model = WhisperModel(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    load_s = time.perf_counter() - started
    out = args.out or Path(tempfile.mkdtemp(prefix="floor-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.serve:
        print(json.dumps({"ready": True, "load_s": load_s, "pid": os.getpid()}), flush=True)
        videos = (Path(line.strip()) for line in sys.stdin if line.strip())
    else:
        videos = iter(args.videos)
    for video in videos:
        try:
            result = subtitle(model, video, out, args)
        except (OSError, subprocess.CalledProcessError) as exc:
            result = {"file": str(video), "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
