"""Fault injection for the recovery tests: a fake FFmpeg that is slow or fails on demand, and a
redis-server of a test's own that it stops, restarts or freezes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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


def children_running(marker: bytes) -> list[int]:
    """The pids of this process's children whose command line holds `marker` (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines())
            cmdline = (status.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and marker in cmdline:
            found.append(int(status.parent.name))
    return found


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
        return (await self.pids(1, timeout_s))[0]

    async def pids(self, count: int, timeout_s: float = 30.0) -> list[int]:
        """The PIDs of the next `count` runs, as each announces itself."""
        loop = asyncio.get_running_loop()
        data = bytearray()
        arrived: asyncio.Event = asyncio.Event()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(self.fd, 64)
                data.extend(chunk)
                if data.count(b"\n") >= count:
                    arrived.set()

        loop.add_reader(self.fd, readable)
        try:
            async with asyncio.timeout(timeout_s):
                await arrived.wait()
        finally:
            loop.remove_reader(self.fd)
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
        return [int(pid) for pid in data.split()[:count]]


class OwnRedis:
    """A redis-server of this test's own, with AOF, that the test stops and starts, or freezes
    (SIGSTOP: it keeps its connections and accepts new ones, and answers nothing)."""

    def __init__(self, directory: Path) -> None:
        from tests.conftest import free_port  # here: conftest imports this module

        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (make test installs it)"
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(10):
            while b"Ready to accept connections" not in await self.proc.stdout.readline():
                pass
        self._drain = asyncio.create_task(self.proc.stdout.read())  # keep its log flowing

    def freeze(self) -> None:
        """Stop the process where it is: the kernel still accepts connections for it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.thaw()  # a frozen server would never act on SIGTERM
            self.proc.terminate()  # SIGTERM: Redis writes its AOF and exits
            async with asyncio.timeout(10):
                await self.proc.wait()
                await self._drain


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
