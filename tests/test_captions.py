"""Captions for composed videos: SRT/WebVTT/transcript in, styled (karaoke) ASS out."""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.media import to_ass
from vidstream.compose.caption_style import CaptionStyle
from vidstream.core.errors import PermanentError
from vidstream.media.captions import (
    MAX_CUES,
    STYLES,
    Style,
    Timed,
    parse_captions,
    parse_srt,
    parse_vtt,
    shift,
    spread_words,
    timed,
    to_ass_styled,
    word_cues,
)
from vidstream.media.subtitles import Cue, Layout, ass_time, build_cues
from vidstream.media.transcript import Segment, Transcript, Word

FFMPEG = "/usr/bin/ffmpeg"


def spoken(text: str, start: float = 0.0, word_s: float = 0.3, gap_s: float = 0.05) -> Segment:
    """A segment whose words follow each other evenly from `start`."""
    words, t = [], start
    for token in text.split():
        words.append(Word(token, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s
    return Segment(words[0].start, words[-1].end, text, tuple(words))


TRANSCRIPT = Transcript(
    "en",
    30.0,
    (
        spoken("Today we talk about the weather in town. Please open the window.", 0.5),
        Segment(9.0, 9.1, "Okay.", (Word("Okay.", 9.0, 9.1),)),
        spoken("Then we need people, many people, to help us carry the boxes upstairs.", 9.3),
        Segment(20.0, 24.0, "no word timings here"),
        # Words Whisper stamped at one instant: the second cue starts after the words do.
        Segment(26.0, 26.0, "", tuple(Word(f"word{i:02d}", 26.0, 26.0) for i in range(20))),
    ),
)


def triples(cues: list[Cue]) -> list[tuple[float, float, tuple[str, ...]]]:
    return [(c.start, c.end, c.lines) for c in cues]


def invalid(call: Callable[[], object]) -> PermanentError:
    """The error a parse raises; it must be `invalid_subtitles` with a readable message."""
    with pytest.raises(PermanentError) as info:
        call()
    assert info.value.code == "invalid_subtitles"
    assert len(info.value.message) > 20
    return info.value


# -- SRT ---------------------------------------------------------------------------------------


def test_srt_with_bom_crlf_and_tags() -> None:
    """A Windows SRT (BOM, CRLF) with italics, colours and {\\an8} reads as plain text lines."""
    text = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> <b>there</b>\r\n"
        '<font color="#ff0">second</font> {\\an8}line\r\n\r\n'
        "2\r\n00:00:03,000 --> 00:00:04,000 X1:10 X2:20 Y1:5 Y2:9\r\nTom &amp; Jerry&nbsp;!\r\n"
    )
    assert triples(parse_srt(text)) == [
        (1.0, 2.5, ("Hello there", "second line")),
        (3.0, 4.0, ("Tom & Jerry\u00a0!",)),
    ]


def test_srt_without_indexes_or_blank_lines() -> None:
    """Cues are found by their timing lines: indexes and blank lines are optional."""
    text = (
        "00:00:01,000 --> 00:00:02,000\nfirst\n"
        "2\n00:00:02,000 --> 00:00:03,000\nsecond\n\n\n\n"
        "00:00:03.5 --> 00:00:04,25\n42\n\n"  # a cue whose text is a number; short fractions
        "4\n00:00:05,000 --> 00:00:06,000\nlast\n"
    )
    assert triples(parse_srt(text)) == [
        (1.0, 2.0, ("first",)),
        (2.0, 3.0, ("second",)),
        (3.5, 4.25, ("42",)),
        (5.0, 6.0, ("last",)),
    ]


def test_srt_drops_empty_and_backwards_cues_and_sorts() -> None:
    """Cues without text or with an end not after the start are left out; the rest sorted."""
    text = (
        "1\n00:00:05,000 --> 00:00:06,000\nlater\n\n"
        "2\n00:00:02,000 --> 00:00:02,000\nzero length\n\n"
        "3\n00:00:03,000 --> 00:00:01,000\nbackwards\n\n"
        "4\n00:00:07,000 --> 00:00:08,000\n<i></i>\n\n"
        "5\n01:00:00,000 --> 01:00:01,500\nan hour in\n\n"
        "6\n00:00:01,000 --> 00:00:02,000\nearlier\n"
    )
    assert triples(parse_srt(text)) == [
        (1.0, 2.0, ("earlier",)),
        (5.0, 6.0, ("later",)),
        (3600.0, 3601.5, ("an hour in",)),
    ]


# -- WebVTT ------------------------------------------------------------------------------------

VTT = """\ufeffWEBVTT - a title
Kind: captions
Language: en

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

NOTE a comment
over two lines

intro
00:01.000 --> 00:02.500 align:start position:10% line:0
<v Bob>Hello</v> <c.loud>world</c>

NOTE another

00:00:03.000 --> 00:00:05.000
<00:00:03.000>one <00:00:04.000>two
a &lt;b&gt; &amp; c

3
1:00:00.000 --> 1:00:01.000
late
"""


def test_vtt_skips_blocks_and_reads_identifiers_settings_and_entities() -> None:
    """Header, STYLE, REGION and NOTE blocks are skipped; identifiers and settings ignored."""
    assert triples(parse_vtt(VTT)) == [
        (1.0, 2.5, ("Hello world",)),
        (3.0, 5.0, ("one two", "a <b> & c")),
        (3600.0, 3601.0, ("late",)),
    ]
    assert triples(parse_vtt(VTT.replace("\n", "\r\n"))) == triples(parse_vtt(VTT))


# -- invalid input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n  \n",
        b"Hello, this is just a letter.\nNo timings in here.\n",
        b"WEBVTT\n\nNOTE nothing else\n",
        b"1\n00:00:02,000 --> 00:00:01,000\nbackwards only\n",
        b"\x00\x01\x02\x03binary\x00",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # a JPEG
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "caf\u00e9 00:00:01,000 --> 00:00:02,000".encode("latin-1"),
        b'{"language": "en"}',
        b"[1, 2, 3]",
        b'{"segments": [{"start": 0}]}',
        b'{"segments": [{"start": "soon", "end": 1, "text": "x"}]}',
        b'{"segments": [7]}',
        b'{"segments": ',
    ],
)
def test_invalid_captions_are_refused(data: bytes) -> None:
    """Anything that is not a subtitle file or a transcript fails with invalid_subtitles."""
    invalid(lambda: parse_captions(data))


