"""What libass is given: the text of an uploaded SRT, WebVTT or transcript only ever as text on
screen, drawn with the declared font files, and no style beyond the bounds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.media import FFMPEG as PINNED_FFMPEG
from tests.media import to_ass
from tests.test_captions import PAIRS, ass_parts
from vidstream.media import ass, fonts
from vidstream.media.captions import Style, parse_captions, shift, timed, to_ass_styled
from vidstream.media.ffmpeg import Encoder, burn_subtitles
from vidstream.media.info import MediaInfo
from vidstream.media.subtitles import FONT, Cue

# -- what libass is given: the text of an upload as text, the declared font files -------------

# A cue whose entity-encoded line breaks would add a style of the tenant's (a huge white font)
# and a line of text in it.
SMUGGLED = (
    b"1\n00:00:00,000 --> 00:00:05,000\nhi&#10;[V4+ Styles]&#10;Style: Default,DejaVu Sans,100,"
    b"&H00FFFFFF,&H00FFFFFF,&H00FFFFFF,&H00FFFFFF,0,0,0,0,100,100,0,0,1,10,0,5,0,0,0,1&#10;"
    b"[Events]&#10;Dialogue: 0,0:00:00.00,0:00:05.00,Default,,0,0,0,,WWW\n"
)


def burned(tmp_path: Path, ass: str, root: Path | None = None) -> np.ndarray:
    """The frame at 1 s of a black 320x240 video with `ass` burned in as a subtitle job burns
    it (the -vf of `ffmpeg.burn_subtitles`, its fonts linked from `root`), in grey."""
    (tmp_path / "subs.ass").write_text(ass)
    fonts.link(tmp_path, [(FONT, False), (FONT, True)], root)
    info = MediaInfo(5.0, "mov,mp4,m4a,3gp,3g2,mj2", 320, 240, 0, "h264", None, 0, 0)
    argv = burn_subtitles("ffmpeg", "in", "subs.ass", "out.mp4", info, Encoder())
    vf = argv[argv.index("-vf") + 1]
    done = subprocess.run(
        [PINNED_FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         "color=c=black:s=320x240:d=2", "-ss", "1", "-vf", vf, "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        cwd=tmp_path, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    return np.frombuffer(done.stdout, np.uint8).reshape(240, 320)


def test_an_upload_cannot_restyle_the_burned_captions(tmp_path: Path) -> None:
    """Lines smuggled into a cue are drawn as small text: the picture stays mostly dark."""
    pairs = shift(timed(parse_captions(SMUGGLED)), 0.0, 0.0, 5.0)
    frame = burned(tmp_path, to_ass_styled(pairs, 320, 240))
    lit = float((frame > 128).mean())
    assert 0 < lit < 0.05, lit  # the smuggled style would light most of it


def _renamed(source: Path, family: str, dest: Path) -> None:
    from fontTools.ttLib import TTFont

    font = TTFont(str(source))
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = family
        elif record.nameID == 6:
            record.string = family.replace(" ", "")
    dest.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(dest))


def test_burned_captions_draw_with_the_declared_font_file(tmp_path: Path) -> None:
    """libass draws with the file vidstream declares for the family, not fontconfig's pick."""
    # A machine whose declared DejaVu Sans file is (secretly) a monospaced font.
    root = tmp_path / "root"
    mono = fonts.font_file("Liberation Mono")
    _renamed(mono, FONT, root / fonts.declared(FONT))
    _renamed(mono, FONT, root / fonts.declared(FONT, bold=True))
    ass = to_ass([Cue(0.0, 5.0, ("iiiiiiii",))], 320, 240)

    def text_width(work: Path, root: Path | None) -> int:
        work.mkdir()
        columns = np.flatnonzero((burned(work, ass, root) > 128).any(axis=0))
        return int(columns[-1] - columns[0])

    # Eight i's are far wider in a monospaced font.
    assert text_width(tmp_path / "mono", root) > 1.5 * text_width(tmp_path / "real", None)


def test_no_style_can_ask_libass_for_more_than_the_bounds() -> None:
    """A look asking for a font half the picture high, outlines and shadows as large, is drawn
    at the bounds: 20% of the height, outline a quarter and shadow a half of the font size, and
    raised no higher than keeps the cue's lines in the picture."""
    greedy = Style(size=0.5, outline=5.0, shadow=5.0, margin_v=3.0)
    _, [style], _ = ass_parts(to_ass_styled(PAIRS, 640, 360, greedy))
    assert (style["Fontsize"], style["Outline"], style["Shadow"]) == ("72", "18", "36")
    assert (style["ScaleX"], style["ScaleY"], style["MarginV"]) == ("100", "100", "180")
    with pytest.raises(ValueError, match="font"):
        to_ass_styled(PAIRS, 640, 360, Style(font="Arial,999"))


def test_the_writer_checks_the_document_it_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were an event's text ever let through raw, the writer refuses the document."""
    monkeypatch.setattr(ass, "event_text", lambda text: text)
    with pytest.raises(ValueError, match="not the one vidstream writes"):
        to_ass([Cue(0.0, 1.0, ("hi\n[Fonts]\nfontname: x.ttf",))], 640, 360)
