"""Where a long source is cut into pieces that several workers can take at once, and how the
pieces' results are joined again. Pure functions: the FFmpeg and PyAV readings they start from
are made elsewhere (`silences`, `keyframes`).

Speech is cut inside pauses (FFmpeg's `silencedetect`), so no word is split; where no pause lies
near a cut, at the quietest moment near it, the two pieces overlapping by `OVERLAP_S` on each
side, and their words joined where they agree (`seams`), so none is lost or doubled. Pictures
are cut at keyframes, so each segment decodes on its own and the segments join without
re-encoding; each carries its exact frame count.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

OVERLAP_S = 2.0  # each side of a cut that found no pause: longer than any word
MIN_PAUSE_S = 0.3  # silencedetect's `d`: a pause between sentences, not between syllables
MAX_PIECES = 200  # however short PIECE_S is set: a plan stays a small record
_SILENCE = re.compile(r"silence_(start|end)[:=] ?(-?[0-9.]+)")
_PTS = re.compile(r"pts_time:(-?[0-9.]+)")
_LEVEL = re.compile(r"RMS_level=(-?inf|-?[0-9.]+)")


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
    """The pieces as JSON values (the source's end, infinity, as null)."""
    return [{k: (None if v == math.inf else v) for k, v in asdict(p).items()} for p in pieces]


def pieces_from_json(raw: Iterable[dict[str, Any]]) -> tuple[Piece, ...]:
    def one(p: dict[str, Any]) -> Piece:
        values: dict[str, Any] = {k: (math.inf if v is None else v) for k, v in p.items()}
        return Piece(**values)

    return tuple(one(p) for p in raw)


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


def _pause_cuts(
    duration: float, piece_s: float, silences: Sequence[tuple[float, float]]
) -> tuple[list[float | None], float]:
    """Each cut's time in the pause nearest its target (None where no pause is near enough),
    and how far from its target a cut may go."""
    n = piece_count(duration, piece_s)
    size = duration / n
    window = min(size / 10, 30.0)
    cuts: list[float | None] = []
    last = 0.0
    for k in range(1, n):
        target = k * size
        near = [
            (abs((a + b) / 2 - target), -(b - a), (a + b) / 2)
            for a, b in silences
            if abs((a + b) / 2 - target) <= window and (a + b) / 2 > last
        ]
        cut = min(near)[2] if near else None
        cuts.append(cut)
        last = cut if cut is not None else target
    return cuts, window


def unpaused(
    duration: float, piece_s: float, silences: Sequence[tuple[float, float]]
) -> dict[int, tuple[float, float]]:
    """The cuts no pause is near: for each (by its number from 1), the span in which to look
    for the quietest moment instead (`quietest`)."""
    cuts, window = _pause_cuts(duration, piece_s, silences)
    size = duration / (len(cuts) + 1)
    return {
        k: (max(k * size - window, 0.0), min(k * size + window, duration))
        for k, cut in enumerate(cuts, start=1)
        if cut is None
    }


def speech_cuts(
    duration: float, piece_s: float, silences: Sequence[tuple[float, float]],
    quiet: Mapping[int, float] | None = None,
) -> list[Piece]:  # fmt: skip
    """Pieces of about `piece_s` seconds of a sound `duration` long, each cut in the pause
    nearest its target (within a tenth of a piece, at most 30 s away); where none is, at the
    quietest moment near it (`quiet`, by cut number) or at the target, the pieces overlapping
    by `OVERLAP_S` there. Whisper starting in the middle of a word can lose a whole window of
    speech, so a pause, or at least the quietest moment, is always sought first."""
    found, _ = _pause_cuts(duration, piece_s, silences)
    n = len(found) + 1
    size = duration / n
    cuts = [
        (cut, True) if cut is not None else ((quiet or {}).get(k, k * size), False)
        for k, cut in enumerate(found, start=1)
    ]
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


def parse_levels(lines: Iterable[str], offset: float) -> list[tuple[float, float]]:
    """The sound's level (dB) over time from `astats`' `ametadata` print: (seconds, level),
    times counted from `offset` (where the reading started)."""
    found: list[tuple[float, float]] = []
    at: float | None = None
    for line in lines:
        if m := _PTS.search(line):
            at = float(m[1]) + offset
        elif (m := _LEVEL.search(line)) and at is not None:
            level = -math.inf if m[1].startswith("-inf") else float(m[1])
            found.append((at, level))
    return found


def quietest(levels: Sequence[tuple[float, float]], around: float) -> float:
    """The time of the quietest reading (the one nearest `around` among equals)."""
    if not levels:
        return around
    return min(levels, key=lambda tl: (tl[1], abs(tl[0] - around)))[0]


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
    times = [t for t, _ in keyframes]
    chosen = [0]
    for k in range(1, n):
        target = k * size
        at = bisect.bisect_left(times, target)  # the keyframes either side of the target
        best = min((i for i in (at - 1, at) if 0 <= i < len(times)),
                   key=lambda i: abs(times[i] - target))  # fmt: skip
        if best > chosen[-1]:
            chosen.append(best)
    if len(chosen) < 2:
        return None
    counts = list(itertools.accumulate(count for _, count in keyframes))
    pieces = []
    for i, at in enumerate(chosen):
        upto = chosen[i + 1] if i + 1 < len(chosen) else len(keyframes)
        frames = counts[upto - 1] - (counts[at - 1] if at else 0)
        start = times[at]
        last = upto == len(keyframes)
        end = duration if last else times[upto]
        pieces.append(Piece(i, start, end, start, math.inf if last else end, frames, last))
    return pieces