def test_binary_text_is_refused_by_both_parsers() -> None:
    """Text with NUL characters is binary data, not subtitles."""
    assert "binary" in invalid(lambda: parse_srt("1\n00:00:01,000 --> 00:00:02,000\na\x00")).message
    invalid(lambda: parse_vtt("WEBVTT\n\n00:01.000 --> 00:02.000\n\x00"))


# -- detection ---------------------------------------------------------------------------------


def test_parse_captions_tells_the_formats_apart() -> None:
    """A transcript JSON, a WebVTT file and an SRT file are recognised by their content."""
    assert parse_captions(TRANSCRIPT.to_json()) == TRANSCRIPT
    assert parse_captions(b"  \n" + TRANSCRIPT.to_json()) == TRANSCRIPT
    assert parse_captions(VTT.encode()) == parse_vtt(VTT)
    srt = "1\n00:00:01,000 --> 00:00:02,000\nDéjà vu\n"
    cues = parse_captions(srt.encode())
    assert isinstance(cues, list) and triples(cues) == [(1.0, 2.0, ("Déjà vu",))]
    assert parse_captions(b"\xef\xbb\xbf" + srt.encode()) == parse_srt(srt)
    assert parse_captions(srt.encode("utf-16")) == parse_srt(srt)  # with a BOM


# -- words -------------------------------------------------------------------------------------


def test_word_cues_are_build_cues_with_their_words() -> None:
    """Karaoke shows exactly the cues plain subtitles show, each with its words inside it."""
    for layout in (Layout(), Layout(max_chars=20, max_lines=1)):
        pairs = word_cues(TRANSCRIPT, layout)
        assert [cue for cue, _ in pairs] == build_cues(TRANSCRIPT, layout)
        for cue, words in pairs:
            assert [w.text for w in words] == cue.text.split()
            assert all(cue.start <= w.start <= w.end <= cue.end for w in words), (cue, words)
    assert word_cues(Transcript("en", 1.0)) == []


