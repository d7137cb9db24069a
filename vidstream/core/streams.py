"""What every reader of an event stream agrees on, without Redis: the shape of an entry id
(`<ms>-<seq>`) and how long a blocking read waits. `state.bus` reads Redis Streams with them; the
hub and the in-memory feed use them with no Redis at all."""

from __future__ import annotations

import re

# The longest a role blocks in XREAD/XREADGROUP; the Redis client's socket timeout outlasts it.
BLOCK_MS = 1000

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # ASCII digits: \d takes "١٢" too


def is_stream_id(value: str) -> bool:
    """Whether `value` is an id Redis accepts: two ASCII numbers that fit in 64 bits."""
    if not _STREAM_ID.fullmatch(value):
        return False
    ms, seq = stream_id(value)
    return ms < 2**64 and seq < 2**64


def stream_id(value: str) -> tuple[int, int]:
    """An entry id as a pair that orders as Redis orders ids."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)
