"""The hostile corpus (tests/hostile/): every case found there, checked by its folder's checker.

A case is a file and its table in the folder's `cases.toml` (README.md there says more). Adding
a file and its expectation adds a test; a file without one, or one without its file, fails.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.media import to_ass
from tests.test_gateway import gw
from vidstream.compose import graph, rules
from vidstream.compose.graph import Window
from vidstream.compose.rules import Limits
from vidstream.core.errors import PermanentError
from vidstream.core.settings import Settings
from vidstream.media import captions, fonts
from vidstream.media.captions import STYLES
from vidstream.media.subtitles import build_cues
from vidstream.runtime import Stack

CORPUS = Path(__file__).parent / "hostile"
Case = tuple[str, str, dict[str, Any]]  # folder, file name, expectation


def cases(folder: str | None = None) -> list[Case]:
    found = []
    for table in sorted(CORPUS.glob("*/cases.toml")):
        if folder is None or table.parent.name == folder:
            for name, expected in tomllib.loads(table.read_text()).items():
                found.append((table.parent.name, name, expected))
    return found


def ids(case: Case) -> str:
    return f"{case[0]}/{case[1]}"


def test_every_file_has_an_expectation_and_every_folder_a_checker() -> None:
    """A case cannot be forgotten: file and expectation come in pairs, each folder is checked."""
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        assert folder.name in CHECKERS, f"no checker for tests/hostile/{folder.name}"
        listed = set(tomllib.loads((folder / "cases.toml").read_text()))
        present = {p.name for p in folder.iterdir() if p.name != "cases.toml"}
        assert listed == present, (folder.name, "no expectation:", present - listed,
                                   "no file:", listed - present)  # fmt: skip
        for name, expected in tomllib.loads((folder / "cases.toml").read_text()).items():
            assert expected.get("expect") or expected.get("status"), f"{folder.name}/{name}"
            assert expected.get("why"), f"{folder.name}/{name}: say what the case tries"


# -- captions: every ASS document written from an upload is one vidstream would write --------

_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_INFO = re.compile(r"ScriptType: v4\.00\+|WrapStyle: 0|ScaledBorderAndShadow: yes|PlayRes[XY]: \d+")
_KARAOKE = re.compile(r"\{\\kf\d+\}")


def ass_documents(data: bytes) -> Iterator[tuple[str, str, int]]:
    """(path, document, cues) for every path that writes ASS from an uploaded file."""
    parsed = captions.parse_captions(data)
    cues = parsed if isinstance(parsed, list) else build_cues(parsed)
    yield "subtitles.to_ass", to_ass(cues, 640, 360), len(cues)
    # As the compose render places a subtitles clip's captions (at 1 s, an hour long).
    placed = captions.shift(captions.timed(parsed), 1.0, 0.0, 3600.0)
    for style in STYLES:
        for karaoke in (False, True):
            document = captions.to_ass_styled(placed, 640, 360, style, karaoke=karaoke)
            yield f"to_ass_styled({style}, karaoke={karaoke})", document, len(placed)


def assert_safe_ass(document: str, cues: int) -> list[str]:
    """The document has only what vidstream writes; its events' texts as shown."""
    document.encode("utf-8")  # no lone surrogate: the file can be written at all
    assert not _UNSAFE.search(document), _UNSAFE.search(document)
    rows = [row for row in document.split("\n") if row]
    assert [r for r in rows if r.startswith("[")] == ["[Script Info]", "[V4+ Styles]", "[Events]"]
    formats = [r for r in rows if r.startswith("Format: ")]
    styles = [r for r in rows if r.startswith("Style: ")]
    dialogues = [r for r in rows if r.startswith("Dialogue: ")]
    assert len(formats) == 2 and len(styles) == 1 and len(dialogues) == cues, rows
    others = set(rows) - {*formats, *styles, *dialogues, "[Script Info]", "[V4+ Styles]",
                          "[Events]"}  # fmt: skip
    assert all(_INFO.fullmatch(r) for r in others), others
    names = formats[0].removeprefix("Format: ").split(", ")
    style = dict(zip(names, styles[0].removeprefix("Style: ").split(","), strict=True))
    height = int(next(r for r in rows if r.startswith("PlayResY: ")).split(": ")[1])
    size = int(style["Fontsize"])
    assert style["Name"] == "Default" and style["Fontname"] in fonts.FAMILIES, style
    assert 12 <= size <= max(12, round(height * 0.2)), style
    assert (style["ScaleX"], style["ScaleY"], style["Spacing"], style["Angle"]) == (
        "100", "100", "0", "0"
    ), style  # fmt: skip
    assert 0 <= int(style["Outline"]) <= size / 4 and 0 <= int(style["Shadow"]) <= size / 2
    shown = []
    for row in dialogues:
        fields = row.removeprefix("Dialogue: ").split(",", 9)
        assert fields[3] == "Default" and fields[4:9] == ["", "0", "0", "0", ""], row
        text = _KARAOKE.sub("", fields[9])
        # No override block but karaoke's, no escape but a line break.
        assert "{" not in text and "}" not in text, row
        assert re.fullmatch(r"(?:[^\\]|\\N)*", text), row
        shown.append(text)
    return shown