def test_spread_words_in_proportion_to_length() -> None:
    """Without word timings, longer words get proportionally more of the cue's time."""
    cue = Cue(10.0, 12.0, ("a bbb", "cccc"))
    words = spread_words(cue)
    assert [w.text for w in words] == ["a", "bbb", "cccc"]
    assert [w.end - w.start for w in words] == pytest.approx([0.25, 0.75, 1.0])
    assert words[0].start == 10.0 and words[-1].end == 12.0
    assert all(a.end == b.start for a, b in itertools.pairwise(words))
    assert spread_words(Cue(0.0, 1.0, ("",))) == ()


def test_timed_pairs_every_kind_of_captions_with_words() -> None:
    """Transcripts keep spoken word timings; SRT/VTT cues get spread ones."""
    assert timed(TRANSCRIPT) == word_cues(TRANSCRIPT)
    cues = parse_vtt(VTT)
    assert timed(cues) == [(c, spread_words(c)) for c in cues]


# -- shift -------------------------------------------------------------------------------------

ITEMS: list[Timed] = [
    (Cue(0.0, 2.0, ("before",)), (Word("before", 0.0, 2.0),)),
    (Cue(3.0, 6.0, ("cut in two",)), (Word("cut", 3.0, 4.0), Word("in", 4.0, 5.0),
                                     Word("two", 5.0, 6.0))),
    (Cue(6.0, 7.0, ("inside",)), (Word("inside", 6.0, 7.0),)),
    (Cue(9.0, 11.0, ("at the end",)), (Word("at", 9.0, 10.0), Word("the", 10.0, 10.5),
                                      Word("end", 10.5, 11.0))),
    (Cue(12.0, 13.0, ("after",)), (Word("after", 12.0, 13.0),)),
]  # fmt: skip


def spans(items: list[Timed]) -> list[tuple[float, float, list[tuple[float, float]]]]:
    return [
        (round(c.start, 6), round(c.end, 6), [(round(w.start, 6), round(w.end, 6)) for w in ws])
        for c, ws in items
    ]


def test_shift_keeps_the_window_and_moves_it_to_the_timeline() -> None:
    """Only what falls in [start, end) of the source shows, clipped, at the clip's place."""
    placed = shift(ITEMS, offset=100.0, start=4.5, end=10.0)
    assert [c.text for c, _ in placed] == ["cut in two", "inside", "at the end"]
    assert spans(placed) == [
        (100.0, 101.5, [(100.0, 100.0), (100.0, 100.5), (100.5, 101.5)]),
        (101.5, 102.5, [(101.5, 102.5)]),
        (104.5, 105.5, [(104.5, 105.5), (105.5, 105.5), (105.5, 105.5)]),
    ]
    # Half-open: a cue ending where the window starts, or starting where it ends, is left out.
    assert [c.text for c, _ in shift(ITEMS, 0.0, start=2.0, end=6.0)] == ["cut in two"]
    assert shift(ITEMS, 5.0) == [
        (
            Cue(c.start + 5, c.end + 5, c.lines),
            tuple(Word(w.text, w.start + 5, w.end + 5) for w in ws),
        )
        for c, ws in ITEMS
    ]


def test_shift_with_speed() -> None:
    """At twice the speed, source time t shows at offset + (t - start) / 2."""
    placed = shift(ITEMS, offset=1.0, start=3.0, end=7.0, speed=2.0)
    assert spans(placed) == [
        (1.0, 2.5, [(1.0, 1.5), (1.5, 2.0), (2.0, 2.5)]),
        (2.5, 3.0, [(2.5, 3.0)]),
    ]
    slow = shift(ITEMS[:1], offset=0.0, speed=0.5)
    assert spans(slow) == [(0.0, 4.0, [(0.0, 4.0)])]
    with pytest.raises(ValueError, match="speed"):
        shift(ITEMS, 0.0, speed=0.0)


# -- ASS ---------------------------------------------------------------------------------------


