"""The local store's own housekeeping: partial files of dead writers go while it runs, and a
deleted object takes the folders it leaves empty with it, without losing a concurrent write."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vidstream.core.signing import Signer
from vidstream.storage import local
from vidstream.storage.local import PARTIAL_IDLE_S, LocalStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    async with LocalStore(tmp_path / "storage", Signer(b"s"), "http://gateway") as running:
        yield running


def folders(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}


async def test_partial_files_of_a_dead_writer_go_while_the_store_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial file nobody writes to any more (a killed gateway's upload) is swept while the
    store runs, not only at the next start; an upload still arriving is never swept."""
    # Stale after 0.2 s: not 0, since a file's change time comes from the kernel's coarse clock
    # and may read a few milliseconds before a `time.time()` taken just ahead of its creation.
    monkeypatch.setattr(local, "PARTIAL_IDLE_S", 0.2)
    monkeypatch.setattr(local, "PARTIAL_SWEEP_S", 0.05)
    arrived, more = asyncio.Event(), asyncio.Event()

    async def slow_upload() -> AsyncIterator[bytes]:
        yield b"first half, "
        arrived.set()  # its partial file exists, and stays unwritten until `more`
        await more.wait()
        yield b"second half"

    store = LocalStore(tmp_path / "storage", Signer(b"s"), "http://gateway")
    swept: asyncio.Queue[int] = asyncio.Queue()
    sweep = store.sweep_partials

    async def counted(now: float | None = None) -> int:
        removed = await sweep(now)
        swept.put_nowait(removed)
        return removed

    monkeypatch.setattr(store, "sweep_partials", counted)
    async with store:
        uploading = asyncio.create_task(
            store.put_stream("uploads/live/source", slow_upload(), "video/mp4", 1000)
        )
        async with asyncio.timeout(10):
            await arrived.wait()
            dead = store.root / ".partial" / "4242-deadbeefdeadbeef"
            dead.write_bytes(b"left by a killed gateway")
            # Sweeps that began before it was there may find nothing, or the store's own
            # short-lived files (under load): wait for the sweep after which it is gone.
            while dead.exists():
                await swept.get()
        assert not dead.exists()
        more.set()
        info = await uploading
        assert info.size == len(b"first half, second half")
        assert await store.get_bytes("uploads/live/source") == b"first half, second half"
        assert list((store.root / ".partial").iterdir()) == []


async def test_recent_partial_files_of_other_processes_stay(store: LocalStore) -> None:
    """Another process sharing the data dir may still be writing: its file stays until it has
    been idle for PARTIAL_IDLE_S."""
    other = store.root / ".partial" / "4243-0123456789abcdef"
    other.write_bytes(b"another gateway's upload")
    assert await store.sweep_partials(now=time.time() + PARTIAL_IDLE_S - 60) == 0
    assert other.exists()
    assert await store.sweep_partials(now=time.time() + PARTIAL_IDLE_S + 1) == 1
    assert not other.exists()


async def test_deleting_an_object_removes_the_folders_it_leaves_empty(
    store: LocalStore, tmp_path: Path
) -> None:
    """Deleting a job's last object leaves no empty folder behind, up to the store's root;
    folders that still hold something stay, and so does the store itself."""
    src = tmp_path / "x"
    src.write_bytes(b"x")
    for key in ("jobs/j1/transcript.json", "jobs/j1/render/video.mp4", "jobs/j2/a.srt",
                "uploads/u1/source"):  # fmt: skip
        await store.put_file(key, src, "application/octet-stream")
    await store.delete("jobs/j1/render/video.mp4")
    assert "jobs/j1/render" not in folders(store.root)
    assert "jobs/j1" in folders(store.root)
    await store.delete("jobs/j1/transcript.json")
    assert folders(store.root) == {".partial", "jobs", "jobs/j2", "uploads", "uploads/u1"}
    await store.delete("jobs/j2/a.srt")
    await store.delete("uploads/u1/source")
    assert folders(store.root) == {".partial"}
    await store.delete("jobs/j2/a.srt")  # twice is fine
    await store.put_file("jobs/j3/b.srt", src, "text/plain")  # the store still works
    assert await store.get_bytes("jobs/j3/b.srt") == b"x"


async def test_a_write_whose_folder_a_delete_removes_still_lands(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete that empties a folder at the moment another object is being written into it
    (after the writer made the folder, before its file is in place) costs that write nothing."""
    src = tmp_path / "x"
    src.write_bytes(b"new")
    await store.put_file("jobs/j1/old.srt", src, "text/plain")
    real_replace, raced = os.replace, []

    def replace_after_a_delete(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if not raced:  # the first rename: a concurrent delete empties the folder just before
            raced.append(True)
            local._remove(store.root / "jobs/j1/old.srt", (store.root, store.root / ".partial"))
            assert not (store.root / "jobs").exists()
        real_replace(a, b)

    monkeypatch.setattr(local.os, "replace", replace_after_a_delete)
    info = await store.put_file("jobs/j1/new.srt", src, "text/plain")
    assert raced and info.size == 3
    assert await store.get_bytes("jobs/j1/new.srt") == b"new"
    assert await store.head("jobs/j1/old.srt") is None
