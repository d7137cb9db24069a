"""One way to wait between tries: exponential backoff, and waits that end early on a stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Delays that double from `base_s` up to `cap_s`; `reset()` after a success."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 10.0) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self._next = base_s

    def next(self) -> float:
        """The delay to wait now; the one after is twice as long (up to the cap)."""
        delay, self._next = self._next, min(self._next * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next = self.base_s

    async def sleep(self, stop: asyncio.Event | None = None) -> float:
        """Wait the next delay (less if `stop` is set meanwhile); return the delay."""
        delay = self.next()
        await pause(delay, stop)
        return delay


async def pause(seconds: float, stop: asyncio.Event | None = None) -> bool:
    """Wait `seconds`, or less if `stop` gets set; return whether it was set."""
    if stop is None:
        await asyncio.sleep(seconds)  # a pause between tries, not synchronisation
        return False
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    return stop.is_set()


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    give_up_after_s: float,
    backoff: Backoff | None = None,
) -> T:
    """Await `call()` until it succeeds, waiting out `retry_on` errors with backoff; after
    `give_up_after_s` the last error is raised. For writes that must land (each is idempotent)."""
    backoff = backoff or Backoff(0.25, 5.0)
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            return await call()
        except retry_on:
            if time.monotonic() > deadline:
                raise
            await backoff.sleep()
