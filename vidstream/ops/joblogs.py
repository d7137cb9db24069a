"""Job logs: every structured log line about a job, kept with the job in Redis.

`capture`, a structlog processor (`logs.configure` adds it), copies each line whose context has a
`job_id` (level, event, stage, role, the other fields cut to size, the time) into the buffer of
the process's `JobLogShipper`. The buffer is a bounded deque: logging never waits and never
grows without bound; when it is full the oldest line falls off and is counted. The shipper, a
`Service`, writes what is buffered every FLUSH_INTERVAL_S (at once when a batch fills) in one
pipeline: per job, one `SHIP` step appending its lines to `Keys.job_logs(job_id)`, about
PER_JOB_MAX newest kept. Through a Redis outage it keeps its batch and retries with backoff while
new lines wait in the buffer (and, past its bound, fall off); on close it flushes once more,
within FINAL_FLUSH_S.

Which stack a line belongs to: structlog is configured once per process, but a process may run
several stacks (the tests do) on other Redis servers or key prefixes, and nothing in a line says
which stack wrote it (loggers are bound by roles, and a context variable set while one stack
starts would leak into the next one started from the same task). So lines are routed by the
data instead:

- every running shipper is in a process-wide registry, one per Redis server and prefix (a second
  shipper for the same destination stands by until the first closes: no line is written twice);
- `capture` offers each line to every one of them (in a deployed process, that is exactly one);
- a shipper writes a job's lines only if the job exists under its own prefix: `SHIP` checks the
  job hash and appends in one atomic step, in the job's cluster slot.

Job ids are random, so a job exists under one prefix only: its lines land next to it, whichever
stack logged them, and nowhere else. The same check keeps a late line from bringing back the
logs of a job that retention has removed.

Who: a worker's consumer name (`host-role-N`) names its machine, which is no business of the
tenants who read a job's logs; their lines carry the worker's `worker` label instead
(`worker_label`), and the process's own log keeps both, for operators to go from one to the
other.

Expiry: `SHIP` gives the stream the job hash's remaining TTL when it has one (the job ended), or
else `ttl_s`, the longest retention, refreshed on every write: a job's logs never outlive it.

Order: a stream holds lines in the order they reached Redis; one process's lines in the order
they were logged, while lines of two processes may interleave within about a flush interval.
Each line keeps the time it was logged (`at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from vidstream.core import logs
from vidstream.core.backoff import Backoff, pause
from vidstream.core.signing import Signer
from vidstream.core.tasks import Service
from vidstream.job.model import isoformat
from vidstream.state import scripts
from vidstream.state.keys import Keys

PER_JOB_MAX = 500  # lines kept per job (MAXLEN ~: a little more until Redis trims a whole node)
BATCH_SIZE = 200  # lines per pipeline
MAX_BUFFERED = 10_000  # lines waiting in one process; the oldest are dropped beyond
FLUSH_INTERVAL_S = 0.2
WRITE_TIMEOUT_S = 3.0
FINAL_FLUSH_S = 2.0
MAX_FIELDS = 24
MAX_VALUE_CHARS = 300
MAX_EXCEPTION_CHARS = 4000  # a traceback is the one long value worth keeping
MAX_NAME_CHARS = 100

# Fields a line has its own place for, or that are structlog's plumbing; and `consumer`, which
# names the worker's host (the module docstring says why).
_NOT_FIELDS = frozenset({
    "event", "level", "timestamp", "job_id", "stage", "role", "exc_info", "stack_info", "stack",
    "consumer",
})  # fmt: skip


Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class LogLine:
    job_id: str
    at: float  # Unix time it was logged
    level: str
    event: str
    stage: str | None
    role: str | None
    fields: dict[str, Scalar]


# -- the pure part: a structlog event as a line, a line as stream fields, an entry as JSON -------


def worker_label(signer: Signer, role: str, name: str) -> str:
    """What a job's logs call the worker named `name`: its role and a keyed hash of the name,
    such as `render-5be0c2a1`. The same for a worker restarted in its slot, another on another
    host, and no host to be read in it (nor guessed: the hash needs the secret)."""
    return f"{role}-{signer.label('worker', name)}"


def line_of(event_dict: Mapping[str, Any], at: float) -> LogLine | None:
    """The line to keep for a structlog event, or None when it is about no job."""
    job_id = event_dict.get("job_id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        return None
    fields: dict[str, Scalar] = {}
    for key, value in event_dict.items():
        if key in _NOT_FIELDS or not isinstance(key, str) or key.startswith("_"):
            continue
        if len(fields) == MAX_FIELDS:
            break
        limit = MAX_EXCEPTION_CHARS if key == "exception" else MAX_VALUE_CHARS
        fields[_text(key, MAX_NAME_CHARS)] = _value(value, limit)
    return LogLine(
        job_id, at, _text(event_dict.get("level", "info"), 20),
        _text(event_dict.get("event", ""), MAX_NAME_CHARS),
        _label(event_dict.get("stage")), _label(event_dict.get("role")), fields,
    )  # fmt: skip


def _label(value: object) -> str | None:
    return None if value is None or value == "" else _text(value, MAX_NAME_CHARS)


def _value(value: object, limit: int) -> Scalar:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | set | frozenset | dict):
        if len(value) > 50:  # not worth rendering only to cut it
            return f"<{type(value).__name__} of {len(value)} items>"
        with contextlib.suppress(TypeError, ValueError, RecursionError):  # then str() below
            value = json.dumps(value, default=str, ensure_ascii=False)
    return _text(value, limit)


def _text(value: object, limit: int) -> str:
    """`value` as text of at most `limit` characters, encodable as UTF-8."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a field's own __str__ must not break the log call
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def encode(lines: list[LogLine]) -> list[str]:
    """`SHIP`'s six values per line."""
    out: list[str] = []
    for line in lines:
        out += [str(int(line.at * 1000)), line.level, line.event, line.stage or "",
                line.role or "", json.dumps(line.fields, separators=(",", ":"))]  # fmt: skip
    return out


