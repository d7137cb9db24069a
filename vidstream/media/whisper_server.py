"""The Whisper server: a child process that loads the model once and transcribes on request.

Run as `python -m vidstream.media.whisper_server`. It speaks JSON lines: one request per line on
stdin; on stdout a `ready` line after the model loads, then per request one `segment` line per
transcribed segment and a final `done` or `error` line. FFmpeg decodes each request's audio range
to 16 kHz mono PCM through a pipe into this process: no temporary WAV.

A request names its range's end, always: FFmpeg decodes to a second past it (to learn whether the
sound goes on) and no further, into a buffer that never holds more than that, whatever the
source's header says. `done` reports how much sound there was and whether it went on past the
end; a range marked `last` (it ends at MAX_DURATION_S) whose sound goes on fails `too_long`
before the model runs. An `error` carries a `message` for people and a `detail` for the logs.

A request with `"op": "diarize"` tells the speakers of a transcript's words apart instead: it
names the words' spans and how many speakers there are (0: as many as can be told apart), and
the answer is one `speakers` line with a label per word (`speakers`, `voices`). The speaker
encoder loads with the first such request and stays loaded; its sound is decoded in ranges of at
most `range_s` seconds, like a transcription's.

Nothing else may write to the protocol stream, so the real stdout is kept for it and fd 1 is
pointed at stderr before any library loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

from vidstream.core.pdeathsig import die_with_parent
from vidstream.media.ffmpeg import audio_pcm
from vidstream.media.info import spoken
from vidstream.media.models import describe
from vidstream.media.speakers import speech, windows, word_speakers

_SAMPLE_RATE = 16000
_CHUNK_BYTES = 1024 * 1024
SLACK_S = 1.0  # decoded past a range's end, to learn whether the sound goes on
# The same sound, the same words: faster-whisper's default falls back to sampling at higher
# temperatures when a window's decode looks repetitive, and drew different words on every run
# (a list read in one pattern lost 13 to 22 of 58 words, differently each time; CTranslate2's
# seed does not reach its decoding threads). Beam search alone is the same on every run, on
# every worker, and kept the espeak-ng lists whole where sampling garbled them.
TEMPERATURES = (0.0,)
# FFmpeg stops an input at a packet's edge, a few tens of milliseconds past the end asked for:
# sound this close to the end is part of the range, not more of it.
TOLERANCE_S = 0.25


def _protocol_stream() -> IO[str]:
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _send(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message, ensure_ascii=False) + "\n")


@dataclass(frozen=True, slots=True)
class Decoded:
    audio: Any  # float32 samples, the range's (with the slack when the sound ends in it)
    seconds: float  # of sound in `audio`
    more: bool  # the sound goes on past the range's end


def buffer_samples(start: float, end: float, hint: float) -> tuple[int, int]:
    """(first allocation, hard cap) in samples for decoding [start, end + SLACK_S): sized by the
    probed duration `hint`, never beyond the range and its slack."""
    cap = int((end + SLACK_S - start) * _SAMPLE_RATE) + _SAMPLE_RATE // 10
    first = int((max(min(hint, end) - start, 1.0) + SLACK_S) * _SAMPLE_RATE)
    return min(first, cap), cap


def decode_range(
    ffmpeg: str, path: str, demuxer: str, start: float, end: float, hint: float
) -> Decoded:
    """The range as float32 samples, decoded through a pipe into one buffer of bounded size:
    the only copy of the audio this process holds (no PCM buffer, no temporary file)."""
    import numpy as np

    size, cap = buffer_samples(start, end, hint)
    samples = np.empty(size, np.float32)
    filled, pending, overflow = 0, b"", False
    argv = audio_pcm(ffmpeg, path, demuxer, start=start, end=end + SLACK_S)
    with tempfile.TemporaryFile() as err:  # a file, so a chatty FFmpeg can never block on it
        # It dies with this server, as the server dies with its worker (`pdeathsig`).
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, preexec_fn=die_with_parent()
        )
        assert proc.stdout is not None
        try:
            while chunk := proc.stdout.read(_CHUNK_BYTES):
                data = pending + chunk
                count = len(data) // 2
                pending = data[count * 2 :]  # half a sample: kept for the next chunk
                if filled + count > len(samples):  # longer than the probe said: grow, to the cap
                    samples = np.resize(samples, min(cap, max(2 * len(samples), filled + count)))
                take = min(count, len(samples) - filled)
                samples[filled : filled + take] = np.frombuffer(data[: take * 2], np.int16)
                filled += take
                if take < count:  # more than the range and its slack: never held
                    overflow = True
                    proc.kill()
                    break
        except BaseException:
            proc.kill()
            raise
        finally:
            code = proc.wait()
            proc.stdout.close()
        detail = _tail(err, 2000)
    if code != 0 and not overflow:
        raise _RequestError(
            "invalid_media", "The audio track could not be decoded.", detail or f"exit {code}"
        )
    within = int((end - start) * _SAMPLE_RATE)
    more = overflow or filled > within + int(TOLERANCE_S * _SAMPLE_RATE)
    kept = within if more else filled
    audio = samples[:kept]
    audio /= 32768.0
    return Decoded(audio, kept / _SAMPLE_RATE, more)


def _tail(f: IO[bytes], size: int) -> str:
    """The last `size` bytes of a file, as text for the logs."""
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - size))
    return f.read().decode(errors="replace").strip()


class _RequestError(Exception):
    def __init__(self, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


def _transcribe(model: Any, args: argparse.Namespace, req: dict[str, Any], out: IO[str]) -> None:
    rid = req["id"]
    start, end = float(req.get("start") or 0.0), float(req["end"])
    language, task = req.get("language"), req.get("task") or "transcribe"
    if not model.model.is_multilingual:  # the gateway refuses these too: a job queued before
        if language not in (None, "en"):
            raise _RequestError(
                "unsupported_language",
                f"The model {args.model_name} transcribes only English, not {language!r}.",
            )
        if task != "transcribe":
            raise _RequestError(
                "unsupported_task", f"The model {args.model_name} cannot translate."
            )
        language = "en"
    decoded = decode_range(
        args.ffmpeg, req["path"], str(req["format"]), start, end, float(req.get("duration") or 0)
    )
    if decoded.more and req.get("last"):
        raise _RequestError(
            "too_long",
            f"The video plays on past {spoken(end)}, the longest vidstream accepts "
            "(its header says it is shorter).",
        )
    segments, info = model.transcribe(
        decoded.audio,
        temperature=TEMPERATURES,
        language=language,
        task=task,
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
    _send(
        out,
        type="done",
        id=rid,
        language="en" if task == "translate" else info.language,  # the captions' language
        duration=decoded.seconds,
        more=decoded.more,
    )


class _Voices:
    """The speaker encoder, loaded at the first request that needs it."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._encoder: Any = None

    def encoder(self) -> Any:
        if self._encoder is None:
            from vidstream.media.voices import Encoder

            self._encoder = Encoder(self.threads)
        return self._encoder


