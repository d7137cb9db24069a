"""Slow and greedy clients at the front doors: half-sent request heads and stalled bodies are
closed in time, connections are capped per address and in all, and everyone gets an answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.test_processes import ROOT, Role
from vidstream.core.admission import LINGER_S
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

TIMEOUT_S = 0.5  # the header and body timeouts these tests set
IDLE_S = 1.0  # and the idle one: longer, as in production (aiohttp's own would close first)
BOUND_S = 3.0  # how soon after it a connection must be closed (margin for a loaded machine)
Streams = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


@pytest.fixture
async def gateway(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    settings = make_settings(
        http_header_timeout_s=TIMEOUT_S, http_body_timeout_s=TIMEOUT_S,
        http_idle_timeout_s=IDLE_S, gateway_max_connections_per_ip=1000,
    )  # fmt: skip
    async with Stack(settings, ("gateway",)) as stack:
        yield stack


@contextlib.asynccontextmanager
async def raw(host: str, port: int, count: int = 1) -> AsyncIterator[Streams]:
    """`count` plain TCP connections, closed at the end whatever happened."""
    streams: Streams = []
    try:
        for _ in range(count):
            streams.append(await asyncio.open_connection(host, port))
        yield streams
    finally:
        for _, writer in streams:
            writer.close()


def hostport(stack: Stack) -> tuple[str, int]:
    assert stack.gateway is not None
    return stack.gateway.host, stack.gateway.port


async def until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not)."""
    got = b""
    async with asyncio.timeout(timeout_s):
        try:
            while chunk := await reader.read(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


def answer(raw: bytes) -> tuple[int, Any]:
    """The status and JSON body of a whole HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else None


async def test_half_sent_request_heads_are_closed(gateway: Stack) -> None:
    """Many connections that each send half a request head are answered 408 and closed after
    HTTP_HEADER_TIMEOUT_S, and a well-behaved client is served meanwhile."""
    host, port = hostport(gateway)
    async with raw(host, port, 50) as streams:
        for _, writer in streams:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: slow")
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/healthz") as r:
            assert r.status == 200
        closed = await asyncio.gather(*(until_closed(reader, BOUND_S) for reader, _ in streams))
        assert time.monotonic() - started < TIMEOUT_S + BOUND_S
    for got in closed:
        status, body = answer(got)
        assert status == 408 and body["error"]["code"] == "request_timeout", got


async def test_idle_keep_alive_connections_are_closed(gateway: Stack) -> None:
    """A kept-alive connection that sends no next request is closed after HTTP_IDLE_TIMEOUT_S."""
    async with raw(*hostport(gateway)) as [(reader, writer)]:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await until_closed(reader, IDLE_S + BOUND_S)).startswith(b"HTTP/1.1 200")


async def test_a_stalled_body_ends_with_408_and_a_slow_one_streams(gateway: Stack) -> None:
    """A body that stops arriving ends with 408 `request_timeout` after HTTP_BODY_TIMEOUT_S;
    one that trickles in for several times that long is taken whole."""
    host, port = hostport(gateway)
    async with raw(host, port) as [(reader, writer)]:
        writer.write(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b'Content-Length: 1000\r\n\r\n{"source": ')  # fmt: skip
        status, body = answer(await until_closed(reader, TIMEOUT_S + BOUND_S))
    assert status == 408 and body["error"]["code"] == "request_timeout", body

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(8):  # 8 x 0.2 s: three times the timeout in all, no gap as long as it
            yield b"\0" * 1000
            await asyncio.sleep(0.2)  # the client's pace, not synchronisation

    async with aiohttp.ClientSession() as http:
        ticket = {"filename": "a.mp4", "content_type": "video/mp4", "size": 8000}
        async with http.post(f"http://{host}:{port}/v1/uploads", json=ticket) as r:
            upload = await r.json()
        async with http.put(upload["upload_url"], data=trickle(), headers=upload["headers"]) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["size"] == 8000


@pytest.mark.parametrize(
    ("caps", "status"),
    [({"gateway_max_connections_per_ip": 3}, 429), ({"max_connections": 3}, 503)],
)
async def test_connections_are_capped_with_an_answer(
    make_settings: Callable[..., Settings], redis: Redis, caps: dict[str, int], status: int
) -> None:
    """Past GATEWAY_MAX_CONNECTIONS_PER_IP (429) or MAX_CONNECTIONS (503) a new connection is
    answered with a JSON error and closed; those held go on working, and closing one makes room."""
    async with Stack(make_settings(**caps), ("gateway",)) as stack:
        host, port = hostport(stack)
        async with raw(host, port, 3) as held:
            async with raw(host, port) as [(reader, writer)]:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                got, body = answer(await until_closed(reader, BOUND_S))
            assert got == status and body["error"]["code"] == "too_many_connections", body
            first_reader, first = held[0]
            first.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer(await until_closed(first_reader, BOUND_S))[0] == 200
            await _served_eventually(host, port)


async def _served_eventually(host: str, port: int) -> None:
    """A new connection is served once the server has seen a held one close."""
    async with asyncio.timeout(BOUND_S):
        while True:
            async with raw(host, port) as [(reader, writer)]:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status, _ = answer(await until_closed(reader, BOUND_S))
            if status == 200:
                return


async def test_a_flood_of_refusals_holds_few_descriptors(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A refused connection is kept until its answer is read (LINGER_S at most), but only an
    eighth of MAX_CONNECTIONS of them (16 at least): past that a flood is reset unanswered."""
    async with Stack(make_settings(max_connections=1), ("gateway",)) as stack:
        host, port = hostport(stack)
        async with raw(host, port), raw(host, port, 40) as flood:
            got = await asyncio.gather(
                *(until_closed(reader, LINGER_S + BOUND_S) for reader, _ in flood)
            )
    answered = [g for g in got if g]
    assert len(answered) == 16, [g[:20] for g in got]
    assert all(answer(g)[0] == 503 for g in answered)


# -- the notifier --------------------------------------------------------------------------------


async def test_the_notifier_counts_connections_before_their_handshake(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Connections that never finish their handshake count against WS_MAX_CONNECTIONS_PER_IP
    (the next is refused 429) and are closed after HTTP_HEADER_TIMEOUT_S; then there is room."""
    settings = make_settings(ws_max_connections_per_ip=2, http_header_timeout_s=TIMEOUT_S)
    async with Stack(settings, ("notifier",)) as stack:
        assert stack.notifier is not None
        url, port = stack.notifier.url, stack.notifier.port
        async with raw("127.0.0.1", port, 2) as half:
            for _, writer in half:
                writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, open_timeout=BOUND_S):
                    pass
            assert refused.value.response.status_code == 429
            started = time.monotonic()
            for reader, _ in half:
                await until_closed(reader, TIMEOUT_S + BOUND_S)
            assert time.monotonic() - started < TIMEOUT_S + BOUND_S
        async with asyncio.timeout(BOUND_S), connect(url) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}


async def test_the_notifier_refuses_past_max_connections(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Past MAX_CONNECTIONS a WebSocket client gets 503 at once; the open ones go on."""
    async with Stack(make_settings(max_connections=2), ("notifier",)) as stack:
        assert stack.notifier is not None
        url = stack.notifier.url
        async with connect(url) as first, connect(url):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, open_timeout=BOUND_S):
                    pass
            assert refused.value.response.status_code == 503
            await first.send(json.dumps({"type": "ping"}))
            assert json.loads(await first.recv()) == {"type": "pong"}


# -- as deployed: role processes on uvloop -------------------------------------------------------


async def test_role_processes_guard_their_doors(role_env: dict[str, str]) -> None:
    """`vidstream gateway` and `vidstream notifier` as processes (on uvloop, as deployed): past
    the per-address caps a connection is answered 429, a half-sent head gets 408, and a
    stalled body 408."""
    env = {**role_env, "HTTP_HEADER_TIMEOUT_S": "0.5", "HTTP_BODY_TIMEOUT_S": "0.5",
           "GATEWAY_MAX_CONNECTIONS_PER_IP": "3", "WS_MAX_CONNECTIONS_PER_IP": "2"}  # fmt: skip
    roles = []
    try:
        for name in ("gateway", "notifier"):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vidstream", name, env=env, cwd=ROOT,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            roles.append(Role(name, proc))
        for role in roles:
            await role.wait_for("vidstream_ready")
        gateway, notifier = int(env["GATEWAY_PORT"]), int(env["NOTIFIER_PORT"])
        stalled = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000\r\n\r\n{")  # fmt: skip
        async with raw("127.0.0.1", gateway, 3) as held:
            heads = [b"GET /healthz HTTP/1.1\r\n"] * 2 + [stalled]
            for (_, writer), sent in zip(held, heads, strict=True):
                writer.write(sent)
            async with raw("127.0.0.1", gateway) as [(reader, _)]:
                assert answer(await until_closed(reader, BOUND_S))[0] == 429
            for reader, _ in held:
                status, body = answer(await until_closed(reader, TIMEOUT_S + BOUND_S))
                assert status == 408 and body["error"]["code"] == "request_timeout", body
        async with raw("127.0.0.1", notifier, 2):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{notifier}/v1/ws", open_timeout=BOUND_S):
                    pass
            assert refused.value.response.status_code == 429
    finally:
        for role in roles:
            assert await role.stop() == 0
