"""What makes a timeline unrenderable, found before anything is queued: each problem by its path
and rule, all of them at once; and the variables that fill a template's placeholders."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from vidstream.compose import rules, variables
from vidstream.compose.rules import InvalidTimeline, Limits

LIMITS = Limits(max_tracks=3, max_clips=6, max_duration_s=60, max_pixels=1920 * 1080)


def base() -> dict[str, Any]:
    return {
        "output": {"width": 640, "height": 360, "fps": 25},
        "tracks": [
            {"name": "voice", "clips": [
                {"type": "audio", "key": "uploads/a/voice.wav", "start": 0, "duration": 4}]},
            {"name": "music", "clips": [
                {"type": "audio", "key": "uploads/a/music.wav", "start": 0, "duration": 4,
                 "duck": {"under": "voice"}}]},
            {"clips": [{"type": "color", "color": "#102030", "start": 0, "duration": 4}]},
        ],
    }  # fmt: skip


def problems(raw: dict[str, Any]) -> set[tuple[str, str]]:
    with pytest.raises(InvalidTimeline) as caught:
        rules.parse(raw, LIMITS)
    assert caught.value.code == "invalid_timeline"
    return {(p.path, p.rule) for p in caught.value.problems}


def test_the_base_timeline_is_valid() -> None:
    timeline = rules.parse(base(), LIMITS)
    assert timeline.duration == 4 and len(list(timeline.clips())) == 3
    assert rules.as_json(timeline)["output"]["format"] == "mp4"  # defaults spelled out


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


COLOR = "tracks.2.clips.0"
MUSIC = "tracks.1.clips.0"


@pytest.mark.parametrize(
    ("change", "path", "rule"),
    [
        (_set("output.width", 641), "timeline.output.width", "multiple_of"),
        (_set("output.fps", 0), "timeline.output.fps", "greater_than_equal"),
        (_set("output.colour", "red"), "timeline.output.colour", "extra_forbidden"),
        (_set("output.format", "gif"), "timeline.output.format", "literal_error"),
        (_set("output", {"width": 4000, "height": 1000}), "timeline.output", "too_many_pixels"),
        (_set("output.duration", 120), "timeline.output.duration", "too_long"),
        (_set("output.poster", 9), "timeline.output.poster", "after_the_end"),
        (_set(f"{COLOR}.start", -1), "timeline.tracks[2].clips[0].start", "greater_than_equal"),
        (_set(f"{COLOR}.color", "reddish"), "timeline.tracks[2].clips[0].color",
         "string_pattern_mismatch"),
        (_set(f"{COLOR}.duration", 0.01), "timeline.tracks[2].clips[0].duration",
         "shorter_than_a_frame"),
        (_set("output.duration", 2), "timeline.tracks[2].clips[0].duration", "after_the_end"),
        (_set(f"{COLOR}.transition_in", {"type": "fade", "duration": 5}),
         "timeline.tracks[2].clips[0].transition_in", "transitions_too_long"),
        (_set(f"{MUSIC}.fade_out", 5), "timeline.tracks[1].clips[0].fade_in", "fades_too_long"),
        (_set(f"{MUSIC}.duck", {"under": "drums"}), "timeline.tracks[1].clips[0].duck.under",
         "unknown_track"),
        (_set(f"{MUSIC}.duck", {"under": "music"}), "timeline.tracks[1].clips[0].duck.under",
         "ducks_itself"),
        (_set(f"{MUSIC}.trim", {"start": 2, "end": 1}), "timeline.tracks[1].clips[0].trim.end",
         "before_the_start"),
        (_set(f"{MUSIC}.trim", {"start": 0, "end": 1}), "timeline.tracks[1].clips[0].trim",
         "shorter_than_the_clip"),
        (_set("tracks.0.name", "music"), "timeline.tracks[1].name", "duplicate_name"),
        (_set("tracks.3", None), "timeline.tracks", "too_many_tracks"),
    ],
)  # fmt: skip
def test_each_rule_names_its_path(
    change: Callable[[dict[str, Any]], None], path: str, rule: str
) -> None:
    raw = base()
    if path == "timeline.tracks" and rule == "too_many_tracks":
        raw["tracks"].append(copy.deepcopy(raw["tracks"][2]))
    else:
        change(raw)
    assert (path, rule) in problems(raw)


def test_every_problem_comes_at_once() -> None:
    raw = base()
    raw["output"]["width"] = 641
    raw["tracks"][2]["clips"][0]["start"] = -1
    raw["tracks"][1]["clips"][0]["volume"] = 9
    assert len(problems(raw)) == 3


def test_field_and_cross_field_problems_come_together() -> None:
    """An odd width, a negative start and a duck under an unknown track: all three at once."""
    raw = base()
    raw["output"]["width"] = 641
    raw["tracks"][2]["clips"][0]["start"] = -1
    raw["tracks"][1]["clips"][0]["duck"]["under"] = "drums"
    assert problems(raw) == {
        ("timeline.output.width", "multiple_of"),
        ("timeline.tracks[2].clips[0].start", "greater_than_equal"),
        ("timeline.tracks[1].clips[0].duck.under", "unknown_track"),
    }


def test_a_rule_waits_for_the_parts_it_reads() -> None:
    """A rule across fields is not guessed from a part that did not parse."""
    raw = base()
    raw["output"]["fps"] = "fast"  # frame lengths are unknown
    raw["tracks"][2]["clips"][0]["duration"] = 0.001
    raw["tracks"][1]["name"] = 7  # this name did not parse: "drums" may be it
    raw["tracks"][1]["clips"][0]["duck"]["under"] = "drums"
    assert problems(raw) == {
        ("timeline.output.fps", "float_type"),
        ("timeline.tracks[1].name", "string_type"),
    }
    raw = base()
    raw["output"]["poster"] = 3.5  # before the end, unless the clip that did not parse...
    raw["tracks"][0]["clips"][0]["volume"] = -1  # ...the voice, which the music ducks under
    assert problems(raw) == {("timeline.tracks[0].clips[0].volume", "greater_than_equal")}
    raw["output"]["duration"] = 3  # now the end is known: the poster and the clips are after it
    assert {("timeline.output.poster", "after_the_end"),
            ("timeline.tracks[2].clips[0].duration", "after_the_end")} <= problems(raw)  # fmt: skip


def test_a_clip_box_is_bounded_like_the_output() -> None:
    """A box beyond MAX_PIXELS is refused by its clip's path, even in a small output."""
    raw = base()
    raw["output"] = {"width": 64, "height": 64}
    raw["tracks"][2]["clips"][0].update(width=12000, height=12000)
    assert ("timeline.tracks[2].clips[0]", "too_many_pixels") in problems(raw)
    raw["tracks"][2]["clips"][0].update(width=1920, height=1080)  # MAX_PIXELS exactly
    assert rules.parse(raw, LIMITS)


