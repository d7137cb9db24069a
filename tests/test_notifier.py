"""The WebSocket contract: tokens, snapshots, several jobs per connection, resuming by event id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from vidstream.core.settings import Settings
from vidstream.feed.lost import FeedState, went_back
from vidstream.runtime import Stack


@pytest.fixture
async def api(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    async with Stack(make_settings(), ("gateway", "notifier")) as stack:
        yield stack


async def new_job(http: aiohttp.ClientSession, stack: Stack) -> dict[str, Any]:
    assert stack.gateway is not None
    form = aiohttp.FormData()
    form.add_field("file", b"\0" * 100, filename="a.mp4", content_type="video/mp4")
    async with http.post(f"{stack.gateway.url}/v1/jobs", data=form) as r:
        assert r.status == 202
        job: dict[str, Any] = await r.json()
        return job


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        message: dict[str, Any] = json.loads(await ws.recv())
        return message


async def subscribe(ws: ClientConnection, job: dict[str, Any], **extra: Any) -> None:
    await ws.send(
        json.dumps({"type": "subscribe", "job_id": job["id"], "token": job["ws_token"], **extra})
    )


async def test_a_bad_token_reveals_nothing(api: Stack, http: aiohttp.ClientSession) -> None:
    """A wrong token and a job that does not exist get the same answer."""
    job = await new_job(http, api)
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job["id"], "token": "forged"}))
        wrong = await receive(ws)
        await ws.send(json.dumps({"type": "subscribe", "job_id": "0" * 26, "token": "forged"}))
        missing = await receive(ws)
    assert wrong["type"] == missing["type"] == "error"
    assert wrong["code"] == missing["code"] == "forbidden"
    assert wrong["message"] == missing["message"]
    assert "job" not in wrong and "status" not in wrong


async def test_snapshot_then_events_for_several_jobs(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    """One connection watches two jobs: a snapshot of each, then each job's events."""
    first, second = await new_job(http, api), await new_job(http, api)
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await subscribe(ws, first)
        await subscribe(ws, second)
        snapshots = [await receive(ws), await receive(ws)]
        assert [s["type"] for s in snapshots] == ["snapshot", "snapshot"]
        assert {s["job"]["id"] for s in snapshots} == {first["id"], second["id"]}
        assert all(s["job"]["status"] == "queued" for s in snapshots)
        for job in (second, first):
            async with http.delete(job["links"]["self"]) as r:
                assert r.status == 200
        events = [await receive(ws), await receive(ws)]
    assert [(e["job_id"], e["event"], e["status"]) for e in events] == [
        (second["id"], "cancelled", "cancelled"),
        (first["id"], "cancelled", "cancelled"),
    ]
    assert all(e["type"] == "event" and e["id"] for e in events)


async def test_resume_from_an_event_id(api: Stack, http: aiohttp.ClientSession) -> None:
    """A client that resumes with the last id it saw gets exactly the events after it."""
    job = await new_job(http, api)
    async with http.delete(job["links"]["self"]) as r:
        assert r.status == 200
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await subscribe(ws, job, last_event_id="0-0")
        assert (await receive(ws))["type"] == "snapshot"
        queued, cancelled = await receive(ws), await receive(ws)
        assert (queued["event"], cancelled["event"]) == ("queued", "cancelled")
        await subscribe(ws, job, last_event_id=queued["id"])
        snapshot = await receive(ws)
        assert snapshot["job"]["status"] == "cancelled"
        again = await receive(ws)
        assert (again["id"], again["event"]) == (cancelled["id"], "cancelled")
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}  # nothing else was queued before it


async def test_unsubscribe_stops_events(api: Stack, http: aiohttp.ClientSession) -> None:
    """After unsubscribing, a client hears nothing more about that job."""
    watched, dropped = await new_job(http, api), await new_job(http, api)
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await subscribe(ws, dropped)
        await subscribe(ws, watched)
        assert {(await receive(ws))["type"], (await receive(ws))["type"]} == {"snapshot"}
        await ws.send(json.dumps({"type": "unsubscribe", "job_id": dropped["id"]}))
        assert await receive(ws) == {"type": "unsubscribed", "job_id": dropped["id"]}
        for job in (dropped, watched):
            async with http.delete(job["links"]["self"]) as r:
                assert r.status == 200
        event = await receive(ws)
    assert (event["job_id"], event["event"]) == (watched["id"], "cancelled")