def _chunks(spans: list[tuple[float, float]], range_s: float) -> list[list[int]]:
    """The windows (by index, in order) in groups each decoded at once: at most `range_s` from
    the first window's start to the last one's end."""
    groups: list[list[int]] = []
    for i, (_, end) in enumerate(spans):
        if groups and end - spans[groups[-1][0]][0] <= range_s:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _diarize(voices: _Voices, args: argparse.Namespace, req: dict[str, Any], out: IO[str]) -> None:
    from vidstream.media.voices import grouped

    started = time.monotonic()
    words = [(float(a), float(b)) for a, b in req["words"]]
    spans = windows(speech(words))
    encoder = voices.encoder()
    vectors: list[Any] = []
    for group in _chunks(spans, float(req.get("range_s") or 1200.0)):
        first, last = spans[group[0]][0], max(spans[i][1] for i in group)
        decoded = decode_range(args.ffmpeg, req["path"], str(req["format"]), first, last,
                               float(req.get("duration") or 0))  # fmt: skip
        vectors += encoder.embed(decoded.audio, [(spans[i][0] - first, spans[i][1] - first)
                                                 for i in group])  # fmt: skip
    labels = word_speakers(words, spans, grouped(vectors, int(req.get("speakers") or 0)))
    _send(out, type="speakers", id=req["id"], labels=labels, windows=len(spans),
          took_s=round(time.monotonic() - started, 3))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default="", help="CTranslate2 model directory (default: tiny.en)"
    )
    parser.add_argument("--name", default="", help="its name, as jobs choose it")
    parser.add_argument("--ffmpeg", required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--vad", action="store_true")
    args = parser.parse_args()  # (it dies with its worker: `process.spawn` saw to that)
    out = _protocol_stream()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time

    started = time.monotonic()
    try:
        from faster_whisper import WhisperModel

        described = describe(args.model)  # "" is the bundled model
        args.model, args.model_name = described.path, args.name or described.name
        model = WhisperModel(
            args.model, device="cpu", compute_type="int8", cpu_threads=args.threads
        )
    except Exception as exc:  # report why, so the parent can say it at start-up
        _send(out, type="error", code="model_load_failed", message=f"{type(exc).__name__}: {exc}")
        return 1
    _send(out, type="ready", model=args.model, name=args.model_name,
          load_s=round(time.monotonic() - started, 3))  # fmt: skip

    voices = _Voices(args.threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = {}
        try:
            req = json.loads(line)
            if req.get("op") == "diarize":
                _diarize(voices, args, req, out)
            else:
                _transcribe(model, args, req, out)
        except _RequestError as exc:
            _send(
                out,
                type="error",
                id=req.get("id"),
                code=exc.code,
                message=exc.message,
                detail=exc.detail,
            )
        except Exception as exc:
            _send(
                out,
                type="error",
                id=req.get("id"),
                code="whisper_error",
                message="The speakers could not be told apart."
                if req.get("op") == "diarize"
                else "Whisper could not transcribe the audio.",
                detail=f"{type(exc).__name__}: {exc}",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
