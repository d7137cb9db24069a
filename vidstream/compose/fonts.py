"""Line wrapping for text clips, measured with the font file `drawtext` draws with.

FFmpeg's `drawtext` does not wrap, so lines are broken here, measured with the glyph advances
of the very file it draws with (`media.fonts` says which; fontTools reads them; kerning is
ignored, which errs by a few percent at most). Each line comes out as one line of plain text:
it is written to a file of its own, which `drawtext` would draw a line break in on top of the
next line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from vidstream.media import text as plain


@dataclass(frozen=True, slots=True)
class Metrics:
    """Advance widths of one font file, in units of its em."""

    advances: dict[int, float]  # code point -> advance / units per em
    fallback: float  # for characters the font lacks (drawn as boxes, about this wide)

    def width(self, text: str, size: float) -> float:
        return sum(self.advances.get(ord(ch), self.fallback) for ch in text) * size


@functools.cache
def metrics(path: Path) -> Metrics:
    from fontTools.ttLib import TTFont  # only the render role needs it

    with TTFont(str(path), lazy=True) as font:
        upem = float(font["head"].unitsPerEm)
        hmtx = font["hmtx"].metrics
        cmap = font.getBestCmap() or {}
        advances = {code: hmtx[glyph][0] / upem for code, glyph in cmap.items() if glyph in hmtx}
    fallback = advances.get(ord("0"), 0.6)
    return Metrics(advances, fallback)


def wrap_lines(text: str, metrics: Metrics, size: float, width: float) -> list[str]:
    """`text` in lines no wider than `width` pixels at `size`: broken at spaces, at the line
    breaks it has (of any kind), and inside a word only when the word alone is wider than a
    line. No line holds a control character."""
    lines: list[str] = []
    for paragraph in plain.lines(text):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if metrics.width(candidate, size) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word wider than the line: as many characters as fit
                if line and metrics.width(line + ch, size) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines
