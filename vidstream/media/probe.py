"""Probe a source: is it a playable video with an audio track, how long, what codecs?

Runs as its own subprocess (`python -m vidstream.media.probe FILE`) so that a hostile file that
hangs or crashes the demuxer costs a killed child, never the worker. PyAV does the reading, which
works with either FFmpeg build (the pinned one ships no ffprobe). The child decodes one video and
one audio frame: a header alone does not prove a file plays.

A source is one self-contained media file, never a playlist or a list of files: HLS, concat and
their kind would read whatever files they name on the worker's disk. Three guards keep the child
to the one file it was given:
- FFmpeg's `format_whitelist` refuses a demuxer outside `info.ACCEPTED_DEMUXERS` once the format
  is detected from the first bytes and before the demuxer reads its header, let alone a file it
  names;
- every file a demuxer asks to open goes through `io_open`, which opens the source and nothing
  else;
- `protocol_whitelist` allows the `file` protocol only, so nothing reaches the network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from vidstream import process
from vidstream.errors import InvalidMedia, PermanentError, TooLong, TransientError
from vidstream.media.info import (
    ACCEPTED_DEMUXERS,
    NAMES_OTHER_FILES,
    MediaInfo,
    accepted,
    check_frame,
    decoder_max_pixels,
    refusal,
    spoken,
)

_MAX_PACKETS = 5000  # enough to find the first frames of any sane interleaving
# Codes the child may report besides invalid_media; anything else reads as invalid_media.
_CHILD_CODES = frozenset({"too_large_frame"})
_NOT_ON_WHITELIST = "Format not on whitelist"
_TOO_MANY_PIXELS = "exceeds specified max pixel count"


async def probe(
    path: Path,
    timeout_s: float,
    *,
    max_pixels: int | None = None,
    max_duration_s: float | None = None,
) -> MediaInfo:
    """Probe `path` in a child process; raise `InvalidMedia` (or another `PermanentError`: a
    picture beyond `max_pixels`, a duration beyond `max_duration_s`) with a reason a person
    understands."""
    argv = [sys.executable, "-m", "vidstream.media.probe", str(path)]
    if max_pixels is not None:
        argv += ["--max-pixels", str(max_pixels)]
    try:
        code, out, _err = await process.run(argv, timeout_s)
    except TimeoutError:
        raise TransientError(
            f"Probing the source took longer than {timeout_s:g} s.", code="timeout"
        ) from None
    try:
        result = json.loads(out)
    except ValueError:
        raise InvalidMedia(
            f"The file could not be read as a video (the reader stopped: exit {code})."
        ) from None
    if not result.get("ok"):
        message = str(result.get("message") or "The file could not be read as a video.")
        if result.get("code") in _CHILD_CODES:
            raise PermanentError(message, code=str(result["code"]))
        raise InvalidMedia(message)
    info = MediaInfo.from_dict(result["info"])
    if not accepted(info.format_name):  # the child refuses these; a second look costs nothing
        raise InvalidMedia(refusal(info.format_name))
    if max_duration_s is not None:
        check_duration(info.duration, max_duration_s)
    return info


def check_duration(duration_s: float, max_duration_s: float) -> None:
    """Refuse a source that says it is longer than `max_duration_s` (what it plays is checked
    again as its sound is decoded)."""
    if duration_s > max_duration_s:
        raise TooLong(
            f"The video is {spoken(duration_s)} long; the limit is {spoken(max_duration_s)}."
        )


class _Refused(Exception):
    """A demuxer asked to open a file other than the source."""


def inspect(path: str, max_pixels: int | None = None) -> dict[str, Any]:
    """Read `path` with PyAV; return the `MediaInfo` fields or raise `InvalidMedia`."""
    import av  # imported here: only the child process needs it
    import av.logging

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InvalidMedia("The file could not be read as a video (it is empty).")
    decoder = {} if max_pixels is None else {"max_pixels": str(decoder_max_pixels(max_pixels))}
    # FFmpeg's log says what a refusal alone does not: which format was detected, whether the
    # decoder refused a picture's size.
    av.logging.set_level(av.logging.ERROR)
    with av.logging.Capture() as logged, _open(path, decoder, logged) as container:
        if not accepted(container.format.name):
            raise InvalidMedia(refusal(container.format.name))
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        if not videos:
            raise InvalidMedia("The file has no video track; vidstream needs a video with sound.")
        if not container.streams.audio:
            raise InvalidMedia("The file has no audio track, so there is no speech to transcribe.")
        video, audio = videos[0], container.streams.audio[0]
        vctx, actx = video.codec_context, audio.codec_context
        check_frame(int(vctx.width), int(vctx.height), max_pixels)  # before decoding any
        vctx.options = {**vctx.options, **decoder}
        try:
            rotation, (width, height) = _first_frames(container, video, audio)
        except InvalidMedia:
            if any(_TOO_MANY_PIXELS in message for _level, _name, message in logged):
                raise PermanentError(
                    "The video's picture is larger than its header says, far beyond "
                    f"{max_pixels:,} pixels.",
                    code="too_large_frame",
                ) from None
            raise
        check_frame(width, height, max_pixels)  # what was decoded, whatever the header said
        duration = _duration(container, video, audio)
        if duration <= 0:
            raise InvalidMedia("The file's duration could not be determined.")
        return {
            "duration": duration,
            "format_name": container.format.name,
            "width": width,
            "height": height,
            "rotation": rotation,
            # The codec, not the decoder PyAV picked for it (mp3, not mp3float).
            "video_codec": vctx.codec.canonical_name,
            "audio_codec": actx.codec.canonical_name,
            "audio_channels": int(actx.channels),
            "sample_rate": int(actx.sample_rate or 0),
        }


def _open(path: str, decoder: dict[str, str], logged: list[tuple[int, str, str]]) -> Any:
    """The source as a PyAV container, opened so that it reads this one file and nothing else
    (see the module's docstring)."""
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
            container_options={
                "protocol_whitelist": "file",
                "format_whitelist": ",".join(ACCEPTED_DEMUXERS),
            },
            options=decoder,  # for the decoders avformat_find_stream_info opens
            metadata_errors="ignore",
            io_open=only_the_source,
        )
    except _Refused:
        raise InvalidMedia(NAMES_OTHER_FILES) from None
    except av.FFmpegError as exc:
        for _level, name, message in logged:
            if message.startswith(_NOT_ON_WHITELIST):
                raise InvalidMedia(refusal(name)) from None
        reason = getattr(exc, "strerror", None) or "unknown format"
        raise InvalidMedia(f"The file could not be read as a video ({reason}).") from None
    except OSError as exc:  # from the Python file: a source that vanished
        reason = exc.strerror or "unreadable"
        raise InvalidMedia(f"The file could not be read as a video ({reason}).") from None


def _is_cover_art(stream: Any) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _first_frames(container: Any, video: Any, audio: Any) -> tuple[int, tuple[int, int]]:
    """Decode a frame of each track; return the display rotation (0, 90, 180 or 270) and the
    size of the first picture."""
    import av

    rotation: int | None = None
    size = (0, 0)
    heard = False
    try:
        for count, packet in enumerate(container.demux(video, audio)):
            if count > _MAX_PACKETS:
                break
            for frame in packet.decode():
                if packet.stream is video and rotation is None:
                    rotation = round(float(getattr(frame, "rotation", 0) or 0) / 90) * 90 % 360
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


def _duration(container: Any, video: Any, audio: Any) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000
    spans = [float(s.duration * s.time_base) for s in (video, audio) if s.duration and s.time_base]
    return max(spans, default=0.0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Probe a source; print what was found as JSON.")
    parser.add_argument("path")
    parser.add_argument("--max-pixels", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        print(json.dumps({"ok": True, "info": inspect(args.path, args.max_pixels)}))
    except PermanentError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "message": exc.message}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
