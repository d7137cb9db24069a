"""How captions are laid out and look: one model for every kind that draws them.

A subtitle (or render) job takes these fields at the top of its request, a compose timeline's
subtitles clip among its own; both resolve them the same way, through `look` (the ASS style,
`media.captions.Style`) and `layout` (how words become cues, `media.subtitles.Layout`). A field
left out takes the preset's value (`style`: default, boxed, bold, top), so a preset is a
starting point that any field adjusts. Every problem is reported at once (pydantic's errors).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from vidstream.media.captions import STYLES, Style
from vidstream.media.fonts import Family
from vidstream.media.subtitles import Layout

Preset = Literal["default", "boxed", "bold", "top"]
Place = Literal["bottom", "top", "middle"]
_ALIGNMENT = {"bottom": 2, "middle": 5, "top": 8}  # the numpad's centre column
_COLOUR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
Fraction = Annotated[float, Field(ge=0, le=1)]


def _said(message: str) -> PydanticCustomError:
    """A problem told in our own words (the gateway shows them as they are)."""
    return PydanticCustomError("invalid_request", "{message}", {"message": message})


def _colour(value: object) -> object:
    if not isinstance(value, str) or not _COLOUR.fullmatch(value):
        raise _said("a colour is #RGB, #RRGGBB or #RRGGBBAA (AA: opacity, ff opaque)")
    return value


Colour = Annotated[
    str,
    BeforeValidator(_colour),
    WithJsonSchema({"type": "string", "pattern": f"^{_COLOUR.pattern}$",
                    "description": "#RGB, #RRGGBB or #RRGGBBAA (AA: opacity, ff opaque)",
                    "examples": ["#ffff00", "#00000080"]}),
]  # fmt: skip


class Point(BaseModel):
    """Where the captions' bottom centre sits, as fractions of the picture (0,0 top left)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    x: Fraction
    y: Fraction


def _position(value: object) -> object:
    """A place's name, {"x", "y"}, or (a form field) "x,y"."""
    if isinstance(value, str) and "," in value:
        x, _, y = value.partition(",")
        with contextlib.suppress(ValueError):  # else refused below, as it is
            value = {"x": float(x), "y": float(y)}
    fine = value in get_args(Place) or (
        isinstance(value, dict) and set(value) == {"x", "y"}
        and all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
                for v in value.values())
    )  # fmt: skip
    if not fine and not isinstance(value, Point):
        raise _said('position must be "bottom", "top", "middle" or {"x": 0..1, "y": 0..1}')
    return value


Position = Annotated[Place | Point, BeforeValidator(_position)]


class CaptionFields(BaseModel):
    """The fields, declared once; `Captioned` requests and subtitles clips inherit them."""

    # -- layout: how the words become cues
    max_chars_per_line: int = Field(42, ge=10, le=80, description="longest line, in characters")
    max_lines: int = Field(2, ge=1, le=3, description="lines a caption may have")
    min_duration: float = Field(0.8, ge=0.1, le=10, description="a cue's least seconds on screen")
    max_duration: float = Field(7.0, ge=1, le=30, description="a cue's most seconds on screen")
    speaker_labels: bool = Field(
        False, description="start a caption with [Speaker N] where the speaker changes (a "
        "transcript told apart by speaker: `speakers`)",
    )  # fmt: skip
    # -- look: a preset, and what changes it
    style: Preset = Field("default", description="a preset the other fields adjust")
    karaoke: bool = Field(False, description="highlight each word as it is spoken")
    position: Position | None = Field(
        None, description='"bottom", "top", "middle", or {"x", "y"}: where the bottom centre '
        "of the captions sits, as fractions of the picture; default: the preset's",
    )  # fmt: skip
    font: Family | None = Field(None, description="one of the bundled families")
    size: float | None = Field(None, ge=0.02, le=0.2, description="of the picture's height")
    bold: bool | None = None
    color: Colour | None = Field(None, description="the text's")
    highlight_color: Colour | None = Field(None, description="karaoke: words already spoken")
    outline: float | None = Field(None, ge=0, le=0.25, description="of the text's size; 0 none")
    outline_color: Colour | None = None
    shadow: float | None = Field(None, ge=0, le=0.5, description="of the text's size; 0 none")
    shadow_color: Colour | None = None
    box: Colour | None = Field(None, description="a box behind each caption, in this colour")

    @field_validator("max_duration")
    @classmethod
    def _durations(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("min_duration", 0.0):
            raise _said("max_duration must be at least min_duration")
        return value

    def caption_style(self) -> CaptionStyle:
        """These fields alone, as the caption model: checked already, so not checked again (a
        request that names none, most of them, gets the one default)."""
        given = self.model_fields_set & CAPTION_FIELDS
        if not given:
            return DEFAULT
        return CaptionStyle.model_construct(given, **{n: getattr(self, n) for n in given})


class CaptionStyle(CaptionFields):
    """A job's (or a clip's) captions, as stored with its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def layout(self) -> Layout:
        return Layout(
            max_chars=self.max_chars_per_line, max_lines=self.max_lines,
            min_duration_s=self.min_duration, max_duration_s=self.max_duration,
            speaker_labels=self.speaker_labels,
        )  # fmt: skip

    def look(self) -> Style:
        """The preset with each field given in its place."""
        changed: dict[str, Any] = {}
        if self.font is not None:
            changed["font"] = self.font
        if self.size is not None:
            changed["size"] = self.size
        if self.bold is not None:
            changed["bold"] = self.bold
        for name, field in (
            ("color", "colour"),
            ("highlight_color", "highlight"),
            ("outline_color", "outline_colour"),
            ("shadow_color", "back_colour"),
        ):
            value = getattr(self, name)
            if value is not None:
                changed[field] = ass_colour(value)  # fmt: skip
        if self.outline is not None:
            changed["outline"] = self.outline
        if self.shadow is not None:
            changed["shadow"] = self.shadow
        if self.box is not None:  # one box behind the cue (libass's style 4), padded
            changed.update(border_style=4, back_colour=ass_colour(self.box))
            changed.setdefault("shadow", 0.2)
            changed.setdefault("outline", 0.0)
        if isinstance(self.position, Point):
            changed.update(alignment=2, x=self.position.x, margin_v=1 - self.position.y)
        elif self.position is not None:
            changed["alignment"] = _ALIGNMENT[self.position]
        return dataclasses.replace(STYLES[self.style], **changed)

    def faces(self) -> tuple[str, bool]:
        """The (family, bold) of the font file the captions draw with."""
        look = self.look()
        return look.font, look.bold

    def changes(self) -> dict[str, Any]:
        """The fields that are not their default, as stored and shown."""
        if self is DEFAULT:
            return {}
        return self.model_dump(mode="json", exclude_defaults=True)


DEFAULT = CaptionStyle()
CAPTION_FIELDS = frozenset(CaptionFields.model_fields)


def ass_colour(value: str) -> str:
    """#RGB, #RRGGBB or #RRGGBBAA as ASS writes a colour: &HAABBGGRR, its alpha 00 opaque."""
    hex_ = value.lstrip("#")
    if len(hex_) == 3:
        hex_ = "".join(ch * 2 for ch in hex_)
    red, green, blue = hex_[0:2], hex_[2:4], hex_[4:6]
    opacity = int(hex_[6:8], 16) if len(hex_) == 8 else 255
    return f"&H{255 - opacity:02X}{blue}{green}{red}".upper()
