"""A worker's probe children, kept between probes (`media.probers`): the same child answers
file after file; one that dies, hangs or has probed its share is never used again; closing
leaves none behind."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.faults import children_running
from tests.media import Clip
from vidstream.media import probers
from vidstream.media.probe import probe
from vidstream.media.probers import Probers


def probe_children() -> list[int]:
    return children_running(b"prober\x00--serve")


async def test_one_child_answers_file_after_file(clip: Clip, tmp_path: Path) -> None:
    kept = Probers(1)
    try:
        first = await kept.ask(["--", str(clip.path)], 30)
        [pid] = probe_children()
        second = await kept.ask(["--sound-alone", "--", str(clip.path)], 30)
        assert probe_children() == [pid]  # the same child, kept
        for code, line in (first, second):
            assert code is None and json.loads(line)["ok"], line
        assert json.loads(first[1])["info"]["duration"] == pytest.approx(clip.duration, abs=0.2)
        # A file that is no video: refused by the same child, which stays.
        notes = tmp_path / "notes.mp4"
        notes.write_text("no video here\n")
        code, line = await kept.ask(["--", str(notes)], 30)
        assert code is None and json.loads(line)["ok"] is False
        assert probe_children() == [pid]
    finally:
        await kept.close()
    assert probe_children() == []


async def test_a_child_that_dies_or_hangs_is_never_asked_again(clip: Clip, tmp_path: Path) -> None:
    kept = Probers(1)
    try:
        await kept.ask(["--", str(clip.path)], 30)
        [pid] = probe_children()
        code, line = await kept.ask(["--no-such-option"], 30)  # it exits (argparse: 2)
        assert (code, line) == (2, b"")
        assert pid not in probe_children()
        fifo = tmp_path / "stuck.mp4"  # opening it waits for a writer that never comes
        os.mkfifo(fifo)
        with pytest.raises(TimeoutError):
            await kept.ask(["--", str(fifo)], 1.0)
        assert probe_children() == []  # the stuck child is stopped
        code, line = await kept.ask(["--", str(clip.path)], 30)  # a new one answers
        assert code is None and json.loads(line)["ok"]
    finally:
        await kept.close()
    assert probe_children() == []


async def test_a_child_is_retired_after_its_share(
    clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probers, "USES", 2)
    kept = Probers(1)
    try:
        await kept.ask(["--", str(clip.path)], 30)
        [first] = probe_children()
        await kept.ask(["--", str(clip.path)], 30)  # its second: then retired
        assert probe_children() == []
        await kept.ask(["--", str(clip.path)], 30)
        assert probe_children() not in ([], [first])
    finally:
        await kept.close()


async def test_probe_asks_the_held_children_and_the_last_release_stops_them(clip: Clip) -> None:
    probers.hold(1)
    probers.hold(1)  # two workers of one process
    try:
        info = await probe(clip.path, 30)
        assert info.has_video and len(probe_children()) == 1
        await probers.release(1)
        assert len(probe_children()) == 1 and probers.current() is not None
    finally:
        await probers.release(1)
    assert probe_children() == [] and probers.current() is None
    await probe(clip.path, 30)  # none held: a child of its own, gone when it answered
    assert probe_children() == []


async def test_asks_at_once_each_get_a_child(clip: Clip) -> None:
    kept = Probers(2)
    try:
        answers = await asyncio.gather(*(kept.ask(["--", str(clip.path)], 30) for _ in range(3)))
        assert all(code is None for code, _ in answers)
        assert len(probe_children()) == 2  # three at once; two kept
    finally:
        await kept.close()
