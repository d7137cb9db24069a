"""A compose job's timeline: the output, and tracks of clips drawn in order. Pure data.

The models are the contract: they validate what a client sends (unknown fields, types, ranges;
`check` adds the rules across fields and the operator's limits), and they are the JSON Schema
published at `GET /v1/schemas/timeline.json`. Times are seconds; `frames` turns them into whole
frames at the output's rate, so every clip starts and ends on a frame.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidstream.compose.caption_style import CaptionFields
from vidstream.media.fonts import Family

Seconds = Annotated[float, Field(ge=0, le=86_400)]
Length = Annotated[float, Field(gt=0, le=86_400)]
Pixels = Annotated[int, Field(ge=-16_384, le=16_384)]
Size = Annotated[int, Field(ge=2, le=16_384)]
Colour = Annotated[
    str,
    Field(
        pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$",
        description="#RGB, #RRGGBB or #RRGGBBAA (AA: opacity, ff opaque)",
        examples=["#1e90ff", "#00000080"],
    ),
]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")]
Key = Annotated[str, Field(min_length=1, max_length=512, description="a storage key of yours")]
Side = Literal["left", "right", "top", "bottom"]
Fit = Literal["cover", "contain", "fill"]


class _Model(BaseModel):
    # Strict: "1" is not a number, and a field nobody reads is an error, not a silent no-op.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Output(_Model):
    width: Size = Field(1280, multiple_of=2, description="pixels; even (H.264 4:2:0)")
    height: Size = Field(720, multiple_of=2, description="pixels; even (H.264 4:2:0)")
    fps: float = Field(30.0, ge=1, le=120, description="frames per second, such as 25 or 29.97")
    duration: Length | None = Field(None, description="seconds; default: where the last clip ends")
    background: Colour = "#000000"
    format: Literal["mp4", "webm"] = Field("mp4", description="mp4: H.264+AAC; webm: VP9+Opus")
    poster: Seconds | None = Field(None, description="the poster frame's time; default: middle")

    @property
    def rate(self) -> Fraction:
        """The frame rate as FFmpeg wants it: 29.97 is 30000/1001."""
        return Fraction(str(self.fps)).limit_denominator(1001)


class Transition(_Model):
    type: Literal["fade", "slide", "zoom"]
    duration: Length = Field(0.5, le=60)
    side: Side = Field("left", description="slide: the side it comes in from, or leaves to")


class Trim(_Model):
    """The part of the source used: from `start` to `end` seconds of it."""

    start: Seconds = 0.0
    end: Length | None = None


class _Clip(_Model):
    start: Seconds = Field(description="seconds from the start of the video")
    duration: Length = Field(description="seconds on screen")
    name: Name | None = Field(None, description="names the clip for `transcribe`")
    opacity: float = Field(1.0, ge=0, le=1)
    transition_in: Transition | None = None
    transition_out: Transition | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration


class _Boxed(_Clip):
    """A picture placed in a box: the whole frame unless x, y, width, height say otherwise."""

    x: Pixels = 0
    y: Pixels = 0
    width: Size | None = Field(
        None, description="default: the output's width; width x height at most MAX_PIXELS"
    )
    height: Size | None = Field(
        None, description="default: the output's height; width x height at most MAX_PIXELS"
    )


class VideoClip(_Boxed):
    type: Literal["video"]
    key: Key
    trim: Trim = Trim()
    fit: Fit = "cover"
    volume: float = Field(1.0, ge=0, le=4, description="0 mutes the clip's sound")
    speed: float = Field(1.0, ge=0.25, le=4)


class Zoom(_Model):
    """Ken Burns: the picture's zoom at the clip's start and end (1 = fits the box)."""

    start: float = Field(1.0, ge=1, le=4)
    end: float = Field(1.2, ge=1, le=4)


class ImageClip(_Boxed):
    type: Literal["image"]
    key: Key
    fit: Fit = "cover"
    zoom: Zoom | None = None
    pan: Literal["center", "left", "right", "up", "down"] = Field(
        "center", description="with zoom: the way the view drifts"
    )


class Gradient(_Model):
    to: Colour
    direction: Literal["vertical", "horizontal", "diagonal"] = "vertical"


class ColorClip(_Boxed):
    type: Literal["color"]
    color: Colour
    gradient: Gradient | None = None


class TextClip(_Clip):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=2000, description="{{name}} takes a variable")
    font: Family = "DejaVu Sans"
    bold: bool = False
    size: int = Field(48, ge=6, le=1000, description="pixels")
    color: Colour = "#ffffff"
    outline: int = Field(0, ge=0, le=50, description="pixels")
    outline_color: Colour = "#000000"
    box: Colour | None = Field(None, description="a box behind each line, in this colour")
    align: Literal["left", "center", "right"] = "center"
    x: Pixels | None = Field(None, description="the text block's left; default: centred")
    y: Pixels | None = Field(None, description="the text block's top; default: centred")
    width: Size | None = Field(None, description="wraps lines to this width; default: 90%")
    line_spacing: float = Field(1.25, ge=0.8, le=3, description="times the size")


class Duck(_Model):
    """Lower this clip's sound while the named track has sound of its own."""

    under: Name = Field(description="the name of the track that wins")
    ratio: float = Field(8.0, ge=2, le=20, description="how hard: the compressor's ratio")


