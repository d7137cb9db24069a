"""Run one FFmpeg render as a subprocess: its progress reported as it goes, within a deadline,
stopped (its whole process group) when it overruns, hangs or the run is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from vidstream.core import process
from vidstream.core.errors import TransientError
from vidstream.media import ffmpeg
from vidstream.media.progress import FfmpegProgress

STALL_TIMEOUT_S = 300.0  # FFmpeg reports progress twice a second; silence this long is a hang

Report = Callable[[float], Awaitable[None]]  # the fraction done, 0..1


async def run_ffmpeg(
    argv: list[str],
    cwd: Path,
    *,
    duration_s: float,
    deadline_s: float,
    report: Report,
    log: structlog.stdlib.BoundLogger,
) -> None:
    """Run `argv` (which writes `-progress pipe:1`) making `duration_s` seconds of output;
    raise the `JobError` its failure means."""
    progress = FfmpegProgress(duration_s)
    proc = await process.spawn(argv, cwd=cwd)
    stderr = process.Tail(proc.stderr)
    async with process.running(proc):
        try:
            async with asyncio.timeout(deadline_s):
                await _follow(proc, progress, report)
                code = await proc.wait()
        except TimeoutError:
            log.warning("ffmpeg_timeout", deadline_s=deadline_s, duration_s=duration_s)
            raise TransientError(
                f"Rendering took longer than {deadline_s:g} s.", code="timeout"
            ) from None
    if code != 0:
        tail = await stderr.text()
        log.warning("ffmpeg_failed", exit_status=code, stderr=tail[-2000:])
        raise ffmpeg.render_failure(code, tail)


async def _follow(
    proc: asyncio.subprocess.Process, progress: FfmpegProgress, report: Report
) -> None:
    assert proc.stdout is not None
    while True:
        try:
            async with asyncio.timeout(STALL_TIMEOUT_S):
                line = await proc.stdout.readline()
        except TimeoutError:
            raise TransientError(
                f"FFmpeg reported no progress for {STALL_TIMEOUT_S:g} s.", code="timeout"
            ) from None
        if not line:
            return
        fraction = progress.feed(line.decode(errors="replace"))
        if fraction is not None:
            await report(fraction)


class Share:
    """Progress of several renders run at once, as one fraction: each weighs its duration."""

    def __init__(self, report: Report, weights: list[float], base: float = 0.0,
                 span: float = 1.0) -> None:  # fmt: skip
        self.report, self.base, self.span = report, base, span
        total = sum(weights) or 1.0
        self.weights = [w / total for w in weights]
        self.done = [0.0] * len(weights)

    def part(self, index: int) -> Report:
        async def report(fraction: float) -> None:
            self.done[index] = fraction
            overall = sum(w * d for w, d in zip(self.weights, self.done, strict=True))
            await self.report(self.base + self.span * overall)

        return report
