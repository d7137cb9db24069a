"""Fault injection for the recovery tests: a fake FFmpeg that is slow or fails on demand."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from vidstream.media.ffmpeg import resolve_binary

FAKE_FFMPEG = Path(__file__).resolve().parent / "fakes" / "ffmpeg"


class Faults:
    """Switches read by tests/fakes/ffmpeg on every run (see that script)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {"VS_FAKE_DIR": str(self.dir), "VS_REAL_FFMPEG": resolve_binary("auto")}

    def delay(self, stage: str, seconds: float) -> None:
        (self.dir / f"{stage}.delay").write_text(f"{seconds}")

    def fail(self, stage: str, mode: str = "always") -> None:
        (self.dir / f"{stage}.fail").write_text(mode)

    def clear(self, stage: str) -> None:
        for switch in ("delay", "fail"):
            (self.dir / f"{stage}.{switch}").unlink(missing_ok=True)

    def announce(self, stage: str) -> Announcement:
        """Open a named pipe on which the next FFmpeg run of `stage` announces its PID."""
        return Announcement(self.dir / f"{stage}.fifo")

    def pids(self, stage: str) -> list[int]:
        path = self.dir / f"{stage}.pids"
        return [int(line) for line in path.read_text().split()] if path.exists() else []


async def wait_exit(pid: int, timeout_s: float) -> None:
    """Return once process `pid` has ended (a pidfd becomes readable), or raise TimeoutError."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
    try:
        async with asyncio.timeout(timeout_s):
            await ended
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


class Announcement:
    """The PID a fake FFmpeg writes to a named pipe as it starts; await `pid()` for it."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        self.path = path
        # Opened now, without blocking, so the writer finds a reader and the data waits here.
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    async def pid(self, timeout_s: float = 30.0) -> int:
        loop = asyncio.get_running_loop()
        data = bytearray()
        arrived: asyncio.Event = asyncio.Event()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(self.fd, 64)
                data.extend(chunk)
                if b"\n" in data:
                    arrived.set()

        loop.add_reader(self.fd, readable)
        try:
            async with asyncio.timeout(timeout_s):
                await arrived.wait()
        finally:
            loop.remove_reader(self.fd)
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
        return int(data.split()[0])