def ass_parts(ass: str) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
    """Script info, styles and events of an ASS document, each as field -> value."""
    sections = re.split(r"^\[(.+)\]\n", ass, flags=re.M)
    assert sections[0] == ""
    parts = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert list(parts) == ["Script Info", "V4+ Styles", "Events"]
    info = dict(line.split(": ", 1) for line in parts["Script Info"].splitlines() if line)

    def rows(body: str, kind: str) -> list[dict[str, str]]:
        lines = [line for line in body.splitlines() if line]
        assert lines[0].startswith("Format: ")
        names = lines[0][8:].split(", ")
        prefix = f"{kind}: "
        assert all(line.startswith(prefix) for line in lines[1:]), lines
        # strict: every row has a value for each field the format names
        return [
            dict(zip(names, line[len(prefix) :].split(",", len(names) - 1), strict=True))
            for line in lines[1:]
        ]

    return info, rows(parts["V4+ Styles"], "Style"), rows(parts["Events"], "Dialogue")


PAIRS = word_cues(TRANSCRIPT)


@pytest.mark.parametrize("karaoke", [False, True])
@pytest.mark.parametrize("name", list(STYLES))
def test_each_preset_renders_a_valid_ass_document(name: str, karaoke: bool) -> None:
    """Every preset gives a complete document: picture size, one style, a line per cue."""
    ass = to_ass_styled(PAIRS, 1080, 1920, name, karaoke=karaoke)
    info, styles, events = ass_parts(ass)
    assert (info["PlayResX"], info["PlayResY"]) == ("1080", "1920")
    [style] = styles
    assert style["Name"] == "Default"
    assert style["Bold"] == ("-1" if STYLES[name].bold else "0")
    assert style["Alignment"] == str(STYLES[name].alignment)
    assert int(style["Fontsize"]) == round(1920 * STYLES[name].size)
    if karaoke:  # libass draws text \k has reached in PrimaryColour, the rest in SecondaryColour
        assert (style["PrimaryColour"], style["SecondaryColour"]) == ("&H0000FFFF", "&H00FFFFFF")
    else:
        assert style["PrimaryColour"] == style["SecondaryColour"] == "&H00FFFFFF"
    assert len(events) == len(PAIRS)
    for event, (cue, _) in zip(events, PAIRS, strict=True):
        assert (event["Start"], event["End"], event["Style"]) == (
            ass_time(cue.start), ass_time(cue.end), "Default"
        )  # fmt: skip
        assert ("\\kf" in event["Text"]) == karaoke


def test_presets_look_as_named() -> None:
    """Boxed draws a box, bold is bold with a thick outline, top sits at the top."""
    _, [boxed], _ = ass_parts(to_ass_styled(PAIRS, 1280, 720, "boxed"))
    assert boxed["BorderStyle"] in ("3", "4") and boxed["BackColour"] != "&HFF000000"
    _, [bold], _ = ass_parts(to_ass_styled(PAIRS, 1280, 720, "bold"))
    _, [plain], _ = ass_parts(to_ass_styled(PAIRS, 1280, 720, "default"))
    assert bold["Bold"] == "-1" and int(bold["Outline"]) > 2 * int(plain["Outline"])
    assert int(bold["Fontsize"]) > int(plain["Fontsize"])
    _, [top], _ = ass_parts(to_ass_styled(PAIRS, 1280, 720, "top"))
    assert top["Alignment"] == "8"
    _, [own], _ = ass_parts(
        to_ass_styled(PAIRS, 1280, 720, Style(alignment=5), font="Liberation Sans")
    )
    assert (own["Alignment"], own["Fontname"]) == ("5", "Liberation Sans")


def test_an_unknown_style_is_refused() -> None:
    """A style name that is no preset is a user error that names the choices."""
    with pytest.raises(PermanentError, match="boxed") as info:
        to_ass_styled(PAIRS, 640, 360, "fancy")
    assert info.value.code == "invalid_request"


def karaoke_texts(pairs: list[Timed]) -> list[str]:
    _, _, events = ass_parts(to_ass_styled(pairs, 640, 360, karaoke=True))
    return [e["Text"] for e in events]


