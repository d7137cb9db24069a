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
MAX_PACKETS = 2_000_000  # 9 h at 60 fps: a longer picture is rendered whole
KEYFRAME_GAP_S = 1.0  # closer keyframes are not worth a cut (an all-intra source has one a frame)
START_SLACK_S = 0.001


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
    """The picture's keyframes at least `KEYFRAME_GAP_S` apart: (seconds from the file's start,
    frames from it to the next); none when its timing does not let it be cut and joined
    exactly (see `scan_keyframes`)."""
    found = await run_child(["--keyframes"], source, timeout_s, None, VIDEOS, "source")
    return [(float(t), int(n)) for t, n in found["keyframes"]]


def scan_keyframes(path: str) -> dict[str, Any]:
    """The child's side of `keyframes`: the first picture's packets, read without decoding.

    Segments are cut at keyframes and joined by the concat demuxer, which starts the picture at
    0 and takes the sound whole from the source: exact only when every packet is shown (no edit
    list discarding some) and the picture starts where the file does. A source that is not so,
    or has more packets than `MAX_PACKETS`, is rendered whole."""
    import av.logging  # imported here: only the child process needs it

    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture() as logged, open_only(path, VIDEOS, {}, logged) as container:
        videos = container.streams.video
        if not videos:
            return {"keyframes": []}
        video, origin = videos[0], (container.start_time or 0) / 1_000_000
        # The sound keeps its own times against the file's start (FFmpeg offsets each input by
        # its start); the joined picture starts at 0, so it must start where the file does.
        start = _start(video)
        if start is None or abs(start - origin) > START_SLACK_S:
            return {"keyframes": [], "why": "the picture starts after the file"}
        base = video.time_base
        frames: list[tuple[float, bool]] = []
        for packet in container.demux(video):
            if packet.size == 0:
                continue
            if packet.pts is None or packet.is_discard or len(frames) >= MAX_PACKETS:
                return {"keyframes": [], "why": "packets without a time, discarded or too many"}
            frames.append((float(packet.pts * base) - origin, bool(packet.is_keyframe)))
    frames.sort()
    found: list[list[float]] = []
    for at, key in frames:  # keyframes closer than the gap count with the one before
        if not found or (key and at - found[-1][0] >= KEYFRAME_GAP_S):
            found.append([round(at, 6), 0])
        found[-1][1] += 1
    return {"keyframes": found}


def _start(stream: Any) -> float | None:
    if stream.start_time is None:
        return None
    return float(stream.start_time * stream.time_base)
