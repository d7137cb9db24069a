"""Who says each word: the pure half of diarization (`speakers`). Pure functions.

The Whisper server (`whisper_server`) plans windows over the transcript's speech (`windows`),
has a speaker encoder describe the voice in each (`voices`) and groups those voices into as many
speakers as were asked for. What comes back here is a speaker per window; each word takes the
speaker of the windows that overlap it most (`word_speakers`), a lone word amid another
speaker's words within a segment takes theirs (`smoothed`), speakers are numbered from 1 in the
order they first speak, and a segment in which the speaker changes is split there (`diarized`),
so a segment, like a caption cue, is one speaker's.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from vidstream.media.transcript import Segment, Transcript, Word

Span = tuple[float, float]  # (start, end) in seconds from the start of the source

WINDOW_S = 1.5  # a voice is described from this much sound: shorter says little about who
HOP_S = 0.5  # windows start this far apart within a stretch of speech
MIN_WINDOW_S = 1.0  # a shorter stretch of speech is described with the sound around it
JOIN_S = 0.3  # words this close belong to one stretch of speech


def speech(words: Sequence[Span], join_s: float = JOIN_S) -> list[Span]:
    """The stretches of speech: the words' spans, those closer than `join_s` joined."""
    found: list[list[float]] = []
    for start, end in sorted(words):
        if found and start - found[-1][1] <= join_s:
            found[-1][1] = max(found[-1][1], end)
        else:
            found.append([start, max(end, start)])
    return [(a, b) for a, b in found]


def windows(
    stretches: Sequence[Span], length: float = WINDOW_S, hop: float = HOP_S,
    shortest: float = MIN_WINDOW_S,
) -> list[Span]:  # fmt: skip
    """Windows over the stretches of speech: `length` long, `hop` apart, the last one ending with
    its stretch; a stretch shorter than `shortest` gets one window that long, centred on it."""
    found: list[Span] = []
    for start, end in stretches:
        if end - start < shortest:
            middle = (start + end) / 2
            begin = max(0.0, middle - shortest / 2)
            found.append((begin, begin + shortest))
            continue
        if end - start <= length:
            found.append((start, end))
            continue
        at = start
        while at + length < end:
            found.append((at, at + length))
            at += hop
        found.append((end - length, end))
    return found


def word_speakers(words: Sequence[Span], spans: Sequence[Span], labels: Sequence[int]) -> list[int]:
    """Each word's label: the one whose windows overlap it longest; the nearest window's when
    none does. Windows are at most WINDOW_S long: a word looks only at those starting from
    WINDOW_S before it (found by bisection), so an hour of words costs milliseconds, not the
    words times the windows."""
    if not spans:
        return [0] * len(words)
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    starts = [spans[i][0] for i in order]
    longest = max(b - a for a, b in spans)
    result: list[int] = []
    for start, end in words:
        lo = bisect.bisect_left(starts, start - longest)
        hi = bisect.bisect_right(starts, max(end, start))
        overlap: dict[int, float] = {}
        for i in order[lo:hi]:
            a, b = spans[i]
            shared = min(b, end) - max(a, start)
            if shared > 0:
                overlap[labels[i]] = overlap.get(labels[i], 0.0) + shared
        if overlap:
            result.append(max(overlap, key=lambda k: overlap[k]))
            continue
        middle = (start + end) / 2  # the nearest window: among those around the word's place
        at = bisect.bisect_left(starts, middle)  # the first window starting after it, and
        before = starts[at - 1] if at else middle  # those starting before it that may end late
        near = order[bisect.bisect_left(starts, before - longest) : at + 1]
        nearest = min(near, key=lambda i: _distance(spans[i], middle))
        result.append(labels[nearest])
    return result


def _distance(span: Span, at: float) -> float:
    return max(span[0] - at, at - span[1], 0.0)


def numbered(labels: Sequence[int]) -> list[int]:
    """Labels renumbered from 1 in the order they first appear."""
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(label, len(order) + 1)
    return [order[label] for label in labels]


def smoothed(labels: Sequence[int]) -> list[int]:
    """A lone label between two of another, the same on both sides, becomes theirs: one word is
    too short to tell a voice by."""
    result = list(labels)
    for i in range(1, len(result) - 1):
        if result[i - 1] == result[i + 1] != result[i]:
            result[i] = result[i - 1]
    return result


def diarized(transcript: Transcript, labels: Sequence[int]) -> Transcript:
    """The transcript with a speaker on every word (`labels`: one per word, in order), numbered
    from 1 as they first speak, and its segments split where the speaker changes."""
    count = sum(len(seg.words) for seg in transcript.segments)
    if len(labels) != count:
        raise ValueError(f"{len(labels)} speakers for {count} words")
    per_segment: list[list[int]] = []
    at = 0
    for seg in transcript.segments:
        per_segment.append(smoothed(labels[at : at + len(seg.words)]))
        at += len(seg.words)
    numbers = iter(numbered([label for part in per_segment for label in part]))
    segments: list[Segment] = []
    for seg in transcript.segments:
        words = [_with_speaker(w, next(numbers)) for w in seg.words]
        segments.extend(split_by_speaker(seg, words))
    return Transcript(transcript.language, transcript.duration, tuple(segments),
                      transcript.model, transcript.meta)  # fmt: skip


def _with_speaker(word: Word, speaker: int) -> Word:
    return Word(word.text, word.start, word.end, word.probability, speaker)


def split_by_speaker(segment: Segment, words: Sequence[Word]) -> list[Segment]:
    """`segment` with `words` (its own, each with a speaker): one segment per run of one
    speaker's words. A segment without words keeps none."""
    if not words:
        return [segment]
    runs: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.speaker == runs[-1][-1].speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        return [Segment(segment.start, segment.end, segment.text, tuple(words), words[0].speaker)]
    return [
        Segment(
            segment.start if i == 0 else run[0].start,
            segment.end if i == len(runs) - 1 else max(run[-1].end, run[0].start),
            " ".join(w.text for w in run),
            tuple(run),
            run[0].speaker,
        )
        for i, run in enumerate(runs)
    ]


def speakers_in(transcript: Transcript) -> list[int]:
    """The speakers a transcript names, in the order they first speak."""
    seen: dict[int, None] = {}
    for seg in transcript.segments:
        for speaker in [seg.speaker, *(w.speaker for w in seg.words)]:
            if speaker is not None:
                seen.setdefault(speaker)
    return list(seen)