@pytest.mark.parametrize("case", cases("captions"), ids=ids)
def test_captions(case: Case) -> None:
    """An uploaded SRT, WebVTT or transcript is refused, or only ever text on screen."""
    _, name, expected = case
    data = (CORPUS / "captions" / name).read_bytes()
    if expected["expect"] != "safe":
        with pytest.raises(PermanentError) as refused:
            list(ass_documents(data))
        assert refused.value.code == expected["expect"]
        return
    assert expected["expect"] == "safe"
    for path, document, count in ass_documents(data):
        shown = " ".join(assert_safe_ass(document, count))
        for text in expected.get("shows", []):
            assert text in shown, (path, text, shown)


# -- texts: each line drawtext reads is one line of plain text ---------------------------------

TEXT_LIMITS = Limits(max_tracks=4, max_clips=10, max_duration_s=60, max_pixels=1920 * 1080)


@pytest.mark.parametrize("case", cases("texts"), ids=ids)
def test_texts(case: Case) -> None:
    """A text clip's text is drawn as lines of text, whatever characters it holds."""
    _, name, expected = case
    text = (CORPUS / "texts" / name).read_text()
    clip = {"type": "text", "text": text, "start": 0, "duration": 1, "size": 24}
    raw = {"output": {"width": 640, "height": 360}, "tracks": [{"clips": [clip]}]}
    timeline = rules.parse(raw, TEXT_LIMITS)
    plan = graph.build(timeline, {}, "out.mp4", Window(audio=False))
    lines = [t for n, t in plan.files.items() if n.startswith("text-")]
    assert expected["expect"] == "safe" and lines
    for line in lines:
        assert not _UNSAFE.search(line) and "\n" not in line, repr(line)
    for shown in expected.get("shows", []):
        assert any(shown in line for line in lines), (shown, lines)


# -- timelines: refused whole at the gateway, every problem at once, nothing queued ------------


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings(), ("gateway",)) as running:
        yield running


@pytest.mark.parametrize("case", cases("timelines"), ids=ids)
async def test_timelines(case: Case, gateway: Stack, http: aiohttp.ClientSession) -> None:
    """A compose request is answered with its status and every listed problem, never queued."""
    _, name, expected = case
    body = json.loads((CORPUS / "timelines" / name).read_text())
    async with http.post(f"{gw(gateway)}/v1/jobs", json=body) as r:
        answer = await r.json()
    assert r.status == expected["status"], answer
    assert answer["error"]["code"] == expected["code"], answer
    found = [(d["path"], d["rule"]) for d in answer["error"].get("details", [])]
    wanted = [tuple(p) for p in expected.get("problems", [])]
    assert set(wanted) <= set(found), found
    if expected.get("exact"):
        assert sorted(found) == sorted(wanted), found
    async with http.get(f"{gw(gateway)}/v1/jobs") as r:
        assert (await r.json())["jobs"] == []  # nothing was queued


CHECKERS: dict[str, Callable[..., Any]] = {
    "captions": test_captions,
    "texts": test_texts,
    "timelines": test_timelines,
}
