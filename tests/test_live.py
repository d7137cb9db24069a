"""Live progress at scale: a burst to thousands of subscribers, many notifiers, resets instead of
partial replays, slow readers dropped, Server-Sent Events, and going away with 1001."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import REDIS_URL, free_port
from tests.test_processes import ROOT, Role
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.job.model import ErrorInfo, Job, Options, Stage
from vidstream.job.protocol import Cancel, Claim, Fail, Progress, Replay
from vidstream.notifier import server
from vidstream.runtime import Stack
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys

SECRET = "test-secret"
OWNER = "bench-worker:1"


def when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def token(job: Job) -> str:
    return Signer(SECRET.encode()).ws_token(job.tenant, job.id, job.created_at, 3600)


async def subscribe(ws: ClientConnection, job: Job, after: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "subscribe", "job_id": job.id, "token": token(job)}
    if after is not None:
        message["last_event_id"] = after
    await ws.send(json.dumps(message))
    first: dict[str, Any] = json.loads(await ws.recv())
    return first


async def running_job(store: JobStore) -> Job:
    job = Job.new("uploads/x/source", Options())
    await store.create(job)
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=OWNER, lease_ms=600_000, max_attempts=3)
    assert (await store.apply(job.id, claim)).ok
    return job


async def progress(store: JobStore, job: Job, fraction: float) -> None:
    op = Progress.of(job, Stage.TRANSCRIBE, fraction, owner=OWNER)
    assert (await store.apply(job.id, op)).ok


async def closing_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the connection; return its close code."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


@pytest.fixture
def store(redis: Redis, prefix: str) -> JobStore:
    return JobStore(redis, Keys(prefix), ttl_s=3600)


@pytest.fixture
async def notifiers(role_env: dict[str, str]) -> AsyncIterator[Callable[[], Any]]:
    """Start notifier processes on demand; each is stopped (SIGTERM) at the end."""
    started: list[tuple[Role, str]] = []

    async def start() -> tuple[Role, str]:
        port = free_port()
        env = {**role_env, "NOTIFIER_PORT": str(port), "WS_MAX_CONNECTIONS_PER_IP": "10000"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vidstream", "notifier", env=env, cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        role = Role("notifier", proc)
        await role.wait_for("vidstream_ready")
        started.append((role, f"ws://127.0.0.1:{port}/v1/ws"))
        return started[-1]

    yield start
    for role, _ in started:
        await role.stop()


@pytest.mark.slow  # long by design: for make test, not the quick loop
@pytest.mark.timeout(180)
async def test_a_burst_reaches_2000_subscribers(prefix: str, notifiers: Callable[[], Any]) -> None:
    """2,000 connections, each on its own job; 2,000 events written as fast as Redis takes
    them: every one arrives, none held back. (How fast is `bench/notifier.py`'s to measure:
    other tests share this machine.)"""
    _, url = await notifiers()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.burst", url, REDIS_URL, prefix, SECRET, "2000", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(150):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    delays = result["delays"]
    assert len(delays) == 2000, len(delays)
    assert delays[-1] < 10.0, delays[-5:]  # none waits for a timeout or a reconnect


async def test_a_client_resumes_on_another_notifier(
    store: JobStore, notifiers: Callable[[], Any]
) -> None:
    """Cut off from one notifier mid-job, a client resumes on another with its last id: the
    events it got add up to the job's history, in order, none twice."""
    (_, first), (_, second) = await notifiers(), await notifiers()
    job = await running_job(store)
    got: list[dict[str, Any]] = []
    async with connect(first) as ws:
        assert (await subscribe(ws, job, "0-0"))["type"] == "snapshot"
        for fraction in (0.1, 0.2, 0.3):
            await progress(store, job, fraction)
        while len(got) < 5:  # queued, started, three progress
            got.append(json.loads(await ws.recv()))
    for fraction in (0.4, 0.5):  # while the client is away
        await progress(store, job, fraction)
    async with connect(second) as ws:
        assert (await subscribe(ws, job, got[-1]["id"]))["type"] == "snapshot"
        await progress(store, job, 0.6)
        assert (await store.apply(job.id, Cancel())).ok
        async for raw in ws:
            got.append(json.loads(raw))
            if got[-1]["event"] == "cancelled":
                break
    history = [e.id for e in await store.events(job.id)]
    assert [e["id"] for e in got] == history


