"""The client commands' HTTP: the standard library's `http.client`, each request in a thread.

`vidstream submit` makes a handful of requests (an upload link, the upload, the job, its
outputs), so a new connection each costs nothing worth pooling, while importing aiohttp cost 140
of the 330 ms the command took to start. Timeouts are per socket operation: a connection that
sends nothing for `timeout_s` fails with `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

BLOCK = 1 << 20  # bytes read from a file per send, and per progress report


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


Body = bytes | Readable | None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON; {} when it is none."""
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError:
            return {}


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout_s, blocksize=BLOCK)
    return conn, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _exchange(method: str, url: str, body: Body,
              headers: Mapping[str, str], timeout_s: float,
              sink: Callable[[bytes], None] | None) -> Response:  # fmt: skip
    conn, target = _connection(url, timeout_s)
    try:
        conn.request(method, target, body=body, headers=dict(headers))
        answer = conn.getresponse()
        if sink is None or answer.status >= 300:
            return Response(answer.status, answer.reason, answer.read())
        while chunk := answer.read(BLOCK):
            sink(chunk)
        return Response(answer.status, answer.reason, b"")
    finally:
        conn.close()


async def request(
    method: str, url: str, *, body: Body = None,
    headers: Mapping[str, str] | None = None, timeout_s: float = 120.0,
    sink: Callable[[bytes], None] | None = None,
) -> Response:  # fmt: skip
    """Send a request and read its answer in a thread. A file `body` is streamed (give its
    Content-Length); with `sink`, a successful answer's body goes to it a block at a time
    (called in the thread) instead of into memory."""
    return await asyncio.to_thread(_exchange, method, url, body, headers or {}, timeout_s, sink)


class Progress(io.RawIOBase):
    """A file read for sending, reporting how much has been read to `report` on the loop."""

    def __init__(self, f: IO[bytes], report: Callable[[int], None]) -> None:
        super().__init__()
        self._f, self._report, self._done = f, report, 0
        self._loop = asyncio.get_running_loop()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._done += len(chunk)
        self._loop.call_soon_threadsafe(self._report, self._done)
        return chunk