def test_the_pictures_held_at_once_are_bounded() -> None:
    """Boxes each within bounds, together beyond what a render may hold, come with the rest."""
    limits = replace(LIMITS, max_clips=100, max_memory_bytes=1024**3)
    still = {"type": "color", "color": "#fff", "duration": 0.04, "width": 1920, "height": 1080}
    raw = base()
    raw["tracks"][2]["clips"] = [{**still, "start": i * 0.04} for i in range(31)]
    assert rules.parse(raw, limits)  # 31 x (1920x1080 x 4 bytes x 4 + 0.5 MB): 1.04 GB, within
    raw["tracks"][2]["clips"] += [{**still, "start": 2}, {**still, "start": 3}]
    raw["output"]["width"] = 641  # the clips' own boxes still count
    with pytest.raises(InvalidTimeline) as caught:
        rules.parse(raw, limits)
    assert {(p.path, p.rule) for p in caught.value.problems} == {
        ("timeline.output.width", "multiple_of"),
        ("timeline.tracks", "too_much_memory"),
    }
    assert "GB" in caught.value.problems[1].message


def test_too_many_clips() -> None:
    raw = base()
    raw["tracks"][2]["clips"] *= 5
    assert ("timeline.tracks", "too_many_clips") in problems(raw)


def test_placeholders_fill_text_and_keys() -> None:
    raw = base()
    raw["tracks"][0]["clips"][0]["key"] = "uploads/{{folder}}/voice.wav"
    raw["tracks"][2]["clips"].append({"type": "text", "text": "Hi {{who}}, {{who}}!",
                                      "start": 0, "duration": 1})  # fmt: skip
    assert variables.placeholders(raw) == ["folder", "who"]
    filled = variables.fill(raw, variables.check({"folder": "abc", "who": 7}))
    timeline = rules.parse(filled, LIMITS)
    assert timeline.tracks[0].clips[0].key == "uploads/abc/voice.wav"  # type: ignore[union-attr]
    assert timeline.tracks[2].clips[1].text == "Hi 7, 7!"  # type: ignore[union-attr]
    assert raw["tracks"][2]["clips"][1]["text"] == "Hi {{who}}, {{who}}!"  # not changed in place


def test_variables_are_checked() -> None:
    raw = {"tracks": [{"clips": [{"type": "text", "text": "{{a}} {{b}}", "start": 0,
                                  "duration": 1}]}]}  # fmt: skip
    with pytest.raises(InvalidTimeline) as missing:
        variables.fill(raw, variables.check({"a": "x"}))
    assert [(p.path, p.rule) for p in missing.value.problems] == [
        ("variables.b", "missing_variable")
    ]
    for bad, rule in (([], "object"), ({"a": {"nested": 1}}, "string"), ({"a": "x" * 5000},
                                                                        "too_long")):  # fmt: skip
        with pytest.raises(InvalidTimeline) as caught:
            variables.check(bad)
        assert caught.value.problems[0].rule == rule