async def test_a_resume_that_cannot_be_whole_is_a_reset(
    store: JobStore, redis: Redis, prefix: str, notifiers: Callable[[], Any]
) -> None:
    """From an id older than the kept history, or from a run that was replayed since, the
    server sends `reset` (a fresh snapshot), then live events: never a partial replay."""
    _, url = await notifiers()
    job = await running_job(store)
    for fraction in (0.1, 0.2, 0.3, 0.4):
        await progress(store, job, fraction)
    events = await store.events(job.id)
    # The history was trimmed to its newest entries.
    await redis.xtrim(Keys(prefix).job_events(job.id), maxlen=2, approximate=False)
    async with connect(url) as ws:
        reset = await subscribe(ws, job, events[1].id)
        assert reset["type"] == "reset" and reset["last_event_id"] == events[-1].id
        assert reset["job"]["progress"] == pytest.approx(0.18)
        await progress(store, job, 0.5)
        live = json.loads(await ws.recv())
        assert live["event"] == "progress" and live["stage_progress"] == 0.5
        # Kept history resumes as usual.
        async with connect(url) as again:
            assert (await subscribe(again, job, events[-1].id))["type"] == "snapshot"

    failed = Fail(error=ErrorInfo("x", "y"), owner=OWNER)
    assert (await store.apply(job.id, failed)).ok
    before_replay = (await store.events(job.id))[-1].id
    stored = await store.get(job.id)
    assert stored is not None and (await store.apply(job.id, Replay.of(stored))).ok
    async with connect(url) as ws:
        reset = await subscribe(ws, job, before_replay)
        assert reset["type"] == "reset" and reset["job"]["status"] == "queued"


async def test_the_whole_history_of_a_retried_job_is_no_reset(
    store: JobStore, notifiers: Callable[[], Any]
) -> None:
    """ "0-0" asks for every event, of every run: a retried job's history is whole, so it
    comes in full (what the page does after Retry)."""
    _, url = await notifiers()
    job = await running_job(store)
    assert (await store.apply(job.id, Fail(error=ErrorInfo("x", "y"), owner=OWNER))).ok
    stored = await store.get(job.id)
    assert stored is not None and (await store.apply(job.id, Replay.of(stored))).ok
    history = [(e.id, e.event.value) for e in await store.events(job.id)]
    async with connect(url) as ws, asyncio.timeout(10):
        first = await subscribe(ws, job, "0-0")
        assert first["type"] == "snapshot", first
        got = [json.loads(await ws.recv()) for _ in history]
    assert [(e["id"], e["event"]) for e in got] == history
    assert [name for _, name in history] == ["queued", "started", "failed", "queued"]


async def test_a_subscriber_after_the_end_gets_the_snapshot_only(
    store: JobStore, notifiers: Callable[[], Any]
) -> None:
    """Subscribing to an ended job: a snapshot with its final state, then nothing more."""
    _, url = await notifiers()
    job = await running_job(store)
    assert (await store.apply(job.id, Cancel())).ok
    async with connect(url) as ws:
        snapshot = await subscribe(ws, job)
        assert snapshot["type"] == "snapshot" and snapshot["job"]["status"] == "cancelled"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}  # no event came before it


