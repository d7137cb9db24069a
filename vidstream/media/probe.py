"""Probe a source: is it a playable video with an audio track (or, where no subtitles are drawn
on it, a file of sound alone), how long, what codecs?

Runs as its own subprocess (`python -m vidstream.media.prober FILE`) so that a hostile file that
hangs or crashes the demuxer costs a killed child, never the worker. PyAV does the reading, which
works with either FFmpeg build (the pinned one ships no ffprobe). The child decodes one video and
one audio frame: a header alone does not prove a file plays. A composition's assets (videos,
still pictures, sound: see `assets`) are probed by the same child (`--asset KIND FILE`).

A source is one self-contained media file, never a playlist or a list of files: HLS, concat and
their kind would read whatever files they name on the worker's disk. Three guards keep the child
to the one file it was given:
- FFmpeg's `format_whitelist` refuses a demuxer outside the reader's whitelist (`info.Reading`:
  `info.ACCEPTED_DEMUXERS` for a source) once the format is detected from the first bytes and
  before the demuxer reads its header, let alone a file it names;
- every file a demuxer asks to open goes through `io_open`, which opens the source and nothing
  else;
- `protocol_whitelist` allows the `file` protocol only, so nothing reaches the network.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vidstream.core.errors import InvalidMedia, PermanentError, TooLong, TransientError
from vidstream.media.info import (
    VIDEOS,
    VIDEOS_OR_AUDIO,
    MediaInfo,
    Reading,
    accepted,
    check_frame,
    decoder_max_pixels,
    names_other_files,
    refusal,
    spoken,
)

_MAX_PACKETS = 5000  # enough to find the first frames of any sane interleaving
# Codes the child may report besides invalid_media; anything else reads as invalid_media.
_CHILD_CODES = frozenset({"too_large_frame"})
_NOT_ON_WHITELIST = "Format not on whitelist"
_TOO_MANY_PIXELS = "exceeds specified max pixel count"
_SIZE = re.compile(r"(\d+)x(\d+)")
Logged = list[tuple[int, str, str]]  # FFmpeg's log lines while a file is read: level, name, text


async def probe(
    path: Path,
    timeout_s: float,
    *,
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
    need_video: bool = True,
) -> MediaInfo:
    """Probe `path` in a child process; raise `InvalidMedia` (or another `PermanentError`: a
    picture beyond `max_pixels`, a duration beyond `max_duration_s`) with a reason a person
    understands. With `need_video` False a file of sound alone (a podcast to transcribe, in any
    of `info.AUDIO_DEMUXERS`) is accepted too: its `MediaInfo` has no picture (0x0)."""
    reading = VIDEOS if need_video else VIDEOS_OR_AUDIO
    options = [] if need_video else ["--sound-alone"]
    found = await run_child(options, path, timeout_s, max_pixels, reading, "source")
    info = MediaInfo.from_dict(found)
    if not accepted(info.format_name, reading.demuxers):  # the child refuses these too
        raise InvalidMedia(refusal(info.format_name, reading))
    if max_duration_s is not None:
        subject = "The video" if info.has_video else "The audio file"
        check_duration(info.duration, max_duration_s, subject)
    return info


async def run_child(
    options: list[str],
    path: Path,
    timeout_s: float,
    max_pixels: int | None,
    reading: Reading,
    what: str,
) -> dict[str, Any]:
    """What the child found in `path` (its `info`), or its refusal raised: `InvalidMedia`, or
    the `PermanentError` it names. `what` names the file if the child runs out of time."""
    if max_pixels is not None:
        options = [*options, "--max-pixels", str(max_pixels)]
    # Imported here, in the parent: the child is this module run again, and it starts about
    # 100 ms sooner without the logging stack `process` brings (bench/pipeline.py).
    from vidstream.core import process
    from vidstream.media import probers

    args = [*options, "--", str(path)]
    kept = probers.current()
    try:
        if kept is not None:  # a worker's children, kept between probes
            code, out = await kept.ask(args, timeout_s)
        else:
            argv = [sys.executable, "-m", "vidstream.media.prober", *args]
            code, out, _err = await process.run(argv, timeout_s)
    except TimeoutError:
        raise TransientError(
            f"Probing the {what} took longer than {timeout_s:g} s.", code="timeout"
        ) from None
    try:
        result = json.loads(out)
    except ValueError:
        raise InvalidMedia(
            f"The file could not be read as {reading.a} (the reader stopped: exit {code})."
        ) from None
    if not result.get("ok"):
        message = str(result.get("message") or f"The file could not be read as {reading.a}.")
        if result.get("code") in _CHILD_CODES:
            raise PermanentError(message, code=str(result["code"]))
        raise InvalidMedia(message)
    found: dict[str, Any] = result["info"]
    return found


def check_duration(duration_s: float, max_duration_s: float, subject: str = "The video") -> None:
    """Refuse a file that says it is longer than `max_duration_s` (what it plays is checked
    again as its sound is decoded); `subject` names it."""
    if duration_s > max_duration_s:
        raise TooLong(
            f"{subject} is {spoken(duration_s)} long; the limit is {spoken(max_duration_s)}."
        )


# -- the child ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tracks:
    """The tracks a reader wants: for each kind, the refusal of a file without one (None: the
    track is optional). With `video` False a picture is neither decoded nor reported."""

    no_video: str | None
    no_audio: str | None
    video: bool = True


_SOURCE = Tracks(
    "The file has no video track; vidstream needs a video with sound.",
    "The file has no audio track, so there is no speech to transcribe.",
)
_SOUND_SOURCE = Tracks(None, _SOURCE.no_audio)


class _Refused(Exception):
    """A demuxer asked to open a file other than the source."""


def inspect(path: str, max_pixels: int | None = None, need_video: bool = True) -> dict[str, Any]:
    """Read the source `path` with PyAV; return the `MediaInfo` fields or raise `InvalidMedia`."""
    if need_video:
        return examine(path, VIDEOS, _SOURCE, max_pixels)
    return examine(path, VIDEOS_OR_AUDIO, _SOUND_SOURCE, max_pixels)


def examine(path: str, reading: Reading, tracks: Tracks, max_pixels: int | None) -> dict[str, Any]:
    """Read `path` with PyAV in a format `reading` takes, decoding a frame of each track
    `tracks` wants; return the `MediaInfo` fields (no picture: 0x0 and video_codec "") or raise
    `InvalidMedia` or another `PermanentError`."""
    import av.logging  # imported here: only the child process needs it

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InvalidMedia(f"The file could not be read as {reading.a} (it is empty).")
    decoder = {} if max_pixels is None else {"max_pixels": str(decoder_max_pixels(max_pixels))}
    # FFmpeg's log says what a refusal alone does not: which format was detected, whether the
    # decoder refused a picture's size.
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture() as logged, open_only(path, reading, decoder, logged) as container:
        if not accepted(container.format.name, reading.demuxers):
            raise InvalidMedia(refusal(container.format.name, reading))
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        video = videos[0] if videos and tracks.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and tracks.no_video:
            raise InvalidMedia(tracks.no_video)
        if audio is None and tracks.no_audio:
            raise InvalidMedia(tracks.no_audio)
        if video is None and audio is None:  # every reader wants one track at least
            raise InvalidMedia(f"The file could not be read as {reading.a} (it has no tracks).")
        if video is not None:
            vctx = video.codec_context
            check_frame(int(vctx.width), int(vctx.height), max_pixels, reading.picture)
            vctx.options = {**vctx.options, **decoder}
        try:
            rotation, (width, height) = first_frames(container, video, audio)
        except InvalidMedia:
            beyond_max_pixels(logged, max_pixels, reading)
            raise
        if video is not None:  # what was decoded, whatever the header said
            check_frame(width, height, max_pixels, reading.picture)
        duration = _duration(container, video, audio)
        if duration <= 0:
            raise InvalidMedia("The file's duration could not be determined.")
        actx = audio.codec_context if audio is not None else None
        return {
            "duration": duration,
            "format_name": container.format.name,
            "width": width,
            "height": height,
            "rotation": rotation,
            # The codec, not the decoder PyAV picked for it (mp3, not mp3float).
            "video_codec": video.codec_context.codec.canonical_name if video is not None else "",
            "audio_codec": actx.codec.canonical_name if actx is not None else None,
            "audio_channels": int(actx.channels) if actx is not None else 0,
            "sample_rate": int(actx.sample_rate or 0) if actx is not None else 0,
        }


def beyond_max_pixels(logged: Logged, max_pixels: int | None, reading: Reading) -> None:
    """Raise `too_large_frame` when a decode failed because the decoder refused the picture's
    size (larger than any header said, or a picture whose size only decoding tells): the
    damage FFmpeg reports then is not the reason."""
    for _level, _name, message in logged:
        if _TOO_MANY_PIXELS not in message:
            continue
        # "Picture size 800x600 exceeds ...": named, the size makes a clearer refusal.
        if size := _SIZE.search(message):
            check_frame(int(size[1]), int(size[2]), max_pixels, reading.picture)
        raise PermanentError(
            f"{reading.picture} is larger than its header says, far beyond "
            f"{max_pixels or 0:,} pixels.",
            code="too_large_frame",
        ) from None


def open_only(
    path: str,
    reading: Reading,
    decoder: dict[str, str],
    logged: Logged,
    demuxer: str | None = None,
) -> Any:
    """The file as a PyAV container, opened so that it reads this one file and nothing else
    (see the module's docstring), with `demuxer` forced if given."""
    import av

    opened: list[str] = []

    def only_the_source(url: str, flags: int, options: dict[str, str]) -> IO[bytes]:
        # FFmpeg opens every file through here, the source first: nothing else is opened.
        if url not in (path, f"file:{path}") or opened:
            raise _Refused(url)
        opened.append(url)
        return open(path, "rb")  # closed by PyAV with the container

    try:
        return av.open(
            path,
            format=demuxer,
            container_options={
                "protocol_whitelist": "file",
                "format_whitelist": ",".join(reading.demuxers),
            },
            options=decoder,  # for the decoders avformat_find_stream_info opens
            metadata_errors="ignore",
            io_open=only_the_source,
        )
    except _Refused:
        raise InvalidMedia(names_other_files(reading)) from None
    except av.FFmpegError as exc:
        for _level, name, message in logged:
            if message.startswith(_NOT_ON_WHITELIST):
                raise InvalidMedia(refusal(name, reading)) from None
        reason = getattr(exc, "strerror", None) or "unknown format"
        raise InvalidMedia(f"The file could not be read as {reading.a} ({reason}).") from None
    except OSError as exc:  # from the Python file: a source that vanished
        reason = exc.strerror or "unreadable"
        raise InvalidMedia(f"The file could not be read as {reading.a} ({reason}).") from None


def _is_cover_art(stream: Any) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def first_frames(
    container: Any, video: Any | None, audio: Any | None
) -> tuple[int, tuple[int, int]]:
    """Decode a frame of each track given; return the display rotation (0, 90, 180 or 270) and
    the size of the first picture ((0, 0) with no video track)."""
    import av

    rotation: int | None = None if video is not None else 0
    size = (0, 0)
    heard = audio is None
    try:
        tracks = [s for s in (video, audio) if s is not None]
        for count, packet in enumerate(container.demux(*tracks)):
            if count > _MAX_PACKETS:
                break
            for frame in packet.decode():
                if packet.stream is video and rotation is None:
                    rotation = rotation_of(frame)
                    size = (int(frame.width), int(frame.height))
                elif packet.stream is audio:
                    heard = True
            if rotation is not None and heard:
                return rotation, size
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or "undecodable data"
        raise InvalidMedia(f"The file is damaged and does not play ({reason}).") from None
    if rotation is None:
        raise InvalidMedia("The video track holds no picture that can be decoded.")
    raise InvalidMedia("The audio track holds no sound that can be decoded.")


def rotation_of(frame: Any) -> int:
    """A decoded picture's display rotation, to the quarter turn: 0, 90, 180 or 270."""
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) * 90 % 360


def _duration(container: Any, *tracks: Any | None) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000
    spans = [
        float(s.duration * s.time_base)
        for s in tracks
        if s is not None and s.duration and s.time_base
    ]
    return max(spans, default=0.0)
