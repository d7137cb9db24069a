"""What a probe learns about a source file, as a plain value stored with the job, and the limits
every stage applies to it and to a composition's assets: which containers are read (videos,
sound, still pictures), how large a picture, how long a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vidstream.core.errors import InvalidMedia, PermanentError

# Demuxers (FFmpeg's first name for each) that read one self-contained file. Anything else is
# refused: HLS, DASH, concat, image sequences, SDP and their kind open the files or URLs they
# name, so a "video" could read any media file on the worker's disk back to its uploader.
ACCEPTED_DEMUXERS = ("mov", "matroska", "avi", "mpegts", "flv", "ogg", "asf", "mpeg")
ACCEPTED_NAMES = "MP4, MOV, MKV, WebM, AVI, MPEG-TS, FLV, Ogg, WMV and MPEG"
# Where sound alone will do: the video containers (their audio track) and single-file audio
# formats. "aac" is raw ADTS; M4A is "mov" and Ogg audio "ogg", already above.
AUDIO_DEMUXERS = (*ACCEPTED_DEMUXERS, "wav", "mp3", "flac", "aac")
AUDIO_NAMES = "MP4, M4A, MOV, MKV, WebM, AVI, MPEG-TS, FLV, Ogg, WMV, MPEG, WAV, MP3, FLAC and AAC"
# One still picture each. Never image2: it expands a name such as "a%03d.jpg" into a sequence
# of other files. The probe picks one of these from the file's first bytes and forces it.
IMAGE_DEMUXERS = ("png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe")
IMAGE_NAMES = "PNG, JPEG, WebP or BMP"
# Every demuxer some reader may force on a file (`ffmpeg.source_input` refuses any other).
ALL_DEMUXERS = (*AUDIO_DEMUXERS, *IMAGE_DEMUXERS)
# Demuxers that read other files or streams than the one given; named for a clearer message.
_REFERENCING = frozenset(
    {"hls", "applehttp", "dash", "concat", "imf", "sdp", "rtp", "rtsp", "webm_dash_manifest"}
    | {"image2", "lavfi", "avisynth", "vapoursynth", "dvdvideo", "vobsub"}
)


@dataclass(frozen=True, slots=True)
class Reading:
    """What one reader of files takes: the demuxers FFmpeg may use on them, and the words its
    refusals use for the person who sent the file."""

    demuxers: tuple[str, ...]
    names: str  # the formats, as people know them
    a: str  # what a refused file could not be read as: "a video"
    file: str  # what to send instead of a playlist: "video file"
    picture: str = "The video's picture"  # what a refusal of a picture's size names


VIDEOS = Reading(ACCEPTED_DEMUXERS, ACCEPTED_NAMES, "a video", "video file")
VIDEOS_OR_AUDIO = Reading(
    AUDIO_DEMUXERS, AUDIO_NAMES, "a video or audio file", "video or audio file"
)
AUDIO_FILES = Reading(AUDIO_DEMUXERS, AUDIO_NAMES, "an audio file", "audio file")
PICTURES = Reading(IMAGE_DEMUXERS, IMAGE_NAMES, "a picture", "picture", "The image")


def names_other_files(reading: Reading = VIDEOS) -> str:
    """The refusal of a playlist or a list of files."""
    return (
        f"The file is a playlist or a list of other files, not {reading.a}; "
        f"upload the {reading.file} itself."
    )


NAMES_OTHER_FILES = names_other_files(VIDEOS)

MAX_SIDE = 16384  # libx264 refuses a wider or taller picture on every try
# A run may take this long plus MEDIA_TIMEOUT_FACTOR times the media's duration: the fixed part
# covers starting FFmpeg or loading a request into Whisper.
RUN_TIMEOUT_BASE_S = 60.0


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float
    format_name: str  # FFmpeg's demuxer names, a comma list: "mov,mp4,m4a,3gp,3g2,mj2"
    width: int  # 0 (and height 0) for a source of sound alone: see `has_video`
    height: int
    rotation: int  # the display rotation, counter-clockwise as FFmpeg reports it: 0/90/180/270
    video_codec: str  # "" for a source of sound alone
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
    def has_video(self) -> bool:
        """False for a sound-only source (a podcast to transcribe): no picture, 0x0."""
        return bool(self.video_codec)

    @property
    def demuxer(self) -> str:
        """The demuxer every later reader of the source is forced to (`ffmpeg -f`); raise
        `InvalidMedia` for one outside the whitelist (a job probed before it existed)."""
        return demuxer_of(self.format_name, VIDEOS if self.has_video else VIDEOS_OR_AUDIO)

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


def accepted(format_name: str, demuxers: tuple[str, ...] = ACCEPTED_DEMUXERS) -> bool:
    """Whether a demuxer (FFmpeg's comma list of names) is one of `demuxers`, which read only
    the file they are given."""
    return format_name.split(",")[0].strip() in demuxers


def demuxer_of(format_name: str, reading: Reading = VIDEOS) -> str:
    """The first of FFmpeg's names for the demuxer, which `ffmpeg -f` accepts."""
    if not accepted(format_name, reading.demuxers):
        raise InvalidMedia(refusal(format_name, reading))
    return format_name.split(",")[0].strip()


def refusal(format_name: str | None, reading: Reading = VIDEOS) -> str:
    """Why a file in a refused format is not read, in words for the person who uploaded it."""
    name = (format_name or "").split(",")[0].strip()
    if name in _REFERENCING:
        return names_other_files(reading)
    if name == "tty":  # FFmpeg shows any text as ANSI art
        return f"The file could not be read as {reading.a} (it looks like text)."
    if name.endswith("_pipe") or name in ("png", "jpeg", "gif", "webp", "bmp", "svg"):
        return f"The file is a picture, not {reading.a}."
    return f"The file could not be read as {reading.a} (vidstream reads {reading.names} files)."


def check_frame(
    width: int, height: int, max_pixels: int | None, picture: str = VIDEOS.picture
) -> None:
    """Refuse a picture too large to decode within `max_pixels` or to encode as H.264 (the
    encoder would refuse it on every try), or too small to encode. `picture` names it."""
    if max_pixels is not None and width * height > max_pixels:
        raise PermanentError(
            f"{picture} is {width}x{height} pixels; vidstream accepts at most "
            f"{max_pixels:,} pixels (such as {_example(max_pixels)}).",
            code="too_large_frame",
        )
    if max(width, height) > MAX_SIDE:
        raise PermanentError(
            f"{picture} is {width}x{height} pixels; each side may be at most {MAX_SIDE} pixels.",
            code="too_large_frame",
        )
    if min(width, height) < 2:
        raise InvalidMedia(f"{picture} is {width}x{height} pixels, too small to encode.")


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
