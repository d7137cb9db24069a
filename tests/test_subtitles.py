"""Subtitle cues from word timings and their SRT, WebVTT and ASS text; the transcript's JSON."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.media import parse_cues, to_ass
from vidstream.media.subtitles import (
    Cue,
    Layout,
    ass_time,
    build_cues,
    srt_time,
    to_srt,
    to_vtt,
    vtt_time,
    wrap,
)
from vidstream.media.transcript import Segment, Transcript, Word

LAYOUT = Layout()


def spoken(text: str, start: float = 0.0, word_s: float = 0.3, gap_s: float = 0.05) -> Segment:
    """A segment whose words follow each other evenly from `start`."""
    words, t = [], start
    for token in text.split():
        words.append(Word(token, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s
    return Segment(words[0].start, words[-1].end, text, tuple(words))


def cues_of(*segments: Segment) -> list[Cue]:
    return build_cues(Transcript("en", 60.0, segments))


def assert_no_overlap(cues: list[Cue]) -> None:
    for a, b in itertools.pairwise(cues):
        assert a.start < a.end <= b.start, (a, b)


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0, "00:00:00,000"),
        (1.2344, "00:00:01,234"),
        (1.2346, "00:00:01,235"),
        (59.9996, "00:01:00,000"),
        (3599.9999, "01:00:00,000"),
        (3 * 3600 + 25 * 60 + 7.5, "03:25:07,500"),
        (12 * 3600 + 0.001, "12:00:00,001"),
        (123 * 3600, "123:00:00,000"),
        (-0.4, "00:00:00,000"),
        (-3600.0, "00:00:00,000"),
    ],
)
def test_srt_and_vtt_times(seconds: float, srt: str) -> None:
    """Cue times read as H:MM:SS,mmm, round to the nearest millisecond and never go negative."""
    assert srt_time(seconds) == srt
    assert vtt_time(seconds) == srt.replace(",", ".")


@pytest.mark.parametrize(
    ("seconds", "ass"),
    [
        (0.0, "0:00:00.00"),
        (1.234, "0:00:01.23"),
        (1.236, "0:00:01.24"),
        (59.996, "0:01:00.00"),
        (3599.999, "1:00:00.00"),
        (10 * 3600 + 61.5, "10:01:01.50"),
        (-2.0, "0:00:00.00"),
    ],
)
def test_ass_times(seconds: float, ass: str) -> None:
    """Burned-in subtitles use centisecond H:MM:SS.cc times, rounded and clamped at zero."""
    assert ass_time(seconds) == ass


# -- cues --------------------------------------------------------------------------------------


def test_a_short_sentence_is_one_cue_on_one_line() -> None:
    """A short sentence is shown once, on one line, while it is spoken."""
    segment = spoken("Today we talk about the weather.", start=1.0)
    [cue] = cues_of(segment)
    assert cue.lines == ("Today we talk about the weather.",)
    assert cue.start == 1.0
    assert cue.end == segment.words[-1].end


def test_a_pause_longer_than_0_8_s_starts_a_new_cue() -> None:
    """Speech after a pause of more than 0.8 s gets its own cue; a shorter pause does not."""
    words = (
        Word("Hello", 0.0, 0.4),
        Word("there", 0.5, 0.9),
        Word("my", 1.6, 1.8),  # 0.7 s pause: same cue
        Word("friend", 2.7, 3.1),  # 0.9 s pause: new cue
        Word("again", 3.2, 3.5),
    )
    cues = cues_of(Segment(0.0, 3.5, "Hello there my friend again", words))
    assert [c.text for c in cues] == ["Hello there my", "friend again"]
    assert cues[1].start == 2.7
    assert_no_overlap(cues)


def test_a_sentence_end_starts_a_new_cue() -> None:
    """A new sentence starts a new cue once the current one holds more than half a line."""
    segment = spoken("Today we talk about the weather in town. Please open the window.")
    cues = cues_of(segment)
    assert [c.text for c in cues] == [
        "Today we talk about the weather in town.",
        "Please open the window.",
    ]
    assert_no_overlap(cues)


def test_a_short_exclamation_stays_with_the_next_sentence() -> None:
    """A very short sentence ("Hi.") is not flashed alone but shown with what follows."""
    [cue] = cues_of(spoken("Hi. How are you?"))
    assert cue.text == "Hi. How are you?"


def test_long_speech_is_cut_into_cues_of_at_most_two_lines() -> None:
    """A long run of speech becomes several cues, each at most two lines of at most 84 chars."""
    text = " ".join(["so we walked down to the river and sat there talking about the old days"] * 4)
    cues = cues_of(spoken(text, word_s=0.15, gap_s=0.02))
    assert len(cues) >= 3
    assert " ".join(c.text for c in cues) == text  # every word shown once, in order
    for cue in cues:
        assert 1 <= len(cue.lines) <= LAYOUT.max_lines, cue
        assert len(cue.text) <= LAYOUT.max_chars * LAYOUT.max_lines, cue
        if len(cue.text) > LAYOUT.max_chars:
            assert len(cue.lines) == 2, cue
    assert_no_overlap(cues)


def test_no_line_is_longer_than_max_chars() -> None:
    """With ordinary words no subtitle line runs past 42 characters."""
    # 84 characters that split at best into lines of 39 and 44 characters.
    text = "yesterday beautiful afternoon wonderful character something important community here"
    cues = cues_of(spoken(text, word_s=0.2, gap_s=0.02))
    assert all(len(line) <= LAYOUT.max_chars for c in cues for line in c.lines), cues


def test_a_cue_stays_on_screen_at_most_seven_seconds() -> None:
    """Slow continuous speech is cut so that no cue stays up for more than 7 s."""
    words = tuple(Word("ok", i * 0.5, i * 0.5 + 0.5) for i in range(40))  # 20 s, no pauses
    cues = cues_of(Segment(0.0, 20.0, " ".join(w.text for w in words), words))
    assert len(cues) >= 3
    assert all(c.end - c.start <= LAYOUT.max_duration_s for c in cues), cues
    assert sum(len(c.text.split()) for c in cues) == 40
    assert_no_overlap(cues)


def test_a_quick_word_stays_long_enough_to_read() -> None:
    """A word spoken in 0.1 s stays on screen for the minimum 0.8 s."""
    [cue] = cues_of(Segment(5.0, 5.1, "Yes.", (Word("Yes.", 5.0, 5.1),)))
    assert cue.start == 5.0
    assert cue.end == pytest.approx(5.0 + LAYOUT.min_duration_s)


def test_the_minimum_duration_never_runs_into_the_next_cue() -> None:
    """A short cue is lengthened only up to the start of the next, so two never overlap."""
    first = Segment(1.0, 1.2, "Okay.", (Word("Okay.", 1.0, 1.2),))
    second = spoken("Now we begin the lesson.", start=1.5)
    cues = cues_of(first, second)
    assert [c.text for c in cues] == ["Okay.", "Now we begin the lesson."]
    assert cues[0].end == 1.5
    assert_no_overlap(cues)


def test_cues_from_overlapping_segments_do_not_overlap() -> None:
    """When a segment starts before the previous one ended, the earlier cue ends first."""
    first = spoken("The first thing we need is a plan.", start=0.0)
    second = spoken("Then we need people.", start=first.end - 0.4)
    cues = cues_of(first, second)
    assert len(cues) == 2
    assert_no_overlap(cues)


def test_cues_that_start_together_do_not_overlap() -> None:
    """Words Whisper stamps at one instant still give subtitles shown one after the other."""
    words = tuple(Word(f"word{i:02d}", 10.0, 10.0) for i in range(20))
    cues = cues_of(Segment(10.0, 10.0, " ".join(w.text for w in words), words))
    assert len(cues) == 2
    assert_no_overlap(cues)


def test_segments_without_word_timings_are_spread_over_the_segment() -> None:
    """A segment with text but no word timings is still subtitled over its own time span."""
    [cue] = cues_of(Segment(2.0, 6.0, "one two three four"))
    assert (cue.start, cue.end, cue.text) == (2.0, 6.0, "one two three four")

    long_text = " ".join(f"sentence{i}" for i in range(30))  # ~300 characters over 30 s
    cues = cues_of(Segment(0.0, 30.0, long_text))
    assert len(cues) >= 4
    assert cues[0].start == 0.0
    assert cues[-1].end == pytest.approx(30.0)
    assert " ".join(c.text for c in cues) == long_text
    assert_no_overlap(cues)


def test_empty_segments_make_no_cues() -> None:
    """Silence (a segment with no text) shows no subtitle at all."""
    assert cues_of(Segment(0.0, 3.0, "")) == []
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"


# -- wrap --------------------------------------------------------------------------------------


def test_wrap_leaves_short_text_on_one_line() -> None:
    """Text that fits on a line is not broken."""
    assert wrap("Thank you for watching.") == ("Thank you for watching.",)
    assert wrap("x" * 42) == ("x" * 42,)


@pytest.mark.parametrize(
    "text",
    [
        "Please open the window and let the fresh air in.",
        "Today we talk about the weather in the city and the mountains.",
        "a bb ccc dddd eeeee ffffff ggggggg hhhhhhhh iiiiiiiii",
    ],
)
def test_wrap_balances_two_lines(text: str) -> None:
    """Two-line subtitles are split where the two lines come out closest in length."""
    head, tail = wrap(text)
    assert f"{head} {tail}" == text
    words = text.split()
    best = min(
        max(len(" ".join(words[:i])), len(" ".join(words[i:]))) for i in range(1, len(words))
    )
    assert max(len(head), len(tail)) == best


def test_wrap_keeps_one_long_word_whole() -> None:
    """A single word longer than a line is never cut in the middle."""
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis-and-more"
    assert wrap(word) == (word,)
    assert wrap(f"{word} ok", max_lines=1) == (f"{word} ok",)


THREE_LINES = "one two three four five six seven eight nine ten eleven twelve thirteen"


def test_wrap_into_three_lines() -> None:
    """With three lines allowed, a long text is split into three lines of words in order."""
    lines = wrap(THREE_LINES, max_chars=25, max_lines=3)
    assert len(lines) == 3
    assert " ".join(lines) == THREE_LINES
    assert wrap(THREE_LINES, max_chars=40, max_lines=3) == (
        "one two three four five six seven",
        "eight nine ten eleven twelve thirteen",
    )


def test_wrap_into_three_lines_respects_max_chars() -> None:
    """Three-line subtitles keep every line within the line length when the words allow it."""
    lines = wrap(THREE_LINES, max_chars=25, max_lines=3)
    assert all(len(line) <= 25 for line in lines), lines


# -- renderings --------------------------------------------------------------------------------


def test_srt_numbers_cues_and_parses_back() -> None:
    """An SRT file numbers its cues from 1 and players read back the same times and text."""
    cues = [Cue(1.0, 2.5, ("Hello there",)), Cue(3.0, 4.25, ("Second line", "and third"))]
    text = to_srt(cues)
    assert text.startswith("1\n00:00:01,000 --> 00:00:02,500\nHello there\n\n2\n")
    assert text.endswith("and third\n")
    assert parse_cues(text) == [(1.0, 2.5, "Hello there"), (3.0, 4.25, "Second line and third")]


def test_srt_text_never_contains_an_arrow() -> None:
    """Spoken "-->" cannot be mistaken by a player for a timing line."""
    text = to_srt([Cue(0.0, 1.0, ("go --> there",))])
    assert text.count("-->") == 1
    assert "go -> there" in text


def test_vtt_escapes_markup_characters() -> None:
    """Words with < > & show literally in a browser instead of being read as markup."""
    text = to_vtt([Cue(0.0, 1.5, ("<b>Tom & Jerry</b>", "a --> b &amp;"))])
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    body = text.splitlines()[3:]
    assert body == ["&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;", "a --&gt; b &amp;amp;"]


def test_ass_escapes_override_characters() -> None:
    """Braces and backslashes in speech are drawn, not taken as ASS styling commands."""
    cue = Cue(0.5, 2.0, (r"{\b1}bold\N", "C:\\path {x}"))
    dialogue = [line for line in to_ass([cue], 640, 360).splitlines() if line.startswith("Dia")]
    assert len(dialogue) == 1
    text = dialogue[0].split(",", 9)[9]
    assert "{" not in text and "}" not in text
    assert text.count("\\") == 1  # only the line break between the two lines
    assert text.split("\\N") == ["\uff5b\uff3cb1\uff5dbold\uff3cN", "C:\uff3cpath \uff5bx\uff5d"]
    assert dialogue[0].startswith("Dialogue: 0,0:00:00.50,0:00:02.00,Default,,0,0,0,,")


@pytest.mark.parametrize(
    ("width", "height", "font_size", "margin_v"),
    [(1920, 1080, 59, 54), (640, 360, 20, 18), (1080, 1920, 106, 96), (160, 120, 12, 8)],
)
def test_ass_is_sized_for_the_picture(
    width: int, height: int, font_size: int, margin_v: int
) -> None:
    """Burned-in text scales with the picture height, with a floor for tiny videos."""
    ass = to_ass([Cue(0.0, 1.0, ("Hi",))], width, height)
    assert f"PlayResX: {width}\nPlayResY: {height}\n" in ass
    fmt = next(line for line in ass.splitlines() if line.startswith("Format: Name"))
    style = next(line for line in ass.splitlines() if line.startswith("Style: "))
    # strict: the style gives a value for every field the format names
    fields = dict(zip(fmt[8:].split(", "), style[7:].split(","), strict=True))
    assert fields["Fontsize"] == str(font_size)
    assert fields["MarginV"] == str(margin_v)
    assert fields["Alignment"] == "2"  # bottom centre
    assert int(fields["Outline"]) >= 1


# -- transcript JSON ---------------------------------------------------------------------------


def test_transcript_json_round_trip() -> None:
    """A stored transcript reads back exactly: language, duration, segments, words, non-ASCII."""
    transcript = Transcript(
        language="fr",
        duration=12.5,
        segments=(
            Segment(
                0.0, 2.0, "Déjà vu, ça va?", (Word("Déjà", 0.0, 0.5, 0.9), Word("vu,", 0.6, 1.0))
            ),
            Segment(2.5, 4.125, "No word timings here."),
        ),
        model="tiny.en",
    )
    raw = transcript.to_json()
    assert "Déjà".encode() in raw
    assert Transcript.from_json(raw) == transcript
    doc = json.loads(raw)
    assert doc["version"] == 1
    assert doc["text"] == "Déjà vu, ça va? No word timings here."
    first_word = {"word": "Déjà", "start": 0.0, "end": 0.5, "probability": 0.9}
    assert doc["segments"][0]["words"][0] == first_word


def test_transcript_json_rounds_times_to_milliseconds() -> None:
    """Stored times are kept to the millisecond, which is all a subtitle needs."""
    segment = Segment(0.12345, 1.98765, "hi", (Word("hi", 0.12345, 1.98765, 0.87654),))
    loaded = Transcript.from_json(Transcript("en", 2.00049, (segment,)).to_json())
    assert loaded.duration == 2.0
    [word] = loaded.segments[0].words
    assert (word.start, word.end, word.probability) == (0.123, 1.988, 0.877)


def test_transcript_from_whisper_shaped_json() -> None:
    """Whisper's leading spaces are trimmed, blank words dropped, and missing words tolerated."""
    raw = json.dumps(
        {
            "language": "en",
            "duration": 3,
            "segments": [
                {"start": 0, "end": 1, "text": " Hello world ", "words": [
                    {"word": " Hello", "start": 0, "end": 0.4},
                    {"word": "  ", "start": 0.4, "end": 0.5},
                    {"word": " world", "start": 0.5, "end": 1},
                ]},
                {"start": 1, "end": 2, "text": "no words", "words": None},
            ],
        }
    )  # fmt: skip
    transcript = Transcript.from_json(raw)
    first, second = transcript.segments
    assert first.text == "Hello world"
    assert [w.text for w in first.words] == ["Hello", "world"]
    assert first.words[0].probability == 1.0
    assert second.words == ()
    assert transcript.model == ""
    assert [c.text for c in build_cues(transcript)] == ["Hello world", "no words"]


def test_transcript_meta_survives_a_round_trip() -> None:
    """Extra transcript details written to JSON are there again when it is read back."""
    transcript = Transcript("en", 1.0, (), model="tiny.en", meta={"source_range": [0.0, 1.0]})
    assert Transcript.from_json(transcript.to_json()) == transcript
