"""Captions for composed videos: SRT, WebVTT or a transcript in, a styled (karaoke) ASS out. Pure.

A timeline's subtitles clip brings its captions as a word-level transcript, an SRT file or a
WebVTT file. All three become `Timed` cues (a cue and its words, in the clip's own time), which
`shift` places on the timeline and `to_ass_styled` burns in with a named look.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vidstream.core.errors import PermanentError
from vidstream.media import ass
from vidstream.media import text as plain
from vidstream.media.subtitles import FONT, Cue, Layout, cue_groups, label_tokens
from vidstream.media.transcript import Transcript, Word

Timed = tuple[Cue, tuple[Word, ...]]
_LAYOUT = Layout()
# The largest captions file read (an upload, a stored transcript): far more than any video shows.
MAX_BYTES = 8 * 1024 * 1024
# Cues one file may hold: a 4-hour video captioned every second has 14,400. Beyond, the parse
# alone costs seconds of a gateway's CPU for nothing a video could show.
MAX_CUES = 50_000

# Hours to three digits and fractions to nine: a timing line of 5,000 digits is no timing line
# (it made int() and float() raise past what the parser caught, a 500 at the gateway).
_TIME = r"(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,9}))?"
# Anything after the second time is VTT cue settings (align:start ...) or SRT box coordinates.
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s.*)?$")
# <b>, </i>, <c.x>, <v Bob>, <00:00:01.000>, <font ...>; and SSA overrides such as {\an8} in SRT.
_TAG = re.compile(r"<[^<>\n]*>|\{\\[^{}\n]*\}")
_VTT_SKIPPED = re.compile(r"^(?:WEBVTT|NOTE|STYLE|REGION)(?:\s|$)")


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, code="invalid_subtitles")


def parse_srt(text: str) -> list[Cue]:
    """The cues of an SRT file; index numbers and blank lines are optional, tags are dropped."""
    return _cues(_lines(text))


def parse_vtt(text: str) -> list[Cue]:
    """The cues of a WebVTT file, without its header, NOTE, STYLE and REGION blocks."""
    kept: list[str] = []
    block: list[str] = []
    for line in [*_lines(text), ""]:
        if line.strip():
            block.append(line)
            continue
        # The header and NOTE/STYLE/REGION blocks hold no cue, unless a blank line is missing.
        skipped = block and _VTT_SKIPPED.match(block[0].lstrip())
        if not skipped or any(_TIMING.match(x) for x in block):
            kept.extend(block)
        kept.append("")
        block = []
    return _cues(kept)


def _lines(text: str) -> list[str]:
    if "\x00" in text:
        raise _invalid("The subtitle file looks like binary data, not SRT or WebVTT text.")
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _seconds(h: str | None, m: str, s: str, frac: str | None) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + (float(f"0.{frac}") if frac else 0.0)


def _cues(lines: list[str]) -> list[Cue]:
    cues: list[Cue] = []
    timing: tuple[float, float] | None = None
    pending: list[str] = []  # the lines since the last timing line, blank ones included

    def close() -> None:
        texts = [t.strip() for line in pending for t in _shown(line)]
        if timing and timing[1] > timing[0] and any(texts):
            if len(cues) >= MAX_CUES:
                raise _invalid(f"More than {MAX_CUES} cues: split the subtitles, or check them.")
            cues.append(Cue(*timing, tuple(t for t in texts if t)))

    for line in lines:
        match = _TIMING.match(line)
        if not match:
            pending.append(line)
            continue
        # The line just before a timing line is the next cue's number or identifier, not text.
        last = pending[-1].strip() if pending else ""
        if last and (last.isdigit() or len(pending) == 1 or not pending[-2].strip()):
            pending.pop()
        close()
        g = match.groups()
        timing, pending = (_seconds(*g[:4]), _seconds(*g[4:])), []
        if timing[1] > ass.MAX_TIME_S:
            raise _invalid(f"A cue ends past {ass.MAX_TIME_S / 3600:.0f} hours: {line[:60]!r}.")
    close()
    if not cues:
        raise _invalid(
            "No subtitles found: expected SRT or WebVTT cues, each a timing line such as "
            "00:00:01,000 --> 00:00:03,500 followed by its text."
        )
    return sorted(cues, key=lambda c: c.start)


def _shown(line: str) -> list[str]:
    """A cue's line as shown: tags dropped, entities decoded, then split at each line break it
    decoded to (`&#10;`) and without control characters (`&#1;`)."""
    return plain.lines(html.unescape(_TAG.sub("", line)))


def parse_captions(data: bytes) -> list[Cue] | Transcript:
    """Cues from an SRT or WebVTT file, or a transcript from its JSON, told apart by content."""
    try:
        text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8")
    except UnicodeDecodeError:
        raise _invalid(
            "The subtitle file is not UTF-8 text; save it as UTF-8 SRT or WebVTT."
        ) from None
    body = text.removeprefix("\ufeff").lstrip()
    if body.startswith("{"):
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list):
                raise _invalid("The JSON file is not a transcript: it has no list of segments.")
            return _timed_well(Transcript.from_json(body))
        except KeyError as exc:
            raise _invalid(f"The transcript JSON has a segment or word without {exc}.") from None
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise _invalid(f"The transcript JSON is malformed: {exc}.") from None
    return parse_vtt(body) if body.startswith("WEBVTT") else parse_srt(body)


def _timed_well(transcript: Transcript) -> Transcript:
    """The transcript, when every time in it is a number of seconds (JSON reads NaN too)."""
    for segment in transcript.segments:
        times = [segment.start, segment.end, *(t for w in segment.words for t in (w.start, w.end))]
        if not all(math.isfinite(t) and 0 <= t <= ass.MAX_TIME_S for t in times):
            raise _invalid(
                f"The transcript JSON has a time that is not between 0 and {ass.MAX_TIME_S:g} "
                "seconds."
            )
    return transcript


def word_cues(transcript: Transcript, layout: Layout = _LAYOUT) -> list[Timed]:
    """`subtitles.build_cues`, each cue with its words, every word clipped to its cue."""
    return [
        (cue, tuple(_clip(w, cue.start, cue.end) for w in words))
        for cue, words in cue_groups(transcript, layout)
    ]


def _clip(word: Word, lo: float, hi: float) -> Word:
    start = min(max(word.start, lo), hi)
    return dataclasses.replace(word, start=start, end=min(max(word.end, start), hi))


def spread_words(cue: Cue) -> tuple[Word, ...]:
    """The cue's words spread over its span in proportion to their length (no timings known)."""
    tokens = [t for line in cue.lines for t in ass.words(line)]
    total, done, words = sum(len(t) for t in tokens), 0, []
    for token in tokens:
        start = cue.start + (cue.end - cue.start) * done / total
        done += len(token)
        end = cue.end if done == total else cue.start + (cue.end - cue.start) * done / total
        words.append(Word(token, start, end))
    return tuple(words)


