"""Pause and drain, for deploys: a paused worker role takes no new work but finishes what it
runs; a paused gateway answers new jobs with 503 `paused`; drain waits until nothing runs.

A pause is a Redis key per role, so it holds for every process of the role on every machine,
and for processes that start while it is set.

Drain waits for the stage entries live workers hold. Entries pending under a consumer with no
heartbeat were left by a worker that died; another worker of the role takes them over, but not
while the role is paused, so drain reports them rather than waiting for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from vidstream.core.errors import ConfigError
from vidstream.job.model import Stage
from vidstream.job.stages import PAUSABLE
from vidstream.state.keys import Keys


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


@dataclass(frozen=True, slots=True)
class Running:
    """Stage entries read and not yet acked: those live workers hold (`runs`), and those left
    under a consumer whose worker has no heartbeat (`orphaned`: it died)."""

    runs: int = 0
    orphaned: int = 0


async def running(redis: Redis, keys: Keys) -> Running:
    """What is under way now, by whether its worker is alive."""
    runs = orphaned = 0
    alive: dict[str, bool] = {}
    for stage in Stage:
        group = keys.stage_group(stage)
        for stream in keys.worker_streams(stage):
            try:
                consumers: list[dict[str, Any]] = await redis.xinfo_consumers(stream, group)
            except ResponseError:  # no such stream or group: nothing read from it
                continue
            for consumer in consumers:
                pending, name = int(consumer["pending"]), str(consumer["name"])
                if not pending:
                    continue
                if name not in alive:  # a worker's consumer name is its registry name
                    alive[name] = bool(await redis.exists(keys.worker(name)))
                if alive[name]:
                    runs += pending
                else:
                    orphaned += pending
    return Running(runs, orphaned)


async def drain(
    redis: Redis, keys: Keys, timeout_s: float, on_wait: Callable[[Running], None],
    poll_s: float = 1.0,
) -> Running:  # fmt: skip
    """Wait until no live worker runs anything, or `timeout_s` passed; return what was left at
    the last look (drained: `runs` is 0). `on_wait` hears each look while runs are left. A dead
    worker's entries are not waited for (they would keep a paused role from draining)."""
    deadline = time.monotonic() + timeout_s
    while (left := await running(redis, keys)).runs > 0:
        on_wait(left)
        if (remaining := deadline - time.monotonic()) <= 0:
            break
        # Polling Redis while workers finish: no event to wait on.
        await asyncio.sleep(min(poll_s, remaining))
    return left


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

    def progress(left: Running) -> None:
        if not shown or shown[-1] != left.runs:
            out.write(f"waiting for {left.runs} run(s) to finish\n")
            out.flush()
        shown.append(left.runs)

    left = await drain(redis, keys, timeout_s, progress)
    if left.orphaned:
        out.write(f"{left.orphaned} run(s) left by workers that died (no heartbeat): not waited "
                  "for; a live worker of their role takes them over when not paused\n")  # fmt: skip
    if left.runs == 0:
        out.write("drained: no live worker runs anything\n" if left.orphaned
                  else "drained: nothing is running\n")  # fmt: skip
        return 0
    out.write(f"still running after {timeout_s:g} s\n")
    return 1
