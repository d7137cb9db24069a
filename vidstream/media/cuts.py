"""Where a long source is cut into pieces that several workers can take at once, and how the
pieces' results are joined again. Pure functions: the FFmpeg and PyAV readings they start from
are made elsewhere (`silences`, `keyframes`).

Speech is cut inside pauses (FFmpeg's `silencedetect`), so no word is split; where no pause lies
near a cut, the two pieces overlap by `OVERLAP_S` on each side and each word is kept by the
piece whose own span holds its start, so none is lost or doubled at the seam. Pictures are cut
at keyframes, so each segment decodes on its own and the segments join without re-encoding;
each carries its exact frame count.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from vidstream.media.transcript import Segment, Transcript, Word

OVERLAP_S = 2.0  # each side of a cut that found no pause: longer than any word
MIN_PAUSE_S = 0.3  # silencedetect's `d`: a pause between sentences, not between syllables
MAX_PIECES = 200  # however short PIECE_S is set: a plan stays a small record
_SILENCE = re.compile(r"silence_(start|end)[:=] ?(-?[0-9.]+)")


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a source: the work covers [start, end); its result keeps what falls in
    [keep_from, keep_to) (the same span, unless the piece overlaps its neighbours)."""

    index: int
    start: float
    end: float
    keep_from: float
    keep_to: float
    frames: int = 0  # a render segment's exact frame count (0: not a render segment)
    last: bool = False  # the source's end: sound going on past `end` is still this piece's

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)


def pieces_to_json(pieces: Sequence[Piece]) -> list[dict[str, object]]:
    return [asdict(p) for p in pieces]


def pieces_from_json(raw: Iterable[dict[str, object]]) -> tuple[Piece, ...]:
    return tuple(Piece(**p) for p in raw)  # type: ignore[arg-type]


def piece_count(duration: float, piece_s: float) -> int:
    """How many pieces a source of `duration` seconds is cut into: about `piece_s` each, at
    least two (a source is fanned out only once it is long)."""
    return max(2, min(MAX_PIECES, round(duration / max(piece_s, 1.0))))


# -- speech ------------------------------------------------------------------------------------


def parse_silences(lines: Iterable[str]) -> list[tuple[float, float]]:
    """The pauses `silencedetect` reported on stderr, as (start, end) seconds; a pause still
    open at the end of the sound is left out (nothing follows it to cut before)."""
    found: list[tuple[float, float]] = []
    start: float | None = None
    for line in lines:
        for what, value in _SILENCE.findall(line):
            try:
                at = float(value)
            except ValueError:
                continue
            if what == "start":
                start = max(at, 0.0)
            elif start is not None and at > start:
                found.append((start, at))
                start = None
    return found


def speech_cuts(
    duration: float, piece_s: float, silences: Sequence[tuple[float, float]]
) -> list[Piece]:
    """Pieces of about `piece_s` seconds of a sound `duration` long, each cut in the pause
    nearest its target (within a tenth of a piece, at most 30 s away), else overlapping."""
    n = piece_count(duration, piece_s)
    size = duration / n
    window = min(size / 10, 30.0)
    cuts: list[tuple[float, bool]] = []  # (time, inside a pause)
    for k in range(1, n):
        target = k * size
        near = [
            (abs((a + b) / 2 - target), -(b - a), (a + b) / 2)
            for a, b in silences
            if abs((a + b) / 2 - target) <= window and (not cuts or (a + b) / 2 > cuts[-1][0])
        ]
        cuts.append((min(near)[2], True) if near else (target, False))
    bounds = [(0.0, True), *cuts, (math.inf, True)]
    pieces = []
    for i in range(n):
        (a, a_quiet), (b, b_quiet) = bounds[i], bounds[i + 1]
        last = i == n - 1
        start = a if a_quiet else max(a - OVERLAP_S, 0.0)
        end = duration if last else (b if b_quiet else b + OVERLAP_S)
        pieces.append(Piece(i, round(start, 3), round(end, 3), round(a, 3),
                            math.inf if last else round(b, 3), last=last))  # fmt: skip
    return pieces


def merge_transcripts(parts: Sequence[tuple[Piece, Transcript]], duration: float) -> Transcript:
    """One transcript from its pieces' (in order): each keeps the words whose start lies in
    its own span, so a word heard by two overlapping pieces is kept once; timestamps never go
    back at a seam."""
    segments: list[Segment] = []
    for piece, part in parts:
        for seg in part.segments:
            kept = _kept(piece, seg)
            if kept is not None:
                segments.append(kept)
    ordered: list[Segment] = []
    for seg in segments:  # a word that ends past the next one's start is cut short at it
        if ordered and seg.start < ordered[-1].end:
            prev = ordered[-1]
            ordered[-1] = _ending_at(prev, max(seg.start, prev.start))
        ordered.append(seg)
    first = parts[0][1] if parts else Transcript("", 0.0)
    end = max((p.duration for _, p in parts), default=0.0)
    return Transcript(
        language=first.language,
        duration=max(duration, end, ordered[-1].end if ordered else 0.0),
        segments=tuple(ordered),
        model=first.model,
        meta=first.meta,
    )


def _kept(piece: Piece, seg: Segment) -> Segment | None:
    def inside(t: float) -> bool:
        return piece.keep_from <= t < piece.keep_to

    if not seg.words:
        return seg if inside(seg.start) else None
    words = tuple(w for w in seg.words if inside(w.start))
    if not words:
        return None
    if len(words) == len(seg.words):
        return seg
    text = " ".join(w.text for w in words)
    return Segment(words[0].start, max(words[-1].end, words[0].start), text, words)


def _ending_at(seg: Segment, at: float) -> Segment:
    words = tuple(
        w if w.end <= at else Word(w.text, min(w.start, at), at, w.probability) for w in seg.words
    )
    return replace(seg, end=max(at, seg.start), words=words)


# -- pictures ------------------------------------------------------------------------------------


def frame_cuts(
    keyframes: Sequence[tuple[float, int]], duration: float, piece_s: float
) -> list[Piece] | None:
    """Segments of about `piece_s` seconds, each starting at the keyframe nearest its target;
    `keyframes` are (time, frames from it to the next keyframe). None when the picture cannot
    be cut (fewer than two keyframes apart)."""
    if len(keyframes) < 2:
        return None
    n = piece_count(duration, piece_s)
    size = duration / n
    chosen = [0]
    for k in range(1, n):
        target = k * size
        best = min(range(len(keyframes)), key=lambda i: abs(keyframes[i][0] - target))
        if best > chosen[-1]:
            chosen.append(best)
    if len(chosen) < 2:
        return None
    pieces = []
    for i, at in enumerate(chosen):
        upto = chosen[i + 1] if i + 1 < len(chosen) else len(keyframes)
        frames = sum(count for _, count in keyframes[at:upto])
        start = keyframes[at][0]
        end = keyframes[upto][0] if upto < len(keyframes) else duration
        last = upto == len(keyframes)
        pieces.append(Piece(i, start, end, start, math.inf if last else end, frames, last))
    return pieces


def dumps(pieces: Sequence[Piece]) -> str:
    """The pieces as JSON (infinity as null: the source's end)."""
    return json.dumps([{k: (None if v == math.inf else v) for k, v in p.items()}
                       for p in pieces_to_json(pieces)])  # fmt: skip


def loads(raw: str) -> tuple[Piece, ...]:
    items = json.loads(raw)
    return pieces_from_json(
        {k: (math.inf if v is None else v) for k, v in item.items()} for item in items
    )
