"""One transcript from the transcripts of a source's pieces (`cuts`).

A piece keeps the words whose start lies in its own span. Where two pieces overlap (their cut
found no pause), Whisper heard the words around the cut twice, and its word times near the edge
of a range are a few tenths of a second off, so times alone could keep a word twice or drop it.
There the two readings are aligned on their words instead: the longest run of words both heard
near the cut is where the seam goes, the earlier piece's words before it and the later piece's
from it on.

Speakers (`speakers`) are told apart once the pieces are joined, over the whole source, so that
a speaker has one number throughout; a piece's transcript has none. Were it to have some, they
are kept as they are: each piece would number its own speakers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import replace

from vidstream.media.cuts import OVERLAP_S, Piece
from vidstream.media.transcript import Segment, Transcript

# Words both pieces heard, in a row, at about the same time (Whisper's word times near a range's
# edge are a few tenths of a second off; a second off is another occurrence of the word).
SAME_WORD_S = 1.0
_LETTERS = re.compile(r"[^\w']+")

Place = tuple[int, int]  # (segment, word) within one piece's transcript


def merge_transcripts(parts: Sequence[tuple[Piece, Transcript]], duration: float) -> Transcript:
    """The pieces' transcripts (in order) as one: no word lost or kept twice at a seam, and
    times that never go back."""
    kept: list[set[Place]] = [_inside(piece, part) for piece, part in parts]
    for i in range(1, len(parts)):
        piece, part = parts[i]
        if piece.start < piece.keep_from:  # overlapping its predecessor: align the two
            _align(parts[i - 1][1], kept[i - 1], part, kept[i], piece.keep_from)
    segments = [seg for (_, part), keep in zip(parts, kept, strict=True)
                for seg in _segments(part, keep)]  # fmt: skip
    ordered: list[Segment] = []
    for seg in segments:
        if ordered and seg.start < ordered[-1].start:  # heard early at a seam: not before it
            seg = _starting_at(seg, ordered[-1].start)
        if ordered and seg.start < ordered[-1].end:  # a word that ends past the next one's start
            ordered[-1] = _ending_at(ordered[-1], seg.start)
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


def _inside(piece: Piece, part: Transcript) -> set[Place]:
    """The words (and wordless segments, as word -1) whose start lies in the piece's span."""
    found = set()
    for s, seg in enumerate(part.segments):
        if not seg.words and piece.keep_from <= seg.start < piece.keep_to:
            found.add((s, -1))
        for w, word in enumerate(seg.words):
            if piece.keep_from <= word.start < piece.keep_to:
                found.add((s, w))
    return found


def _words_near(part: Transcript, cut: float) -> list[tuple[Place, str]]:
    window = OVERLAP_S + 1.0
    return [((s, w), _LETTERS.sub("", word.text.lower()))
            for s, seg in enumerate(part.segments) for w, word in enumerate(seg.words)
            if abs(word.start - cut) <= window]  # fmt: skip


def _align(
    before: Transcript, keep_before: set[Place], after: Transcript, keep_after: set[Place],
    cut: float,
) -> None:  # fmt: skip
    """Move the seam between two overlapping pieces to where their words agree (in place)."""
    a, b = _words_near(before, cut), _words_near(after, cut)
    match = difflib.SequenceMatcher(None, [t for _, t in a], [t for _, t in b], autojunk=False)
    i, j, size = match.find_longest_match(0, len(a), 0, len(b))
    if size == 0 or not _same_time(before, a[i][0], after, b[j][0]):
        return  # no agreement to go by: each keeps the words its own span holds
    keep_before.difference_update(place for place, _ in a[i:])
    keep_before.update(place for place, _ in a[:i])
    keep_after.difference_update(place for place, _ in b[:j])
    keep_after.update(place for place, _ in b[j:])


def _same_time(before: Transcript, a: Place, after: Transcript, b: Place) -> bool:
    first = before.segments[a[0]].words[a[1]]
    second = after.segments[b[0]].words[b[1]]
    return abs(first.start - second.start) < SAME_WORD_S


def _segments(part: Transcript, keep: set[Place]) -> list[Segment]:
    found = []
    for s, seg in enumerate(part.segments):
        if not seg.words:
            if (s, -1) in keep:
                found.append(seg)
            continue
        words = tuple(word for w, word in enumerate(seg.words) if (s, w) in keep)
        if len(words) == len(seg.words):
            found.append(seg)
        elif words:
            text = " ".join(word.text for word in words)
            end = max(words[-1].end, words[0].start)
            found.append(Segment(words[0].start, end, text, words, seg.speaker))
    return found


def _starting_at(seg: Segment, at: float) -> Segment:
    words = tuple(
        w if w.start >= at else replace(w, start=at, end=max(w.end, at)) for w in seg.words
    )
    return replace(seg, start=at, end=max(seg.end, at), words=words)


def _ending_at(seg: Segment, at: float) -> Segment:
    words = tuple(
        w if w.end <= at else replace(w, start=min(w.start, at), end=at) for w in seg.words
    )
    return replace(seg, end=max(at, seg.start), words=words)
