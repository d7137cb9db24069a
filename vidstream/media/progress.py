"""Progress parsing: FFmpeg's `-progress` blocks and Whisper segment end times, as fractions."""

from __future__ import annotations

import contextlib
import time


class FfmpegProgress:
    """Feed lines of `ffmpeg -progress pipe:1`; get the fraction done at the end of each block.

    FFmpeg writes `key=value` lines and closes each block with `progress=continue` (or `end`).
    `out_time_us` is the output position; it reads `N/A` until the first frame is written.
    """

    def __init__(self, duration_s: float) -> None:
        self.duration_us = max(duration_s, 0.001) * 1_000_000
        self._position_us = 0.0
        self.finished = False

    def feed(self, line: str) -> float | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key == "out_time_us":
            with contextlib.suppress(ValueError):  # "N/A" until the first frame is written
                self._position_us = max(self._position_us, float(value))
            return None
        if key == "progress":
            self.finished = value == "end"
            return 1.0 if self.finished else self.fraction
        return None

    @property
    def fraction(self) -> float:
        return min(self._position_us / self.duration_us, 1.0)


def segment_fraction(segment_end_s: float, start_s: float, end_s: float) -> float:
    """The fraction of the range [start_s, end_s] a transcription has covered."""
    span = max(end_s - start_s, 0.001)
    return min(max((segment_end_s - start_s) / span, 0.0), 1.0)


class Throttle:
    """Decides which progress values are worth an event: a step of at least `min_step`, at most
    one per `min_interval_s`, and always the first and the last."""

    def __init__(self, min_step: float = 0.01, min_interval_s: float = 0.5) -> None:
        self.min_step = min_step
        self.min_interval_s = min_interval_s
        self._last_value = -1.0
        self._last_at = -float("inf")

    def should_emit(self, value: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if value <= self._last_value:
            return False
        done = value >= 1.0
        if not done and (
            value - self._last_value < self.min_step or now - self._last_at < self.min_interval_s
        ):
            return False
        self._last_value, self._last_at = value, now
        return True


class Eta:
    """Seconds until the job ends, from how fast its overall progress has moved in this run:
    none until the run has gone on for `min_s` and moved by `min_step`, so the first guesses,
    made of start-up time, are not shown."""

    def __init__(self, min_s: float = 2.0, min_step: float = 0.02) -> None:
        self.min_s, self.min_step = min_s, min_step
        self._start: tuple[float, float] | None = None

    def estimate(self, progress: float, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self._start is None:
            self._start = (now, progress)
            return None
        began, first = self._start
        moved, elapsed = progress - first, now - began
        if elapsed < self.min_s or moved < self.min_step:
            return None
        return (1.0 - progress) * elapsed / moved
