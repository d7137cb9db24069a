"""What a probe learns about a source file, as a plain value stored with the job, and the limits
every stage applies to it: which containers are read, how large a picture, how long a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vidstream.errors import InvalidMedia, PermanentError

# Demuxers (FFmpeg's first name for each) that read one self-contained file. Anything else is
# refused: HLS, DASH, concat, image sequences, SDP and their kind open the files or URLs they
# name, so a "video" could read any media file on the worker's disk back to its uploader.
ACCEPTED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "flv", "ogg", "asf", "mpeg")
ACCEPTED_NAMES = "MP4, MOV, MKV, WebM, AVI, MPEG-TS, FLV, Ogg, WMV and MPEG"
# Demuxers that read other files or streams than the one given; named for a clearer message.
_REFERENCING = frozenset(
    {"hls", "applehttp", "dash", "concat", "imf", "sdp", "rtp", "rtsp", "webm_dash_manifest"}
    | {"image2", "lavfi", "avisynth", "vapoursynth", "dvdvideo", "vobsub"}
)
NAMES_OTHER_FILES = (
    "The file is a playlist or a list of other files, not a video; upload the video file itself."
)
MAX_SIDE = 16384  # libx264 refuses a wider or taller picture on every try
# A run may take this long plus MEDIA_TIMEOUT_FACTOR times the media's duration: the fixed part
# covers starting FFmpeg or loading a request into Whisper.
RUN_TIMEOUT_BASE_S = 60.0


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float
    format_name: str  # FFmpeg's demuxer names, a comma list: "mov,mp4,m4a,3gp,3g2,mj2"
    width: int
    height: int
    rotation: int  # the display rotation, counter-clockwise as FFmpeg reports it: 0/90/180/270
    video_codec: str
    audio_codec: str | None
    audio_channels: int
    sample_rate: int

    @property
    def display_size(self) -> tuple[int, int]:
        """The size of the picture as shown, after the rotation players apply."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    @property
    def demuxer(self) -> str:
        """The demuxer every later reader of the source is forced to (`ffmpeg -f`); raise
        `InvalidMedia` for one outside the whitelist (a job probed before it existed)."""
        return demuxer_of(self.format_name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        return cls(
            duration=float(data["duration"]),
            format_name=str(data["format_name"]),
            width=int(data["width"]),
            height=int(data["height"]),
            rotation=int(data.get("rotation", 0)),
            video_codec=str(data["video_codec"]),
            audio_codec=None if data.get("audio_codec") is None else str(data["audio_codec"]),
            audio_channels=int(data.get("audio_channels", 0)),
            sample_rate=int(data.get("sample_rate", 0)),
        )


def accepted(format_name: str) -> bool:
    """Whether a demuxer (FFmpeg's comma list of names) reads only the file it is given."""
    return format_name.split(",")[0].strip() in ACCEPTED_DEMUXERS


def demuxer_of(format_name: str) -> str:
    """The first of FFmpeg's names for the demuxer, which `ffmpeg -f` accepts."""
    if not accepted(format_name):
        raise InvalidMedia(refusal(format_name))
    return format_name.split(",")[0].strip()


def refusal(format_name: str | None) -> str:
    """Why a file in a refused format is not read, in words for the person who uploaded it."""
    name = (format_name or "").split(",")[0].strip()
    if name in _REFERENCING:
        return NAMES_OTHER_FILES
    if name == "tty":  # FFmpeg shows any text as ANSI art
        return "The file could not be read as a video (it looks like text)."
    if name.endswith("_pipe") or name in ("png", "jpeg", "gif", "webp", "bmp", "svg"):
        return "The file is a picture, not a video."
    return f"The file could not be read as a video (vidstream reads {ACCEPTED_NAMES} files)."


def check_frame(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a picture too large to decode within `max_pixels` or to encode as H.264 (the
    encoder would refuse it on every try), or too small to encode."""
    if max_pixels is not None and width * height > max_pixels:
        raise PermanentError(
            f"The video's picture is {width}x{height} pixels; vidstream accepts at most "
            f"{max_pixels:,} pixels (such as {_example(max_pixels)}).",
            code="too_large_frame",
        )
    if max(width, height) > MAX_SIDE:
        raise PermanentError(
            f"The video's picture is {width}x{height} pixels; each side may be at most "
            f"{MAX_SIDE} pixels.",
            code="too_large_frame",
        )
    if min(width, height) < 2:
        raise InvalidMedia(f"The video's picture is {width}x{height} pixels, too small to encode.")


def decoder_max_pixels(max_pixels: int) -> int:
    """The bound given to decoders themselves (`max_pixels`), a guard on memory: they count the
    coded picture, rounded up to whole macroblocks or coding units and a 64-pixel stride, so it
    needs room over the limit. The exact limit is checked on each decoded picture's size."""
    return 2 * max_pixels + 64 * 1024


def _example(max_pixels: int) -> str:
    """The largest 16:9 size within `max_pixels`, to make the limit concrete."""
    height = int((max_pixels * 9 / 16) ** 0.5) // 2 * 2
    return f"{height * 16 // 9 // 2 * 2}x{height}"


def spoken(duration_s: float) -> str:
    """A duration as people say it: "45 seconds", "12.5 minutes", "4.0 hours"."""
    if duration_s < 90:
        return f"{duration_s:.0f} seconds"
    if duration_s < 2 * 3600:
        return f"{duration_s / 60:.1f} minutes"
    return f"{duration_s / 3600:.1f} hours"


def run_timeout(duration_s: float, factor: float) -> float:
    """How long one FFmpeg or Whisper run over `duration_s` seconds of media may take."""
    return RUN_TIMEOUT_BASE_S + factor * max(duration_s, 0.0)
