"""A pool of Whisper server processes, each keeping its model loaded between jobs.

A job borrows one server, streams its segments back, and returns it. A server that is cancelled,
stalls, runs past its request's deadline or dies is stopped (with its FFmpeg decoder: same process
group) and replaced in the background, so a cancelled job never leaves a half-finished request
behind in a server. What the server says went wrong reaches users as a short message; its own
words (paths, tracebacks) go to the logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from vidstream.core import logs, process
from vidstream.core.backoff import Backoff
from vidstream.core.errors import JobError, PermanentError, TransientError
from vidstream.core.lifecycle import Component
from vidstream.core.tasks import cancel_and_wait
from vidstream.media.transcript import Segment, Transcript

PERMANENT_CODES = frozenset(
    {"invalid_media", "unsupported_language", "unsupported_task", "too_long"}
)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TranscribeRequest:
    """Transcribe `path` from `start` to `end` seconds; times stay absolute."""

    path: Path
    demuxer: str  # the probed one: FFmpeg is forced to it
    language: str | None
    start: float
    end: float  # always given: no more sound than this is decoded, whatever the header says
    duration: float = 0.0  # of the whole source, as probed: sizes the server's first buffer
    last: bool = False  # `end` is MAX_DURATION_S: sound going on past it fails `too_long`
    timeout_s: float = 600.0  # for the whole request, decoding included
    task: str = "transcribe"  # or "translate" (a multilingual model's): English text


@dataclass(frozen=True, slots=True)
class DiarizeRequest:
    """Tell apart who says each word of a transcript of `path` (`words`: their spans)."""

    path: Path
    demuxer: str
    words: tuple[tuple[float, float], ...]
    speakers: int  # how many; 0: as many as can be told apart
    duration: float = 0.0  # of the whole source, as probed
    range_s: float = 1200.0  # the most sound decoded at once
    timeout_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Heard:
    """What one request transcribed, and whether the sound goes on past its range."""

    transcript: Transcript  # its duration: the seconds of sound decoded in the range
    more: bool


@dataclass(frozen=True, slots=True)
class WhisperConfig:
    ffmpeg: str
    model: str = ""  # its folder ("" the bundled model's)
    name: str = ""  # its name, as jobs choose it ("" its folder's)
    threads: int = 1
    beam_size: int = 5
    vad: bool = True  # transcribe only what voice detection calls speech
    load_timeout_s: float = 120.0
    stall_timeout_s: float = 600.0  # no segment for this long: the server is stuck


class WhisperServer:
    """One child process running `vidstream.media.whisper_server`."""

    def __init__(self, config: WhisperConfig) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.model = ""
        self.model_name = ""
        self._stderr: process.Tail | None = None
        self.log = logs.get(component="whisper")

    async def start(self) -> None:
        cfg = self.config
        argv = [
            sys.executable,
            "-m",
            "vidstream.media.whisper_server",
            "--ffmpeg",
            cfg.ffmpeg,
            "--threads",
            str(cfg.threads),
            "--beam-size",
            str(cfg.beam_size),
        ]
        if cfg.vad:
            argv.append("--vad")
        if cfg.model:
            argv += ["--model", cfg.model]
        if cfg.name:
            argv += ["--name", cfg.name]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(cfg.threads)}
        self.proc = await process.spawn(argv, stdin=process.PIPE, env=env, limit=16 * 2**20)
        self._stderr = process.Tail(self.proc.stderr)
        try:
            async with asyncio.timeout(cfg.load_timeout_s):
                ready = await self._read()
        except (TimeoutError, TransientError) as exc:
            await self.close()
            raise TransientError(
                f"the Whisper server did not start: {exc}", code="whisper_crashed"
            ) from None
        except BaseException:  # cancelled while it loads: no process is left behind
            await asyncio.shield(self.close())
            raise
        if ready.get("type") != "ready":
            await self.close()
            raise TransientError(
                f"the Whisper model did not load: {ready.get('message')}", code="model_load_failed"
            )
        self.model = str(ready.get("model", ""))
        self.model_name = str(ready.get("name") or self.model.rstrip("/").rsplit("/", 1)[-1])

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            tail = await self._stderr.text(1.0) if self._stderr else ""
            self.log.warning("whisper_server_exited", pid=self.pid, stderr=tail[-2000:])
            raise TransientError("The Whisper server stopped unexpectedly.", code="whisper_crashed")
        try:
            message: dict[str, Any] = json.loads(line)
        except ValueError:
            self.log.warning("whisper_server_unreadable", pid=self.pid, line=line[:500])
            raise TransientError(
                "The Whisper server sent a reply that could not be read.", code="whisper_crashed"
            ) from None
        return message

    async def transcribe(
        self,
        request_id: str,
        req: TranscribeRequest,
        on_segment: Callable[[Segment], Awaitable[None]],
        log: structlog.stdlib.BoundLogger,
    ) -> Heard:
        assert self.proc is not None
        assert self.proc.stdin is not None
        line = json.dumps(
            {
                "id": request_id,
                "path": str(req.path),
                "format": req.demuxer,
                "start": req.start,
                "end": req.end,
                "duration": req.duration,
                "last": req.last,
                "language": req.language,
                "task": req.task,
            }
        )
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(req.timeout_s):
                return await self._answer(req, on_segment, log)
        except TimeoutError:  # the pool stops this server, and its FFmpeg with it
            raise TransientError(
                f"Transcribing took longer than {req.timeout_s:g} s.", code="timeout"
            ) from None

    async def _answer(
        self,
        req: TranscribeRequest,
        on_segment: Callable[[Segment], Awaitable[None]],
        log: structlog.stdlib.BoundLogger,
    ) -> Heard:
        segments: list[Segment] = []
        while True:
            try:
                async with asyncio.timeout(self.config.stall_timeout_s):
                    msg = await self._read()
            except TimeoutError:
                raise TransientError(
                    f"Whisper produced nothing for {self.config.stall_timeout_s:g} s.",
                    code="timeout",
                ) from None
            kind = msg.get("type")
            if kind == "segment":
                segment = Segment.from_dict(msg)
                segments.append(segment)
                await on_segment(segment)
            elif kind == "done":
                transcript = Transcript(
                    language=str(msg.get("language") or req.language or ""),
                    duration=float(msg.get("duration") or 0.0),
                    segments=tuple(segments),
                    model=self.model_name,
                )
                return Heard(transcript, more=bool(msg.get("more")))
            elif kind == "error":
                raise _failed(msg, log)

    async def diarize(
        self, request_id: str, req: DiarizeRequest, log: structlog.stdlib.BoundLogger
    ) -> list[int]:
        """A speaker label per word of `req` (labels are the server's: any whole numbers)."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        line = json.dumps({
            "id": request_id, "op": "diarize", "path": str(req.path), "format": req.demuxer,
            "words": req.words, "speakers": req.speakers, "duration": req.duration,
            "range_s": req.range_s,
        })  # fmt: skip
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(req.timeout_s):
                msg = await self._read()
        except TimeoutError:  # the pool stops this server, and its FFmpeg with it
            raise TransientError(
                f"Telling the speakers apart took longer than {req.timeout_s:g} s.",
                code="timeout",
            ) from None
        if msg.get("type") == "error":
            raise _failed(msg, log)
        labels = [int(x) for x in msg.get("labels") or ()]
        if msg.get("type") != "speakers" or len(labels) != len(req.words):
            raise TransientError("The Whisper server answered out of turn.", code="whisper_crashed")
        log.info("speakers_told_apart", windows=msg.get("windows"), took_s=msg.get("took_s"),
                 speakers=len(set(labels)))  # fmt: skip
        return labels

    async def close(self) -> None:
        if self.proc is not None:
            await process.terminate(self.proc)
        if self._stderr:
            self._stderr.cancel()


