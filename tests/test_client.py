"""The CLI's live follow (`vidstream submit --wait`) against a scripted notifier: what it does
with a reset after a drop, and with a retried job's earlier final event. A real notifier cannot
be made to trim a history on cue between two connections, so the server here says it instead."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from vidstream.cli.client import Lines, follow

JOB_ID = "0123456789"


def event(event_id: str, name: str, status: str, **extra: Any) -> str:
    return json.dumps({"type": "event", "id": event_id, "job_id": JOB_ID, "event": name,
                       "status": status, **extra})  # fmt: skip


def state(kind: str, status: str, last: str) -> str:
    job = {"id": JOB_ID, "status": status}
    return json.dumps({"type": kind, "job": job, "last_event_id": last})


Script = Callable[[int, dict[str, Any]], list[str]]


@pytest.fixture
async def notifier() -> AsyncIterator[Callable[[Script], Any]]:
    """Serve `script(n, subscribe)` to the n-th connection, then close it (a drop)."""
    servers = []
    subscribes: list[dict[str, Any]] = []

    async def start(script: Script) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async def handler(ws: ServerConnection) -> None:
            subscribes.append(json.loads(await ws.recv()))
            for message in script(len(subscribes), subscribes[-1]):
                await ws.send(message)

        server = await serve(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        job = {"id": JOB_ID, "ws_token": "t", "links": {"ws": f"ws://127.0.0.1:{port}/v1/ws"}}
        return job, subscribes

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_reset_for_a_job_that_ended_during_a_drop_ends_the_wait(
    notifier: Callable[[Script], Any],
) -> None:
    def script(n: int, subscribe: dict[str, Any]) -> list[str]:
        if n == 1:  # the job starts, then the connection drops mid-stage
            return [state("snapshot", "queued", "1-0"), event("1-0", "queued", "queued"),
                    event("2-0", "started", "running", stage="transcribe")]  # fmt: skip
        # The job completed meanwhile and its history is gone: a reset, and nothing after it.
        return [state("reset", "completed", "9-0")]

    job, subscribes = await notifier(script)
    status = await asyncio.wait_for(follow(job, Lines(io.StringIO()), "clip.mp4"), 10)
    assert status == "completed"
    assert [s["last_event_id"] for s in subscribes] == ["0-0", "2-0"]  # resumed where it was


async def test_a_retried_jobs_earlier_failure_does_not_end_the_wait(
    notifier: Callable[[Script], Any],
) -> None:
    def script(n: int, subscribe: dict[str, Any]) -> list[str]:
        return [
            state("snapshot", "running", "4-0"),  # the job as it is now: its second run
            event("1-0", "queued", "queued"),
            event("2-0", "failed", "failed", error={"code": "x", "message": "y"}),
            event("3-0", "queued", "queued", replay=True),
            event("4-0", "started", "running", stage="transcribe"),
            event("5-0", "completed", "completed"),
        ]

    job, _ = await notifier(script)
    status = await asyncio.wait_for(follow(job, Lines(io.StringIO()), "clip.mp4"), 10)
    assert status == "completed"