async def test_a_slow_reader_is_dropped_and_a_fast_one_is_not(
    make_settings: Callable[..., Settings], store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading is closed with 1013 once a bounded backlog builds up; a
    client of the same job on the same notifier gets every event meanwhile."""
    monkeypatch.setattr(server, "SLOW_BYTES", 32 * 1024)
    # The slow client reads its backlog (and so the close frame behind it) only once every
    # event was sent: however long that takes on this machine, the server must still be waiting
    # for its answer, or it drops the connection without the code this test checks.
    monkeypatch.setattr(server, "CLOSE_TIMEOUT_S", 120.0)
    async with Stack(make_settings(), ("notifier",)) as stack:
        assert stack.notifier is not None
        url = stack.notifier.url
        job = await running_job(store)
        # A client that stops reading, with a small receive buffer: its backlog shows up in the
        # server's write buffer soon, not after megabytes of kernel buffers.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = stack.notifier.host, stack.notifier.port
        raw.connect((host, port))
        raw.setblocking(False)
        async with connect(url, sock=raw, max_queue=1) as slow, connect(url) as fast:
            await subscribe(slow, job)
            await subscribe(fast, job)
            count = 1000  # about 250 KB of events: twice what the buffers and the bound hold
            received = 0

            async def read_fast() -> None:
                nonlocal received
                while received < count:
                    json.loads(await fast.recv())
                    received += 1

            reading = asyncio.create_task(read_fast())
            for i in range(count):
                await progress(store, job, (i + 1) / (count + 1))
            async with asyncio.timeout(20):
                await reading
            async with asyncio.timeout(20):
                code = await closing_code(slow)
            assert code == 1013
        assert received == count


async def copy_of_redis(redis: Redis, keys: Keys, job: Job) -> Callable[[], Awaitable[None]]:
    """A copy of the job and the events feed as Redis holds them now. Calling the function
    returned puts that copy back in their place: Redis restarted from an older copy, or a
    replica promoted before it caught up, the writes since lost (the streams made anew)."""
    record = await redis.hgetall(keys.job(job.id))
    history = await redis.xrange(keys.job_events(job.id))
    feed = await redis.xrange(keys.events)

    async def restore() -> None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.job(job.id), keys.job_events(job.id), keys.events)
            pipe.hset(keys.job(job.id), mapping=record)
            for entry_id, fields in history:
                pipe.xadd(keys.job_events(job.id), fields, id=entry_id)
            for entry_id, fields in feed:
                pipe.xadd(keys.events, fields, id=entry_id)
            await pipe.execute()

    return restore


def never_back_without_a_reset(messages: list[dict[str, Any]]) -> None:
    """The progress a client is shown only goes back with a `reset` (or a snapshot)."""
    shown = 0.0
    for message in messages:
        now = message["job"]["progress"] if "job" in message else message["progress"]
        assert message["type"] != "event" or now >= shown, messages
        shown = now


async def test_a_client_is_reset_before_progress_goes_back_after_redis_lost_writes(
    make_settings: Callable[..., Settings], store: JobStore, redis: Redis, prefix: str
) -> None:
    """Redis comes back from an older copy: the events a client was sent are gone, and the
    worker goes on from where Redis is. The client gets `reset` with a fresh snapshot before
    the next event: the progress it is shown never goes back without one."""
    keys = Keys(prefix)
    async with Stack(make_settings(), ("notifier",)) as stack:
        assert stack.notifier is not None
        job = await running_job(store)
        await progress(store, job, 0.2)
        lose_later_writes = await copy_of_redis(redis, keys, job)
        async with connect(stack.notifier.url) as ws, asyncio.timeout(20):
            got = [await subscribe(ws, job)]
            for fraction in (0.6, 0.8):
                await progress(store, job, fraction)
                got.append(json.loads(await ws.recv()))
            await lose_later_writes()
            await progress(store, job, 0.3)  # the worker's next report, on what Redis has
            got.append(json.loads(await ws.recv()))
            reset = got[-1]
            assert reset["type"] == "reset", got
            stored = await store.get(job.id)
            assert stored is not None and reset["job"]["progress"] == round(stored.progress, 4)
            assert reset["last_event_id"] == (await store.events(job.id))[-1].id
            await progress(store, job, 0.4)
            got.append(json.loads(await ws.recv()))
        assert got[-1]["type"] == "event" and got[-1]["stage_progress"] == 0.4
        never_back_without_a_reset(got)


async def test_when_the_feed_goes_back_clients_and_resumes_get_a_reset(
    make_settings: Callable[..., Settings], store: JobStore, redis: Redis, prefix: str,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    """With no write after the loss (the event ids now lower than what clients saw), a
    watching client still gets `reset`; a client resuming from an id Redis lost gets `reset`
    on the WebSocket and on Server-Sent Events, never the events after it."""
    keys = Keys(prefix)
    async with Stack(make_settings(), ("gateway", "notifier")) as stack:
        assert stack.notifier is not None and stack.gateway is not None
        job = await running_job(store)
        await progress(store, job, 0.2)
        kept = (await store.events(job.id))[-1].id
        lose_later_writes = await copy_of_redis(redis, keys, job)
        async with connect(stack.notifier.url) as ws, asyncio.timeout(20):
            assert (await subscribe(ws, job))["type"] == "snapshot"
            await progress(store, job, 0.6)
            lost = json.loads(await ws.recv())["id"]
            await lose_later_writes()
            reset = json.loads(await ws.recv())
        assert reset["type"] == "reset" and reset["last_event_id"] == kept
        stored = await store.get(job.id)  # as it was at 0.2
        assert stored is not None and reset["job"]["progress"] == round(stored.progress, 4) > 0
        url = f"{stack.gateway.url}/v1/jobs/{job.id}/events"
        headers = {"Accept": "text/event-stream", "Last-Event-ID": lost}
        async with http.get(url, headers=headers, params={"token": token(job)}) as r:
            frame = (await r.content.readuntil(b"\n\n")).decode()
        assert frame.startswith(f"event: reset\nid: {kept}\ndata: "), frame
        async with connect(stack.notifier.url) as ws, asyncio.timeout(20):
            again = await subscribe(ws, job, lost)
            assert again["type"] == "reset" and again["last_event_id"] == kept
            # Then Redis loses everything: the job is gone, and the client is told so.
            await redis.delete(keys.job(job.id), keys.job_events(job.id), keys.events)
            gone = json.loads(await ws.recv())
        assert (gone["type"], gone["code"], gone["job_id"]) == ("error", "not_found", job.id)


async def test_server_sent_events_with_and_without_last_event_id(
    make_settings: Callable[..., Settings], store: JobStore, http: aiohttp.ClientSession
) -> None:
    """`Accept: text/event-stream`: a snapshot, then each event with its id, to the end; with
    Last-Event-ID, the events after it; with ?token= (for EventSource), the same."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.gateway is not None
        job = await running_job(store)
        await progress(store, job, 0.5)
        history = await store.events(job.id)
        url = f"{stack.gateway.url}/v1/jobs/{job.id}/events"

        async def read(
            headers: dict[str, str], params: dict[str, str], opened: asyncio.Event
        ) -> list[tuple[str, Any]]:
            frames: list[tuple[str, Any]] = []
            async with http.get(url, headers={"Accept": "text/event-stream", **headers},
                                params=params) as r:  # fmt: skip
                assert r.headers["Content-Type"].startswith("text/event-stream")
                block: dict[str, str] = {}
                async for line in r.content:
                    text = line.decode().rstrip("\n")
                    if text:
                        name, _, value = text.partition(": ")
                        block[name] = value
                        continue
                    if "data" in block:
                        frames.append((block.get("id", block.get("event", "")),
                                       json.loads(block["data"])))  # fmt: skip
                        opened.set()
                    block = {}
                    if frames and frames[-1][1].get("status") == "cancelled":
                        break
            return frames

        opened = asyncio.Event()
        reading = asyncio.create_task(read({}, {}, opened))
        async with asyncio.timeout(10):
            await opened.wait()  # the snapshot came: now the job ends
        assert (await store.apply(job.id, Cancel())).ok
        async with asyncio.timeout(10):
            first = await reading
        assert first[0][0] == "snapshot" and first[0][1]["type"] == "snapshot"
        assert first[-1][1]["event"] == "cancelled"
        async with asyncio.timeout(10):
            resumed = await read({"Last-Event-ID": history[1].id}, {"token": token(job)},
                                 asyncio.Event())  # fmt: skip
        ids = [e.id for e in await store.events(job.id)]
        assert [f[0] for f in resumed] == ids[2:]  # the events after it, each with its id
        # After the final event, 204: the answer that stops EventSource from reconnecting.
        headers = {"Accept": "text/event-stream", "Last-Event-ID": ids[-1]}
        async with http.get(url, headers=headers, params={"token": token(job)}) as r:
            assert r.status == 204


async def test_sigterm_closes_connections_with_1001(
    store: JobStore, notifiers: Callable[[], Any]
) -> None:
    """A notifier told to stop closes every connection with 1001 (going away): clients
    reconnect elsewhere and resume."""
    role, url = await notifiers()
    job = await running_job(store)
    async with connect(url) as ws:
        await subscribe(ws, job)
        os.kill(role.proc.pid, signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await closing_code(ws) == 1001


async def test_an_event_stream_whose_client_left_ends_quietly(
    make_settings: Callable[..., Settings], store: JobStore, http: aiohttp.ClientSession
) -> None:
    """A browser closes its EventSource; the next events find the connection gone and the
    stream ends as a 200 in the metrics (it was a 500 with a traceback, `request_crashed`)."""
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.gateway is not None and stack.services is not None
        job = await running_job(store)
        url = f"{stack.gateway.url}/v1/jobs/{job.id}/events"
        async with http.get(url, headers={"Accept": "text/event-stream"}) as r:
            await r.content.readuntil(b"\n\n")  # the snapshot
        route = "/v1/jobs/{job_id}/events"
        requests = stack.services.metrics.http_requests
        async with asyncio.timeout(10):
            for step in range(1, 1000):  # events until the gateway notices the client left
                await progress(store, job, step / 1000)
                if requests.labels(route, "GET", "200")._value.get():
                    break
                await asyncio.sleep(0.02)  # a pace for the events, not synchronisation
        assert not requests.labels(route, "GET", "500")._value.get()
