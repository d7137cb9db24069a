"""Probe a source: is it a playable video with an audio track, how long, what codecs?

Runs as its own subprocess (`python -m vidstream.media.probe FILE`) so that a hostile file that
hangs or crashes the demuxer costs a killed child, never the worker. PyAV does the reading, which
works with either FFmpeg build (the pinned one ships no ffprobe). The child decodes one video and
one audio frame: a header alone does not prove a file plays.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from vidstream import process
from vidstream.errors import InvalidMedia, TransientError
from vidstream.media.info import MediaInfo

# Demuxers that accept almost anything: FFmpeg's tty shows any text file as ANSI "video".
_NOT_VIDEO = frozenset({"tty"})
_MAX_PACKETS = 5000  # enough to find the first frames of any sane interleaving


async def probe(path: Path, timeout_s: float) -> MediaInfo:
    """Probe `path` in a child process; raise `InvalidMedia` with a reason a person understands."""
    argv = [sys.executable, "-m", "vidstream.media.probe", str(path)]
    try:
        code, out, _err = await process.run(argv, timeout_s)
    except TimeoutError:
        raise TransientError(
            f"probing the source took longer than {timeout_s:g} s", code="timeout"
        ) from None
    try:
        result = json.loads(out)
    except ValueError:
        raise InvalidMedia(
            f"The file could not be read as a video (the reader stopped: exit {code})."
        ) from None
    if not result.get("ok"):
        raise InvalidMedia(str(result.get("message") or "The file could not be read as a video."))
    return MediaInfo.from_dict(result["info"])


def inspect(path: str) -> dict[str, Any]:
    """Read `path` with PyAV; return the `MediaInfo` fields or raise `InvalidMedia`."""
    import av  # imported here: only the child process needs it

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidMedia(f"The file could not be read as a video ({reason}).") from None
    with container:
        if container.format.name in _NOT_VIDEO:
            raise InvalidMedia("The file could not be read as a video (it looks like text).")
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        if not videos:
            raise InvalidMedia("The file has no video track; vidstream needs a video with sound.")
        if not container.streams.audio:
            raise InvalidMedia("The file has no audio track, so there is no speech to transcribe.")
        video, audio = videos[0], container.streams.audio[0]
        rotation = _first_frames(container, video, audio)
        duration = _duration(container, video, audio)
        if duration <= 0:
            raise InvalidMedia("The file's duration could not be determined.")
        vctx, actx = video.codec_context, audio.codec_context
        return {
            "duration": duration,
            "format_name": container.format.name,
            "width": int(vctx.width),
            "height": int(vctx.height),
            "rotation": rotation,
            # The codec, not the decoder PyAV picked for it (mp3, not mp3float).
            "video_codec": vctx.codec.canonical_name,
            "audio_codec": actx.codec.canonical_name,
            "audio_channels": int(actx.channels),
            "sample_rate": int(actx.sample_rate or 0),
        }


def _is_cover_art(stream: Any) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _first_frames(container: Any, video: Any, audio: Any) -> int:
    """Decode a frame of each track; return the display rotation (0, 90, 180 or 270)."""
    import av

    rotation: int | None = None
    heard = False
    try:
        for count, packet in enumerate(container.demux(video, audio)):
            if count > _MAX_PACKETS:
                break
            for frame in packet.decode():
                if packet.stream is video and rotation is None:
                    rotation = round(float(getattr(frame, "rotation", 0) or 0) / 90) * 90 % 360
                elif packet.stream is audio:
                    heard = True
            if rotation is not None and heard:
                return rotation
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
    try:
        print(json.dumps({"ok": True, "info": inspect(argv[0])}))
    except InvalidMedia as exc:
        print(json.dumps({"ok": False, "code": exc.code, "message": exc.message}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