def timed(captions: list[Cue] | Transcript, layout: Layout = _LAYOUT) -> list[Timed]:
    """What `parse_captions` gave, as cues with their words: spoken timings when known."""
    if isinstance(captions, Transcript):
        return word_cues(captions, layout)
    return [(cue, spread_words(cue)) for cue in captions]


def shift(
    items: Sequence[Timed],
    offset: float,
    start: float = 0.0,
    end: float = math.inf,
    *,
    speed: float = 1.0,
) -> list[Timed]:
    """Cues within [start, end) of the source, clipped to it, in timeline time.

    Source time t shows at `offset + (t - start) / speed`. A cut cue keeps all its text and
    words (those outside get no time), so karaoke still finds one word per shown token.
    """
    if speed <= 0:
        raise ValueError(f"speed must be positive, not {speed}")
    placed: list[Timed] = []
    for cue, words in items:
        lo, hi = max(cue.start, start), min(cue.end, end)
        if hi <= lo:
            continue

        def at(t: float, lo: float = lo, hi: float = hi) -> float:
            return offset + (min(max(t, lo), hi) - start) / speed

        moved = tuple(dataclasses.replace(w, start=at(w.start), end=at(w.end)) for w in words)
        placed.append((Cue(at(lo), at(hi), cue.lines), moved))
    return placed


