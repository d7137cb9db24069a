"""The one ASS writer: a document with one style and one Dialogue line per event. Pure.

Every ASS file vidstream hands libass (a subtitle job's burned captions, a compose job's
subtitles clips, karaoke or not) is written by `document`, so whatever an uploaded SRT, WebVTT
or transcript holds can only ever be text on screen:

- an event's text goes through `event_text`: ASS overrides (`{...}`) and escapes (`\\`) become
  look-alikes, every kind of line break becomes `\\N` and other control characters go, so no
  text starts a line of the file (a `[Fonts]` section with a font file of its own, a second
  `Style:`) or ends it early (a NUL);
- `Style` clamps its sizes where it is built: no font, outline or shadow beyond a fraction of
  the picture, scale always 100%, so no style can make a frame cost gigabytes to draw;
- `document` checks what it wrote: the three sections, one style, one line per event.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vidstream.media import text as plain
from vidstream.media.fonts import FAMILIES

# Bounds on what a style may ask of libass, as fractions of the picture's height (the largest
# preset, bold, is 0.075 with an outline of 0.125 of the font size).
MAX_SIZE = 0.2
MIN_SIZE_PX = 12  # readable at any picture size (the size may exceed a tiny picture)
MAX_OUTLINE = 0.25  # of the font size
MAX_SHADOW = 0.5  # of the font size: the drop shadow, or the padding of a style 4 box
MAX_TIME_S = 100 * 3600.0  # later than any video vidstream makes
_COLOUR = re.compile(r"^&H[0-9A-F]{8}$")

_HEADER = (
    "[Script Info]\nScriptType: v4.00+\nWrapStyle: 0\nScaledBorderAndShadow: yes\n"
    "PlayResX: {width}\nPlayResY: {height}\n\n"
    "[V4+ Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, "
    "OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, "
    "Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    "Style: Default,{style}\n\n"
    "[Events]\n"
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
_HEADER_LINES = _HEADER.count("\n")


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


@dataclass(frozen=True, slots=True)
class Style:
    """The style of a `width` x `height` picture's captions, sizes in its pixels.

    Sizes are clamped where the style is built; a field no style may set (a font not declared,
    a colour that is not `&HAABBGGRR`, an alignment off the numpad) is a `ValueError`.
    """

    width: int
    height: int
    font: str
    size: int
    primary: str  # text, or (karaoke) the words already spoken
    secondary: str  # the words not yet spoken
    outline_colour: str
    back_colour: str
    outline: int
    shadow: int
    border_style: int  # 1: outlined letters; 3: a box per line; 4: one box (libass)
    bold: bool
    alignment: int  # numpad
    margin_h: int  # left, and right unless `margin_r` says otherwise
    margin_v: int
    margin_r: int = -1  # -1: as `margin_h` (a centred block); set, it moves the block across

    def __post_init__(self) -> None:
        if self.font not in FAMILIES:
            raise ValueError(f"not a declared font family: {self.font!r}")
        colours = (self.primary, self.secondary, self.outline_colour, self.back_colour)
        if not all(_COLOUR.match(c) for c in colours):
            raise ValueError(f"colours must be &HAABBGGRR: {colours}")
        if self.border_style not in (1, 3, 4) or not 1 <= self.alignment <= 9:
            raise ValueError(f"border style {self.border_style}, alignment {self.alignment}")
        width, height = _clamp(self.width, 1, 65_535), _clamp(self.height, 1, 65_535)
        size = _clamp(self.size, MIN_SIZE_PX, max(MIN_SIZE_PX, round(height * MAX_SIZE)))
        clamped = {
            "width": width,
            "height": height,
            "size": size,
            "outline": _clamp(self.outline, 0, round(size * MAX_OUTLINE)),
            "shadow": _clamp(self.shadow, 0, round(size * MAX_SHADOW)),
            "margin_h": _clamp(self.margin_h, 0, width),
            "margin_r": _clamp(self.margin_h if self.margin_r < 0 else self.margin_r, 0, width),
            "margin_v": _clamp(self.margin_v, 0, height),
        }
        for name, value in clamped.items():
            object.__setattr__(self, name, value)  # frozen: set once, here

    def fields(self) -> str:
        """The style's fields after its name, Fontname to Encoding."""
        return (
            f"{self.font},{self.size},{self.primary},{self.secondary},{self.outline_colour},"
            f"{self.back_colour},{-1 if self.bold else 0},0,0,0,100,100,0,0,"
            f"{self.border_style},{self.outline},{self.shadow},{self.alignment},"
            f"{self.margin_h},{self.margin_r},{self.margin_v},1"
        )


@dataclass(frozen=True, slots=True)
class Event:
    """A cue on screen from `start` to `end` seconds: its lines of plain text and, for
    karaoke, each word's fill in centiseconds (the words being `words(line)` of each line)."""

    start: float
    end: float
    lines: tuple[str, ...]
    fills: tuple[int, ...] = ()


def words(line: str) -> list[str]:
    """A line's words for karaoke: split at plain spaces only (a no-break space joins)."""
    return [w for w in line.split(" ") if w]


def event_text(text: str) -> str:
    """Any text as the text of an ASS event, shown as written: overrides and escapes as
    look-alikes, line breaks (of any kind, decoded from anything) as `\\N`, no control
    characters."""
    # Braces open override blocks and backslashes start escapes in ASS; show look-alikes instead.
    shown = text.replace("\\", "\uff3c").replace("{", "\uff5b").replace("}", "\uff5d")
    return "\\N".join(plain.lines(shown))


def _text(event: Event) -> str:
    if not event.fills:
        return "\\N".join(event_text(line) for line in event.lines)
    fills = iter(event.fills)
    count = sum(len(words(line)) for line in event.lines)
    if count != len(event.fills):
        raise ValueError(f"{len(event.fills)} karaoke fills for {count} words")
    return "\\N".join(
        " ".join(f"{{\\kf{max(next(fills), 0)}}}{event_text(word)}" for word in words(line))
        for line in event.lines
    )


def time(seconds: float) -> str:
    """`seconds` as ASS writes a time (h:mm:ss.cc), within what it can write."""
    if not math.isfinite(seconds):
        raise ValueError(f"not a time: {seconds}")
    cs = round(min(max(seconds, 0.0), MAX_TIME_S) * 100)
    h, cs = divmod(cs, 360_000)
    m, cs = divmod(cs, 6000)
    s, cs = divmod(cs, 100)
    return f"{h:d}:{m:02d}:{s:02d}.{cs:02d}"


def document(style: Style, events: Sequence[Event]) -> str:
    """The ASS file: `style` (named Default) and one Dialogue line per event, checked."""
    header = _HEADER.format(width=style.width, height=style.height, style=style.fields())
    lines = [
        f"Dialogue: 0,{time(e.start)},{time(e.end)},Default,,0,0,0,,{_text(e)}" for e in events
    ]
    written = header + "\n".join(lines) + "\n"
    # What libass will read: exactly the lines above, whatever the events' text was.
    rows = written.split("\n")
    expected = _HEADER_LINES + max(len(events), 1)
    if (
        len(rows) != expected + 1
        or sum(row.startswith("[") for row in rows) != 3
        or sum(row.startswith("Style:") for row in rows) != 1
        or sum(row.startswith("Dialogue:") for row in rows) != len(events)
        or not all(plain.is_plain(row) for row in rows)
    ):
        raise ValueError("the ASS document is not the one vidstream writes")
    return written
