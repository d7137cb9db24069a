"""Probe children kept between probes: a worker's (`actors.worker`) few `prober --serve`
processes, each answering one file at a time.

A new child per file cost about 115 ms of every job (Python, PyAV and FFmpeg's libraries
loaded again) and 0.2 CPU s; a kept one answers in the time the file takes. The isolation stays:
a child that runs out of time, crashes or says something unreadable is stopped and never used
again, and each child is retired after `USES` files, so whatever one hostile file did to it
outlives few others. Only one file is ever in a child at once.

The workers of a process `hold` them, and `probe.run_child` asks them; where none holds them
(the gateway, a tool) it starts a child per file as before.
"""

from __future__ import annotations

import asyncio
import json
import sys

from vidstream.core import process
from vidstream.core.lifecycle import Component

USES = 100  # files a child probes before it is retired
_current: Probers | None = None
_holders = 0


class Probers(Component):
    def __init__(self, size: int) -> None:
        self.size = size  # children kept idle at most (as many as probes run at once)
        self._idle: list[tuple[asyncio.subprocess.Process, int]] = []  # each with its uses
        self._busy: set[asyncio.subprocess.Process] = set()
        self._closed = False

    async def start(self) -> None:
        """Children start when first asked: nothing to do; safe to call twice."""

    async def ask(self, argv: list[str], timeout_s: float) -> tuple[int | None, bytes]:
        """A child's answer to one probe (`prober` arguments): (None, its line), or, when it
        stopped without one, (its exit code, b""). `TimeoutError` past `timeout_s`, the child
        stopped."""
        proc, uses = self._idle.pop() if self._idle else (await self._spawn(), 0)
        self._busy.add(proc)
        kept = False
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            async with asyncio.timeout(timeout_s):
                proc.stdin.write(json.dumps(argv).encode() + b"\n")
                await proc.stdin.drain()
                line = await proc.stdout.readline()
                if not line:  # it stopped: say how, as a child run once would
                    return await proc.wait(), b""
            kept = uses + 1 < USES and not self._closed and len(self._idle) < self.size
            if kept:
                self._idle.append((proc, uses + 1))
            return None, line
        except (BrokenPipeError, ConnectionResetError):  # it died before reading the request
            return await proc.wait(), b""
        finally:
            self._busy.discard(proc)
            if not kept:
                await asyncio.shield(process.terminate(proc))

    async def _spawn(self) -> asyncio.subprocess.Process:
        argv = [sys.executable, "-m", "vidstream.media.prober", "--serve"]
        return await process.spawn(argv, stdin=process.PIPE, stderr=process.DEVNULL)

    async def close(self) -> None:
        """Stop every child, idle or probing; safe to call twice."""
        self._closed = True
        children = [proc for proc, _ in self._idle] + list(self._busy)
        self._idle.clear()
        await asyncio.gather(*(process.terminate(proc) for proc in children))


def hold(size: int) -> Probers:
    """The process's kept children, made with room for `size` more probes at once; the workers
    of a process (`vidstream dev` runs two) share them. Each `hold` is ended by a `release`."""
    global _current, _holders
    if _current is None:
        _current = Probers(0)
    _current.size += size
    _holders += 1
    return _current


async def release(size: int) -> None:
    """The holder of `size` is done: the last one stops the children."""
    global _current, _holders
    if _current is None:
        return
    _holders -= 1
    _current.size -= size
    if _holders <= 0:
        kept, _current, _holders = _current, None, 0
        await kept.close()


def current() -> Probers | None:
    """The kept children `probe.run_child` asks; None: a child per file."""
    return _current
