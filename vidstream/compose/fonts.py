"""The font families a text clip may use, where their files are, and line wrapping to a width.

Two free families from Debian packages (`fonts-dejavu-core`, `fonts-liberation2`, installed by
`make`): DejaVu (wide Unicode coverage) and Liberation (metric-compatible with Arial, Times and
Courier). FFmpeg's `drawtext` does not wrap, so lines are broken here, measured with the glyph
advances of the very file `drawtext` draws with (fontTools reads them; kerning is ignored, which
errs by a few percent at most).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from vidstream.errors import ConfigError

Family = Literal[
    "DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono",
    "Liberation Sans", "Liberation Serif", "Liberation Mono",
]  # fmt: skip
FAMILIES: tuple[str, ...] = get_args(Family)
# family -> (regular file, bold file)
_FILES = {
    "DejaVu Sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    "DejaVu Serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"),
    "DejaVu Sans Mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
    "Liberation Sans": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf"),
    "Liberation Serif": ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf"),
    "Liberation Mono": ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf"),
}
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


@functools.cache
def font_file(family: str, bold: bool = False) -> Path:
    """The file of `family` (bold or regular); `ConfigError` when its package is missing."""
    name = _FILES[family][1 if bold else 0]
    for root in FONT_DIRS:
        found = sorted(root.rglob(name)) if root.is_dir() else []
        if found:
            return found[0]
    raise ConfigError(
        f"the font file {name} ({family}) is missing: install fonts-dejavu-core and "
        "fonts-liberation2"
    )


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
    """`text` in lines no wider than `width` pixels at `size`: broken at spaces, at the
    newlines it has, and inside a word only when the word alone is wider than a line."""
    lines: list[str] = []
    for paragraph in text.replace("\r\n", "\n").split("\n"):
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
