"""The two readings a source is cut by (`cuts`): its pauses, heard by FFmpeg's `silencedetect`,
and its keyframes, read by PyAV from the packets alone (nothing is decoded). Each runs in a
child process with a deadline, as every reading of an untrusted file does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidstream.core.errors import TransientError
from vidstream.media import ffmpeg as commands
from vidstream.media.cuts import MIN_PAUSE_S, parse_levels, parse_silences, quietest
from vidstream.media.info import VIDEOS
from vidstream.media.probe import open_only, run_child

PAUSE_NOISE = "-35dB"  # quieter than this is a pause: espeak's and a talk's alike
MAX_PACKETS = 5_000_000  # 48 h at 25 fps: more than MAX_DURATION_S lets through


def pauses_argv(ffmpeg: str, source: str, demuxer: str, end: float) -> list[str]:
    """Decode the first audio track up to `end` seconds and print each pause (`lavfi.silence_*`
    lines) on stdout."""
    detect = f"silencedetect=noise={PAUSE_NOISE}:d={MIN_PAUSE_S},ametadata=mode=print:file=-"
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-to", f"{end:.3f}", *commands.source_input(source, demuxer),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000", "-af", detect, "-f", "null", "-",
    ]  # fmt: skip


async def pauses(
    ffmpeg: str, source: Path, demuxer: str, end: float, timeout_s: float
) -> list[tuple[float, float]]:
    """The pauses in the source's sound, as (start, end) seconds."""
    lines = await _read(pauses_argv(ffmpeg, str(source), demuxer, end), timeout_s, "pauses")
    return parse_silences(lines)


def levels_argv(ffmpeg: str, source: str, demuxer: str, start: float, end: float) -> list[str]:
    """Decode the first audio track from `start` to `end` seconds and print its level every
    50 ms (`lavfi.astats.Overall.RMS_level` lines) on stdout."""
    chain = (
        "asetnsamples=n=800:p=0,astats=metadata=1:reset=1:measure_perchannel=none:"
        "measure_overall=RMS_level,ametadata=mode=print:key=lavfi.astats.Overall.RMS_level:file=-"
    )
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-ss", f"{start:.3f}", "-to", f"{end:.3f}", *commands.source_input(source, demuxer),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000", "-af", chain, "-f", "null", "-",
    ]  # fmt: skip


async def quietest_moment(
    ffmpeg: str, source: Path, demuxer: str, span: tuple[float, float], timeout_s: float
) -> float:
    """The quietest 50 ms of the sound within `span` (seconds): where to cut speech that has
    no pause near."""
    out = await _read(levels_argv(ffmpeg, str(source), demuxer, *span), timeout_s, "quiet")
    return quietest(parse_levels(out, span[0]), (span[0] + span[1]) / 2)


async def _read(argv: list[str], timeout_s: float, what: str) -> list[str]:
    from vidstream.core import process

    try:
        code, out, err = await process.run(argv, timeout_s)
    except TimeoutError:
        raise TransientError(
            f"Listening for the {what} took longer than {timeout_s:g} s.", code="timeout"
        ) from None
    if code != 0:
        raise commands.render_failure(code, err)
    return out.decode(errors="replace").splitlines()


async def keyframes(source: Path, timeout_s: float) -> list[tuple[float, int]]:
    """The picture's keyframes: (seconds from the file's start, frames from it to the next)."""
    found = await run_child(["--keyframes"], source, timeout_s, None, VIDEOS, "source")
    return [(float(t), int(n)) for t, n in found["keyframes"]]


def scan_keyframes(path: str) -> dict[str, Any]:
    """The child's side of `keyframes`: the first picture's packets, read without decoding."""
    import av.logging  # imported here: only the child process needs it

    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture() as logged, open_only(path, VIDEOS, {}, logged) as container:
        videos = container.streams.video
        if not videos:
            return {"keyframes": []}
        video = videos[0]
        base = video.time_base
        origin = (container.start_time or 0) / 1_000_000  # what `-ss` counts from
        frames: list[tuple[float, bool]] = []
        for packet in container.demux(video):
            if packet.pts is None or packet.size == 0:
                continue
            frames.append((float(packet.pts * base) - origin, bool(packet.is_keyframe)))
            if len(frames) > MAX_PACKETS:
                break
    frames.sort()
    found: list[list[float]] = []
    for at, key in frames:
        if key or not found:
            found.append([round(at, 6), 0])
        found[-1][1] += 1
    return {"keyframes": found}
