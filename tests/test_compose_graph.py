"""The timeline's FFmpeg invocation, without a worker: golden graphs for a handful of timelines,
and the property that any valid timeline yields a graph FFmpeg accepts (a sample of them run
through FFmpeg for 0.1 s).

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 pytest
tests/test_compose_graph.py`, and read the diff: it is the change to what FFmpeg is asked.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import example as also
from hypothesis import strategies as st

from tests.media import FFMPEG
from tests.test_compose import example
from vidstream.compose import graph, memory, rules, segments, visuals
from vidstream.compose.graph import Asset, Window
from vidstream.compose.rules import InvalidTimeline, Limits
from vidstream.compose.timeline import SubtitlesClip, TextClip, Timeline
from vidstream.core.errors import ConfigError
from vidstream.media import captions, fonts
from vidstream.media.ffmpeg import Encoder
from vidstream.media.subtitles import Cue

GOLDEN = Path(__file__).parent / "golden" / "compose"
LIMITS = Limits(max_tracks=32, max_clips=500, max_duration_s=3600, max_pixels=4096 * 4096)
KEYS = {"photo": "uploads/t/photo.png", "video": "uploads/t/clip.mp4",
        "music": "uploads/t/music.wav", "voice": "uploads/t/voice.wav",
        "sliver": "uploads/t/sliver.png"}  # fmt: skip


def assets(directory: Path) -> dict[str, Asset]:
    return {
        KEYS["photo"]: Asset(str(directory / "photo.png"), "png_pipe"),
        KEYS["video"]: Asset(str(directory / "clip.mp4"), "mov", 4.0, True),
        KEYS["music"]: Asset(str(directory / "music.wav"), "wav", 8.0, True),
        KEYS["voice"]: Asset(str(directory / "voice.wav"), "wav", 3.0, True),
        KEYS["sliver"]: Asset(str(directory / "sliver.png"), "png_pipe"),
    }


def parse(raw: Mapping[str, Any]) -> Timeline:
    return rules.parse(raw, LIMITS)


def showcase() -> dict[str, Any]:
    """A WebM with the other clip kinds and transitions: text, contain, speed, zoom, slide."""
    return {
        "output": {"width": 320, "height": 180, "fps": 24, "format": "webm", "background": "#123"},
        "tracks": [
            {"clips": [
                {"type": "video", "key": KEYS["video"], "start": 0, "duration": 2, "fit": "contain",
                 "speed": 2, "volume": 0.5, "transition_out": {"type": "zoom", "duration": 0.5}},
                {"type": "image", "key": KEYS["photo"], "start": 1.5, "duration": 2,
                 "x": 160, "y": 0, "width": 160, "height": 90, "fit": "fill", "opacity": 0.8,
                 "zoom": {"start": 1.2, "end": 1.0}, "pan": "left",
                 "transition_in": {"type": "slide", "side": "top", "duration": 0.5}},
            ]},
            {"clips": [
                {"type": "text", "text": "Two lines of text that wrap at the given width",
                 "start": 0.5, "duration": 3, "font": "Liberation Serif", "size": 20,
                 "width": 150, "align": "left", "x": 10, "y": 10, "box": "#00000080",
                 "outline": 2, "transition_in": {"type": "fade", "duration": 0.25}},
                {"type": "subtitles", "key": "uploads/t/words.srt", "start": 0, "duration": 3.5,
                 "style": "boxed", "karaoke": True},
            ]},
            {"clips": [
                {"type": "audio", "key": KEYS["music"], "start": 0, "duration": 3.5,
                 "trim": {"start": 1, "end": 4.5}, "fade_in": 0.5, "fade_out": 0.5},
            ]},
        ],
    }  # fmt: skip


def rendered(plan: graph.Plan) -> str:
    """The invocation as a person reads it: one argument per line, the graph one chain per line."""
    lines = []
    for arg in plan.args:
        lines.append(arg.replace("\n", "\n  ") if ";" in arg else shlex.quote(arg))
    files = [
        f"# file {name}: {len(text.splitlines())} line(s)" for name, text in plan.files.items()
    ]
    return "\n".join([*lines, *sorted(files)]) + "\n"


CASES = {
    "example": lambda: (parse(example(KEYS, 3.0)), Window()),
    "showcase": lambda: (parse(showcase()), Window()),
    "segment": lambda: (parse(example(KEYS, 3.0)), Window(50, 100, audio=False)),
    "sound": lambda: (parse(example(KEYS, 3.0)), Window(video=False)),
    "preview": lambda: (
        parse(showcase()),
        Window(scale=0.5, encoder=Encoder("ultrafast", 30, "96k"), max_pixels=1920 * 1080),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_graphs(name: str) -> None:
    timeline, window = CASES[name]()
    text = rendered(graph.build(timeline, assets(Path("/work")), "out", window))
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"the graph changed: UPDATE_GOLDEN=1 to accept ({name})"
    assert "/usr/" not in text  # fonts are named where the render links them: fonts/<file>


def crowded_fonts(root: Path) -> Path:
    """A font tree as a newcomer's machine has it: the declared packages, and beside them
    fonts-liberation 1.x (pulled in by chromium), whose files have the same names and other
    metrics (here: DejaVu's, so any use of them shows)."""
    real = fonts.ROOT / "truetype"
    (root / "truetype").mkdir(parents=True)
    for package in ("dejavu", "liberation2"):
        (root / "truetype" / package).symlink_to(real / package)
    old = root / "truetype" / "liberation"
    old.mkdir()
    for style in ("Sans", "Serif", "Mono"):
        for weight, dejavu in (("Regular", ""), ("Bold", "-Bold")):
            name = {"Sans": "DejaVuSans", "Serif": "DejaVuSerif", "Mono": "DejaVuSansMono"}[style]
            shutil.copy(real / "dejavu" / f"{name}{dejavu}.ttf",
                        old / f"Liberation{style}-{weight}.ttf")  # fmt: skip
    return root


def test_fonts_are_the_declared_files_whatever_else_is_installed(tmp_path: Path) -> None:
    """Liberation is fonts-liberation2's files, even where fonts-liberation 1.x sits beside."""
    root = crowded_fonts(tmp_path / "fonts")
    for family in fonts.FAMILIES:
        for bold in (False, True):
            found = fonts.font_file(family, bold, root)
            assert found == root / fonts.declared(family, bold)
            assert "/liberation/" not in str(found)
    linked = fonts.link(tmp_path / "work", [("Liberation Serif", False)], root)
    assert [p.name for p in linked.iterdir()] == ["LiberationSerif-Regular.ttf"]
    assert (linked / "LiberationSerif-Regular.ttf").resolve() == (
        fonts.ROOT / "truetype/liberation2/LiberationSerif-Regular.ttf").resolve()  # fmt: skip
    with pytest.raises(ConfigError, match="fonts-liberation2"):
        fonts.font_file("Liberation Mono", root=tmp_path / "empty")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_graphs_on_a_crowded_machine(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same graph (same wrapping, same font names) whatever else the machine has."""
    monkeypatch.setattr(fonts, "ROOT", crowded_fonts(tmp_path / "fonts"))
    timeline, window = CASES[name]()
    text = rendered(graph.build(timeline, assets(Path("/work")), "out", window))
    assert text == (GOLDEN / f"{name}.txt").read_text()


def test_each_asset_is_one_input_however_many_clips_use_it() -> None:
    raw = example(KEYS, 3.0)
    photo = raw["tracks"][1]["clips"][0]
    raw["tracks"].append({"clips": [{**photo, "start": 3, "transition_out": None}]})
    args = graph.build(parse(raw), assets(Path("/work")), "out").args
    inputs = [args[i + 1] for i, a in enumerate(args) if a == "-i"]
    assert len(inputs) == len(set(inputs)) == 4
    assert "split=2" in args[args.index("-filter_complex") + 1]


def test_text_is_read_from_files_never_inline() -> None:
    raw = showcase()
    raw["tracks"][1]["clips"][0]["text"] = "quote ' colon : percent %{pts} semicolon ; [label]"
    plan = graph.build(parse(raw), assets(Path("/work")), "out")
    chains = plan.args[plan.args.index("-filter_complex") + 1]
    assert "percent" not in chains and "textfile=" in chains
    assert any("percent %{pts}" in text for text in plan.files.values())


def test_segments_cover_every_frame_once() -> None:
    timeline = parse(example(KEYS, 3.0))
    total = graph.total_frames(timeline)
    assert total == 150
    # Ideal cuts at frames 50 and 100; the clip boundaries nearby are 62 (the video clip
    # starts at 2.5 s) and 100 (the narration ends at 4 s).
    assert segments.plan(timeline, total, 2.0, 2) == [(0, 62), (62, 100), (100, 150)]
    assert segments.plan(timeline, total, 2.0, 1) == [(0, total)]  # one FFmpeg at a time


# -- the property: any valid timeline builds, and FFmpeg accepts what it builds ----------------

colour = st.sampled_from(["#000000", "#ff8800", "#11223380", "#fff"])
seconds = st.floats(0, 2, allow_nan=False).map(lambda s: round(s, 2))
lengths = st.floats(0.1, 2, allow_nan=False).map(lambda s: round(s, 2))
transition = st.none() | st.builds(
    dict, type=st.sampled_from(["fade", "slide", "zoom"]),
    duration=st.sampled_from([0.05, 0.1]), side=st.sampled_from(["left", "right", "top", "bottom"]),
)  # fmt: skip
common = {"start": seconds, "duration": lengths, "transition_in": transition,
          "transition_out": transition, "opacity": st.sampled_from([1.0, 0.5])}  # fmt: skip
boxed = {"x": st.integers(-40, 100), "y": st.integers(-40, 100),
         "width": st.none() | st.integers(16, 200), "height": st.none() | st.integers(16, 200),
         "fit": st.sampled_from(["cover", "contain", "fill"])}  # fmt: skip
clip = st.one_of(
    st.fixed_dictionaries({"type": st.just("color"), "color": colour, **common, **boxed},
                          optional={"gradient": st.builds(dict, to=colour)}),
    st.fixed_dictionaries({"type": st.just("image"), "key": st.just(KEYS["photo"]), **common,
                           **boxed}, optional={"zoom": st.builds(
                               dict, start=st.sampled_from([1.0, 1.5]), end=st.just(1.2)),
                               "pan": st.sampled_from(["center", "left", "up"])}),
    st.fixed_dictionaries({"type": st.just("video"), "key": st.just(KEYS["video"]), **common,
                           **boxed, "speed": st.sampled_from([0.5, 1.0, 2.0]),
                           "volume": st.sampled_from([0.0, 1.0]),
                           "trim": st.builds(dict, start=st.sampled_from([0, 0.5]))}),
    st.fixed_dictionaries({"type": st.just("text"), **common,
                           "text": st.text(st.characters(codec="utf-8", exclude_categories=(
                               "Cs",)), min_size=1, max_size=30).filter(str.strip),
                           "size": st.integers(8, 40), "align": st.sampled_from(
                               ["left", "center", "right"])},
                          optional={"box": colour, "outline": st.integers(0, 3)}),
    st.fixed_dictionaries({"type": st.just("audio"), "key": st.just(KEYS["music"]), **common,
                           "fade_in": st.sampled_from([0, 0.1]),
                           "volume": st.sampled_from([0.5, 1.0])}),
    st.fixed_dictionaries({"type": st.just("subtitles"), "key": st.just("uploads/t/w.srt"),
                           "start": seconds, "duration": lengths,
                           "style": st.sampled_from(["default", "boxed", "bold", "top"])}),
)  # fmt: skip
timelines = st.fixed_dictionaries({
    "output": st.fixed_dictionaries({
        "width": st.sampled_from([64, 160, 320]), "height": st.sampled_from([48, 90, 240]),
        "fps": st.sampled_from([10, 24, 25, 29.97]), "format": st.sampled_from(["mp4", "webm"]),
    }),
    "tracks": st.lists(st.builds(dict, clips=st.lists(clip, min_size=1, max_size=3)),
                       min_size=1, max_size=3),
})  # fmt: skip


def valid(raw: dict[str, Any]) -> Timeline:
    try:
        return parse(raw)
    except InvalidTimeline:
        assume(False)
        raise


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines)
def test_any_valid_timeline_builds(raw: dict[str, Any]) -> None:
    timeline = valid(raw)
    plan = graph.build(timeline, assets(Path("/work")), "out.mp4")
    chains = plan.args[plan.args.index("-filter_complex") + 1]
    assert plan.frames == graph.total_frames(timeline) > 0
    assert chains.count("[") == chains.count("]")
    inputs = [plan.args[i + 1] for i, a in enumerate(plan.args) if a == "-i"]
    assert len(inputs) == len(set(inputs))  # each asset once


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("graph")

    def make(*args: str) -> None:
        subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True, timeout=60)

    make("-f", "lavfi", "-i", "testsrc2=s=200x150", "-frames:v", "1", str(d / "photo.png"))
    make("-f", "lavfi", "-i", "color=c=red:s=2x400", "-frames:v", "1", str(d / "sliver.png"))
    make("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=4", "-f", "lavfi", "-i",
         "sine=f=300:d=4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(d / "clip.mp4"))  # fmt: skip
    make("-f", "lavfi", "-i", "sine=f=440:d=8", str(d / "music.wav"))
    make("-f", "lavfi", "-i", "sine=f=220:d=3", str(d / "voice.wav"))
    return d


BOTH_ZOOMS = {  # found by the property: FFmpeg's min() takes two arguments only
    "output": {"width": 64, "height": 48, "fps": 10, "format": "mp4"},
    "tracks": [{"clips": [{"type": "color", "color": "#fff", "start": 0, "duration": 1,
                           "transition_in": {"type": "zoom", "duration": 0.05},
                           "transition_out": {"type": "zoom", "duration": 0.05}}]}],
}  # fmt: skip


@settings(max_examples=8, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(raw=timelines)
@also(raw=BOTH_ZOOMS)
def test_ffmpeg_accepts_what_is_built(raw: dict[str, Any], files: Path, tmp_path: Path) -> None:
    timeline = valid(raw)
    out = timeline.output
    plan = graph.build(timeline, assets(files), f"out.{out.format}")
    for name, text in plan.files.items():
        (tmp_path / name).write_text(text)
    fonts.link(tmp_path, graph.faces(timeline))
    words = captions.timed([Cue(0.0, 1.0, ("hello there",))])
    for t, c, item in timeline.clips():
        if isinstance(item, SubtitlesClip):
            document = captions.to_ass_styled(words, out.width, out.height, item.style)
            (tmp_path / graph.captions_file(t, c)).write_text(document)
    args = [a for a in plan.args if a not in ("-progress", "pipe:1")]
    args[-1:-1] = ["-t", "0.1"]  # an output option: the first 0.1 s of the video
    done = subprocess.run([FFMPEG, "-v", "error", "-y", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


# -- what a graph holds in memory: the estimate the gateway refuses by -------------------------


def held_by_ffmpeg(raw: dict[str, Any], files: Path, tmp_path: Path) -> int:
    """The most memory (bytes resident) FFmpeg took to render `raw`'s first 2 frames."""
    timeline = parse(raw)
    plan = graph.build(timeline, assets(files), "out.mp4", Window(audio=False))
    tmp_path.mkdir(parents=True)
    for name, text in plan.files.items():
        (tmp_path / name).write_text(text)
    fonts.link(tmp_path, graph.faces(timeline))
    args = [a for a in plan.args if a not in ("-progress", "pipe:1")]
    args[-1:-1] = ["-frames:v", "2"]
    # Through a shell that forks it: a process started from this one directly would count
    # this one's memory as its own (the high-water mark survives vfork and exec).
    done = subprocess.run(
        ["sh", "-c", '"$0" "$@"; exit $?', FFMPEG, "-nostdin", "-nostats", "-benchmark", "-y",
         *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found = re.search(r"maxrss=(\d+)KiB", done.stderr)
    assert found, done.stderr[-2000:]
    return int(found.group(1)) * 1024


def test_the_memory_estimate_covers_what_ffmpeg_holds(files: Path, tmp_path: Path) -> None:
    """Each kind of clip holds no more than the gateway counts for it, nor far less."""
    fade = {"type": "fade", "duration": 0.5}
    big = {"start": 0, "duration": 1, "width": 1600, "height": 1600}
    clips = [
        {"type": "color", "color": "#f00", **big},
        {"type": "color", "color": "#f00", "opacity": 0.5, "transition_in": fade, **big},
        {"type": "image", "key": KEYS["photo"], "fit": "contain", **big},
        {"type": "image", "key": KEYS["photo"], "zoom": {"start": 1, "end": 1.2}, "start": 0,
         "duration": 1, "width": 800, "height": 800},
        {"type": "video", "key": KEYS["video"], "transition_out": fade, **big},
        {"type": "text", "text": "word " * 60, "size": 120, "width": 1600, "start": 0,
         "duration": 1},
    ]  # fmt: skip
    output = {"width": 64, "height": 64, "fps": 2, "duration": 1}
    bare = {"output": output, "tracks": [{"clips": [{"type": "color", "color": "#000",
                                                      "start": 0, "duration": 1}]}]}  # fmt: skip
    before = held_by_ffmpeg(bare, files, tmp_path / "bare")
    for i, clip in enumerate(clips):
        raw = {"output": output, "tracks": [{"clips": [clip]}]}
        estimate = memory.held(parse(raw).tracks[0].clips[0], (64, 64))
        took = held_by_ffmpeg(raw, files, tmp_path / str(i)) - before
        assert took <= estimate, (clip, took, estimate)
        # A text's lines are not measured at the gateway: their count is bounded loosely.
        assert clip["type"] == "text" or took > estimate / 3, (clip, took, estimate)


@pytest.mark.parametrize("zoom", [None, {"start": 1, "end": 1.2}])
def test_a_picture_of_any_shape_is_held_at_its_box(
    files: Path, tmp_path: Path, zoom: dict[str, float] | None
) -> None:
    """A 2x400 picture covering a 1200x1200 box is cropped to the box's shape before it is
    scaled: FFmpeg holds about the box, not a 1200x240000 frame (2.3 GB; it was let through)."""
    clip = {"type": "image", "key": KEYS["sliver"], "fit": "cover", "start": 0, "duration": 1,
            "width": 1200, "height": 1200, "zoom": zoom}  # fmt: skip
    output = {"width": 64, "height": 64, "fps": 2, "duration": 1}
    bare = {"output": output, "tracks": [{"clips": [{"type": "color", "color": "#000",
                                                      "start": 0, "duration": 1}]}]}  # fmt: skip
    raw = {"output": output, "tracks": [{"clips": [clip]}]}
    estimate = memory.held(parse(raw).tracks[0].clips[0], (64, 64))
    took = held_by_ffmpeg(raw, files, tmp_path / "sliver") - held_by_ffmpeg(
        bare, files, tmp_path / "bare"
    )
    assert took <= estimate, (took, estimate)


def test_no_declared_glyph_is_wider_than_the_estimate_allows() -> None:
    """The text estimate's widest advance holds for every declared font file."""
    from fontTools.ttLib import TTFont

    for family in fonts.FAMILIES:
        for bold in (False, True):
            with TTFont(str(fonts.font_file(family, bold)), lazy=True) as font:
                widest = font["hhea"].advanceWidthMax / font["head"].unitsPerEm
            assert widest <= memory.MAX_ADVANCE_EM, (family, bold, widest)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                 max_size=300),
    size=st.integers(6, 200), width=st.none() | st.integers(2, 2000),
    font=st.sampled_from(fonts.FAMILIES), bold=st.booleans(), box=st.booleans(),
)  # fmt: skip
def test_a_text_canvas_is_never_larger_than_estimated(
    text: str, size: int, width: int | None, font: str, bold: bool, box: bool
) -> None:
    """Whatever the text, the canvas drawn is within the gateway's estimate of it."""
    clip = TextClip(type="text", text=text, start=0, duration=1, size=size, width=width,
                    font=font, bold=bold, box="#000" if box else None)  # fmt: skip
    layout = visuals.text_layout(clip, visuals.Frame(640, 360, Fraction(25)))
    estimated = memory.text_box(clip, (640, 360))
    assert layout.box.width <= estimated[0] and layout.box.height <= estimated[1]
