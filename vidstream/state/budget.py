"""A budget on the Redis part of a request: all its commands together answer within one bound.

redis-py bounds each command on its own (the socket timeout, then three retries with backoff),
which suits a worker that waits an outage out, not a request: against a Redis that accepts and
never answers (stopped, or a full disk under `appendfsync always`), a request that sends five
commands took 25 s to fail, and one with a shielded clean-up over a minute.

Inside `redis_budget(seconds)`, every command and pipeline runs with what the budget has left,
and the time it took is spent; once nothing is left a command fails at once. Either way the
caller sees redis' own `TimeoutError` (a `RedisError`: the gateway answers 503 `unavailable`).
Only time in Redis counts: reading a large upload between two commands spends nothing. Once a
response has started (`lift`), an error can no longer become a 503, so the rest (an event
stream catching a subscriber up) runs without the budget.

The budget lives in a context variable, so it follows the request's task and the tasks that
task starts (asyncio copies the context). Only the request's own task spends it: a task it
starts (a shielded clean-up, a keep-alive renewing an upload's reservation every 20 s for an
hour) is bounded by what is left but spends nothing, so renewals during a long upload never
leave the request without time for the job it then creates. Code that sets no budget runs as
before: the workers' blocking reads, and the notifier, whose subscribes are answered in part
before they are done, and where a burst of 2,000 at once spends seconds of wall time per
subscribe waiting for the event loop, not Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")


class Budget:
    """Seconds of Redis time a request has left (None once lifted), and the task that spends
    them."""

    __slots__ = ("left", "owner")

    def __init__(self, seconds: float) -> None:
        self.left: float | None = seconds
        self.owner = asyncio.current_task()


_BUDGET: ContextVar[Budget | None] = ContextVar("redis_budget", default=None)


@contextmanager
def redis_budget(seconds: float) -> Iterator[Budget]:
    """Bound the Redis commands sent inside the block (and its tasks) to `seconds` together."""
    budget = Budget(seconds)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


# A clean-up after a failed request (freeing what it reserved, giving back what it took) gets
# this much Redis time of its own: the request's budget may be spent, which is often why it
# failed, and a clean-up that cannot run leaves a key reserved or an upload unowned.
CLEANUP_S = 1.0


async def cleanup(call: Awaitable[T], seconds: float = CLEANUP_S) -> T:
    """Await `call` with a budget of its own, whatever is left of the current one."""
    with redis_budget(seconds):
        return await call


def lift() -> None:
    """End the current budget: what follows runs on per-command timeouts alone (an answer that
    has started, such as an event stream, can no longer turn into a 503)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.left = None


async def within_budget(call: Coroutine[Any, Any, T]) -> T:
    """Await `call` (one Redis round trip, retries included) within the current budget."""
    budget = _BUDGET.get()
    if budget is None or budget.left is None:
        return await call
    if budget.left <= 0:
        call.close()  # never started: no connection was taken, nothing to clean up
        raise RedisTimeoutError("the request's time for Redis is spent")
    started = time.monotonic()
    timeout = asyncio.timeout(budget.left)
    try:
        async with timeout:
            return await call
    except TimeoutError:
        # Cancelled mid-command, redis-py drops that connection (a late reply cannot reach the
        # next command); the pool opens another when needed.
        if timeout.expired():
            raise RedisTimeoutError("Redis did not answer within the request's time") from None
        raise
    finally:
        if budget.left is not None and asyncio.current_task() is budget.owner:
            budget.left -= time.monotonic() - started


class BudgetedRedis(Redis):
    """A Redis client whose commands and pipelines keep to the current `redis_budget`."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await within_budget(command)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return BudgetedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class BudgetedPipeline(Pipeline):
    """A pipeline that sends its queued commands within the current `redis_budget`."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        result: list[Any] = await within_budget(super().execute(raise_on_error))
        return result
