"""Pause and drain, for deploys: a paused worker role takes no new work but finishes what it
runs; a paused gateway answers new jobs with 503 `paused`; drain waits until nothing runs.

A pause is a Redis key per role, so it holds for every process of the role on every machine,
and for processes that start while it is set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TextIO

from redis.asyncio import Redis

from vidstream import bus
from vidstream.errors import ConfigError
from vidstream.jobs import Stage
from vidstream.keys import Keys

PAUSABLE = ("gateway", *(stage.value for stage in Stage))


def check_role(role: str) -> str:
    if role not in PAUSABLE:
        raise ConfigError(f"role must be one of {', '.join(PAUSABLE)}")
    return role


async def set_paused(redis: Redis, keys: Keys, role: str, paused: bool) -> None:
    if paused:
        await redis.set(keys.paused(check_role(role)), str(time.time()))
    else:
        await redis.delete(keys.paused(check_role(role)))


async def paused_roles(redis: Redis, keys: Keys) -> dict[str, bool]:
    async with redis.pipeline(transaction=False) as pipe:
        for role in PAUSABLE:
            pipe.exists(keys.paused(role))
        found = await pipe.execute()
    return {role: bool(n) for role, n in zip(PAUSABLE, found, strict=True)}


async def running(redis: Redis, keys: Keys) -> int:
    """How many stage runs are under way: entries read by a worker and not yet acked."""
    total = 0
    for stage in Stage:
        group = keys.stage_group(stage)
        for stream in keys.stage_streams(stage):
            total += (await bus.group_counts(redis, stream, group))[2]
    return total


async def drain(
    redis: Redis, keys: Keys, timeout_s: float, on_wait: Callable[[int], None],
    poll_s: float = 1.0,
) -> bool:  # fmt: skip
    """Wait until nothing runs (True), or `timeout_s` passed (False); `on_wait` hears how many
    runs are left after each look."""
    deadline = time.monotonic() + timeout_s
    while (left := await running(redis, keys)) > 0:
        on_wait(left)
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)  # polling Redis while workers finish: no event to wait on
    return True


async def command(
    redis: Redis, keys: Keys, action: str, role: str | None, timeout_s: float, out: TextIO
) -> int:
    """`vidstream pause ROLE`, `resume ROLE`, `drain`: what the CLI runs."""
    if action in ("pause", "resume"):
        assert role is not None
        try:
            await set_paused(redis, keys, role, action == "pause")
        except ConfigError as exc:
            out.write(f"{exc}\n")
            return 2
        verb = "paused: takes no new work" if action == "pause" else "resumed"
        out.write(f"{role} {verb}\n")
        return 0
    shown: list[int] = []

    def progress(left: int) -> None:
        if not shown or shown[-1] != left:
            out.write(f"waiting for {left} run(s) to finish\n")
            out.flush()
        shown.append(left)

    if await drain(redis, keys, timeout_s, progress):
        out.write("drained: nothing is running\n")
        return 0
    out.write(f"still running after {timeout_s:g} s\n")
    return 1
