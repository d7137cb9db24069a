"""Subtitle cues from word timings, and their SRT, WebVTT and ASS renderings. Pure functions.

Cues follow common captioning guidance: at most two lines of about 42 characters, at most about
seven seconds on screen, broken at sentence ends and at pauses, never overlapping. In a transcript
told apart by speaker, a cue is one speaker's words, never two's; with `speaker_labels`, a cue
whose speaker is not the previous cue's starts with "[Speaker N]".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vidstream.media import ass
from vidstream.media.transcript import Segment, Transcript, Word


@dataclass(frozen=True, slots=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass(frozen=True, slots=True)
class Layout:
    max_chars: int = 42
    max_lines: int = 2
    max_duration_s: float = 7.0
    pause_s: float = 0.8
    min_duration_s: float = 0.8
    speaker_labels: bool = False


def build_cues(transcript: Transcript, layout: Layout = Layout()) -> list[Cue]:
    return [cue for cue, _ in cue_groups(transcript, layout)]


def cue_groups(
    transcript: Transcript, layout: Layout = Layout()
) -> list[tuple[Cue, tuple[Word, ...]]]:
    """Each cue with the words it shows, timed as spoken.

    The cue's own times are adjusted afterwards (minimum duration, no overlap), so a word may lie
    partly outside its cue; karaoke (`captions.word_cues`) clips them.
    """
    groups: list[list[Word]] = []
    labels: list[str] = []
    for segment in transcript.segments:
        for group in _split(_words_of(segment), layout, groups[-1][0].speaker if groups else None):
            labels.append(_label(group, groups[-1][0].speaker if groups else None, layout))
            groups.append(group)
    cues = [
        Cue(
            group[0].start,
            max(group[-1].end, group[0].start),
            wrap(label + " ".join(w.text for w in group), layout.max_chars, layout.max_lines),
        )
        for group, label in zip(groups, labels, strict=True)
    ]
    fixed = _fix_timing(cues, layout)
    return [(cue, tuple(group)) for cue, group in zip(fixed, groups, strict=True)]


def _words_of(segment: Segment) -> list[Word]:
    if segment.words:
        return list(segment.words)
    # No word timings: spread the segment's words evenly over its span.
    texts = segment.text.split()
    if not texts:
        return []
    step = (segment.end - segment.start) / len(texts)
    return [
        Word(t, segment.start + i * step, segment.start + (i + 1) * step, speaker=segment.speaker)
        for i, t in enumerate(texts)
    ]


def _label(group: Sequence[Word], previous: int | None, layout: Layout) -> str:
    """What a cue of `group` starts with: "[Speaker N] " where the speaker changes (after a cue
    of `previous`'s), when labels are asked for; else nothing."""
    speaker = group[0].speaker if group else None
    if not layout.speaker_labels or speaker is None or speaker == previous:
        return ""
    return f"{LABEL} {speaker}] "


LABEL = "[Speaker"  # a label's first token; "N]" is its second, and `wrap` keeps them together


def label_tokens(line: str) -> int:
    """How many of the line's space-separated tokens are a speaker label (0 or 2)."""
    tokens = line.split(" ")
    return 2 if len(tokens) > 1 and tokens[0] == LABEL and tokens[1].endswith("]") else 0


def _split(
    words: Sequence[Word], layout: Layout, previous: int | None = None
) -> Iterable[list[Word]]:
    """`words` in cues' groups; `previous`: the speaker of the cue before them."""
    group: list[Word] = []
    for word in words:
        if group:
            prev = group[-1]
            if (
                word.speaker != prev.speaker  # never two speakers in one cue
                or word.start - prev.end > layout.pause_s
                or word.end - group[0].start > layout.max_duration_s
                or (
                    prev.text[-1] in ".?!"
                    and sum(len(w.text) + 1 for w in group) > layout.max_chars // 2
                )
                or not _fits([*group, word], layout, _label(group, previous, layout))
            ):
                yield group
                previous = group[0].speaker
                group = []
        group.append(word)
    if group:
        yield group


def _fits(words: Sequence[Word], layout: Layout, label: str = "") -> bool:
    lines = wrap(label + " ".join(w.text for w in words), layout.max_chars, layout.max_lines)
    return all(len(line) <= layout.max_chars for line in lines)


def wrap(text: str, max_chars: int = 42, max_lines: int = 2) -> tuple[str, ...]:
    """Split `text` into as few lines as fit `max_chars` (at most `max_lines`), evenly balanced.

    When no split fits (a very long word), the most balanced split into `max_lines` is used.
    """
    words = text.split()
    if not words:
        return (text,)
    if label_tokens(" ".join(words[:2])):  # "[Speaker N]" is never cut in two
        words = [" ".join(words[:2]), *words[2:]]
    best: tuple[str, ...] = ()
    for count in range(1, min(max_lines, len(words)) + 1):
        best = _balanced(words, count)
        if max(len(line) for line in best) <= max_chars:
            return best
    return best


def _balanced(words: list[str], count: int) -> tuple[str, ...]:
    """`words` in `count` lines, minimising the longest line (small dynamic programme)."""
    n = len(words)
    # cost[k][i]: the least possible longest line when words[:i] fill k lines.
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(count + 1)]
    cut = [[0] * (n + 1) for _ in range(count + 1)]
    cost[0][0] = 0
    for k in range(1, count + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                longest = max(cost[k - 1][j], len(" ".join(words[j:i])))
                if longest < cost[k][i]:
                    cost[k][i], cut[k][i] = longest, j
    lines, i = [], n
    for k in range(count, 0, -1):
        j = cut[k][i]
        lines.append(" ".join(words[j:i]))
        i = j
    return tuple(reversed(lines))


def _fix_timing(cues: list[Cue], layout: Layout) -> list[Cue]:
    """Give each cue at least the minimum time on screen, without ever overlapping the next."""
    fixed: list[Cue] = []
    for i, cue in enumerate(cues):
        # Whisper can give several words one timestamp: start no earlier than the previous end.
        start = max(cue.start, fixed[-1].end) if fixed else cue.start
        next_start = cues[i + 1].start if i + 1 < len(cues) else float("inf")
        end = max(cue.end, start + layout.min_duration_s)
        if next_start > start:
            end = min(end, next_start)
        fixed.append(Cue(start, max(end, start + 0.01), cue.lines))
    return fixed


def _clock(seconds: float, sep: str) -> str:
    ms = max(round(seconds * 1000), 0)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_time(seconds: float) -> str:
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    return _clock(seconds, ".")


def ass_time(seconds: float) -> str:
    return ass.time(seconds)


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{i}\n{srt_time(c.start)} --> {srt_time(c.end)}\n"
        + "\n".join(line.replace("-->", "->") for line in c.lines)
        for i, c in enumerate(cues, 1)
    ]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{vtt_time(c.start)} --> {vtt_time(c.end)}\n" + "\n".join(_vtt_escape(x) for x in c.lines)
        for c in cues
    ]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


FONT = "DejaVu Sans"  # burned captions' (`fonts.link` it where they are rendered)
