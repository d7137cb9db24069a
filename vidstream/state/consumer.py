"""One worker's side of a stage's consumer group, over the stage's streams (one per priority).

Where the next entry comes from, in order:
1. entries still pending under this consumer's name: a restart after a crash takes them up;
2. an entry another consumer has left idle for longer than the visibility timeout (XAUTOCLAIM):
   its worker died, since a live worker refreshes its entries (XCLAIM ... JUSTID);
3. a new entry (XREADGROUP >): from the first stream that has one, high before normal before
   low, except that every `FAIR_EVERY`th pick looks at the lowest first, so low still moves
   under a steady load of high; when none has one, one blocking read waits on all of them.

With several streams, entry ids are qualified with their stream's place (`"2/1712...-0"`) so
`ack` and `refresh` know where each one lives; with one stream they are plain ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from vidstream.core.backoff import pause
from vidstream.state import bus
from vidstream.state.bus import BLOCK_MS, Entry

_CLAIM_CALLS = 50
FAIR_EVERY = 5  # one pick in five starts with the lowest priority
# While work keeps coming, the pause flag is read at most this often rather than before every
# entry (a round trip a job less); after a blocking read it is read again at once.
PAUSE_CHECK_S = 0.5


class StageConsumer:
    def __init__(
        self, redis: Redis, streams: str | Sequence[str], group: str, name: str,
        visibility_ms: int, rescan_s: float = 2.0, paused_key: str | None = None,
    ) -> None:  # fmt: skip
        self.streams = (streams,) if isinstance(streams, str) else tuple(streams)
        self.paused_key = paused_key  # while it exists, no new work is taken (`vidstream pause`)
        self.paused = False
        self._woken = asyncio.Event()
        self.redis, self.group, self.name = redis, group, name
        self.visibility_ms = visibility_ms  # idle longer than this: its worker is gone
        self.rescan_s = rescan_s
        self.waker = bus.Waker(redis)  # the blocking read's own connection
        # Cursors through our own pending entries per stream; None once done.
        self._own: list[str | None] = ["0"] * len(self.streams)
        self._claim_cursors = ["0-0"] * len(self.streams)
        self._next_claim = 0.0
        self._picks = 0
        self._ready: deque[tuple[int, Entry]] = deque()  # one blocking read got several
        self._pause_checked = 0.0

    @property
    def stream(self) -> str:
        """The first (or only) stream."""
        return self.streams[0]

    def _qualify(self, index: int, entry: Entry) -> Entry:
        entry_id, fields = entry
        return (entry_id if len(self.streams) == 1 else f"{index}/{entry_id}", fields)

    def _split(self, entry_id: str) -> tuple[int, str]:
        if len(self.streams) == 1:
            return 0, entry_id
        index, _, plain = entry_id.partition("/")
        return int(index), plain

    async def ensure_group(self) -> None:
        """Create the group (and the streams) if missing; a Redis that lost them gets them
        back."""
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def next(self) -> tuple[Entry, bool] | None:
        """The next entry to run and whether it was reclaimed from another consumer, or None
        after one blocking read found nothing."""
        try:
            return await self._next()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # A stream or group vanished (a Redis restarted without its data): recreate them
            # and start over with our own pending entries.
            await self.ensure_group()
            self._own = ["0"] * len(self.streams)
            self._claim_cursors = ["0-0"] * len(self.streams)
            return None

    async def _next(self) -> tuple[Entry, bool] | None:
        if self.paused_key is not None and (
            self.paused or time.monotonic() - self._pause_checked >= PAUSE_CHECK_S
        ):
            self.paused = bool(await self.redis.exists(self.paused_key))
            self._pause_checked = time.monotonic()
            if self.paused:  # take nothing: not our own, not a dead worker's, not a new one
                await pause(BLOCK_MS / 1000, self._woken)
                return None
        for i, stream in enumerate(self.streams):
            cursor = self._own[i]
            if cursor is None:
                continue
            batch = await bus.read_group(
                self.redis, self.group, self.name, stream, cursor, count=1, block_ms=None
            )
            if batch:
                self._own[i] = batch[0][0]
                return self._qualify(i, batch[0]), False
            self._own[i] = None
        if self._ready:
            index, entry = self._ready.popleft()
            return self._qualify(index, entry), False
        if time.monotonic() >= self._next_claim:
            if claimed := await self._reclaim():
                return claimed, True
            # Nothing idle long enough: look again after a fraction of the timeout.
            self._next_claim = time.monotonic() + self.rescan_s
        return await self._new()

    async def _reclaim(self) -> Entry | None:
        for i, stream in enumerate(self.streams):
            # XAUTOCLAIM looks at a few pending entries per call: go on through the whole list
            # (bounded) before resting, so a dead worker's entry is found without delay.
            for _ in range(_CLAIM_CALLS):
                self._claim_cursors[i], claimed = await bus.autoclaim(
                    self.redis, stream, self.group, self.name, self.visibility_ms,
                    self._claim_cursors[i],
                )  # fmt: skip
                if claimed:
                    return self._qualify(i, claimed[0])
                if self._claim_cursors[i] == "0-0":
                    break
        return None

    def _order(self) -> list[int]:
        """The streams to look at, in order: priority order, or lowest first on a fair turn."""
        self._picks += 1
        order = list(range(len(self.streams)))
        return order[::-1] if self._picks % FAIR_EVERY == 0 else order

    async def _new(self) -> tuple[Entry, bool] | None:
        if len(self.streams) > 1:
            for i in self._order():
                batch = await bus.read_group(
                    self.redis, self.group, self.name, self.streams[i], ">", count=1,
                    block_ms=None,
                )  # fmt: skip
                if batch:
                    return self._qualify(i, batch[0]), False
        try:
            blocking = await self.waker.connection()
            found = await bus.read_groups(
                blocking, self.group, self.name, self.streams, count=1, block_ms=BLOCK_MS
            )
        except RedisError:
            self.waker.lost()
            raise
        self._pause_checked = 0.0  # it may have waited long: read the pause flag next time
        # Entries on several streams at once: take the highest priority now, the rest next
        # (they are delivered to us already).
        got = sorted((self.streams.index(stream), entry) for stream, entry in found)
        if not got:
            return None
        self._ready.extend(got[1:])
        return self._qualify(*got[0]), False

    async def wake(self) -> None:
        """End a blocking read (or a paused wait) in flight now: the worker is stopping."""
        self._woken.set()
        await self.waker.wake()

    async def close(self) -> None:
        await self.waker.aclose()

    async def ack(self, entry_id: str) -> None:
        index, plain = self._split(entry_id)
        await self.redis.xack(self.streams[index], self.group, plain)

    async def refresh(self, entry_ids: list[str]) -> None:
        """Reset the idle time of those of `entry_ids` still pending under our name, so no other
        worker reclaims a job we are running, however long it takes."""
        by_stream: dict[int, list[str]] = {}
        for entry_id in entry_ids:
            index, plain = self._split(entry_id)
            by_stream.setdefault(index, []).append(plain)
        for index, plains in by_stream.items():
            stream = self.streams[index]
            mine = await bus.pending_ids(self.redis, stream, self.group, self.name)
            ours: list[Any] = [p for p in plains if p in mine]
            if ours:
                await self.redis.xclaim(stream, self.group, self.name, 0, ours, justid=True)