async def test_malformed_messages_and_paths(api: Stack) -> None:
    """Garbage gets an error message, the connection stays usable; other paths are a 404."""
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await ws.send("not json")
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "subscribe", "job_id": 5, "token": None}))
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
    with pytest.raises(InvalidStatus) as exc:
        async with connect(api.notifier.url.replace("/v1/ws", "/elsewhere")):
            pass
    assert exc.value.response.status_code == 404


async def test_non_ascii_token_is_refused_politely(api: Stack, http: aiohttp.ClientSession) -> None:
    """A token with non-ASCII characters gets `forbidden`, and the connection stays open."""
    job = await new_job(http, api)
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "job_id": job["id"], "token": "é"}))
        assert (await receive(ws))["code"] == "forbidden"
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"


async def test_finished_jobs_free_their_subscription_slot(
    api: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only jobs still being watched count toward a connection's limit."""
    monkeypatch.setattr("vidstream.notifier.server.MAX_SUBSCRIPTIONS", 2)
    jobs = [await new_job(http, api) for _ in range(3)]
    assert api.notifier is not None
    async with connect(api.notifier.url) as ws:
        await subscribe(ws, jobs[0])
        await subscribe(ws, jobs[1])
        assert [(await receive(ws))["type"] for _ in range(2)] == ["snapshot", "snapshot"]
        await subscribe(ws, jobs[2])
        assert (await receive(ws))["code"] == "too_many_subscriptions"
        async with http.delete(jobs[0]["links"]["self"]) as r:
            assert r.status == 200
        assert (await receive(ws))["event"] == "cancelled"  # jobs[0] is finished: slot free
        await subscribe(ws, jobs[2])
        assert (await receive(ws))["type"] == "snapshot"


async def test_a_subscribe_while_redis_fails_is_answered_unavailable(
    api: Stack, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis fails as a client subscribes: the WebSocket answers `unavailable` and keeps the
    connection; Server-Sent Events answer 503 `unavailable`."""
    job = await new_job(http, api)
    assert api.notifier is not None and api.services is not None

    async def failing(job_id: str) -> Any:
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(api.services.jobs, "snapshot", failing)  # what both feeds read through
    async with connect(api.notifier.url) as ws:
        await subscribe(ws, job)
        answer = await receive(ws)
        assert (answer["type"], answer["code"]) == ("error", "unavailable")
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}
    headers = {"Accept": "text/event-stream"}
    async with http.get(job["links"]["events"], headers=headers) as r:
        assert r.status == 503 and (await r.json())["error"]["code"] == "unavailable"


def test_the_feed_going_back_is_told_from_trimming() -> None:
    """Lost writes (the feed gone, its ids or its count of entries lower, the entry last read
    gone while older ones stay) are told apart from trimming, which only drops the oldest."""
    cursor = (2000, 0)

    def state(last: str = "2000-0", added: int = 10, first: tuple[int, int] | None = (1000, 0),
              has_cursor: bool = True, exists: bool = True) -> FeedState:  # fmt: skip
        return FeedState(exists, last, added, first, has_cursor)

    assert not went_back(state(), cursor, 10)
    assert not went_back(state(last="3000-0", added=12), cursor, 10)  # new entries
    assert not went_back(state(first=None, has_cursor=False), cursor, 10)  # all trimmed
    assert not went_back(state(first=(2500, 0), has_cursor=False), cursor, 10)  # trimmed past
    assert not went_back(state(exists=False, last="0-0", added=0), (0, 0), 0)  # never written
    assert went_back(state(exists=False, last="0-0", added=0, first=None), cursor, 10)
    assert went_back(state(last="1500-0"), cursor, 10)  # its ids went back
    assert went_back(state(added=4), cursor, 10)  # made anew: fewer entries ever added
    # A replica a few entries behind, promoted; writes went on past the old cursor since.
    assert went_back(state(last="3000-0", added=11, has_cursor=False), cursor, 10)