@dataclass(frozen=True, slots=True)
class Style:
    """A caption look; sizes are fractions, so one style suits every resolution.

    Colours are ASS `&HAABBGGRR` (alpha first, 00 opaque). Border style 3 boxes each line and
    karaoke word in `outline_colour`, padded by the outline (translucent ones darken where they
    overlap); 4 (libass) puts one box in `back_colour` behind the cue, padded by the shadow.
    """

    font: str = FONT
    size: float = 0.055  # of the picture height
    colour: str = "&H00FFFFFF"
    highlight: str = "&H0000FFFF"  # words already spoken, with karaoke
    outline_colour: str = "&H00000000"
    outline: float = 1 / 14  # of the font size; 0 for none
    back_colour: str = "&H80000000"  # the shadow's colour, or the box's with border_style 4
    shadow: float = 0.0  # of the font size: the drop shadow, or the padding of a style 4 box
    border_style: int = 1  # 1: outlined letters; 3 or 4: a box behind the text
    bold: bool = False
    alignment: int = 2  # numpad: 2 bottom centre, 5 middle, 8 top centre
    margin_v: float = 0.05  # of the picture height
    x: float = 0.5  # the captions' centre, as a fraction of the width


STYLES: dict[str, Style] = {
    # The burn-in look of `subtitles.to_ass`: white, thin black outline, bottom centre.
    "default": Style(),
    # One translucent box (style 4): per-line boxes (style 3) show dark seams where they overlap.
    "boxed": Style(back_colour="&H40000000", outline=0, shadow=0.2, border_style=4),
    # Short-form video: big, heavy, raised clear of the buttons apps draw over the bottom.
    "bold": Style(size=0.075, outline=0.125, bold=True, margin_v=0.2),
    "top": Style(alignment=8),
}


def to_ass_styled(
    items: Sequence[Timed],
    width: int,
    height: int,
    style: str | Style = "default",
    *,
    karaoke: bool = False,
    font: str | None = None,
) -> str:
    """A complete ASS document for a `width` x `height` picture in the given style.

    With `karaoke`, each word fills from `colour` to `highlight` as it is spoken: libass draws
    text not yet reached by `\\k` in SecondaryColour and the rest in PrimaryColour.
    """
    look = STYLES.get(style) if isinstance(style, str) else style
    if look is None:
        raise PermanentError(
            f"Unknown caption style {style!r}; choose one of {', '.join(STYLES)}.",
            code="invalid_request",
        )
    size = max(round(height * look.size), 12)
    # The block the lines wrap in: as wide wherever it sits (centred on x), kept in the picture.
    margin_l = margin_r = max(round(width * 0.05), 8)
    if look.x != 0.5:
        block = max(width - 2 * margin_l, 1)
        margin_l = round(min(max(look.x * width - block / 2, 0), width - block))
        margin_r = width - block - margin_l
    # From the bottom, never so far up that the cue's lines would leave the picture.
    lines = max((len(cue.lines) for cue, _ in items), default=1)
    drawn = min(size, max(round(height * ass.MAX_SIZE), ass.MIN_SIZE_PX))  # as ass.Style has it
    room = max(height - round(drawn * 1.25 * lines), 0)
    margin_v = min(max(round(height * look.margin_v), 8), room)
    built = ass.Style(
        width, height, font or look.font, size,
        primary=look.highlight if karaoke else look.colour, secondary=look.colour,
        outline_colour=look.outline_colour, back_colour=look.back_colour,
        outline=max(round(size * look.outline), 1) if look.outline else 0,
        shadow=round(size * look.shadow), border_style=look.border_style, bold=look.bold,
        alignment=look.alignment, margin_h=margin_l, margin_r=margin_r,
        margin_v=margin_v,
    )  # fmt: skip
    events = [
        ass.Event(c.start, c.end, c.lines, _fills(c, words) if karaoke else ())
        for c, words in items
    ]
    return ass.document(built, events)


def _fills(cue: Cue, words: tuple[Word, ...]) -> tuple[int, ...]:
    """Each word's karaoke fill in centiseconds: from its start to the next word's, so pauses
    are spent on the word before. A speaker label is lit at once (its tokens fill in 0)."""
    label = label_tokens(cue.lines[0]) if cue.lines else 0
    if label:
        rest = cue.lines[0].split(" ", 2)[2:]  # the first line after the label (maybe none)
        shown = Cue(cue.start, cue.end, (*rest, *cue.lines[1:]))
        return (0,) * label + _fills(shown, words)
    if len(words) != sum(len(ass.words(line)) for line in cue.lines):
        words = spread_words(cue)  # the words do not match the text shown: time it evenly
    # Marks in whole centiseconds as ass.time rounds them, so the fills add up to the cue exactly.
    end = round(cue.end * 100)
    marks = [round(cue.start * 100)]
    for word in words[1:]:
        marks.append(min(max(round(word.start * 100), marks[-1]), end))
    return tuple(b - a for a, b in itertools.pairwise([*marks, end]))