@pytest.mark.parametrize(
    "pairs",
    [
        PAIRS,
        timed(parse_vtt(VTT)),
        shift(PAIRS, offset=3.217, start=1.33, end=12.71, speed=1.5),
    ],
    ids=["transcript", "vtt", "shifted"],
)
def test_karaoke_fills_add_up_to_the_cue(pairs: list[Timed]) -> None:
    """Each word gets a \\kf fill; together they last as long as the cue is shown."""
    for text, (cue, words) in zip(karaoke_texts(pairs), pairs, strict=True):
        fills = [int(x) for x in re.findall(r"\{\\kf(\d+)\}", text)]
        assert len(fills) == len(words) == len(cue.text.split())
        assert all(f >= 0 for f in fills)
        assert abs(sum(fills) - (cue.end - cue.start) * 100) <= len(fills), (text, cue)
        assert re.sub(r"\{\\kf\d+\}", "", text).split("\\N") == list(cue.lines)


def test_karaoke_follows_the_spoken_words_and_escapes_text() -> None:
    """A word's fill lasts until the next word starts; braces and backslashes stay text."""
    words = (Word("{a}", 1.0, 1.2), Word("b\\c", 1.5, 1.7), Word("d", 2.0, 2.1))
    [text] = karaoke_texts([(Cue(1.0, 3.0, ("{a} b\\c", "d")), words)])
    assert text == "{\\kf50}\uff5ba\uff5d {\\kf50}b\uff3cc\\N{\\kf100}d"
    # Words that do not match the shown text are replaced by spread ones.
    [text] = karaoke_texts([(Cue(0.0, 1.0, ("ab cd",)), ())])
    assert text == "{\\kf50}ab {\\kf50}cd"


def test_default_style_is_byte_identical_to_to_ass() -> None:
    """The default preset without karaoke is exactly the burn-in subtitles as they always were,
    whatever words the cues carry."""
    for width, height in ((1920, 1080), (640, 360), (1080, 1920), (160, 120), (7, 5)):
        for font in ("DejaVu Sans", "Liberation Serif"):
            expected = to_ass(build_cues(TRANSCRIPT), width, height, font)
            assert to_ass_styled(word_cues(TRANSCRIPT), width, height, font=font) == expected
            assert to_ass_styled(PAIRS, width, height, STYLES["default"], font=font) == expected
            caption_style = CaptionStyle().look()
            assert to_ass_styled(PAIRS, width, height, caption_style, font=font) == expected
    # What to_ass wrote before the presets existed.
    assert to_ass([Cue(0.5, 2.0, ("Hello", "world"))], 640, 360) == (
        "[Script Info]\nScriptType: v4.00+\nWrapStyle: 0\nScaledBorderAndShadow: yes\n"
        "PlayResX: 640\nPlayResY: 360\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize, "
        "PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, "
        "StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
        "MarginL, MarginR, MarginV, Encoding\nStyle: Default,DejaVu Sans,20,&H00FFFFFF,"
        "&H00FFFFFF,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,1,0,2,32,32,18,1\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:00.50,0:00:02.00,Default,,0,0,0,,Hello\\Nworld\n"
    )


@pytest.mark.skipif(not Path(FFMPEG).exists(), reason="needs /usr/bin/ffmpeg")
@pytest.mark.parametrize("name", list(STYLES))
def test_ffmpeg_burns_each_preset(name: str, tmp_path: Path) -> None:
    """libass in FFmpeg accepts every preset with karaoke on."""
    pairs = [(Cue(0.0, 0.9, ("Hello {there}", "C:\\path & <b>")), ())]
    (tmp_path / "subs.ass").write_text(to_ass_styled(pairs, 320, 240, name, karaoke=True))
    done = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=320x240:d=1",
         "-vf", "ass=subs.ass", "-f", "null", "-"],
        cwd=tmp_path, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def test_a_file_of_too_many_cues_is_refused() -> None:
    """An 8 MiB SRT of 200,000 one-letter cues took 3.5 s of a gateway's CPU to parse: past
    MAX_CUES it is `invalid_subtitles` at once."""
    srt = "".join(f"{i}\n00:00:01,000 --> 00:00:02,000\nx\n\n" for i in range(MAX_CUES + 1))
    assert "cues" in invalid(lambda: parse_srt(srt)).message
