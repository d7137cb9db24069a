"""Probe a composition's assets: the videos, still pictures and sound files a timeline's clips
name. Each is read exactly as a source is before FFmpeg is given it: in the probe's child process
(`python -m vidstream.media.prober --asset KIND FILE`), under the same three guards (see `probe`).

An asset's kind says what is wanted of the file:
- VIDEO: a video track, in one of `info.ACCEPTED_DEMUXERS`; its sound too, if it has any;
- AUDIO: an audio track, in one of `info.AUDIO_DEMUXERS`; a video's sound will do (its picture
  is neither decoded nor offered);
- IMAGE: one still picture, in one of `info.IMAGE_DEMUXERS`. FFmpeg's own detection is not used
  for pictures: it picks image2, which reads a name such as "a%03d.jpg" as a sequence of other
  files. The file's first bytes say which picture format it is, and that demuxer is forced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from vidstream.core.errors import InvalidMedia
from vidstream.media.info import (
    AUDIO_FILES,
    PICTURES,
    VIDEOS,
    Reading,
    check_frame,
    decoder_max_pixels,
    demuxer_of,
    refusal,
)
from vidstream.media.probe import (
    Tracks,
    beyond_max_pixels,
    check_duration,
    examine,
    open_only,
    rotation_of,
    run_child,
)

NOT_A_PICTURE = "The file is not a PNG, JPEG, WebP or BMP picture."
_MAX_PACKETS = 100  # a picture's parser hands it over in a few packets at most


class AssetKind(StrEnum):
    VIDEO = "video"
    IMAGE = "image"
    AUDIO = "audio"

    @property
    def noun(self) -> str:
        """How messages name a file of this kind: "The audio file is ..."."""
        return "audio file" if self is AssetKind.AUDIO else self.value

    @property
    def reading(self) -> Reading:
        """The formats a file of this kind is read in, and the words of a refusal."""
        return _READINGS[self]


_READINGS = {AssetKind.VIDEO: VIDEOS, AssetKind.IMAGE: PICTURES, AssetKind.AUDIO: AUDIO_FILES}
_TRACKS = {
    AssetKind.VIDEO: Tracks("The file has no video track; a video asset needs a picture.", None),
    # A video's sound will do; its picture is neither decoded nor offered.
    AssetKind.AUDIO: Tracks(
        None, "The file has no audio track; an audio asset needs sound.", video=False
    ),
}


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """What the probe found in an asset, as a plain value stored with the job."""

    kind: AssetKind
    demuxer: str  # FFmpeg's name for it, forced on every later reader (`ffmpeg.source_input`)
    duration: float  # seconds; 0.0 for an image
    width: int  # 0 (and height 0) for an audio asset
    height: int
    rotation: int  # the display rotation, counter-clockwise as FFmpeg reports it: 0/90/180/270
    has_audio: bool  # a track a composition may use: the probe decoded a frame of it
    has_video: bool  # the same for the picture (an image's one picture included)

    def __post_init__(self) -> None:
        # A value stored before a whitelist changed must never reach FFmpeg.
        if self.demuxer not in self.kind.reading.demuxers:
            raise InvalidMedia(refusal(self.demuxer, self.kind.reading))

    @property
    def display_size(self) -> tuple[int, int]:
        """The size of the picture as shown, after the rotation players apply."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssetInfo:
        return cls(
            kind=AssetKind(data["kind"]),
            demuxer=str(data["demuxer"]),
            duration=float(data["duration"]),
            width=int(data["width"]),
            height=int(data["height"]),
            rotation=int(data.get("rotation", 0)),
            has_audio=bool(data["has_audio"]),
            has_video=bool(data["has_video"]),
        )


