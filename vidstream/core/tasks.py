"""Owning background tasks: start them with a name, log what they raise, stop them with a bound."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

from redis.exceptions import RedisError

from vidstream.core import logs
from vidstream.core.backoff import pause
from vidstream.core.lifecycle import Component

log = logs.get()


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], timeout_s: float = 5.0) -> None:
    """Cancel `tasks` and wait for them to end, at most `timeout_s`; never raises their errors."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    for task in pending:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio does not warn about it at collection


class TaskSet:
    """Tasks a component owns: kept until they end, their crashes logged."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.owner}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task_crashed", task=task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Cancel every task and wait for them, at most `timeout_s`; safe to call twice."""
        await cancel_and_wait(list(self._tasks), timeout_s)


async def every(
    interval_s: float, step: Callable[[], Awaitable[object]], name: str, stop: asyncio.Event
) -> None:
    """Run `step` every `interval_s` until `stop` is set. A failed step is logged and the loop
    goes on: a Redis outage must not end a heartbeat or a maintenance loop."""
    while not stop.is_set():
        try:
            await step()
        except RedisError as exc:
            log.warning("periodic_step_failed", step=name, error=str(exc))
        except Exception:
            log.exception("periodic_step_crashed", step=name)
        await pause(interval_s, stop)


@contextlib.asynccontextmanager
async def kept_alive(
    refresh: Callable[[], Awaitable[object]], every_s: float, name: str
) -> AsyncIterator[None]:
    """Call `refresh` every `every_s` for as long as the block runs: it extends something with
    a TTL that the block works under (a reservation, an upload's ticket), which must not lapse
    however long the block takes, yet lapses soon after its process dies."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not await pause(every_s, stop):
            try:
                await refresh()
            except RedisError as exc:  # the next one may land; the TTL has room for it
                log.warning("keep_alive_failed", what=name, error=str(exc))

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        stop.set()
        await cancel_and_wait([task], 1.0)


class Service(Component, abc.ABC):
    """A component that is one long-lived task: `run()` from `start()` until `close()`.

    `close()` sets `stopping` and lets `run()` return by itself (a loop checks it at least once
    per blocking read), and cancels it only after `stop_grace_s`: cancelling a task inside a
    redis-py read can be swallowed by the client's own timeout and retry (seen with XREAD
    BLOCK), leaving the task running after its component closed.
    """

    stop_grace_s = 3.0  # longer than one blocking read (services.BLOCK_MS)
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event | None = None

    @property
    def stopping(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    @abc.abstractmethod
    async def run(self) -> None:
        """Work until `stopping` is set."""

    async def wake(self) -> None:
        """End a blocking call of `run()` early (see `bus.Waker`); called once `stopping` is
        set."""

    async def start(self) -> None:
        if self._task is None:
            self.stopping.clear()
            self._task = asyncio.create_task(self.run(), name=type(self).__name__)

    @property
    def alive(self) -> bool:
        """Started and still running (a Redis outage must not end it)."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self.stopping.set()
            await self.wake()
            await asyncio.wait([task], timeout=self.stop_grace_s)
            await cancel_and_wait([task], 2.0)