class AudioClip(_Clip):
    type: Literal["audio"]
    key: Key
    trim: Trim = Trim()
    volume: float = Field(1.0, ge=0, le=4)
    fade_in: float = Field(0.0, ge=0, le=600, description="seconds")
    fade_out: float = Field(0.0, ge=0, le=600, description="seconds")
    duck: Duck | None = None


class SubtitlesClip(_Clip, CaptionFields):
    """Captions: the transcript of a job of yours, an SRT/VTT/transcript file, or (neither)
    the transcript this job makes of its `transcribe` clip; laid out and drawn as a subtitle
    job's are, with the same fields (`compose.caption_style`)."""

    type: Literal["subtitles"]
    job: str | None = Field(None, max_length=40, description="a finished job's id")
    key: Key | None = Field(None, description="an SRT, WebVTT or transcript JSON")


Clip = Annotated[
    VideoClip | ImageClip | ColorClip | TextClip | AudioClip | SubtitlesClip,
    Field(discriminator="type"),
]
VISUAL = (VideoClip, ImageClip, ColorClip, TextClip)
SOUNDING = (VideoClip, AudioClip)


class Track(_Model):
    name: Name | None = Field(None, description="names the track for `duck`")
    clips: list[Clip] = Field(min_length=1, max_length=10_000)


class Timeline(_Model):
    """What a compose job renders: tracks drawn in order, the first at the bottom.

    Every clip's pictures are held while it renders, so their memory together (an estimate:
    4 bytes a pixel of each box, or of a text's canvas, 4 times over for a still, 7 for a video,
    10 for an image with zoom, 6 for the output) is at most COMPOSE_MAX_MEMORY_BYTES (4 GiB
    unless the operator says otherwise): beyond, the request is refused with `too_much_memory`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="vidstream timeline")
    output: Output = Output()
    tracks: list[Track] = Field(min_length=1, max_length=1000)

    @property
    def duration(self) -> float:
        ends = (clip.end for track in self.tracks for clip in track.clips)
        return self.output.duration or max(ends)

    def clips(self) -> list[tuple[int, int, Clip]]:
        """Every clip with its track's and its own index, in drawing order."""
        return [(t, c, clip) for t, tr in enumerate(self.tracks) for c, clip in enumerate(tr.clips)]

    def named(self, name: str) -> Clip | None:
        return next((clip for _, _, clip in self.clips() if clip.name == name), None)

    def keys(self) -> list[str]:
        """The storage keys the timeline reads, each once, in order of first use."""
        found: dict[str, None] = {}
        for _, _, clip in self.clips():
            key = getattr(clip, "key", None)
            if isinstance(key, str):
                found.setdefault(key)
        return list(found)


def frames(seconds: float, rate: Fraction) -> int:
    """`seconds` as a whole number of frames at `rate` (the nearest frame)."""
    return round(Fraction(seconds).limit_denominator(1_000_000) * rate)