async def probe_asset(
    path: Path,
    kind: AssetKind,
    timeout_s: float,
    *,
    max_pixels: int | None,
    max_duration_s: float | None,
) -> AssetInfo:
    """Probe the asset `path` as a `kind` in a child process; raise `InvalidMedia` (or another
    `PermanentError`: a picture beyond `max_pixels`, a duration beyond `max_duration_s`) with
    a reason a person understands."""
    kind = AssetKind(kind)
    options = ["--asset", kind.value]
    found = await run_child(options, path, timeout_s, max_pixels, kind.reading, kind.noun)
    info = AssetInfo.from_dict(found)  # which refuses a demuxer outside the kind's whitelist
    if info.kind is not kind:
        raise InvalidMedia(f"The file could not be read as {kind.reading.a}.")
    if max_duration_s is not None and kind is not AssetKind.IMAGE:
        check_duration(info.duration, max_duration_s, f"The {kind.noun}")
    return info


# -- the child ---------------------------------------------------------------------------------


def inspect_asset(path: str, kind: str, max_pixels: int | None) -> dict[str, Any]:
    """Read the asset `path` as a `kind` with PyAV (in the probe's child process); return the
    `AssetInfo` fields or raise `InvalidMedia` or another `PermanentError`."""
    asset = AssetKind(kind)
    if asset is AssetKind.IMAGE:
        return _inspect_image(path, max_pixels).to_dict()
    found = examine(path, asset.reading, _TRACKS[asset], max_pixels)
    return AssetInfo(
        kind=asset,
        demuxer=demuxer_of(found["format_name"], asset.reading),
        duration=float(found["duration"]),
        width=int(found["width"]),
        height=int(found["height"]),
        rotation=int(found["rotation"]),
        has_audio=found["audio_codec"] is not None,
        has_video=bool(found["video_codec"]),
    ).to_dict()


def sniff_image(head: bytes) -> str:
    """The demuxer of a picture from its file's first 12 bytes; raise `InvalidMedia` for
    anything but a PNG, JPEG, WebP or BMP picture."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png_pipe"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg_pipe"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp_pipe"
    if head.startswith(b"BM"):
        return "bmp_pipe"
    raise InvalidMedia(NOT_A_PICTURE)


def _inspect_image(path: str, max_pixels: int | None) -> AssetInfo:
    import av
    import av.logging

    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        reason = exc.strerror or "unreadable"
        raise InvalidMedia(f"The file could not be read as a picture ({reason}).") from None
    demuxer = sniff_image(head)
    decoder = {} if max_pixels is None else {"max_pixels": str(decoder_max_pixels(max_pixels))}
    av.logging.set_level(av.logging.ERROR)
    with (
        av.logging.Capture() as logged,
        open_only(path, PICTURES, decoder, logged, demuxer) as container,
    ):
        if not container.streams.video:
            raise InvalidMedia("The image holds no picture that can be decoded.")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.width and ctx.height:  # known from the header: refused before decoding
            check_frame(int(ctx.width), int(ctx.height), max_pixels, PICTURES.picture)
        ctx.options = {**ctx.options, **decoder}
        frame = None
        try:
            for count, packet in enumerate(container.demux(stream)):
                frame = next(iter(packet.decode()), None)
                if frame is not None or count > _MAX_PACKETS:
                    break
        except av.FFmpegError as exc:
            beyond_max_pixels(logged, max_pixels, PICTURES)
            reason = getattr(exc, "strerror", None) or "undecodable data"
            raise InvalidMedia(f"The image is damaged and cannot be shown ({reason}).") from None
        if frame is None:
            beyond_max_pixels(logged, max_pixels, PICTURES)
            raise InvalidMedia("The image holds no picture that can be decoded.")
        width, height = int(frame.width), int(frame.height)
        check_frame(width, height, max_pixels, PICTURES.picture)  # what was decoded
        return AssetInfo(
            kind=AssetKind.IMAGE,
            demuxer=demuxer,
            duration=0.0,
            width=width,
            height=height,
            rotation=rotation_of(frame),
            has_audio=False,
            has_video=True,
        )