def present(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A stored line as the API shows it."""
    try:
        extra = json.loads(fields.get("fields", "{}"))
    except ValueError:
        extra = {}
    at = fields.get("at", "0")
    return {
        "id": entry_id,
        "at": isoformat(int(at) / 1000 if at.isascii() and at.isdigit() else 0.0),
        "level": fields.get("level", ""),
        "event": fields.get("event", ""),
        "stage": fields.get("stage") or None,
        "role": fields.get("role") or None,
        "fields": extra if isinstance(extra, dict) else {},
    }


# -- the processor and the registry of shippers it feeds -------------------------------------

_registry: dict[tuple[object, ...], list[JobLogShipper]] = {}
_targets: tuple[JobLogShipper, ...] = ()  # the first of each destination; swapped, never mutated


def capture(logger: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: hand a copy of each line about a job to the running shippers. Never
    waits and never fails the log call; the line itself goes on unchanged."""
    targets = _targets
    if targets and "job_id" in event_dict:
        try:
            line = line_of(event_dict, time.time())
        except Exception:  # a copy for the job's logs must never cost the log line itself
            return event_dict
        if line is not None:
            for shipper in targets:
                shipper.offer(line)
    return event_dict


def _register(shipper: JobLogShipper) -> None:
    group = _registry.setdefault(shipper.destination, [])
    if shipper not in group:
        group.append(shipper)
    _refresh()


def _unregister(shipper: JobLogShipper) -> None:
    group = _registry.get(shipper.destination, [])
    if shipper in group:
        group.remove(shipper)
    if not group:
        _registry.pop(shipper.destination, None)
    _refresh()


def _refresh() -> None:
    global _targets
    _targets = tuple(group[0] for group in _registry.values() if group)


async def drain() -> None:
    """Wait until every running shipper has written what it was given so far."""
    for group in list(_registry.values()):
        for shipper in list(group):
            await shipper.drain()


def _destination(redis: Redis, keys: Keys) -> tuple[object, ...]:
    pool = redis.connection_pool
    kw = pool.connection_kwargs
    # Through Sentinel no host is known, only the primary's name (`state.sentinel`).
    service = getattr(pool, "service_name", None)
    return (kw.get("host"), kw.get("port"), kw.get("path"), service, kw.get("db", 0), keys.prefix)


# -- the shipper -----------------------------------------------------------------------------


class JobLogShipper(Service):
    """Writes the lines `capture` hands it to their jobs' log streams, in batches."""

    def __init__(
        self, redis: Redis, keys: Keys, ttl_s: int, *, batch_size: int = BATCH_SIZE,
        max_lines: int = MAX_BUFFERED, write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.redis, self.keys, self.ttl_s, self.batch_size = redis, keys, ttl_s, batch_size
        self.write_timeout_s = write_timeout_s
        self.stop_grace_s = write_timeout_s + FINAL_FLUSH_S + 1.0  # a write, then the last flush
        self.destination = _destination(redis, keys)
        self._buffer: deque[LogLine] = deque(maxlen=max_lines)
        self._pending: list[LogLine] = []  # the batch being written, kept through failures
        self._ship = scripts.register(redis, "job_logs_ship")
        self._wake = asyncio.Event()  # lines arrived in an empty buffer, a batch filled, or stop
        self._settle = asyncio.Event()  # a batch was written (for `drain`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._failing = False
        self._reported_drops = 0
        # Counters: lines offered; written, dropped or refused (no such job); dropped; refused.
        self.offered = self.settled = self.dropped = self.refused = 0
        self.log = logs.get(role="joblogs")

    @property
    def buffered(self) -> int:
        """Lines waiting to be written."""
        return len(self._buffer) + len(self._pending)

    def offer(self, line: LogLine) -> None:
        """Buffer `line` (from any thread); drops the oldest one when full. Never blocks."""
        buffer = self._buffer
        was_empty = not buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1
            self.settled += 1
        buffer.append(line)
        self.offered += 1
        if was_empty or len(buffer) == self.batch_size:
            self._signal()

    def _signal(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._thread:
            self._wake.set()
        else:  # asyncio objects belong to their loop's thread
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        if not self.alive:
            self._loop, self._thread = asyncio.get_running_loop(), threading.get_ident()
            _register(self)
        await super().start()

    async def close(self) -> None:
        _unregister(self)  # a shipper standing by for the same destination takes over
        await super().close()

    async def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> None:
        """Wait until every line offered so far is written, dropped or refused."""
        target = self.offered
        while self.settled < target and self.alive:
            self._settle.clear()
            self._wake.set()  # write now rather than after a flush interval
            await self._settle.wait()

    async def run(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while not self.stopping.is_set():
            if not (self._buffer or self._pending):
                await self._wake.wait()
            self._wake.clear()
            # Gather lines for a flush interval, unless a batch is full already (or `drain`).
            if len(self._buffer) < self.batch_size and not self.stopping.is_set():
                await pause(FLUSH_INTERVAL_S, self._wake)
            while (self._buffer or self._pending) and not self.stopping.is_set():
                if await self._write_next():
                    backoff.reset()
                else:
                    await backoff.sleep(self.stopping)
        await self._flush_last()

    async def _flush_last(self) -> None:
        """At close: write what is left, once, within FINAL_FLUSH_S; count what is lost."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_FLUSH_S):
                while (self._buffer or self._pending) and await self._write_next():
                    pass
        if self.buffered:
            self.log.warning("job_logs_lost", lines=self.buffered)

    async def _write_next(self) -> bool:
        """Write one batch; return whether Redis took it (else it is kept for the next try)."""
        if not self._pending:
            take = min(self.batch_size, len(self._buffer))
            self._pending = [self._buffer.popleft() for _ in range(take)]
        try:
            async with asyncio.timeout(self.write_timeout_s):
                refused = await self._write(self._pending)
        except ResponseError as exc:  # Redis refused the batch itself: trying again won't help
            self.log.error("job_logs_refused", lines=len(self._pending), error=str(exc))
            refused = len(self._pending)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                self.log.warning("job_logs_unavailable", error=str(exc) or "timed out")
                self._failing = True
            return False
        self.settled += len(self._pending)
        self.refused += refused
        self._pending = []
        self._settle.set()
        if self._failing:
            self.log.info("job_logs_resumed")
            self._failing = False
        if self.dropped > self._reported_drops:
            self.log.warning("job_logs_dropped", lines=self.dropped - self._reported_drops,
                             buffer=self._buffer.maxlen)  # fmt: skip
            self._reported_drops = self.dropped
        return True

    async def _write(self, lines: list[LogLine]) -> int:
        """One pipeline, one `SHIP` per job; return how many lines had no job to go to."""
        by_job: dict[str, list[LogLine]] = {}
        for line in lines:
            by_job.setdefault(line.job_id, []).append(line)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, group in by_job.items():
                keys = [self.keys.job(job_id), self.keys.job_logs(job_id)]
                args: list[str | int] = [PER_JOB_MAX, self.ttl_s, *encode(group)]
                await self._ship(keys=keys, args=args, client=pipe)
            written = await pipe.execute()
        return sum(len(g) for g, n in zip(by_job.values(), written, strict=True) if not n)