def _failed(msg: dict[str, Any], log: structlog.stdlib.BoundLogger) -> JobError:
    code, message = str(msg.get("code")), str(msg.get("message"))
    log.warning("whisper_request_failed", code=code, detail=msg.get("detail"))
    cls: type[JobError] = PermanentError if code in PERMANENT_CODES else TransientError
    return cls(message, code=code)


class WhisperPool(Component):
    """`size` Whisper servers; `transcribe` waits for a free one."""

    def __init__(self, config: WhisperConfig, size: int) -> None:
        self.config = config
        self.size = size
        self._idle: asyncio.Queue[WhisperServer] = asyncio.Queue()
        self._all: set[WhisperServer] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._counter = 0
        self.log = logs.get(component="whisper")

    async def start(self) -> None:
        """Start every server and wait until each has loaded its model; safe to call twice."""
        if self._started:
            return
        self._started = True
        servers = [WhisperServer(self.config) for _ in range(self.size)]
        try:
            results = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
        except BaseException:  # cancelled: each server stops itself; these are the stragglers
            await asyncio.shield(asyncio.gather(*(s.close() for s in servers)))
            raise
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException):
                await asyncio.gather(*(s.close() for s in servers))
                raise result
            self._all.add(server)
            self._idle.put_nowait(server)
        self.log.info(
            "whisper_ready",
            servers=self.size,
            model=servers[0].model or "tiny.en",
            threads=self.config.threads,
        )

    async def transcribe(
        self,
        req: TranscribeRequest,
        on_segment: Callable[[Segment], Awaitable[None]],
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> Heard:
        """Transcribe one range on a free server; `log` (the job's) gets what went wrong."""
        return await self._on_server(
            lambda server, rid: server.transcribe(rid, req, on_segment, log or self.log)
        )

    async def diarize(
        self, req: DiarizeRequest, log: structlog.stdlib.BoundLogger | None = None
    ) -> list[int]:
        """A speaker label per word of `req`, told apart on a free server (`voices`)."""
        return await self._on_server(lambda server, rid: server.diarize(rid, req, log or self.log))

    async def _on_server(self, ask: Callable[[WhisperServer, str], Awaitable[T]]) -> T:
        """`ask` a free server; a server left in an unknown state is replaced."""
        server = await self._acquire()
        self._counter += 1
        healthy = False
        try:
            result = await ask(server, str(self._counter))
            healthy = True
            return result
        except PermanentError:
            healthy = server.alive  # the server answered cleanly; it can take the next request
            raise
        finally:
            if healthy:
                self._idle.put_nowait(server)
            else:
                # Cancelled, stalled or crashed mid-request: its state is unknown, so stop it
                # (shielded: a cancelled job still waits for the process group to be gone).
                await asyncio.shield(self._replace(server))

    async def _acquire(self) -> WhisperServer:
        """An idle, live server; a dead one is replaced rather than handed out."""
        while True:
            try:
                async with asyncio.timeout(self.config.load_timeout_s):
                    server = await self._idle.get()
            except TimeoutError:
                raise TransientError(
                    f"no Whisper server became free within {self.config.load_timeout_s:g} s",
                    code="whisper_unavailable",
                ) from None
            if server.alive:
                return server
            self.log.warning("whisper_server_died", pid=server.pid)
            await self._replace(server)

    async def _replace(self, server: WhisperServer) -> None:
        await server.close()
        self._all.discard(server)
        if not self._closed:
            task = asyncio.create_task(self._spawn_replacement())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _spawn_replacement(self) -> None:
        backoff = Backoff(1.0, 30.0)
        while not self._closed:
            server = WhisperServer(self.config)
            try:
                await server.start()
            except Exception as exc:  # OSError (fork under memory pressure) as much as a bad model
                await server.close()
                self.log.error("whisper_restart_failed", error=str(exc))
                await backoff.sleep()
                continue
            if self._closed:
                await server.close()
                return
            self._all.add(server)
            self._idle.put_nowait(server)
            return

    def pids(self) -> list[int]:
        return [s.pid for s in self._all if s.pid is not None]

    async def close(self) -> None:
        """Stop every server; safe to call twice."""
        self._closed = True
        await cancel_and_wait(list(self._tasks))
        await asyncio.gather(*(s.close() for s in list(self._all)))
        self._all.clear()
